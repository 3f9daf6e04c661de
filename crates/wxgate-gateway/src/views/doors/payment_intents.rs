//! The payment-intents door's shapes: the `{code, data, message, rid}` envelope, an intent,
//! its `next_action`, and the signed `payment_success` notification.

use aws_lc_rs::hmac;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use wxgate_domain::{Currency, PaymentStatus};
use wxgate_store::PaymentRow;

use crate::error::ApiError;
use crate::next_action::NextAction;

/// The notification's headers: when it was signed (Unix ms), and the signature.
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
pub const SIGNATURE_HEADER: &str = "x-signature";

/// A request id: 32 lowercase hex characters.
pub fn rid() -> String {
    crate::secrets::random_hex(16)
}

/// `{"code": 0, "data": …, "message": "ok", "rid": …}`.
pub fn ok(data: Value) -> Value {
    json!({"code": 0, "data": data, "message": "ok", "rid": rid()})
}

/// The envelope of a refusal: a non-zero code (the HTTP status × 100 + 1), no data, and the
/// gateway's stable code with its message, naming the field at fault.
pub fn error(e: &ApiError) -> Value {
    let status = i64::from(e.code.status());
    let message = match &e.param {
        Some(param) => format!("{}: {param}: {}", e.code.as_str(), e.message),
        None => format!("{}: {}", e.code.as_str(), e.message),
    };
    json!({"code": status * 100 + 1, "data": null, "message": message, "rid": rid()})
}

/// PENDING, SUCCEEDED or CANCELLED.
pub fn status(s: PaymentStatus) -> &'static str {
    match s {
        PaymentStatus::Pending => "PENDING",
        s if s.is_paid() => "SUCCEEDED",
        _ => "CANCELLED",
    }
}

/// An amount as the system writes it: a decimal in major units without trailing zeros
/// (`"1"`, `"12.5"`).
pub fn amount(minor: i64, currency: &str) -> String {
    let Ok(c) = Currency::parse(currency) else {
        return minor.to_string();
    };
    let text = c.format_minor(minor);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A time as the system writes it: RFC 3339 in Beijing time, nanoseconds.
pub fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// An intent: the payment as the system shows it; `next_action` while it waits for the payer.
pub fn intent(p: &PaymentRow, next_action: Option<&NextAction>) -> Value {
    let mut v = json!({
        "order_id": p.id,
        "merchant_order_id": p.merchant_order_id,
        "amount": amount(p.amount, &p.currency),
        "currency": p.currency,
        "status": status(p.status),
        "create_time": time(p.created_at),
    });
    if let Some(paid) = p.paid_at {
        v["pay_time"] = time(paid).into();
    }
    if let Some(action) = next_action.filter(|_| p.status == PaymentStatus::Pending) {
        v["next_action"] = self::next_action(action);
    }
    v
}

/// The system's `next_action`: a redirect (the hosted checkout, or WeChat's H5 cashier), a QR
/// code to render, or the parameters of WeChat's app or Mini Program SDK.
pub fn next_action(a: &NextAction) -> Value {
    match a {
        NextAction::DisplayQrCode { display_qr_code } => {
            json!({"type": "render_qrcode", "qrcode_url": display_qr_code.data})
        }
        NextAction::RedirectToUrl { redirect_to_url } => {
            json!({"type": "call_sdk", "data": {"type": "redirect", "url": redirect_to_url.url}})
        }
        NextAction::InvokeApp { invoke_app: p, .. } => json!({"type": "call_sdk", "data": {
            "appId": p.appid, "partnerId": p.partnerid, "prepayId": p.prepayid,
            "package": p.package, "nonceStr": p.noncestr, "timeStamp": p.timestamp, "sign": p.sign}}),
        NextAction::InvokeMiniProgram {
            invoke_mini_program,
            ..
        } => json!({"type": "call_sdk", "data": invoke_mini_program}),
        NextAction::InvokeJsapi { invoke_jsapi, .. } => {
            json!({"type": "call_sdk", "data": invoke_jsapi})
        }
    }
}

/// The `payment_success` notification of a payment (from its event's payload: the payment as
/// the gateway shows it), and its headers signed with the merchant's `client_secret`:
/// `x-signature` = hex HMAC-SHA256 over `x-timestamp` followed by the body.
pub fn notification(
    payment: &Value,
    secret: &str,
    at_ms: i64,
) -> (String, [(&'static str, String); 2]) {
    let body = json!({
        "notify_type": "payment_success",
        "data": {"order_id": payment["id"], "merchant_order_id": payment["merchant_order_id"]},
    })
    .to_string();
    let timestamp = at_ms.to_string();
    let signature = sign(secret, &timestamp, body.as_bytes());
    (
        body,
        [(TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature)],
    )
}

/// Hex HMAC-SHA256 keyed with `secret` over `timestamp` then `body`: what a merchant checks.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(body);
    hex::encode(ctx.sign().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_times_and_statuses_read_as_the_system_writes_them() {
        assert_eq!(amount(100, "HKD"), "1");
        assert_eq!(amount(1250, "HKD"), "12.5");
        assert_eq!(amount(1205, "USD"), "12.05");
        assert_eq!(amount(1000, "JPY"), "1000");
        assert_eq!(time(0), "1970-01-01T08:00:00+08:00");
        assert_eq!(status(PaymentStatus::Refunded), "SUCCEEDED");
        assert_eq!(status(PaymentStatus::Expired), "CANCELLED");
        let (body, headers) =
            notification(&json!({"id": "pay_1", "merchant_order_id": "P1"}), "k", 5);
        assert_eq!(headers[1].1, sign("k", "5", body.as_bytes()));
        assert!(body.contains("\"notify_type\":\"payment_success\""));
    }
}
