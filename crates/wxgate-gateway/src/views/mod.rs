//! What the API shows: payments as JSON, and the `next_action` a merchant hands to the
//! shopper's device; [`money`] shows reconciliations, balances and balance transactions;
//! [`payouts`] payouts and their confirmation.

pub mod doors;
pub mod money;
pub mod payouts;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use utoipa::ToSchema;
use wechatpay_v3::paysign::{AppPayParams, JsapiPayParams};
use wxgate_domain::refund::RefundStatus;
use wxgate_domain::{PaymentIntegration, PaymentStatus};
use wxgate_store::{HistoryRow, PaymentAttemptRow, PaymentRow, RefundRow};

use crate::next_action::{NextAction, QrCode, Redirect};
use crate::upstream::{Prepaid, Upstream};

/// RFC 3339 (UTC) of a Unix-milliseconds time.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a valid time formats")
}

/// A payment as the API shows it. `history` is included when given; `next_action` only while
/// the payment is pending (it is stored as JSON and passed through unparsed).
pub fn payment(p: &PaymentRow, history: Option<&[HistoryRow]>) -> Value {
    serde_json::to_value(PaymentView::new(p, history)).expect("a payment view serialises")
}

/// One payment with its history and its WeChat orders, straight to JSON text (the read path:
/// no intermediate tree).
pub fn payment_json(
    p: &PaymentRow,
    history: &[HistoryRow],
    attempts: &[PaymentAttemptRow],
) -> String {
    serde_json::to_string(&PaymentView::new(p, Some(history)).with_attempts(attempts))
        .expect("a payment view serialises")
}

/// The same, as a JSON value.
pub fn payment_detail(
    p: &PaymentRow,
    history: &[HistoryRow],
    attempts: &[PaymentAttemptRow],
) -> Value {
    serde_json::to_value(PaymentView::new(p, Some(history)).with_attempts(attempts))
        .expect("a payment view serialises")
}

/// A payment. `next_action` is set while the payment is pending: `display_qr_code` (native),
/// `redirect_to_url` (h5), `invoke_jsapi`, `invoke_mini_program` or `invoke_app`.
#[derive(Serialize, ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView<'a> {
    id: &'a str,
    #[schema(example = "payment")]
    object: &'static str,
    merchant_order_id: &'a str,
    amount: i64,
    /// The sum of succeeded refunds. A payment refunded in full becomes `refunded`; a
    /// partially refunded one stays `succeeded`.
    amount_refunded: i64,
    currency: &'a str,
    description: &'a str,
    integration: &'a str,
    status: &'a str,
    version: i64,
    created_at: String,
    updated_at: String,
    expires_at: String,
    paid_at: Option<String>,
    wechat: WechatView<'a>,
    payer: Option<PayerView<'a>>,
    client_ip: Option<&'a str>,
    return_url: Option<&'a str>,
    cancel_url: Option<&'a str>,
    notify_url: Option<&'a str>,
    attach: Option<&'a str>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<&'a RawValue>,
    #[schema(value_type = Option<Object>)]
    next_action: Option<std::borrow::Cow<'a, RawValue>>,
    /// The hosted checkout page for this payment (any integration; for `hosted`, where the
    /// shopper goes).
    hosted_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_history: Option<Vec<HistoryView<'a>>>,
    /// The WeChat orders made for the payment, oldest first (in a single payment's answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView<'a>>>,
}

/// One WeChat order of a payment: `open`, `succeeded` (it paid the payment), `closed`, or
/// `duplicate` (paid after another order had paid: refunded in full).
#[derive(Serialize, ToSchema)]
#[schema(as = PaymentAttempt)]
struct AttemptView<'a> {
    out_trade_no: &'a str,
    integration: &'a str,
    status: &'a str,
    transaction_id: Option<&'a str>,
    created_at: String,
}

#[derive(Serialize, ToSchema)]
struct WechatView<'a> {
    out_trade_no: &'a str,
    transaction_id: Option<&'a str>,
    /// What the payer paid, once paid (CNY for a cross-border payment).
    #[serde(skip_serializing_if = "Option::is_none")]
    payer_amount: Option<AmountView<'a>>,
    /// The rate WeChat applied (cross-border): CNY per major unit of the payment's currency,
    /// as a decimal string with up to 8 places.
    #[serde(skip_serializing_if = "Option::is_none")]
    exchange_rate: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct AmountView<'a> {
    amount: i64,
    currency: &'a str,
}

/// A rate scaled by 10^8 as a decimal string (`712340000` → `7.1234`).
fn rate_text(scaled: i64) -> String {
    let whole = scaled / 100_000_000;
    let frac = format!("{:08}", (scaled % 100_000_000).abs());
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{frac}")
    }
}

#[derive(Serialize, ToSchema)]
struct PayerView<'a> {
    openid: &'a str,
}

#[derive(Serialize, ToSchema)]
struct HistoryView<'a> {
    status: &'a str,
    at: String,
    source: &'a str,
}

impl<'a> PaymentView<'a> {
    fn with_attempts(mut self, attempts: &'a [PaymentAttemptRow]) -> Self {
        self.attempts = Some(
            attempts
                .iter()
                .map(|a| AttemptView {
                    out_trade_no: &a.out_trade_no,
                    integration: a.integration.as_str(),
                    status: a.status.as_str(),
                    transaction_id: a.transaction_id.as_deref(),
                    created_at: rfc3339(a.created_at),
                })
                .collect(),
        );
        self
    }

    pub fn new(p: &'a PaymentRow, history: Option<&'a [HistoryRow]>) -> Self {
        let raw = |s: &'a str| serde_json::from_str::<&RawValue>(s).ok();
        Self {
            id: &p.id,
            object: "payment",
            merchant_order_id: &p.merchant_order_id,
            amount: p.amount,
            amount_refunded: p.amount_refunded,
            currency: &p.currency,
            description: &p.description,
            integration: p.integration.as_str(),
            status: p.status.as_str(),
            version: p.version,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            expires_at: rfc3339(p.expires_at),
            paid_at: p.paid_at.map(rfc3339),
            wechat: WechatView {
                out_trade_no: &p.out_trade_no,
                transaction_id: p.transaction_id.as_deref(),
                payer_amount: p
                    .payer_amount
                    .zip(p.payer_currency.as_deref())
                    .map(|(amount, currency)| AmountView { amount, currency }),
                exchange_rate: p.exchange_rate.map(rate_text),
            },
            payer: p.payer_openid.as_deref().map(|openid| PayerView { openid }),
            client_ip: p.client_ip.as_deref(),
            return_url: p.return_url.as_deref(),
            cancel_url: p.cancel_url.as_deref(),
            notify_url: p.notify_url.as_deref(),
            attach: p.attach.as_deref(),
            metadata: raw(&p.metadata),
            next_action: match (p.status, p.integration) {
                (PaymentStatus::Pending, PaymentIntegration::Hosted) => {
                    p.hosted_url.as_deref().map(|url| {
                        let action = NextAction::RedirectToUrl {
                            redirect_to_url: Redirect {
                                url: url.to_string(),
                                expires_at: rfc3339(p.expires_at),
                            },
                        };
                        std::borrow::Cow::Owned(
                            RawValue::from_string(action.to_stored()).expect("JSON is JSON"),
                        )
                    })
                }
                (PaymentStatus::Pending, _) => p
                    .wechat_credential
                    .as_deref()
                    .and_then(raw)
                    .map(std::borrow::Cow::Borrowed),
                _ => None,
            },
            hosted_url: p.hosted_url.as_deref(),
            status_history: history.map(|h| {
                h.iter()
                    .map(|h| HistoryView {
                        status: h.status.as_str(),
                        at: rfc3339(h.at),
                        source: &h.source,
                    })
                    .collect()
            }),
            attempts: None,
        }
    }
}

/// A refund. `last_error` says why a pending refund waits (for example WeChat's NOT_ENOUGH:
/// the merchant's balance is too low; it is retried) or why one failed; an `abnormal` refund
/// carries `next_step`.
#[derive(Serialize, ToSchema)]
#[schema(as = Refund)]
pub struct RefundView<'a> {
    id: &'a str,
    #[schema(example = "refund")]
    object: &'static str,
    payment_id: &'a str,
    merchant_refund_id: &'a str,
    amount: i64,
    currency: &'a str,
    reason: Option<&'a str>,
    status: &'a str,
    version: i64,
    last_error: Option<&'a str>,
    next_step: Option<&'static str>,
    wechat: RefundWechatView<'a>,
    created_at: String,
    updated_at: String,
    succeeded_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct RefundWechatView<'a> {
    out_refund_no: &'a str,
    refund_id: Option<&'a str>,
}

/// What a merchant does about an abnormal refund.
pub const ABNORMAL_NEXT_STEP: &str = "WeChat Pay could not return the money to the payer's account (closed or frozen card or account). Resolve it in the WeChat Pay merchant platform (Transactions > Refunds > abnormal refunds: refund to another account or to the merchant's balance); WeChat then reports the refund succeeded.";

impl<'a> RefundView<'a> {
    pub fn new(r: &'a RefundRow) -> Self {
        Self {
            id: &r.id,
            object: "refund",
            payment_id: &r.payment_id,
            merchant_refund_id: &r.merchant_refund_id,
            amount: r.amount,
            currency: &r.currency,
            reason: r.reason.as_deref(),
            status: r.status.as_str(),
            version: r.version,
            last_error: r.last_error.as_deref(),
            next_step: (r.status == RefundStatus::Abnormal).then_some(ABNORMAL_NEXT_STEP),
            wechat: RefundWechatView {
                out_refund_no: &r.out_refund_no,
                refund_id: r.wechat_refund_id.as_deref(),
            },
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            succeeded_at: r.succeeded_at.map(rfc3339),
        }
    }
}

pub fn refund(r: &RefundRow) -> Value {
    serde_json::to_value(RefundView::new(r)).expect("a refund view serialises")
}

/// Builds the `next_action` for a fresh prepay, signing client-side bundles with the merchant's
/// key. `expires_ms` is when the payment credential stops working; `api_url` is the payment's
/// own URL in the merchant API (its QR images hang below it).
pub fn next_action(
    up: &Upstream,
    prepaid: Prepaid,
    p: &PaymentRow,
    (now_ms, expires_ms): (i64, i64),
    api_url: &str,
) -> NextAction {
    let expires_at = rfc3339(expires_ms);
    let now_secs = now_ms / 1000;
    let nonce = wechatpay_v3::nonce(32);
    match prepaid {
        Prepaid::Native { code_url } => NextAction::DisplayQrCode {
            display_qr_code: QrCode {
                image_png_url: format!("{api_url}/qr.png"),
                image_svg_url: format!("{api_url}/qr.svg"),
                image_png_base64: None,
                image_svg: None,
                data: code_url,
                expires_at,
            },
        },
        Prepaid::H5 { h5_url } => {
            let url = match &p.return_url {
                Some(back) => format!(
                    "{h5_url}&redirect_url={}",
                    wechatpay_v3::model::query_value(back)
                ),
                None => h5_url,
            };
            NextAction::RedirectToUrl {
                redirect_to_url: Redirect { url, expires_at },
            }
        }
        Prepaid::Jsapi { prepay_id: id } => NextAction::InvokeJsapi {
            invoke_jsapi: JsapiPayParams::sign(
                &up.signing_key,
                &up.merchant.appid,
                &id,
                now_secs,
                &nonce,
            ),
            expires_at,
        },
        Prepaid::MiniProgram { prepay_id: id } => {
            let appid = mini_program_appid(up);
            NextAction::InvokeMiniProgram {
                invoke_mini_program: JsapiPayParams::sign(
                    &up.signing_key,
                    appid,
                    &id,
                    now_secs,
                    &nonce,
                )
                .for_mini_program(),
                expires_at,
            }
        }
        Prepaid::App { prepay_id: id } => NextAction::InvokeApp {
            invoke_app: AppPayParams::sign(
                &up.signing_key,
                &up.merchant.appid,
                &up.merchant.mchid,
                &id,
                now_secs,
                &nonce,
            ),
            expires_at,
        },
    }
}

/// A page of payments, newest first.
#[derive(Serialize, ToSchema)]
#[schema(as = PaymentList)]
pub struct ListView<'a> {
    #[schema(example = "list")]
    pub object: &'static str,
    pub data: Vec<PaymentView<'a>>,
    pub has_more: bool,
}

/// The outbox event for a payment as it is after a change: (event id, payload).
pub fn event_payload(p: &PaymentRow) -> (String, String) {
    (
        wxgate_domain::id::generate("evt"),
        payment(p, None).to_string(),
    )
}

/// The `payment.duplicate_paid` event (id, payload): the payment, and the order paid twice.
pub fn duplicate_event(
    p: &PaymentRow,
    out_trade_no: &str,
    transaction_id: &str,
) -> (String, String) {
    let mut value = payment(p, None);
    value["duplicate"] = json!({
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id,
        "refunded": true,
    });
    (wxgate_domain::id::generate("evt"), value.to_string())
}

/// The appid a Mini Program's payment is signed for: its own, or the merchant's.
fn mini_program_appid(up: &Upstream) -> &str {
    up.merchant.mini_program_appid_or_own()
}
