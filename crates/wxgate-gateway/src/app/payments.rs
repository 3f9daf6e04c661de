//! Payments: create (or find by `merchant_order_id`) and prepay, read, list, cancel.

use std::collections::BTreeMap;
use wxgate_domain::id::{MerchantId, PaymentId};

use serde_json::json;
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode as WechatCode;
use wechatpay_v3::model::{Amount, H5Info, Payer, PrepayRequest, SceneInfo};
use wxgate_domain::door::Door;
use wxgate_domain::payment::PaymentEvent;
use wxgate_domain::payment::{ATTEMPTS_PER_PAYMENT_MAX, AttemptStatus};
use wxgate_domain::{Currency, Integration, Money, PaymentIntegration, PaymentStatus};
use wxgate_store::{
    AttemptStart, HistoryRow, InsertOutcome, MerchantRow, PaymentAttemptRow, PaymentFilter,
    PaymentRow, StoreError, TransitionFacts,
};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::next_action::NextAction;
use crate::upstream::Upstream;
use crate::views;

/// A payment's WeChat credentials (code_url, prepay_id) work for two hours; so does a payment.
pub const PAYMENT_LIFETIME_MAX_MS: i64 = 2 * 3600 * 1000;
/// The shortest lifetime WeChat honours.
pub const PAYMENT_LIFETIME_MIN_MS: i64 = 60 * 1000;
/// An h5_url works for five minutes.
pub const H5_URL_LIFETIME_MS: i64 = 5 * 60 * 1000;

/// A payment to create, every value already checked at the edge.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub money: Money,
    pub merchant_order_id: String,
    pub description: String,
    /// A WeChat product, or hosted: the checkout page picks the product by the shopper's
    /// device.
    pub integration: PaymentIntegration,
    pub openid: Option<String>,
    pub client_ip: Option<String>,
    pub expires_at: i64,
    pub return_url: Option<String>,
    pub cancel_url: Option<String>,
    pub notify_url: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub attach: Option<String>,
    /// The payment link it is made through.
    pub payment_link_id: Option<String>,
    /// The front door it is made through: its notify_url hears that door's notification,
    /// signed with the door's credential (not the notify secret).
    pub door: Option<Door>,
}

impl NewPayment {
    /// The parameters that must match for a re-post of the same merchant_order_id to be the
    /// same payment (expiry is left out: a retry computes it afresh).
    fn fingerprint(&self) -> String {
        let canonical = json!([
            self.money.minor(),
            self.money.currency().code(),
            self.merchant_order_id,
            self.description,
            self.integration.as_str(),
            self.openid,
            self.client_ip,
            self.return_url,
            self.cancel_url,
            self.notify_url,
            self.metadata,
            self.attach,
            self.door.map(Door::as_str)
        ]);
        crate::secrets::sha256_hex(canonical.to_string().as_bytes())
    }
}

/// A payment as it is now, with its status history and its WeChat orders.
pub struct PaymentState {
    pub payment: PaymentRow,
    pub history: Vec<HistoryRow>,
    pub attempts: Vec<PaymentAttemptRow>,
}

impl PaymentState {
    /// The state once `Store::set_attempt_credential` has stored `credential`: on the current
    /// order and on the payment.
    fn record(&mut self, credential: Credential) {
        let current = &self.payment.out_trade_no;
        for attempt in self
            .attempts
            .iter_mut()
            .filter(|a| &a.out_trade_no == current)
        {
            attempt.wechat_credential = Some(credential.stored.clone());
            attempt.updated_at = credential.at;
        }
        self.payment.wechat_credential = Some(credential.stored);
        self.payment.updated_at = credential.at;
    }
}

/// A prepay's answer as stored: the `next_action` built from it, and when it was stored.
pub struct Credential {
    stored: String,
    at: i64,
}

/// What a create did: made a new payment, or found the one with the same merchant_order_id.
pub struct Created {
    pub state: PaymentState,
    pub new: bool,
}

/// Creates (or finds, by merchant_order_id) a payment and prepays it; a hosted payment is
/// prepaid later, when its checkout page first opens, as the shopper's device needs.
pub async fn create(gw: &Gateway, merchant: &MerchantRow, new: NewPayment) -> ApiResult<Created> {
    let now = gw.now_ms();
    if new.notify_url.is_some() && new.door.is_none() {
        require_notify_secret(gw, &merchant.id).await?;
    }
    let row = new_row(gw, merchant, &new, now);
    // A new payment's detail is what the insert wrote: the answer is built from it, not read
    // back.
    let detail = match gw.store().insert_payment(&row).await? {
        InsertOutcome::Inserted(detail) => detail,
        InsertOutcome::Existing(existing) => {
            return create_again(gw, merchant, &row, *existing, now).await;
        }
    };
    let mut state = PaymentState {
        payment: row,
        history: detail.history,
        attempts: detail.attempts,
    };
    if let Some(integration) = new.integration.product() {
        let credential = prepay(gw, merchant, &state.payment, integration, now).await?;
        state.record(credential);
    }
    Ok(Created { state, new: true })
}

/// A create whose merchant_order_id the merchant already used for `existing`: the same payment
/// when the parameters are the same (prepaid again if its prepay never completed), else an
/// error.
async fn create_again(
    gw: &Gateway,
    merchant: &MerchantRow,
    asked: &PaymentRow,
    existing: PaymentRow,
    now: i64,
) -> ApiResult<Created> {
    if existing.fingerprint != asked.fingerprint {
        return Err(ApiError::invalid(
            ErrorCode::MerchantOrderIdTaken,
            "merchant_order_id",
            format!(
                "merchant_order_id {} is already used by payment {} with other parameters",
                existing.merchant_order_id, existing.id
            ),
        ));
    }
    // Unless it is finished, already prepaid, or too close to its expiry for WeChat to take it
    // (status sync will close and expire it), a pending payment whose prepay never completed
    // asks WeChat again (same out_trade_no).
    let unfinished = existing.status == PaymentStatus::Pending
        && existing.wechat_credential.is_none()
        && existing.expires_at > now + PAYMENT_LIFETIME_MIN_MS;
    if unfinished && let Some(integration) = existing.integration.product() {
        prepay(gw, merchant, &existing, integration, now).await?;
    }
    let (merchant_id, payment_id) = crate::app::stored_ids(&existing);
    let state = get(gw, &merchant_id, &payment_id).await?;
    Ok(Created { state, new: false })
}

/// When a payment's status sync first looks at WeChat, `now` being when its order is made.
fn first_sync_at(gw: &Gateway, now: i64, expires_at: i64) -> i64 {
    let first = gw.config().sync_schedule_ms.first().copied();
    (now + first.unwrap_or(5_000)).min(expires_at)
}

fn new_row(gw: &Gateway, merchant: &MerchantRow, new: &NewPayment, now: i64) -> PaymentRow {
    let id = wxgate_domain::id::generate("pay");
    let checkout_token = wxgate_domain::id::generate("cs");
    // A hosted payment has no order at WeChat until its payer chooses a device (which brings
    // its sync forward, `start_attempt`): until then there is nothing to ask but its expiry.
    let sync_due_at = match new.integration {
        PaymentIntegration::Hosted => new.expires_at,
        PaymentIntegration::Product(_) => first_sync_at(gw, now, new.expires_at),
    };
    PaymentRow {
        out_trade_no: id.clone(),
        id,
        merchant_id: merchant.id.clone(),
        merchant_order_id: new.merchant_order_id.clone(),
        amount: new.money.minor(),
        currency: new.money.currency().code().to_string(),
        description: new.description.clone(),
        integration: new.integration,
        status: PaymentStatus::Pending,
        version: 1,
        fingerprint: new.fingerprint(),
        payer_openid: new.openid.clone(),
        client_ip: new.client_ip.clone(),
        return_url: new.return_url.clone(),
        cancel_url: new.cancel_url.clone(),
        attach: new.attach.clone(),
        metadata: serde_json::to_string(&new.metadata).expect("a string map serialises"),
        expires_at: new.expires_at,
        created_at: now,
        updated_at: now,
        sync_due_at: Some(sync_due_at),
        notify_url: new.notify_url.clone(),
        hosted_url: Some(format!(
            "{}/checkout/{checkout_token}",
            gw.config().public_base_url.trim_end_matches('/')
        )),
        checkout_token: Some(checkout_token),
        payment_link_id: new.payment_link_id.clone(),
        door: new.door.map(|d| d.as_str().to_string()),
        ..Default::default()
    }
}

/// A payment of the merchant's, with its history, in one query.
pub async fn get(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &PaymentId,
) -> ApiResult<PaymentState> {
    let (payment, history, attempts) = gw
        .store()
        .payment_detail(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    Ok(PaymentState {
        payment,
        history,
        attempts,
    })
}

/// A page of the merchant's payments, newest first; `has_more` when more follow.
pub async fn list(
    gw: &Gateway,
    merchant_id: &str,
    filter: PaymentFilter,
) -> ApiResult<(Vec<PaymentRow>, bool)> {
    let limit = filter.limit;
    let mut rows = gw
        .store()
        .list_payments(
            merchant_id,
            &PaymentFilter {
                limit: limit + 1,
                ..filter
            },
        )
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, has_more))
}

/// Asks WeChat for the payment credential as `integration` and stores the `next_action` built
/// from it (for a hosted payment, what its checkout page shows); answers what it stored.
pub async fn prepay(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    integration: Integration,
    now: i64,
) -> ApiResult<Credential> {
    let up = gw
        .upstream(&merchant.id)
        .await
        .map_err(|e| ApiError::internal("cannot open the merchant's WeChat connection", e))?;
    let req = prepay_request(gw, merchant, p, integration);
    let prepaid = match up.prepay(integration, req).await {
        Ok(prepaid) => prepaid,
        Err(e) => return Err(upstream_failure(gw, merchant, p, e, now).await),
    };
    let credential_expires = match integration {
        Integration::H5 => (now + H5_URL_LIFETIME_MS).min(p.expires_at),
        _ => p.expires_at,
    };
    let api_url = format!(
        "{}/v1/payments/{}",
        gw.config().public_base_url.trim_end_matches('/'),
        p.id
    );
    let action = views::next_action(&up, prepaid, p, (now, credential_expires), &api_url);
    let credential = Credential {
        stored: action.to_stored(),
        at: gw.now_ms(),
    };
    let stored = gw
        .store()
        .set_attempt_credential(
            &p.merchant_id,
            &p.id,
            &p.out_trade_no,
            &credential.stored,
            credential.at,
        )
        .await?;
    if !stored {
        return Err(ended_meanwhile(&up, p).await);
    }
    Ok(credential)
}

/// What WeChat is asked to make for order `p.out_trade_no` as `integration`.
fn prepay_request(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    integration: Integration,
) -> PrepayRequest {
    let appid = match integration {
        Integration::MiniProgram => merchant.mini_program_appid_or_own().to_string(),
        _ => merchant.appid.clone(),
    };
    PrepayRequest {
        appid,
        mchid: merchant.mchid.clone(),
        description: p.description.clone(),
        out_trade_no: p.out_trade_no.clone(),
        time_expire: Some(wechat_time(p.expires_at)),
        attach: p.attach.clone(),
        notify_url: gw.notify_url(&merchant.id),
        amount: Amount {
            total: p.amount,
            currency: Some(p.currency.clone()),
        },
        payer: p.payer_openid.clone().map(|openid| Payer { openid }),
        scene_info: p.client_ip.clone().map(|ip| SceneInfo {
            payer_client_ip: Some(ip),
            h5_info: (integration == Integration::H5).then(|| H5Info {
                kind: "Wap".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The payment ended (cancelled, expired, or paid by another of its orders) while this order
/// was being made at WeChat: the order is closed there, so it is not left payable on an ended
/// payment, and the caller told so.
async fn ended_meanwhile(up: &Upstream, p: &PaymentRow) -> ApiError {
    if let Err(e) = crate::app::orders::close_order(up, &p.out_trade_no).await {
        tracing::warn!(payment = %p.id, out_trade_no = %p.out_trade_no, error = %e, "an order made after its payment ended could not be closed; if it is paid, its callback or the day's reconciliation shows it");
    }
    ApiError::new(
        ErrorCode::PaymentNotPending,
        "the payment ended while its WeChat order was being made; that order was closed",
    )
}

/// Makes a new WeChat order for a pending payment as `integration` (another device in the
/// hosted checkout, or a fresh credential after the last one expired) and prepays it; `order`
/// adjusts what the order carries (the shopper's address, where H5 returns). The earlier
/// orders stay open: whichever is paid first pays the payment, and the others are then closed.
/// When the current order is already this product and never got its credential, it is
/// prepaid again instead (same out_trade_no, which WeChat treats as the same order).
pub async fn start_attempt(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    integration: Integration,
    order: impl FnOnce(PaymentRow) -> PaymentRow,
) -> ApiResult<PaymentRow> {
    let now = gw.now_ms();
    // The current order for this product never got its credential (WeChat did not answer):
    // ask again for the same order rather than leave it and make another.
    let current = p
        .checkout_kind
        .as_deref()
        .and_then(Integration::parse)
        .or(p.integration.product());
    if current == Some(integration) && p.wechat_credential.is_none() {
        prepay(gw, merchant, &order(p.clone()), integration, now).await?;
        return gw
            .store()
            .payment(&p.merchant_id, &p.id)
            .await?
            .ok_or_else(|| ApiError::not_found("payment"));
    }
    let sync_by = first_sync_at(gw, now, p.expires_at);
    let attempt = match gw
        .store()
        .start_attempt(p, integration, now, sync_by)
        .await?
    {
        AttemptStart::Started(a) => a,
        AttemptStart::NotPending => {
            return Err(ApiError::new(
                ErrorCode::PaymentNotPending,
                "the payment is no longer pending",
            ));
        }
        AttemptStart::TooMany => {
            return Err(ApiError::new(
                ErrorCode::TooManyAttempts,
                format!("a payment makes at most {ATTEMPTS_PER_PAYMENT_MAX} WeChat orders"),
            ));
        }
    };
    let current = order(PaymentRow {
        out_trade_no: attempt.out_trade_no.clone(),
        ..p.clone()
    });
    prepay(gw, merchant, &current, integration, now).await?;
    gw.store()
        .payment(&p.merchant_id, &p.id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))
}

/// A payment's WeChat orders, oldest first.
pub async fn attempts(gw: &Gateway, p: &PaymentRow) -> ApiResult<Vec<PaymentAttemptRow>> {
    Ok(gw.store().payment_attempts(&p.id).await?)
}

fn wechat_time(ms: i64) -> String {
    // WeChat wants an offset; +08:00 is what it writes itself.
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a valid time formats")
}

/// WeChat did not give a credential. A refusal ends the order it refused (see
/// [`refused_order`]); anything that may succeed later leaves the payment pending (status sync
/// will find out what WeChat has) and says so.
async fn upstream_failure(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    e: ClientError,
    now: i64,
) -> ApiError {
    if let ClientError::Api(api) = &e
        && !api.is_retryable()
        && !matches!(api.code, WechatCode::OrderPaid | WechatCode::OrderClosed)
    {
        tracing::warn!(payment = %p.id, code = %api.code, message = %api.message, "WeChat refused a prepay");
        let still_payable = match refused_order(gw, merchant, p, now).await {
            Ok(still_payable) => still_payable,
            Err(e) => return e,
        };
        let after = if still_payable {
            "; the payment stays pending, payable by its other WeChat orders"
        } else {
            ""
        };
        return ApiError::new(
            ErrorCode::UpstreamRejected,
            format!(
                "WeChat Pay refused the payment: {} {}{after}",
                api.code, api.message
            ),
        );
    }
    tracing::warn!(payment = %p.id, error = %e, "WeChat prepay did not complete; status sync will follow up");
    ApiError::new(
        ErrorCode::UpstreamUnavailable,
        format!(
            "WeChat Pay did not answer in time; payment {} stays pending; retry the same request",
            p.id
        ),
    )
}

/// WeChat refused the prepay of the payment's current order, so it holds no such order. While
/// the payment has other open orders (an earlier device of its hosted checkout), only this one
/// is closed and the payment stays payable by them (`true`): failing it would leave those
/// payable at WeChat on a failed payment. Otherwise the payment fails (`false`).
async fn refused_order(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    now: i64,
) -> Result<bool, ApiError> {
    let others_open = !crate::app::orders::other_open_attempts(gw, p)
        .await?
        .is_empty();
    if others_open {
        gw.store()
            .close_attempt(&p.merchant_id, &p.out_trade_no, now)
            .await?;
        return Ok(true);
    }
    let facts = TransitionFacts {
        now,
        source: "prepay_refused".into(),
        ..Default::default()
    };
    let failed = gw
        .store()
        .transition(
            &merchant.id,
            &p.id,
            PaymentEvent::Failed,
            &facts,
            crate::views::event_payload,
        )
        .await;
    // A payment that moved on meanwhile keeps its state; anything else is a storage failure.
    match failed {
        Err(store_error) if !matches!(store_error, StoreError::Transition(_)) => {
            Err(ApiError::from(store_error))
        }
        _ => Ok(false),
    }
}

/// Cancels a pending payment: closed at WeChat first, then confirmed by a query.
pub async fn cancel(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &PaymentId,
) -> ApiResult<PaymentState> {
    let p = get(gw, merchant_id, id).await?.payment;
    if p.status != PaymentStatus::Pending {
        return Err(not_cancellable(&format!(
            "a {} payment cannot be cancelled",
            p.status
        )));
    }
    let p = match crate::app::orders::close_and_settle(gw, merchant_id, &p, PaymentEvent::Cancelled)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            // The payment may have changed meanwhile (paid, expired): that is the answer.
            let now = get(gw, merchant_id, id).await?.payment;
            if now.status == PaymentStatus::Pending {
                tracing::warn!(payment = %p.id, error = %e, "cancel could not reach WeChat");
                return Err(ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "WeChat Pay did not confirm the close; retry",
                ));
            }
            now
        }
    };
    if p.status != PaymentStatus::Cancelled {
        return Err(not_cancellable(&format!(
            "the payment was {} before it could be cancelled",
            p.status
        )));
    }
    get(gw, merchant_id, id).await
}

fn not_cancellable(message: &str) -> ApiError {
    ApiError::new(ErrorCode::PaymentNotCancellable, message)
}

/// An ISO 4217 code among the merchant's pricing currencies.
pub fn merchant_currency(merchant: &MerchantRow, code: &str) -> ApiResult<Currency> {
    let currency = Currency::parse(code)
        .map_err(|e| ApiError::invalid(ErrorCode::InvalidCurrency, "currency", e.to_string()))?;
    if !merchant.currencies.split(',').any(|c| c == currency.code()) {
        return Err(ApiError::invalid(
            ErrorCode::CurrencyNotAllowed,
            "currency",
            format!(
                "this merchant accepts {}, not {}",
                merchant.currencies,
                currency.code()
            ),
        ));
    }
    Ok(currency)
}

/// The merchant's payment with this merchant_order_id.
pub async fn by_merchant_order_id(
    gw: &Gateway,
    merchant_id: &str,
    merchant_order_id: &str,
) -> ApiResult<Option<PaymentRow>> {
    Ok(gw
        .store()
        .payment_by_order_id(merchant_id, merchant_order_id)
        .await?)
}

/// Learns a hosted payment's payer from a webpage-authorization `code`. Only a payment still
/// pending and not yet knowing its payer asks WeChat; for any other the code is not used.
pub async fn learn_payer(gw: &Gateway, p: &PaymentRow, code: &str) -> ApiResult<()> {
    if !p.status.is_pending() || p.payer_openid.is_some() {
        return Ok(());
    }
    let refused = "WeChat did not confirm who is paying; reopen the page";
    let openid = authorized_openid(gw, &p.merchant_id, code, refused).await?;
    gw.store()
        .set_payer_openid(&p.id, &openid, gw.now_ms())
        .await?;
    Ok(())
}

/// The openid WeChat gives for a webpage-authorization `code` of the merchant's app: a code
/// WeChat refuses (made up, expired, used) is the caller's 400 `authorization_code_refused`;
/// any other failure (the merchant's set-up, the call) a 502 `authorization_failed`; either
/// says `refused` to the browser.
pub async fn authorized_openid(
    gw: &Gateway,
    merchant_id: &str,
    code: &str,
    refused: &str,
) -> ApiResult<String> {
    let asked = async { gw.upstream(merchant_id).await?.openid_for_code(code).await }.await;
    asked.map_err(|e| {
        tracing::warn!(merchant_id, error = %e, "webpage authorization failed");
        let code = if e.downcast_ref::<crate::upstream::CodeRefused>().is_some() {
            ErrorCode::AuthorizationCodeRefused
        } else {
            ErrorCode::AuthorizationFailed
        };
        ApiError::new(code, refused)
    })
}

/// The payment behind a hosted checkout page's token.
pub async fn by_checkout_token(gw: &Gateway, token: &str) -> ApiResult<Option<PaymentRow>> {
    Ok(gw.store().payment_by_checkout_token(token).await?)
}

/// A `notify_url` is signed with the merchant's notify secret, which must exist first.
pub async fn require_notify_secret(gw: &Gateway, merchant_id: &str) -> ApiResult<()> {
    if gw.store().notify_secret(merchant_id).await?.is_none() {
        return Err(ApiError::invalid(
            ErrorCode::NotifySecretMissing,
            "notify_url",
            "create the merchant's notify secret (POST /v1/notify_secret) before using notify_url",
        ));
    }
    Ok(())
}

/// WeChat's rule for a description: 1 to 127 characters.
pub fn check_description(description: &str) -> ApiResult<()> {
    wechatpay_v3::validate::description("description", description).map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidDescription,
            "description",
            format!("description {}", e.issue),
        )
    })
}

/// An open order of the payment for `integration` whose credential still works.
pub async fn usable_attempt(
    gw: &Gateway,
    p: &PaymentRow,
    integration: Integration,
) -> ApiResult<Option<PaymentAttemptRow>> {
    let now = gw.now_ms();
    let attempts = attempts(gw, p).await?;
    Ok(attempts.into_iter().rev().find(|a| {
        a.status == AttemptStatus::Open
            && a.integration == integration
            && a.wechat_credential
                .as_deref()
                .and_then(NextAction::from_stored)
                .and_then(|action| action.expires_ms())
                .is_some_and(|until| until > now)
    }))
}

/// The code_url of a pending native payment of the merchant's.
pub async fn qr_code_url(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &PaymentId,
) -> ApiResult<String> {
    let p = gw
        .store()
        .payment(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let data = (p.status == PaymentStatus::Pending)
        .then_some(p.wechat_credential.as_deref())
        .flatten()
        .and_then(NextAction::from_stored)
        .and_then(|action| action.code_url().map(str::to_string));
    data.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoQrCode,
            "only a pending native payment has a QR code",
        )
    })
}
