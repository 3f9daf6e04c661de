//! The open API door's shapes: `{code, message, data}` answers with the system's common codes,
//! its transaction statuses, and the unified notification `{param, sign}` signed with the
//! platform key.

use serde_json::{Value, json};
use wxgate_domain::PaymentStatus;
use wxgate_domain::payout::PayoutStatus;
use wxgate_store::{PaymentLinkRow, PaymentRow, PayoutRow};

use crate::next_action::NextAction;

/// The system's success code.
pub const SUCCESS: i64 = 10000;

/// `{"code": 10000, "message": "Success", "data": …}`.
pub fn ok(data: Value) -> Value {
    json!({"code": SUCCESS, "message": "Success", "data": data})
}

/// A refusal: a common code and its message, with the reason.
pub fn error(code: i64, message: &str) -> Value {
    json!({"code": code, "message": message})
}

/// `yyyy-MM-dd HH:mm:ss`, Beijing time (the platform's).
pub fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

/// PENDING, COMPLETE or FAILED.
pub fn status(s: PaymentStatus) -> &'static str {
    match s {
        PaymentStatus::Pending => "PENDING",
        s if s.is_paid() => "COMPLETE",
        _ => "FAILED",
    }
}

/// The `metadata.wechatpay` of a JSAPI, Mini Program or app payment: what `wx.requestPayment`
/// (or the app SDK) takes, `package` written `pkg`.
fn wechatpay(action: &NextAction, app_id: &str) -> Option<Value> {
    Some(match action {
        NextAction::InvokeJsapi {
            invoke_jsapi: j, ..
        } => json!({"appId": j.app_id,
            "timeStamp": j.time_stamp, "nonceStr": j.nonce_str, "pkg": j.package,
            "signType": j.sign_type, "paySign": j.pay_sign,
            "prepayId": j.package.trim_start_matches("prepay_id=")}),
        NextAction::InvokeMiniProgram {
            invoke_mini_program: j,
            ..
        } => json!({"appId": app_id,
            "timeStamp": j.time_stamp, "nonceStr": j.nonce_str, "pkg": j.package,
            "signType": j.sign_type, "paySign": j.pay_sign,
            "prepayId": j.package.trim_start_matches("prepay_id=")}),
        NextAction::InvokeApp { invoke_app: a, .. } => json!({"appId": a.appid,
            "partnerId": a.partnerid, "prepayId": a.prepayid, "pkg": a.package,
            "nonceStr": a.noncestr, "timeStamp": a.timestamp, "paySign": a.sign}),
        _ => return None,
    })
}

/// The create answer: the transaction, what to show or open (`payData`), and for the SDK
/// flows `metadata.wechatpay`.
pub fn created(p: &PaymentRow, action: Option<&NextAction>, app_id: &str) -> Value {
    let (channel_type, pay_data) = match action {
        Some(NextAction::DisplayQrCode { display_qr_code }) => ("QR", display_qr_code.data.clone()),
        Some(NextAction::RedirectToUrl { redirect_to_url }) => ("URL", redirect_to_url.url.clone()),
        _ => ("SDK", String::new()),
    };
    let mut data = json!({
        "transactionId": p.id, "mchOrderId": p.merchant_order_id, "channelType": channel_type,
        "payData": pay_data, "expiresTime": time(p.expires_at),
    });
    if channel_type == "URL" {
        data["payUrl"] = pay_data.into();
    }
    if let Some(w) = action.and_then(|a| wechatpay(a, app_id)) {
        data["metadata"] = json!({"wechatpay": w});
    }
    data
}

/// A transaction as the status check and the notification show it.
pub fn transaction(p: &PaymentRow, channel_code: Option<&str>) -> Value {
    let status = status(p.status);
    let mut v = json!({
        "mchOrderId": p.merchant_order_id, "transactionId": p.id, "amount": p.amount,
        "currency": p.currency, "transactionStatus": status, "createTime": time(p.created_at),
        "channelCode": channel_code,
    });
    if p.status != PaymentStatus::Pending {
        v["returnTime"] = time(p.paid_at.unwrap_or(p.updated_at)).into();
    }
    v
}

/// The unified notification of a payment (from its event's payload): `{param, sign}`, the
/// param a JSON string signed SHA256withRSA with the platform key.
pub fn notification(object: &Value, platform_key: &wechatpay_v3::crypto::PrivateKey) -> String {
    let param = match object["object"].as_str() {
        Some("refund") => refund_param(object),
        Some("payout") => payout_param(object),
        _ => payment_param(object),
    }
    .to_string();
    let sign = platform_key.sign(param.as_bytes());
    json!({"param": param, "sign": sign}).to_string()
}

/// A payment's notification: completed or failed.
fn payment_param(payment: &Value) -> Value {
    let status = payment["status"].as_str().unwrap_or_default();
    let complete = matches!(status, "succeeded" | "refunded" | "paid_after_close");
    json!({
        "eventName": if complete { "payment.success" } else { "payment.failed" },
        "mchOrderId": payment["merchant_order_id"], "transactionId": payment["id"],
        "amount": payment["amount"], "currency": payment["currency"],
        "transactionStatus": if complete { "COMPLETE" } else { "FAILED" },
        "channelCode": payment["metadata"]["channel_code"],
    })
}

/// A static payment code (a payment link): under both spellings clients read
/// (`qrcodeId`/`qrCodeId`, `qrcodeContent`/`qrCodeContent`).
pub fn payment_code(l: &PaymentLinkRow) -> Value {
    let status = if l.active.is_set() {
        "ACTIVE"
    } else {
        "INACTIVE"
    };
    json!({
        "mchOrderId": l.merchant_reference, "qrcodeId": l.id, "qrCodeId": l.id,
        "qrcodeContent": l.url, "qrCodeContent": l.url, "qrLink": l.url, "qrCodeUrl": l.url,
        "amount": l.amount, "currency": l.currency, "remark": l.description,
        "status": status, "qrStatus": status, "createTime": time(l.created_at),
    })
}

/// A payment made to a code.
pub fn code_payment(p: &PaymentRow) -> Value {
    json!({
        "transactionId": p.id, "transactionCreateTime": time(p.created_at),
        "transactionReturnTime": p.paid_at.map(time), "transactionAmount": p.amount,
        "currency": p.currency, "transactionStatus": status(p.status), "remark": p.description,
    })
}

/// A payout as a disbursement: PENDING until WeChat moved the money (the payee confirms it
/// inside WeChat: `metadata.wechatpay` holds what `wx.requestMerchantTransfer` takes), then
/// COMPLETE, or FAILED with WeChat's reason.
pub fn disbursement(p: &PayoutRow) -> Value {
    let status = match p.status {
        PayoutStatus::Succeeded => "COMPLETE",
        PayoutStatus::Failed | PayoutStatus::Cancelled => "FAILED",
        _ => "PENDING",
    };
    let mut v = json!({
        "mchOrderId": p.merchant_payout_id, "transactionId": p.id, "amount": p.amount,
        "currency": p.currency, "transactionStatus": status,
        "transactionTime": time(p.created_at), "createTime": time(p.created_at),
        "returnTime": p.finished_at.map(time), "failedMessage": p.last_error,
        "failedCode": p.failure_code, "remark": p.remark,
    });
    if let (PayoutStatus::AwaitingConfirmation, Some(package)) = (p.status, &p.package_info) {
        v["metadata"] =
            json!({"wechatpay": {"mchId": p.mchid, "appId": p.appid, "package": package}});
    }
    v
}

/// A refund's notification (to its payment's notifyUrl).
fn refund_param(refund: &Value) -> Value {
    let (event, status) = match refund["status"].as_str() {
        Some("succeeded") => ("payment.refund.success", "COMPLETE"),
        _ => ("payment.refund.failed", "FAILED"),
    };
    json!({
        "eventName": event, "mchRefundOrderId": refund["merchant_refund_id"],
        "refundTransactionId": refund["id"], "originalTransactionId": refund["payment_id"],
        "refundAmount": refund["amount"], "refundStatus": status,
    })
}

/// A payout's notification (a disbursement's).
fn payout_param(payout: &Value) -> Value {
    let (event, status) = match payout["status"].as_str() {
        Some("succeeded") => ("disbursement.success", "COMPLETE"),
        _ => ("disbursement.failed", "FAILED"),
    };
    json!({
        "eventName": event, "mchOrderId": payout["merchant_payout_id"],
        "transactionId": payout["id"], "amount": payout["amount"], "transactionStatus": status,
        "failedCode": payout["failure_code"], "failedMessage": payout["last_error"],
    })
}
