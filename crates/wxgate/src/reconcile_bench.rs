//! `wxgate bench reconcile`: one day of N payments and M refunds reconciled against the
//! simulator's bills, end to end (bill download, gunzip, parse, the gateway's records read,
//! the three-way match, the settlements and fees posted), timed, with the memory it took.
//!
//! The day is loaded directly into both sides (the simulator's orders, over its import
//! endpoint, and the gateway's database), identical, so the reconciliation finds nothing and
//! settles everything: the heaviest clean day. The simulator runs as its own process, so this
//! process's memory is the gateway's.

use std::time::Instant;
use wxgate_gateway::pace::Api;

use anyhow::Context;
use wxgate_gateway::app::{merchants, reconciliation as recon};
use wxgate_gateway::secrets::MasterKey;
use wxgate_gateway::{Gateway, GatewayConfig};
use wxgate_sim::ops::{ImportedOrder, ImportedRefund};
use wxgate_store::testing::SeedPayment;

#[derive(Debug, clap::Args)]
pub struct ReconcileBenchArgs {
    /// Payments in the day.
    #[arg(long, default_value_t = 100_000)]
    payments: usize,
    /// Refunds in the day (each of a different payment).
    #[arg(long, default_value_t = 10_000)]
    refunds: usize,
    /// The gateway's database (default: a fresh SQLite file in a temporary folder).
    #[arg(long)]
    database_url: Option<String>,
}

/// The day's orders: amounts from 1.00 to 100.99 yuan, paid a second apart from 00:10 of
/// `day_start` (Unix seconds of 00:00 Beijing time); every tenth of the first ones refunded.
fn day(args: &ReconcileBenchArgs, day_start: i64) -> Vec<ImportedOrder> {
    (0..args.payments)
        .map(|i| {
            let paid_at = day_start + 600 + (i as i64 % 80_000);
            let amount = 100 + (i as i64 * 37) % 10_000;
            let refund = (i % 10 == 0 && i / 10 < args.refunds).then(|| ImportedRefund {
                out_refund_no: format!("bench_r{i:08}"),
                refund_id: format!("5030000{i:022}"),
                amount: amount / 2,
                at: paid_at + 60,
            });
            ImportedOrder {
                out_trade_no: format!("bench_{i:08}"),
                transaction_id: format!("4200000{i:021}"),
                amount,
                paid_at,
                refund,
            }
        })
        .collect()
}

fn seeds(orders: &[ImportedOrder]) -> Vec<SeedPayment> {
    orders
        .iter()
        .map(|o| SeedPayment {
            out_trade_no: o.out_trade_no.clone(),
            transaction_id: o.transaction_id.clone(),
            amount: o.amount,
            paid_at: o.paid_at * 1000,
            refund: o
                .refund
                .as_ref()
                .map(|r| (r.out_refund_no.clone(), r.amount, r.at * 1000)),
        })
        .collect()
}

/// Seconds to apply for, download (gzip), check and parse the day's trade bill: what any
/// reconciliation must at least do.
async fn read_trade_bill(gw: &Gateway, merchant_id: &str, day: time::Date) -> anyhow::Result<f64> {
    use wechatpay_v3::model::{BillOutcome, TradeBillRequest};
    let up = gw.upstream(merchant_id).await?;
    let started = Instant::now();
    let req = TradeBillRequest {
        bill_date: day.to_string(),
        bill_type: Some("ALL".into()),
        tar_type: Some("GZIP".into()),
    };
    let BillOutcome::Ready(answer) = up.client(Api::Bill).await.trade_bill(&req).await? else {
        anyhow::bail!("no trade bill for {day}");
    };
    let bill = wechatpay_v3::bill::TradeBill::parse(
        &up.client(Api::Bill)
            .await
            .download_bill(&answer, true)
            .await?,
    )?;
    anyhow::ensure!(!bill.rows.is_empty(), "an empty bill");
    Ok(started.elapsed().as_secs_f64())
}

/// (VmRSS, VmHWM) of this process, in KiB.
fn memory_kib() -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// A gateway on a fresh database with the day loaded on both sides and the simulator's
/// clock moved to the next morning; the day's reconciliation requested.
struct Prepared {
    gw: Gateway,
    merchant_id: wxgate_domain::id::MerchantId,
    day: time::Date,
    reconciliation_id: wxgate_domain::id::ReconciliationId,
    folder: std::path::PathBuf,
    _sim: SimProcess,
}

/// The simulator's process, stopped when dropped.
/// Its output is held open, so the simulator's lines have somewhere to go.
struct SimProcess {
    child: std::process::Child,
    _output: Option<std::io::BufReader<std::process::ChildStdout>>,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn prepare(args: &ReconcileBenchArgs) -> anyhow::Result<Prepared> {
    let folder = std::env::temp_dir().join(format!("wxgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&folder)?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", folder.join("wxgate.db").display()));
    let store = wxgate_store::Store::connect(&url).await?;
    store.migrate().await?;
    let (sim, sim_base) = start_simulator().await?;
    let master = MasterKey::generate();
    let merchant = merchants::create_sandbox_merchant(&store, &master, &sim_base, "Bench").await?;
    let today = recon::bill_day(time::OffsetDateTime::now_utc().unix_timestamp() * 1000);
    let (start_ms, _) = recon::day_bounds(today);
    let orders = day(args, start_ms / 1000);
    let http = reqwest::Client::new();
    for chunk in orders.chunks(IMPORT_CHUNK) {
        let url = format!("{sim_base}/sim/merchants/{}/import", merchant.mchid);
        let res = http
            .post(url)
            .json(&serde_json::json!({ "orders": chunk }))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "import: {}", res.text().await?);
    }
    store
        .seed_paid_payments(&merchant.id, &seeds(&orders))
        .await?;
    let moved = http
        .post(format!("{sim_base}/sim/clock"))
        .json(&serde_json::json!({"advance_secs": 33 * 3600}))
        .send()
        .await?;
    anyhow::ensure!(moved.status().is_success(), "moving the simulator's clock");
    let mut config = GatewayConfig::new(url, master, "http://127.0.0.1:9");
    config.reconcile_daily = false;
    let gw = Gateway::new(store, config);
    let merchant_id = wxgate_domain::id::MerchantId::stored(merchant.id.as_str());
    let (requested, _) = recon::request(&gw, &merchant_id, today)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Prepared {
        gw,
        merchant_id,
        day: today,
        reconciliation_id: wxgate_domain::id::ReconciliationId::stored(&requested.id),
        folder,
        _sim: sim,
    })
}

/// Orders per import request.
const IMPORT_CHUNK: usize = 10_000;

/// `wxgate sim` as a child process on a free loopback port, once it answers.
async fn start_simulator() -> anyhow::Result<(SimProcess, String)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting wxgate sim")?;
    let stdout = child.stdout.take().context("the simulator's output")?;
    let mut sim = SimProcess {
        child,
        _output: None,
    };
    // It says where it listens once it does: no port to guess, nothing to poll.
    let (stdout, line) = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).map(|_| (reader, line))
    })
    .await??;
    let base = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|b| b.starts_with("http://"))
        .with_context(|| format!("the simulator said {line:?}"))?
        .to_string();
    sim._output = Some(stdout);
    Ok((sim, base))
}

pub async fn run(args: ReconcileBenchArgs) -> anyhow::Result<()> {
    let p = prepare(&args).await?;
    let bound = read_trade_bill(&p.gw, &p.merchant_id, p.day).await?;
    // Peak memory from here on is the reconciliation's (Linux: 5 resets VmHWM).
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let (before, _) = memory_kib()?;
    let started = Instant::now();
    let done = recon::run_now(&p.gw, &p.merchant_id, &p.reconciliation_id).await?;
    let secs = started.elapsed().as_secs_f64();
    let (_, peak) = memory_kib()?;
    let rows = args.payments + args.refunds;
    println!(
        "reconcile: {} payments + {} refunds on {}: {} in {secs:.2} s, {:.0} rows/s",
        args.payments,
        args.refunds,
        p.day,
        done.status.as_str(),
        rows as f64 / secs
    );
    println!(
        "reconcile: bound (downloading and parsing the trade bill alone) {bound:.2} s: ratio {:.2}; against the 10 s goal {:.2}",
        secs / bound,
        secs / 10.0
    );
    println!(
        "reconcile: discrepancies {}, totals {}",
        done.discrepancy_count,
        done.totals.unwrap_or_default()
    );
    println!(
        "reconcile: gateway RSS {} MiB before, peak {} MiB during: {} MiB more (the simulator is another process)",
        before / 1024,
        peak / 1024,
        peak.saturating_sub(before) / 1024
    );
    let _ = std::fs::remove_dir_all(&p.folder);
    Ok(())
}
