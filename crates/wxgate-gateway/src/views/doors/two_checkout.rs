//! The 2Checkout door's shapes: JSON-RPC 2.0 answers and errors, and the Order object.

use serde_json::{Value, json};
use wxgate_domain::{Currency, PaymentStatus};
use wxgate_store::PaymentRow;

/// Where the shopper is sent: `Href` + `?avng8apitoken=` + the token, as 2Checkout's clients
/// build it (the path below the door's base).
pub const AUTHORIZE_PATH: &str = "/4.0/scripts/we_chat_pay/authorize/";

/// `{"jsonrpc": "2.0", "id", "result"}`.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// `{"jsonrpc": "2.0", "id", "error": {"code", "message"}}`: the system's string codes for its
/// own refusals, JSON-RPC's numbers for a request that is not one.
pub fn error(id: &Value, code: impl Into<Value>, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code.into(), "message": message}})
}

/// PENDING, COMPLETE, REFUND or CANCELED.
pub fn status(s: PaymentStatus) -> &'static str {
    match s {
        PaymentStatus::Pending => "PENDING",
        PaymentStatus::Refunded => "REFUND",
        s if s.is_paid() => "COMPLETE",
        _ => "CANCELED",
    }
}

/// A time as the system writes it: `YYYY-MM-DD HH:MM:SS`, UTC.
pub fn time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .unwrap_or_default()
}

/// An amount in major units, as a JSON number (`19.99`).
fn price(minor: i64, currency: &str) -> Value {
    let text = Currency::parse(currency)
        .map(|c| c.format_minor(minor))
        .unwrap_or_else(|_| minor.to_string());
    text.parse::<f64>().map(Value::from).unwrap_or(Value::Null)
}

/// What the order answers carry beyond the payment: the parts the merchant sent (items,
/// billing details; echoed by placeOrder only) and the door's base URL.
pub struct Sent<'a> {
    pub items: Option<&'a Value>,
    pub billing: Option<&'a Value>,
    pub external_reference: Option<&'a str>,
    pub base_url: &'a str,
}

/// The Order object of a payment: RefNo is its merchant_order_id; the WeChat Pay redirect is
/// `PaymentMethod.Href` followed by `?avng8apitoken=` and the token (also as `Authorize3DS`, as
/// clients of the card flow read it).
pub fn order(p: &PaymentRow, sent: &Sent<'_>) -> Value {
    let token = p.checkout_token.clone().unwrap_or_default();
    let href = format!("{}{AUTHORIZE_PATH}", sent.base_url.trim_end_matches('/'));
    let pending = p.status == PaymentStatus::Pending;
    let method = json!({
        "ReturnURL": p.return_url, "CancelURL": p.cancel_url,
        "Href": href, "avng8apitoken": token,
        "Authorize3DS": {"Href": href, "Method": "GET", "Params": {"avng8apitoken": token}},
    });
    json!({
        "RefNo": p.merchant_order_id,
        "OrderNo": 0,
        "ExternalReference": sent.external_reference,
        "Status": status(p.status),
        "ApproveStatus": if pending { "WAITING" } else if p.status.is_paid() { "OK" } else { "" },
        "Currency": p.currency.to_lowercase(),
        "OrderDate": time(p.created_at),
        "FinishDate": p.paid_at.map(time),
        "NetPrice": price(p.amount, &p.currency),
        "GrossPrice": price(p.amount, &p.currency),
        "Items": sent.items,
        "BillingDetails": sent.billing,
        "PaymentDetails": {"Type": "WE_CHAT_PAY", "Currency": p.currency.to_lowercase(),
            "PaymentMethod": method},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_times_read_as_the_system_writes_them() {
        assert_eq!(status(PaymentStatus::Succeeded), "COMPLETE");
        assert_eq!(status(PaymentStatus::Expired), "CANCELED");
        assert_eq!(time(1_273_752_732_000), "2010-05-13 12:12:12");
        assert_eq!(price(1999, "USD"), json!(19.99));
    }
}
