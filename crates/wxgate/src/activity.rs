//! The demo's activity beyond requests: each event as it is written and each webhook attempt
//! as it is made, one readable line each, read through the same application calls as
//! `GET /v1/events` and `GET /v1/events/{id}`, whenever the store says something changed.

use std::collections::HashSet;

use wxgate_domain::id::{EventId, MerchantId};
use wxgate_gateway::Gateway;
use wxgate_gateway::app::webhooks;
use wxgate_store::{AttemptRow, EventFilter, EventRow};

/// Events looked at per look (the newest).
const RECENT_EVENTS: i64 = 20;
/// How long an event's webhook attempts are followed.
const FOLLOW_MS: i64 = 10 * 60 * 1000;

/// Prints the merchant's events and webhook attempts from now on, until the process ends.
pub async fn follow(gw: Gateway, merchant_id: MerchantId) {
    let since = gw.now_ms();
    let mut seen_events = HashSet::new();
    let mut seen_attempts = HashSet::new();
    // Woken by every event written and attempt recorded (coalesced while a look runs).
    let mut changes = gw.store().activity_signal();
    while changes.changed().await.is_ok() {
        let filter = EventFilter {
            limit: RECENT_EVENTS,
            ..EventFilter::default()
        };
        let Ok((events, _)) = webhooks::events(&gw, &merchant_id, filter, None).await else {
            continue;
        };
        for e in events.iter().rev().filter(|e| e.created_at >= since) {
            if seen_events.insert(e.id.clone()) {
                println!("{}", event_line(e));
            }
            if gw.now_ms() - e.created_at < FOLLOW_MS {
                print_attempts(&gw, &merchant_id, e, &mut seen_attempts).await;
            }
        }
    }
}

async fn print_attempts(
    gw: &Gateway,
    merchant_id: &MerchantId,
    e: &EventRow,
    seen: &mut HashSet<(String, String, i64)>,
) {
    let Some(id) = EventId::parse(&e.id) else {
        return;
    };
    let Ok(detail) = webhooks::event(gw, merchant_id, &id).await else {
        return;
    };
    for a in &detail.attempts {
        if seen.insert((a.event_id.clone(), a.endpoint_id.clone(), a.attempt)) {
            println!("{}", attempt_line(e, a));
        }
    }
}

/// `event payment.succeeded pay_… v2`
pub fn event_line(e: &EventRow) -> String {
    format!(
        "event {} {} v{}",
        e.event_type, e.object_id, e.object_version
    )
}

/// `webhook payment.succeeded → we_…: 204 (3 ms)`, or the error of a failed attempt.
pub fn attempt_line(e: &EventRow, a: &AttemptRow) -> String {
    let outcome = match (a.status_code, &a.error) {
        (Some(code), None) => code.to_string(),
        (_, Some(error)) => format!("failed, {error}"),
        (None, None) => "no answer".to_string(),
    };
    format!(
        "webhook {} → {}: {outcome} ({} ms)",
        e.event_type, a.endpoint_id, a.latency_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_a_log_for_people() {
        let e = EventRow {
            id: "evt_1".into(),
            merchant_id: "mch_1".into(),
            event_type: "payment.succeeded".into(),
            object_id: "pay_1".into(),
            object_version: 2,
            payload: "{}".into(),
            created_at: 0,
        };
        assert_eq!(event_line(&e), "event payment.succeeded pay_1 v2");
        let a = AttemptRow {
            event_id: "evt_1".into(),
            endpoint_id: "we_1".into(),
            attempt: 1,
            at: 0,
            status_code: Some(204),
            latency_ms: 3,
            error: None,
        };
        assert_eq!(
            attempt_line(&e, &a),
            "webhook payment.succeeded → we_1: 204 (3 ms)"
        );
        let failed = AttemptRow {
            status_code: None,
            error: Some("connection refused".into()),
            ..a
        };
        assert_eq!(
            attempt_line(&e, &failed),
            "webhook payment.succeeded → we_1: failed, connection refused (3 ms)"
        );
    }
}
