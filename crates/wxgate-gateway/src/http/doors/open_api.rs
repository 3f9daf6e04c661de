//! The open API door (system 003): every call a POST of `{appId, param, sign}`, `param` a JSON
//! string signed SHA256withRSA with the merchant's key; answers `{code, message, data}`.
//! Dynamic WeChat payments, their status, refunds and the balance, over the same application
//! layer as `/v1`; payment notifications signed with the platform key.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use wxgate_domain::door::Door;
use wxgate_domain::id::{MerchantId, PaymentId};
use wxgate_domain::refund::RefundStatus;
use wxgate_store::{MerchantRow, PaymentRow, RefundRow};

use crate::app::{doors, links, payments as pay, payouts, refunds, reports};
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::http::links::{CreateLink, new_link};
use crate::http::payments::{CreatePayment, PayerIn};
use crate::next_action::NextAction;
use crate::views::doors::open_api as view;

const DOOR: Door = Door::OpenApi;
/// How far a request's `timestamp` may be from the gateway's clock.
const TIMESTAMP_SKEW_MS: i64 = 5 * 60 * 1000;
/// Timestamps below this are seconds, not milliseconds.
const MILLISECONDS_FROM: i64 = 100_000_000_000;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/open-api/payment/generate", post(generate))
        .route("/open-api/payment/query", post(query))
        .route("/open-api/payment/refund", post(refund))
        .route("/open-api/payment/refund/query", post(refund_query))
        .route("/open-api/payment/refund/list", post(refund_list))
        .route("/open-api/account/balance", post(balance))
        .route("/open-api/account/report/download", post(report))
        // The older per-country paths: the country is in the path, the same work behind.
        .route("/open-api/{country}/payment/generate", post(generate))
        .route("/open-api/{country}/payment/query", post(query))
        .route("/open-api/{country}/disbursement/transfer", post(transfer))
        .route(
            "/open-api/{country}/disbursement/query",
            post(transfer_query),
        )
        .route("/open-api/disbursement/transfer", post(transfer))
        .route("/open-api/disbursement/query", post(transfer_query))
        .route("/open-api/qr/generate", post(code_generate))
        .route("/open-api/qr/detail", post(code_detail))
        .route("/open-api/qr/payments", post(code_payments))
        .route("/open-api/qr/cancel", post(code_cancel))
}

/// A refusal: one of the system's common codes, and its message with the reason.
struct Refusal(i64, String);

fn refuse(code: i64, message: impl Into<String>) -> Refusal {
    Refusal(code, message.into())
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        let reason = match &e.param {
            Some(p) => format!("{p}: {}", e.message),
            None => e.message.clone(),
        };
        let (code, message) = match e.code {
            ErrorCode::MerchantOrderIdTaken => (21007, "Duplicate merchant order id"),
            ErrorCode::MerchantRefundIdTaken => (1515, "Duplicate mchRefundOrderId"),
            ErrorCode::ResourceMissing => (21006, "Merchant transaction not found"),
            ErrorCode::RefundExceedsPayment => {
                (1506, "Refund amount exceeds the refundable amount")
            }
            ErrorCode::PaymentNotRefundable => (1516, "Original transaction not completed"),
            ErrorCode::RefundWindowClosed => (1509, "The transaction is too old to refund"),
            ErrorCode::UpstreamUnavailable => (21011, "Network error"),
            c if c.status() >= 500 => (21000, "Server error, Please try again later."),
            _ => (21002, "Request param error"),
        };
        Refusal(code, format!("{message}: {reason}"))
    }
}

fn answer(result: Result<Value, Refusal>) -> Response {
    axum::Json(match result {
        Ok(data) => view::ok(data),
        Err(Refusal(code, message)) => view::error(code, &message),
    })
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    app_id: String,
    param: String,
    sign: String,
}

/// The merchant and its request's `param`: the appId known, the signature over the exact
/// `param` text good, `param` a JSON object, its `timestamp` current.
async fn unwrap(gw: &Gateway, body: &[u8]) -> Result<(MerchantRow, Value), Refusal> {
    let e: Envelope = serde_json::from_slice(body)
        .map_err(|e| refuse(21002, format!("Request param error: {e}")))?;
    let (merchant, kept) = doors::credential(gw, DOOR, &e.app_id)
        .await
        .map_err(|_| refuse(21003, "Request appId error"))?;
    let kept: Value = serde_json::from_str(&kept).map_err(|_| refuse(21000, "Server error"))?;
    let key = kept["merchant_public_key"].as_str().unwrap_or_default();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap_or_default();
    let verified = wechatpay_v3::crypto::PublicKey::from_spki_der(&der)
        .ok()
        .is_some_and(|k| k.verify(e.param.as_bytes(), &e.sign).is_ok());
    if !verified {
        return Err(refuse(21001, "Request sign error"));
    }
    let param: Value = serde_json::from_str(&e.param)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| refuse(21002, "Request param error: param is not a JSON object"))?;
    crate::http::extract::refuse_control_characters(&param, "")
        .map_err(|e| refuse(21002, format!("Request param error: {}", e.message)))?;
    let ts = match &param["timestamp"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| refuse(21008, "Request timestamp error"))?;
    let ts = if ts < MILLISECONDS_FROM {
        ts.checked_mul(1000)
    } else {
        Some(ts)
    };
    let skew = ts
        .and_then(|ts| gw.now_ms().checked_sub(ts))
        .map(i64::unsigned_abs);
    if skew.is_none_or(|s| s > TIMESTAMP_SKEW_MS as u64) {
        return Err(refuse(
            21009,
            "Request timestamp error: outside the accepted window",
        ));
    }
    Ok((merchant, param))
}

fn text<'a>(param: &'a Value, name: &str) -> Option<&'a str> {
    param
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn required<'a>(param: &'a Value, name: &str) -> Result<&'a str, Refusal> {
    text(param, name)
        .ok_or_else(|| refuse(21002, format!("Request param error: {name} is required")))
}

async fn generate(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(create_payment(&gw, &body).await)
}

/// A dynamic WeChat payment: its channel code picks the integration.
async fn create_payment(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let channel = required(&param, "channelCode")?.to_string();
    let request = payment_request(gw, &param, &channel)?;
    let p = &super::create_payment(gw, &merchant, request, DOOR).await?;
    let action = p
        .wechat_credential
        .as_deref()
        .and_then(NextAction::from_stored);
    Ok(view::created(
        p,
        action.as_ref(),
        merchant.mini_program_appid_or_own(),
    ))
}

/// The payment as the `/v1` create request: the same rules then apply.
fn payment_request(gw: &Gateway, param: &Value, channel: &str) -> Result<CreatePayment, Refusal> {
    let (integration, openid) = match channel {
        "WECHAT_QR" => ("native", None),
        "WECHAT_URL" => ("h5", None),
        "WECHAT_JS_URL" => ("jsapi", Some(required(param, "wpOpenid")?)),
        "WECHAT_MINI_PROGRAM" => ("mini_program", Some(required(param, "wpOpenid")?)),
        "WECHAT_APP" => ("app", None),
        _ => {
            return Err(refuse(
                21005,
                format!("Merchant channel is unavailable: {channel}"),
            ));
        }
    };
    let amount = param["amount"].as_i64().ok_or_else(|| {
        refuse(
            21002,
            "Request param error: amount is required, in minor units",
        )
    })?;
    let order = required(param, "mchOrderId")?;
    let expires_at = expires_at(gw, param)?;
    Ok(CreatePayment {
        amount,
        currency: required(param, "currency")?.to_string(),
        merchant_order_id: order.to_string(),
        description: text(param, "remark").map_or_else(|| format!("Order {order}"), str::to_string),
        integration: integration.into(),
        payer: openid.map(|o| PayerIn {
            openid: o.to_string(),
        }),
        client_ip: text(param, "payerClientIp").map(str::to_string),
        expires_at,
        return_url: text(param, "redirectUrl").map(str::to_string),
        cancel_url: None,
        notify_url: Some(required(param, "notifyUrl")?.to_string()),
        metadata: Some([("channel_code".to_string(), channel.to_string())].into()),
        attach: None,
        inline_qr_images: false,
    })
}

async fn query(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(query_payment(&gw, &body).await)
}

async fn query_payment(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let p = payment_named(gw, &merchant, &param).await?;
    let metadata: Value = serde_json::from_str(&p.metadata).unwrap_or(Value::Null);
    Ok(view::transaction(&p, metadata["channel_code"].as_str()))
}

/// The payment a request names by `transactionId` (or `originalTransactionId`) or `mchOrderId`.
async fn payment_named(
    gw: &Gateway,
    m: &MerchantRow,
    param: &Value,
) -> Result<PaymentRow, Refusal> {
    let not_found = || refuse(21006, "Merchant transaction not found");
    let by_id = text(param, "transactionId").or_else(|| text(param, "originalTransactionId"));
    if let Some(id) = by_id {
        let id = PaymentId::parse(id).ok_or_else(not_found)?;
        return Ok(pay::get(gw, &MerchantId::stored(&m.id), &id)
            .await
            .map_err(|_| not_found())?
            .payment);
    }
    let order = required(param, "mchOrderId")?;
    pay::by_merchant_order_id(gw, &m.id, order)
        .await?
        .ok_or_else(not_found)
}

fn refund_view(r: &RefundRow) -> Value {
    let status = match r.status {
        RefundStatus::Succeeded => "COMPLETE",
        RefundStatus::Failed => "FAILED",
        RefundStatus::Pending | RefundStatus::Abnormal => "PENDING",
    };
    json!({"mchRefundOrderId": r.merchant_refund_id, "refundTransactionId": r.id,
        "originalTransactionId": r.payment_id, "refundAmount": r.amount,
        "refundCreateTime": view::time(r.created_at), "refundStatus": status,
        "refundReason": r.reason})
}

async fn refund(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(create_refund(&gw, &body).await)
}

async fn create_refund(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let p = payment_named(gw, &merchant, &param).await?;
    let new = refunds::NewRefund {
        amount: Some(param["refundAmount"].as_i64().ok_or_else(|| {
            refuse(
                21002,
                "Request param error: refundAmount is required, in minor units",
            )
        })?),
        merchant_refund_id: required(&param, "mchRefundOrderId")?.to_string(),
        reason: text(&param, "refundReason").map(str::to_string),
    };
    let merchant_id = MerchantId::stored(&merchant.id);
    let payment_id = PaymentId::stored(&p.id);
    let (_, r) = refunds::create(gw, &merchant_id, &payment_id, new).await?;
    Ok(refund_view(&r))
}

async fn refund_query(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(query_refund(&gw, &body).await)
}

async fn query_refund(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let id = required(&param, "mchRefundOrderId")?;
    let r = refunds::by_merchant_refund_id(gw, &merchant.id, id)
        .await?
        .ok_or_else(|| refuse(1501, "Refund not found"))?;
    Ok(refund_view(&r))
}

async fn balance(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(account_balance(&gw, &body).await)
}

/// The balance by currency, from the ledger: available, waiting for settlement, and held by
/// payouts on their way.
async fn account_balance(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let wanted = text(&param, "currency");
    let balances = gw
        .store()
        .balances(&merchant.id)
        .await
        .map_err(ApiError::from)?;
    let list: Vec<Value> = balances
        .iter()
        .filter(|(c, _)| wanted.is_none_or(|w| w == c))
        .map(|(c, b)| {
            json!({"currency": c, "availableBalance": b.available(),
            "pendingSettleBalance": b.pending, "frozenBalance": b.reserved})
        })
        .collect();
    Ok(list.into())
}

// Static payment codes: a payment link, named by the merchant's order id. A scan shows its Pay
// button, which makes a hosted payment of the link.

async fn code_generate(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(create_code(&gw, &body).await)
}

async fn create_code(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let reference = required(&param, "mchOrderId")?.to_string();
    let expires_at = expires_at(gw, &param)?;
    // A fixed amount, or (none given) any amount the payer enters; anything else given is
    // refused, never read as "any amount".
    let amount = match &param["amount"] {
        Value::Null => None,
        given => Some(given.as_i64().ok_or_else(|| {
            refuse(
                21002,
                "Request param error: amount must be a whole number, in minor units",
            )
        })?),
    };
    let request = CreateLink {
        amount,
        amount_min: amount.is_none().then_some(1),
        amount_max: amount.is_none().then_some(CODE_AMOUNT_MAX),
        currency: required(&param, "currency")?.to_string(),
        description: text(&param, "remark")
            .map_or_else(|| format!("Payment code {reference}"), str::to_string),
        return_url: None,
        max_uses: None,
        expires_at,
    };
    let new = new_link(request, &merchant, Some(reference))?;
    let link = links::create(gw, &MerchantId::stored(&merchant.id), new).await?;
    Ok(view::payment_code(&link))
}

/// The largest amount a payer may enter on a code without a fixed amount, in minor units.
const CODE_AMOUNT_MAX: i64 = 100_000_000;

/// The code a request names by `mchOrderId`.
async fn code_named(
    gw: &Gateway,
    body: &[u8],
) -> Result<(MerchantRow, wxgate_store::PaymentLinkRow), Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let reference = required(&param, "mchOrderId")?;
    let link = links::by_reference(gw, &merchant.id, reference)
        .await?
        .ok_or_else(|| refuse(21006, "Merchant transaction not found"))?;
    Ok((merchant, link))
}

async fn code_detail(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(
        code_named(&gw, &body)
            .await
            .map(|(_, link)| view::payment_code(&link)),
    )
}

async fn code_payments(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(list_code_payments(&gw, &body).await)
}

/// The payments made to a code, newest first (the last 100).
async fn list_code_payments(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (_, link) = code_named(gw, body).await?;
    let payments = links::payments(gw, &link, None, CODE_PAYMENTS_MAX).await?;
    Ok(payments
        .iter()
        .take(CODE_PAYMENTS_MAX as usize)
        .map(view::code_payment)
        .collect::<Vec<_>>()
        .into())
}

/// How many of a code's payments the list answers.
const CODE_PAYMENTS_MAX: i64 = 100;

async fn code_cancel(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(cancel_code(&gw, &body).await)
}

async fn cancel_code(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, link) = code_named(gw, body).await?;
    let id = wxgate_domain::id::LinkId::stored(&link.id);
    let link = links::deactivate(gw, &MerchantId::stored(&merchant.id), &id).await?;
    Ok(view::payment_code(&link))
}

// Payouts ("disbursements"): to a WeChat user's balance, through wxgate's payouts (WeChat's
// merchant transfer, which the payee confirms inside WeChat).

async fn transfer(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(create_transfer(&gw, &body).await)
}

async fn create_transfer(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let method = text(&param, "payMethodCode").unwrap_or("WECHAT");
    if method != "WECHAT" {
        return Err(refuse(
            21013,
            format!("Request wallet code error: {method}"),
        ));
    }
    let new = payouts::NewPayout {
        amount: param["amount"].as_i64().ok_or_else(|| {
            refuse(
                21002,
                "Request param error: amount is required, in minor units",
            )
        })?,
        currency: text(&param, "currency")
            .unwrap_or(payouts::PAYOUT_CURRENCY)
            .to_string(),
        openid: required(&param, "accountNo")?.to_string(),
        remark: text(&param, "remark").unwrap_or("Payout").to_string(),
        user_name: text(&param, "accountName").map(str::to_string),
        scene: None,
        notify_url: text(&param, "notifyUrl").map(str::to_string),
        metadata: Default::default(),
        merchant_payout_id: Some(required(&param, "mchOrderId")?.to_string()),
        door: Some(DOOR),
        idempotency_key: None,
    };
    let (p, _) = payouts::create(gw, &merchant, new).await?;
    Ok(view::disbursement(&p))
}

async fn transfer_query(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(query_transfer(&gw, &body).await)
}

async fn query_transfer(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let id = required(&param, "mchOrderId")?;
    let p = payouts::by_merchant_payout_id(gw, &merchant.id, id)
        .await?
        .ok_or_else(|| refuse(21006, "Merchant transaction not found"))?;
    Ok(view::disbursement(&p))
}

async fn report(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(download_report(&gw, &body).await)
}

/// A statement of a date range as a CSV behind an expiring link (wxgate's reports): payments,
/// refunds, or the ledger's balance transactions.
async fn download_report(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    use wxgate_domain::report::ReportKind;
    let (merchant, param) = unwrap(gw, body).await?;
    let kind = match required(&param, "reportType")? {
        "PAYMENT" => ReportKind::Payments,
        "REFUND" => ReportKind::Refunds,
        "BALANCE" => ReportKind::BalanceTransactions,
        other => {
            return Err(refuse(
                21002,
                format!(
                    "Request param error: reportType {other} is not PAYMENT, REFUND or BALANCE"
                ),
            ));
        }
    };
    let from = crate::http::money::parse_date("startDate", required(&param, "startDate")?)?;
    let to = crate::http::money::parse_date("endDate", required(&param, "endDate")?)?;
    let (row, token) =
        reports::create(gw, &MerchantId::stored(&merchant.id), kind, from, to).await?;
    let shown = crate::views::money::report(&row, &token, &gw.config().public_base_url);
    Ok(
        json!({"downloadUrl": shown["download_url"], "expireTime": view::time(row.expires_at),
        "reportType": kind.as_str(), "startDate": row.date_from, "endDate": row.date_to}),
    )
}

async fn refund_list(State(gw): State<Gateway>, body: Bytes) -> Response {
    answer(list_refunds(&gw, &body).await)
}

/// A payment's refunds (by `originalTransactionId` or `mchOrderId`), oldest first.
async fn list_refunds(gw: &Gateway, body: &[u8]) -> Result<Value, Refusal> {
    let (merchant, param) = unwrap(gw, body).await?;
    let p = payment_named(gw, &merchant, &param).await?;
    let list = refunds::of_payment(gw, &merchant.id, &p.id).await?;
    Ok(list.iter().map(refund_view).collect::<Vec<_>>().into())
}

/// The longest `expireSeconds` taken: a year.
const EXPIRE_SECONDS_MAX: i64 = 366 * 24 * 3600;

/// `expireSeconds` from now, as RFC 3339 (none given: the default).
fn expires_at(gw: &Gateway, param: &Value) -> Result<Option<String>, Refusal> {
    let Some(s) = param["expireSeconds"].as_i64() else {
        return Ok(None);
    };
    if !(1..=EXPIRE_SECONDS_MAX).contains(&s) {
        return Err(refuse(
            21002,
            format!("Request param error: expireSeconds must be 1 to {EXPIRE_SECONDS_MAX}"),
        ));
    }
    Ok(Some(crate::views::rfc3339(gw.now_ms() + s * 1000)))
}
