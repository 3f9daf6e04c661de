//! The Connect door's shapes: the payment (status, status output, payment output), the
//! merchant action per WeChat Pay integration type, hosted checkouts, and the error envelope.

use serde_json::{Value, json};
use wxgate_domain::PaymentStatus;
use wxgate_store::PaymentRow;

/// WeChat Pay's payment product id at Connect.
pub const PRODUCT_ID: i64 = 863;

/// `{"errorId", "errors": [{code, id, category, message, propertyName?, httpStatusCode,
/// requestId}]}`.
pub fn error(status: u16, code: &str, id: &str, message: &str, property: Option<&str>) -> Value {
    let mut e = json!({
        "code": code, "id": id, "category": "CONNECT_PLATFORM_ERROR", "message": message,
        "httpStatusCode": status, "requestId": crate::secrets::random_digits(7),
    });
    if let Some(p) = property {
        e["propertyName"] = p.into();
    }
    json!({"errorId": uuid_like(), "errors": [e]})
}

/// A random id in the UUID layout the system's error ids use.
fn uuid_like() -> String {
    let h = crate::secrets::random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The system's status of a payment, its legacy status code and its category.
pub fn status(s: PaymentStatus) -> (&'static str, i64, &'static str) {
    match s {
        PaymentStatus::Pending => ("REDIRECTED", 50, "PENDING_PAYMENT"),
        PaymentStatus::Refunded => ("REFUNDED", 1800, "REFUNDED"),
        s if s.is_paid() => ("CAPTURED", 800, "COMPLETED"),
        PaymentStatus::Failed => ("REJECTED", 100, "UNSUCCESSFUL"),
        _ => ("CANCELLED", 99999, "UNSUCCESSFUL"),
    }
}

/// `YYYYMMDDHH24MISS`, UTC.
fn compact_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(time::macros::format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .unwrap_or_default()
}

/// A payment as the system shows it.
pub fn payment(p: &PaymentRow) -> Value {
    let (status, code, category) = status(p.status);
    let paid = p.status.is_paid();
    json!({
        "id": p.id,
        "status": status,
        "statusOutput": {
            "statusCode": code, "statusCategory": category,
            "isCancellable": p.status == PaymentStatus::Pending,
            "isAuthorized": paid, "isRefundable": paid && p.amount_reserved < p.amount,
            "statusCodeChangeDateTime": compact_time(p.updated_at),
        },
        "paymentOutput": {
            "amountOfMoney": {"amount": p.amount, "currencyCode": p.currency},
            "amountPaid": if paid { p.amount } else { 0 },
            "references": {"merchantReference": p.merchant_order_id, "paymentReference": "0"},
            "paymentMethod": "redirect",
            "redirectPaymentMethodSpecificOutput": {"paymentProductId": PRODUCT_ID},
        },
    })
}

/// `thirdPartyStatus`: WAITING while the shopper has not finished in WeChat, COMPLETED after
/// (which does not say the payment succeeded: the payment does).
pub fn third_party_status(p: &PaymentRow) -> Value {
    let done = p.status != PaymentStatus::Pending;
    json!({"thirdPartyStatus": if done { "COMPLETED" } else { "WAITING" }})
}

/// `{key, value}` pairs of a merchant action's show data.
pub fn show_data(pairs: &[(&str, String)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect::<Vec<_>>()
        .into()
}

/// The create answer: `creationOutput`, `merchantAction` (SHOW_FORM with the show data, and
/// for the JS API and Mini Program flows the same values as `thirdPartyData`), `payment`.
pub fn created(p: &PaymentRow, show: &[(&str, String)], third_party: Option<Value>) -> Value {
    let mut action = json!({"actionType": "SHOW_FORM", "showData": show_data(show)});
    if let Some(data) = third_party {
        action["thirdPartyData"] = json!({"paymentProduct863": data});
    }
    json!({
        "creationOutput": {"additionalReference": p.out_trade_no, "externalReference": p.id},
        "merchantAction": action,
        "payment": payment(p),
    })
}

/// A hosted checkout's status: IN_PROGRESS while unpaid, PAYMENT_CREATED once paid (or
/// ended otherwise), CANCELLED_BY_CONSUMER when the shopper cancelled.
pub fn hosted_checkout(p: &PaymentRow) -> Value {
    let status = match p.status {
        PaymentStatus::Pending => "IN_PROGRESS",
        PaymentStatus::Cancelled => "CANCELLED_BY_CONSUMER",
        _ => "PAYMENT_CREATED",
    };
    let mut v = json!({"status": status});
    if status == "PAYMENT_CREATED" {
        let category = if p.status.is_paid() {
            "SUCCESSFUL"
        } else {
            "REJECTED"
        };
        v["createdPaymentOutput"] =
            json!({"payment": payment(p), "paymentStatusCategory": category});
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_envelopes() {
        assert_eq!(status(PaymentStatus::Pending).0, "REDIRECTED");
        assert_eq!(
            status(PaymentStatus::Succeeded),
            ("CAPTURED", 800, "COMPLETED")
        );
        assert_eq!(status(PaymentStatus::Expired).0, "CANCELLED");
        let e = error(
            400,
            "20000000",
            "PARAMETER_NOT_FOUND_IN_REQUEST",
            "m",
            Some("a.b"),
        );
        assert_eq!(e["errors"][0]["propertyName"], "a.b");
        assert_eq!(e["errorId"].as_str().unwrap().len(), 36);
        assert_eq!(compact_time(0), "19700101000000");
    }
}
