//! `wxgate bench callbacks`: WeChat's payment callbacks into a running gateway, signed and
//! encrypted as WeChat sends them, as fast as the gateway takes them.
//!
//! The simulator mints a merchant; this process registers it with the gateway's database
//! (like `wxgate merchant create`) with one more platform key, its own, so it can sign
//! callbacks itself. Payments are created through the gateway's API (their orders are made at
//! the simulator), then every payment's `TRANSACTION.SUCCESS` callback is built and signed
//! before the timed run, so the run measures the gateway alone: signature check, decryption,
//! cross-check and the transition to succeeded with its events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use wechatpay_v3::aead::ApiV3Key;
use wechatpay_v3::crypto::PrivateKey;
use wechatpay_v3::notify::EVENT_TRANSACTION_SUCCESS;
use wechatpay_v3::verify::response_message;
use wxgate_gateway::app::merchants::{self, NewMerchant};
use wxgate_gateway::secrets::MasterKey;
use wxgate_sim::callbacks::{CallbackJob, notification_body};
use wxgate_store::Store;

use crate::bench::{CpuProbe, CpuSpent, Report, load_items, mint_at_simulator};

#[derive(Debug, clap::Args)]
pub struct CallbackBenchArgs {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The simulator the gateway's merchant makes its orders at.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    sim: String,
    /// Payments created, each then paid by one callback.
    #[arg(long, default_value_t = 4000)]
    callbacks: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The gateway's process id, to read its CPU time.
    #[arg(long)]
    pid: Option<u32>,
}

/// The id under which the gateway knows this bench's platform key.
const BENCH_KEY_ID: &str = "PUB_KEY_ID_0000000000000000000000000001";

/// One signed callback, ready to send.
struct Signed {
    body: Vec<u8>,
    timestamp: String,
    nonce: String,
    signature: String,
}

/// The merchant as the simulator minted it, registered with the gateway.
struct Registered {
    merchant_id: String,
    api_key: String,
    mchid: String,
    appid: String,
    apiv3_key: ApiV3Key,
    platform_key: PrivateKey,
}

pub async fn run(args: CallbackBenchArgs, store: Store, master: MasterKey) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let m = register(&http, &args.sim, &store, &master).await?;
    let payments = create(&http, &args, &m).await?;
    let signed: Vec<Signed> = payments
        .iter()
        .map(|(out_trade_no, amount)| sign(&m, out_trade_no, *amount))
        .collect::<anyhow::Result<_>>()?;
    let url = format!("{}/wechatpay/notify/{}", args.url, m.merchant_id);
    let probe = CpuProbe::start(args.pid)?;
    let report = send_all(&http, &url, signed, args.concurrency).await;
    let CpuSpent {
        gateway: cpu, busy, ..
    } = probe.stop()?;
    report.print(
        "WeChat payment callbacks (signed, encrypted)",
        args.concurrency,
    );
    let n = report.latencies_us.len().max(1) as f64;
    println!(
        "callbacks accepted: {} of {}; gateway CPU per callback {:.3} ms; machine {:.0} % busy",
        report.latencies_us.len(),
        payments.len(),
        cpu / n * 1000.0,
        busy * 100.0
    );
    Ok(())
}

/// Mints a merchant at the simulator and registers it with the gateway, with the simulator's
/// platform certificate (its answers) and this bench's platform key (its callbacks).
async fn register(
    http: &reqwest::Client,
    sim: &str,
    store: &Store,
    master: &MasterKey,
) -> anyhow::Result<Registered> {
    let bundle = mint_at_simulator(http, sim, "certificate").await?;
    let s = |k: &str| bundle[k].as_str().unwrap_or_default().to_string();
    let platform_key = PrivateKey::generate()?;
    let new = NewMerchant {
        name: "callback bench".into(),
        mode: wxgate_domain::MerchantMode::Sandbox,
        mchid: s("mchid"),
        appid: s("appid"),
        mini_program_appid: None,
        api_base_url: format!("{sim}/"),
        merchant_serial_no: s("merchant_serial_no"),
        merchant_private_key_pem: s("merchant_private_key"),
        apiv3_key: s("apiv3_key"),
        app_secret: None,
        platform_public_key_id: Some(BENCH_KEY_ID.into()),
        platform_public_key: Some(platform_key.public_key().to_spki_pem()),
        platform_certificate: Some(s("platform_certificate")),
        currencies: vec![wxgate_domain::Currency::CNY],
        paid_after_close_policy: wxgate_domain::PaidAfterClosePolicy::Accept,
        merchant_category_code: None,
        fee_rate_bp: merchants::DEFAULT_FEE_RATE_BP,
        settlement_currency: None,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let row = merchants::create_merchant(store, master, new, now).await?;
    let (_, api_key) = merchants::create_api_key(store, &row.id).await?;
    Ok(Registered {
        merchant_id: row.id,
        api_key,
        mchid: row.mchid,
        appid: row.appid,
        apiv3_key: ApiV3Key::new(&s("apiv3_key"))?,
        platform_key,
    })
}

/// Creates `args.callbacks` native payments through the gateway: (out_trade_no, amount).
async fn create(
    http: &reqwest::Client,
    args: &CallbackBenchArgs,
    m: &Registered,
) -> anyhow::Result<Vec<(String, i64)>> {
    let made = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.callbacks)));
    let next = Arc::new(AtomicUsize::new(0));
    let run = wechatpay_v3::nonce(8);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (http, made, next) = (http.clone(), made.clone(), next.clone());
        let (url, key, run, total) = (
            format!("{}/v1/payments", args.url),
            m.api_key.clone(),
            run.clone(),
            args.callbacks,
        );
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let amount = 100;
                let body = serde_json::json!({"amount": amount, "currency": "CNY", "merchant_order_id": format!("cb{run}{}", wechatpay_v3::nonce(12)), "description": "callback bench", "integration": "native"});
                let answer: serde_json::Value = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let out_trade_no = answer["wechat"]["out_trade_no"]
                    .as_str()
                    .context("a created payment has its out_trade_no")?;
                made.lock()
                    .expect("made lock")
                    .push((out_trade_no.to_string(), amount));
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let made = std::mem::take(&mut *made.lock().expect("made lock"));
    println!("created {} payments to be paid by callback", made.len());
    Ok(made)
}

/// The `TRANSACTION.SUCCESS` callback of one order, encrypted and signed as WeChat does.
fn sign(m: &Registered, out_trade_no: &str, amount: i64) -> anyhow::Result<Signed> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let success_time = wxgate_sim::formats::rfc3339_cst(now);
    let transaction = serde_json::json!({
        "appid": m.appid, "mchid": m.mchid, "out_trade_no": out_trade_no,
        "transaction_id": format!("42000{}", wechatpay_v3::nonce(23)),
        "trade_type": "NATIVE", "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
        "bank_type": "OTHERS", "attach": "", "success_time": success_time,
        "payer": {"openid": "oBench000000000000000000000"},
        "amount": {"total": amount, "payer_total": amount, "currency": "CNY", "payer_currency": "CNY"},
    });
    let job = CallbackJob {
        mchid: m.mchid.clone(),
        url: String::new(),
        event_type: EVENT_TRANSACTION_SUCCESS,
        summary: "支付成功",
        original_type: "transaction",
        plaintext: serde_json::to_vec(&transaction)?,
        out_trade_no: out_trade_no.to_string(),
        out_refund_no: None,
    };
    let id = format!("bench-{}", wechatpay_v3::nonce(16));
    let body = notification_body(&m.apiv3_key, &id, now, &job);
    let (timestamp, nonce) = (now.to_string(), wechatpay_v3::nonce(32));
    let signature = m
        .platform_key
        .sign(&response_message(&timestamp, &nonce, &body));
    Ok(Signed {
        body,
        timestamp,
        nonce,
        signature,
    })
}

/// Sends every callback once, `concurrency` at a time; a callback counts when answered 2xx.
async fn send_all(
    http: &reqwest::Client,
    url: &str,
    signed: Vec<Signed>,
    concurrency: usize,
) -> Report {
    let total = signed.len();
    let signed: Arc<Vec<Signed>> = Arc::new(signed);
    let (http, url) = (http.clone(), url.to_string());
    load_items(concurrency, total, move |i| {
        let (http, url, signed) = (http.clone(), url.clone(), signed.clone());
        async move {
            let s = &signed[i];
            let sent = http
                .post(&url)
                .header("Content-Type", "application/json")
                .header("Wechatpay-Timestamp", &s.timestamp)
                .header("Wechatpay-Nonce", &s.nonce)
                .header("Wechatpay-Serial", BENCH_KEY_ID)
                .header("Wechatpay-Signature", &s.signature)
                .header("Wechatpay-Signature-Type", wechatpay_v3::SIGNATURE_SCHEME)
                .body(s.body.clone())
                .send()
                .await;
            matches!(sent, Ok(r) if r.status().is_success())
        }
    })
    .await
}
