//! Callback delivery: the real envelope, encrypted under the merchant's APIv3 key and signed
//! like an answer, POSTed to `notify_url`. 200 or 204 acknowledges it, whatever the body;
//! anything else, or no answer within the timeout, is retried on WeChat's schedule
//! (about 24 hours in all, divided by `--time-scale`).

use std::sync::Arc;

use serde_json::json;
use wechatpay_v3::aead::ApiV3Key;
use wechatpay_v3::notify::EncryptedResource;

use crate::faults::roll;
use crate::formats::rfc3339_cst;
use crate::merchant::Merchant;
use crate::sim::Sim;
use crate::state::CallbackLog;

/// Seconds to wait after each failed attempt: 15 s, 15 s, 30 s, 3 m, 10 m, 20 m, 30 m × 3,
/// 60 m, 3 h × 3, 6 h × 2.
pub const RETRY_SCHEDULE_SECS: [f64; 15] = [
    15.0, 15.0, 30.0, 180.0, 600.0, 1200.0, 1800.0, 1800.0, 1800.0, 3600.0, 10800.0, 10800.0,
    10800.0, 21600.0, 21600.0,
];

/// The callback log keeps at most this many entries, oldest dropped first.
const LOG_MAX: usize = 10_000;

pub struct CallbackJob {
    pub mchid: String,
    pub url: String,
    pub event_type: &'static str,
    pub summary: &'static str,
    pub original_type: &'static str,
    pub plaintext: Vec<u8>,
    pub out_trade_no: String,
    pub out_refund_no: Option<String>,
}

/// A callback's body as WeChat sends it: the envelope of `job`'s event, its resource encrypted
/// under the merchant's APIv3 key (the original type as associated data), created at `now`
/// (Unix seconds).
pub fn notification_body(key: &ApiV3Key, id: &str, now: i64, job: &CallbackJob) -> Vec<u8> {
    let resource = EncryptedResource::seal(
        key,
        job.original_type,
        job.original_type,
        &wechatpay_v3::nonce(12),
        &job.plaintext,
    )
    .expect("a 32-byte key and a 12-byte nonce always seal");
    serde_json::to_vec(&json!({
        "id": id,
        "create_time": rfc3339_cst(now),
        "resource_type": "encrypt-resource",
        "event_type": job.event_type,
        "summary": job.summary,
        "resource": resource,
    }))
    .expect("serialisable")
}

/// Builds the envelope once and hands it to delivery tasks, applying callback faults.
pub fn send(sim: &Sim, job: CallbackJob) {
    let (merchant, faults) = {
        let state = sim.state();
        (
            state.merchants.get(&job.mchid).cloned(),
            state.faults_for(Some(&job.mchid)),
        )
    };
    let Some(merchant) = merchant else { return };
    let id = uuid_like();
    let body = notification_body(&merchant.apiv3_key, &id, sim.now(), &job);
    let dropped = roll(faults.drop_callback_rate);
    log(sim, &job, &id, dropped);
    if dropped {
        tracing::info!(id, url = job.url, "callback dropped by fault injection");
        return;
    }
    let copies = if roll(faults.duplicate_callback_rate) {
        2
    } else {
        1
    };
    let delay_ms = if roll(faults.reorder_callback_rate) {
        faults.reorder_delay_ms.max(1)
    } else {
        0
    };
    let probe_first = roll(faults.signature_probe_rate);
    let body: Arc<[u8]> = body.into();
    for _ in 0..copies {
        tokio::spawn(deliver(
            sim.clone(),
            merchant.clone(),
            job.url.clone(),
            body.clone(),
            id.clone(),
            std::time::Duration::from_millis(delay_ms),
            probe_first,
        ));
    }
}

/// Records the callback in the simulator's log (the oldest entry gives way when it is full).
fn log(sim: &Sim, job: &CallbackJob, id: &str, dropped: bool) {
    let mut state = sim.state();
    if state.callbacks.len() >= LOG_MAX {
        state.callbacks.remove(0);
    }
    state.callbacks.push(CallbackLog {
        id: id.to_string(),
        mchid: job.mchid.clone(),
        event_type: job.event_type.to_string(),
        url: job.url.clone(),
        out_trade_no: job.out_trade_no.clone(),
        out_refund_no: job.out_refund_no.clone(),
        attempts: Vec::new(),
        acknowledged: false,
        dropped,
    });
}

async fn deliver(
    sim: Sim,
    merchant: Arc<Merchant>,
    url: String,
    body: Arc<[u8]>,
    id: String,
    delay: std::time::Duration,
    probe_first: bool,
) {
    tokio::time::sleep(delay).await;
    for attempt in 0..=RETRY_SCHEDULE_SECS.len() {
        let signed = merchant.sign_body(
            &body,
            None,
            wechatpay_v3::nonce(32),
            probe_first && attempt == 0,
        );
        let result = sim
            .http()
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Wechatpay-Timestamp", &signed.timestamp)
            .header("Wechatpay-Nonce", &signed.nonce)
            .header("Wechatpay-Serial", &signed.serial)
            .header("Wechatpay-Signature", &signed.signature)
            .header("Wechatpay-Signature-Type", wechatpay_v3::SIGNATURE_SCHEME)
            .body(body.to_vec())
            .send()
            .await;
        let status = result.map(|r| r.status().as_u16()).unwrap_or(0);
        let acknowledged = status == 200 || status == 204;
        {
            let mut state = sim.state();
            if let Some(log) = state.callbacks.iter_mut().rev().find(|c| c.id == id) {
                log.attempts.push(status);
                log.acknowledged |= acknowledged;
            }
        }
        if acknowledged {
            return;
        }
        let Some(wait) = RETRY_SCHEDULE_SECS.get(attempt) else {
            break;
        };
        tracing::debug!(id, status, attempt, "callback not acknowledged; retrying");
        tokio::time::sleep(sim.scaled(*wait)).await;
    }
    tracing::warn!(id, url, "callback never acknowledged; giving up");
}

fn uuid_like() -> String {
    let h = crate::formats::lower_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
