//! Merchant webhooks: the event types, the retry schedule, and the signature a merchant checks.
//!
//! Every delivery carries `Wxgate-Signature: t=<unix seconds>,kid=<secret id>,v1=<hex>`, where
//! `v1` is HMAC-SHA256 keyed with the endpoint's secret (the whole `whsec_…` string, as UTF-8)
//! over `"<t>.<raw body>"`. `kid` names the secret, so a merchant holding several (while
//! rotating) knows which one to use. [`verify`] is the check a merchant written in Rust calls.

use aws_lc_rs::hmac;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Wxgate-Signature";

/// How far a signature's timestamp may be from the receiver's clock, by default.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Every event type, stable once shipped.
pub const EVENT_TYPES: [&str; 16] = [
    "payment.succeeded",
    "payment.cancelled",
    "payment.expired",
    "payment.failed",
    "payment.paid_after_close",
    "payment.refunded",
    "payment.duplicate_paid",
    "refund.succeeded",
    "refund.failed",
    "refund.abnormal",
    "payout.awaiting_confirmation",
    "payout.succeeded",
    "payout.failed",
    "payout.cancelled",
    "reconciliation.completed",
    "reconciliation.discrepancy_found",
];

/// Waits before each retry of a failed delivery: WeChat Pay's own callback schedule
/// (15 s, 15 s, 30 s, 3 m, 10 m, 20 m, 30 m ×3, 1 h, 3 h ×3, 6 h ×2, about 24 h in all).
/// After the last one fails the delivery is dead-lettered.
pub const RETRY_SCHEDULE_MS: [i64; 15] = [
    15_000, 15_000, 30_000, 180_000, 600_000, 1_200_000, 1_800_000, 1_800_000, 1_800_000,
    3_600_000, 10_800_000, 10_800_000, 10_800_000, 21_600_000, 21_600_000,
];

/// The `Wxgate-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, secret_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, &signed_bytes(timestamp, body));
    format!(
        "t={timestamp},kid={secret_id},v1={}",
        hex::encode(tag.as_ref())
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature names secret {0:?}, which the receiver does not hold")]
    UnknownSecret(String),
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a `Wxgate-Signature` header against the raw body. `secrets` are the receiver's
/// `(secret id, secret)` pairs; `now` is Unix seconds.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[(&str, &str)],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let (mut t, mut kid, mut v1) = (None, None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("kid", v)) => kid = Some(v),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(kid), Some(v1)) = (t, kid, v1) else {
        return Err(SignatureError::Malformed);
    };
    let secret = secrets
        .iter()
        .find(|(id, _)| *id == kid)
        .map(|(_, s)| *s)
        .ok_or_else(|| SignatureError::UnknownSecret(kid.to_string()))?;
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, &signed_bytes(t, body), &v1).map_err(|_| SignatureError::Mismatch)
}

fn signed_bytes(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut data = format!("{timestamp}.").into_bytes();
    data.extend_from_slice(body);
    data
}

/// Whether an endpoint subscribed to `subscribed` (`*` or a comma-separated list) takes `event_type`.
pub fn subscribes(subscribed: &str, event_type: &str) -> bool {
    subscribed == "*" || subscribed.split(',').any(|t| t == event_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_0123456789abcdef";

    #[test]
    fn signed_bodies_verify_and_changed_ones_do_not() {
        let body = br#"{"id":"evt_1","type":"payment.succeeded"}"#;
        let header = sign(SECRET, "whs_a", 1_700_000_000, body);
        let secrets = [("whs_old", "whsec_old"), ("whs_a", SECRET)];
        assert_eq!(verify(&header, body, &secrets, 1_700_000_010, 300), Ok(()));
        assert_eq!(
            verify(&header, b"{}", &secrets, 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, &secrets, 1_700_000_400, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&header, body, &secrets[..1], 1_700_000_010, 300),
            Err(SignatureError::UnknownSecret("whs_a".into()))
        );
        let forged = header.replace("t=1700000000", "t=1700000001");
        assert_eq!(
            verify(&forged, body, &secrets, 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("v1=00", body, &secrets, 0, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn the_schedule_spans_about_a_day() {
        let total: i64 = RETRY_SCHEDULE_MS.iter().sum();
        assert!((24 * 3600 * 1000..25 * 3600 * 1000).contains(&total));
    }

    #[test]
    fn subscriptions() {
        assert!(subscribes("*", "refund.failed"));
        assert!(subscribes(
            "payment.succeeded,refund.failed",
            "refund.failed"
        ));
        assert!(!subscribes("payment.succeeded", "payment.succeeded_x"));
    }
}
