//! Refunds: create (check, reserve, submit), WeChat's refund callbacks, the background work
//! that submits again and queries, and the automatic refunds (paid after close, paid twice).
//!
//! A refund's amount is reserved on the payment in the same transaction that writes it, under
//! WeChat's rules, before WeChat is called; so concurrent refunds can never add up to more than
//! was paid. It goes to WeChat with its own `out_refund_no`, the same on every retry, so a retry
//! never makes a second refund. What WeChat says (answer, callback, query) is cross-checked
//! against the refund before it is applied.

use serde_json::json;
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode as WechatCode;
use wechatpay_v3::model::{Refund, RefundAmountRequest, RefundRequest, RefundStatus as WxStatus};
use wechatpay_v3::validate;
use wxgate_domain::id::{MerchantId, PaymentId};
use wxgate_domain::refund::{
    self, ABNORMAL_QUERY_INTERVAL_MS, RefundEvent, RefundStatus, Refundable,
};
use wxgate_domain::{PaidAfterClosePolicy, PaymentStatus, id};
use wxgate_store::{
    Flag, PaymentRow, RefundFacts, RefundNote, RefundRow, RefundTransitionOutcome, ReserveOutcome,
    StoreError,
};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::secrets::sha256_hex;
use crate::views;

/// Paid-after-close payments whose automatic refund is started per background round.
const AUTO_REFUND_BATCH: i64 = 32;
/// WeChat shows the payer a refund's reason of at most this many characters.
const REASON_CHARS_MAX: usize = 80;

/// A refund to make.
#[derive(Debug, Clone)]
pub struct NewRefund {
    /// In the payment's minor unit; by default all that is not refunded yet.
    pub amount: Option<i64>,
    /// Unique per merchant: posting it again with the same parameters returns the same refund.
    pub merchant_refund_id: String,
    /// Shown to the payer; at most 80 characters.
    pub reason: Option<String>,
}

fn refund_event_payload(r: &RefundRow) -> (String, String) {
    (id::generate("evt"), views::refund(r).to_string())
}

fn refusal(e: refund::RefundRefusal) -> ApiError {
    use refund::RefundRefusal as R;
    let code = match e {
        R::PaymentNotRefundable(_) => ErrorCode::PaymentNotRefundable,
        R::RefundWindowClosed => ErrorCode::RefundWindowClosed,
        R::TooManyRefunds => ErrorCode::TooManyRefunds,
        R::ExceedsPayment { .. } => ErrorCode::RefundExceedsPayment,
        R::InvalidAmount => ErrorCode::InvalidAmount,
    };
    let mut error = ApiError::new(code, e.to_string());
    if matches!(
        e,
        refund::RefundRefusal::InvalidAmount | refund::RefundRefusal::ExceedsPayment { .. }
    ) {
        error = error.with_param("amount");
    }
    error
}

fn refundable(p: &PaymentRow) -> Refundable {
    Refundable {
        status: p.status,
        paid_at: p.paid_at,
        amount: p.amount,
        reserved: p.amount_reserved,
        refund_count: p.refund_count,
    }
}

/// How the merchant_refund_ids of the gateway's own refunds begin: the refund of an order paid
/// twice, and of a payment made after its order closed. A merchant's own id may not begin so,
/// so that the two never meet (one taken first would stop the other from being written).
const DUPLICATE_REFUND_PREFIX: &str = "dup_";
const PAID_AFTER_CLOSE_REFUND_PREFIX: &str = "pac_";

/// A merchant's refund (whichever door it comes through): checked, reserved and submitted.
/// 201 with a new refund; 200 with the existing one when the merchant_refund_id was used
/// before with the same parameters.
pub async fn create(
    gw: &Gateway,
    merchant_id: &MerchantId,
    payment_id: &PaymentId,
    new: NewRefund,
) -> ApiResult<(Made, RefundRow)> {
    let id = &new.merchant_refund_id;
    if [DUPLICATE_REFUND_PREFIX, PAID_AFTER_CLOSE_REFUND_PREFIX]
        .iter()
        .any(|prefix| id.starts_with(prefix))
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidMerchantRefundId,
            "merchant_refund_id",
            format!(
                "merchant_refund_id may not begin with {DUPLICATE_REFUND_PREFIX} or \
                 {PAID_AFTER_CLOSE_REFUND_PREFIX}: those are the gateway's own refunds"
            ),
        ));
    }
    make(gw, merchant_id, payment_id, new).await
}

/// Checks, reserves and submits a refund, the merchant's or the gateway's own.
async fn make(
    gw: &Gateway,
    merchant_id: &MerchantId,
    payment_id: &PaymentId,
    new: NewRefund,
) -> ApiResult<(Made, RefundRow)> {
    check_new(&new)?;
    let fingerprint = sha256_hex(
        json!([payment_id, new.amount, new.reason])
            .to_string()
            .as_bytes(),
    );
    if let Some(existing) = gw
        .store()
        .refund_by_merchant_refund_id(merchant_id, &new.merchant_refund_id)
        .await?
    {
        return same_or_taken(existing, payment_id, &fingerprint);
    }
    let p = gw
        .store()
        .payment(merchant_id, payment_id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let now = gw.now_ms();
    let amount = amount_to_refund(&p, new.amount, now)?;
    let row = new_row(
        gw,
        &p,
        new.merchant_refund_id,
        amount,
        new.reason,
        fingerprint.clone(),
        None,
    );
    let row = match gw.store().reserve_refund(&row).await? {
        ReserveOutcome::Reserved(r) => *r,
        ReserveOutcome::Existing(existing) => {
            return same_or_taken(*existing, payment_id, &fingerprint);
        }
        ReserveOutcome::Refused(now_p) => {
            // Another refund got there first; the rules, on the payment as it is now, say why.
            return Err(refusal(
                refund::check(&refundable(&now_p), amount, now)
                    .err()
                    .unwrap_or(refund::RefundRefusal::ExceedsPayment {
                        would_be: now_p.amount_reserved + amount,
                        paid: now_p.amount,
                    }),
            ));
        }
    };
    let after = match submit(gw, &p, &row).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(refund = %row.id, error = %e, "refund submission failed; it will be retried");
            gw.store()
                .refund(merchant_id, &row.id)
                .await?
                .unwrap_or(row)
        }
    };
    Ok((Made::New, after))
}

/// Whether a create made a new refund or found the one with its merchant_refund_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    New,
    Existing,
}

/// The refund's own fields, checked before anything is looked up.
fn check_new(new: &NewRefund) -> ApiResult<()> {
    validate::out_refund_no("merchant_refund_id", &new.merchant_refund_id).map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidMerchantRefundId,
            "merchant_refund_id",
            format!("merchant_refund_id {}", e.issue),
        )
    })?;
    if let Some(reason) = &new.reason
        && (reason.is_empty() || reason.chars().count() > REASON_CHARS_MAX)
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidReason,
            "reason",
            format!("reason must be 1 to {REASON_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

/// The refund of the same merchant_refund_id made before: the same refund if it had the same
/// parameters, otherwise a named refusal.
fn same_or_taken(
    existing: RefundRow,
    payment_id: &str,
    fingerprint: &str,
) -> ApiResult<(Made, RefundRow)> {
    if existing.payment_id == payment_id && existing.fingerprint == fingerprint {
        return Ok((Made::Existing, existing));
    }
    Err(ApiError::invalid(
        ErrorCode::MerchantRefundIdTaken,
        "merchant_refund_id",
        "this merchant_refund_id was used for a different refund",
    ))
}

/// The amount asked for, or by default all that is not refunded or being refunded; checked
/// against WeChat's rules on the payment as it is.
fn amount_to_refund(p: &PaymentRow, asked: Option<i64>, now: i64) -> ApiResult<i64> {
    let amount = asked.unwrap_or(p.amount - p.amount_reserved);
    if asked.is_none() && amount <= 0 {
        // The rest was asked for and nothing is left: say that, unless another rule speaks first.
        refund::check(&refundable(p), 1, now).map_err(refusal)?;
        return Err(ApiError::new(
            ErrorCode::RefundExceedsPayment,
            "the payment has nothing left to refund",
        ));
    }
    refund::check(&refundable(p), amount, now).map_err(refusal)?;
    Ok(amount)
}

/// A refund of `amount` from the payment `p` (or from its twice-paid order `attempt`), not yet
/// sent.
fn new_row(
    gw: &Gateway,
    p: &PaymentRow,
    merchant_refund_id: String,
    amount: i64,
    reason: Option<String>,
    fingerprint: String,
    attempt: Option<String>,
) -> RefundRow {
    let now = gw.now_ms();
    let refund_id = id::generate("re");
    RefundRow {
        out_refund_no: refund_id.clone(),
        id: refund_id,
        merchant_id: p.merchant_id.clone(),
        payment_id: p.id.clone(),
        merchant_refund_id,
        amount,
        currency: p.currency.clone(),
        reason,
        status: RefundStatus::Pending,
        version: 1,
        fingerprint,
        submitted: Flag::NO,
        wechat_refund_id: None,
        last_error: None,
        created_at: now,
        updated_at: now,
        succeeded_at: None,
        // Should this process die before WeChat answers, the background work takes it over;
        // not before this request's own call could have ended.
        sync_due_at: Some(now + first_wait(gw) + gw.call_window_ms()),
        sync_attempts: 0,
        claimed_until: None,
        attempt_out_trade_no: attempt,
    }
}

/// The refund, in full, of an order of the payment that was paid after another order had
/// already paid it (the shopper paid twice): written with the order's duplicate mark, in one
/// transaction, so that no order is ever marked without its refund. Its merchant_refund_id is
/// derived from the order: one refund per order, however often the order is found.
pub fn duplicate_refund(gw: &Gateway, p: &PaymentRow, out_trade_no: &str) -> RefundRow {
    let merchant_refund_id = format!("{DUPLICATE_REFUND_PREFIX}{out_trade_no}");
    let fingerprint = sha256_hex(json!([p.id, out_trade_no, p.amount]).to_string().as_bytes());
    let reason = Some("Paid twice: this payment was refunded".to_string());
    let order = Some(out_trade_no.to_string());
    new_row(
        gw,
        p,
        merchant_refund_id,
        p.amount,
        reason,
        fingerprint,
        order,
    )
}

/// Sends the refund of a twice-paid order (`row`, as [`duplicate_refund`] made it for the
/// order's mark) to WeChat, unless it was sent already (the background round sees a sent one
/// through, and takes over an unsent one if this fails).
pub async fn refund_duplicate(
    gw: &Gateway,
    p: &PaymentRow,
    row: &RefundRow,
) -> anyhow::Result<RefundRow> {
    let row = match gw.store().reserve_refund(row).await? {
        ReserveOutcome::Reserved(r) => *r,
        ReserveOutcome::Existing(existing)
            if existing.status == RefundStatus::Pending && !existing.submitted.is_set() =>
        {
            *existing
        }
        ReserveOutcome::Existing(existing) => return Ok(*existing),
        ReserveOutcome::Refused(_) => anyhow::bail!("the refund of a twice-paid order was refused"),
    };
    match submit(gw, p, &row).await {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::warn!(refund = %row.id, error = %e, "refund of a twice-paid order failed; it will be retried");
            Ok(row)
        }
    }
}

fn first_wait(gw: &Gateway) -> i64 {
    gw.config()
        .sync_schedule_ms
        .first()
        .copied()
        .unwrap_or(5_000)
}

fn next_due(gw: &Gateway, attempts: i64, now: i64) -> i64 {
    let schedule = &gw.config().sync_schedule_ms;
    now + schedule
        .get((attempts as usize).min(schedule.len().saturating_sub(1)))
        .copied()
        .unwrap_or(60_000)
}

/// Why a refund WeChat did not take waits to be sent again: NOT_ENOUGH, rate limits, no answer,
/// or an answer that could not be verified or read (any of which may hide an accepted refund:
/// it is queried). `None` when WeChat plainly refused it (a 4xx business error) or the request
/// never left (it did not pass the field rules): then it fails.
fn why_it_waits(e: &ClientError, r: &RefundRow) -> Option<String> {
    match e {
        ClientError::Api(api) if api.code == WechatCode::NotEnough => Some(format!(
            "NOT_ENOUGH: the merchant's WeChat Pay balance cannot cover this refund yet; it is sent again automatically ({})",
            api.message
        )),
        ClientError::Api(api) if api.code == WechatCode::FrequencyLimited => {
            Some("FREQUENCY_LIMITED: WeChat Pay asked to slow down; it is sent again later".into())
        }
        ClientError::Api(api) if api.is_retryable() || api.status >= 500 => Some(format!(
            "WeChat Pay answered {} {}; it is queried and sent again later",
            api.status, api.code
        )),
        ClientError::Api(_) | ClientError::Invalid(_) => None,
        other => {
            tracing::warn!(refund = %r.id, error = %other, "refund: no usable answer from WeChat");
            Some("WeChat Pay did not answer; it is queried and sent again later".into())
        }
    }
}

/// Why WeChat's plain refusal failed a refund, for its `last_error`.
fn refused_because(e: &ClientError) -> String {
    match e {
        ClientError::Api(api) => format!("WeChat Pay refused: {} {}", api.code, api.message),
        ClientError::Invalid(field) => format!("the refund request is invalid: {field}"),
        _ => "WeChat Pay refused the refund".to_string(),
    }
}

/// The WeChat order a refund returns money from: the payment's (the order that paid it), or,
/// for the refund of an order paid twice, that order.
fn refunded_order<'a>(p: &'a PaymentRow, r: &'a RefundRow) -> &'a str {
    r.attempt_out_trade_no.as_deref().unwrap_or(&p.out_trade_no)
}

/// Sends the refund to WeChat (again, with the same out_refund_no, when retried) and applies
/// the answer. A refusal WeChat may lift later (NOT_ENOUGH, rate limits, WeChat unreachable)
/// leaves it pending with the reason, to be sent again; any other refusal fails it.
async fn submit(gw: &Gateway, p: &PaymentRow, r: &RefundRow) -> anyhow::Result<RefundRow> {
    let up = gw.upstream(&r.merchant_id).await?;
    let req = RefundRequest {
        out_trade_no: Some(refunded_order(p, r).to_string()),
        out_refund_no: r.out_refund_no.clone(),
        reason: r.reason.clone(),
        notify_url: Some(gw.notify_url(&r.merchant_id)),
        amount: RefundAmountRequest {
            refund: r.amount,
            total: p.amount,
            currency: p.currency.clone(),
            from: None,
        },
        ..Default::default()
    };
    let now = gw.now_ms();
    match up.refund(&req).await {
        Ok(answer) => apply_answer(gw, p, r, &answer, "submit").await,
        Err(e) => {
            let waits = why_it_waits(&e, r);
            match waits {
                Some(why) => {
                    gw.store()
                        .note_refund_attempt(
                            &r.id,
                            &RefundNote {
                                submitted: false,
                                wechat_refund_id: None,
                                last_error: Some(&why),
                                next_due: Some(next_due(gw, r.sync_attempts, now)),
                                attempts: r.sync_attempts + 1,
                                now,
                            },
                        )
                        .await?;
                }
                None => {
                    let why = refused_because(&e);
                    transition(gw, r, RefundEvent::Closed, None, None, Some(why)).await?;
                }
            }
            Ok(gw
                .store()
                .refund(&r.merchant_id, &r.id)
                .await?
                .unwrap_or_else(|| r.clone()))
        }
    }
}

async fn transition(
    gw: &Gateway,
    r: &RefundRow,
    event: RefundEvent,
    wechat_refund_id: Option<String>,
    succeeded_at: Option<i64>,
    last_error: Option<String>,
) -> anyhow::Result<RefundRow> {
    let facts = RefundFacts {
        now: gw.now_ms(),
        wechat_refund_id,
        succeeded_at,
        last_error,
    };
    Ok(
        match gw
            .store()
            .refund_transition(
                &r.merchant_id,
                &r.id,
                event,
                &facts,
                refund_event_payload,
                crate::views::event_payload,
            )
            .await?
        {
            RefundTransitionOutcome::Changed { refund, .. }
            | RefundTransitionOutcome::Unchanged(refund) => *refund,
        },
    )
}

/// What WeChat reported about a refund, from an answer, a query or a callback.
struct Reported<'a> {
    out_refund_no: &'a str,
    out_trade_no: &'a str,
    refund_id: &'a str,
    amount: i64,
    total: i64,
    status: WxStatus,
    success_time: Option<&'a str>,
}

impl<'a> From<&'a Refund> for Reported<'a> {
    fn from(a: &'a Refund) -> Self {
        Self {
            out_refund_no: &a.out_refund_no,
            out_trade_no: &a.out_trade_no,
            refund_id: &a.refund_id,
            amount: a.amount.refund,
            total: a.amount.total,
            status: a.status,
            success_time: a.success_time.as_deref(),
        }
    }
}

/// Why a signed report does not belong to this refund, if it does not.
fn mismatch(p: &PaymentRow, r: &RefundRow, w: &Reported<'_>) -> Option<String> {
    if w.out_refund_no != r.out_refund_no {
        return Some(format!(
            "out_refund_no {} is not {}",
            w.out_refund_no, r.out_refund_no
        ));
    }
    if w.out_trade_no != refunded_order(p, r) {
        return Some(format!(
            "out_trade_no {} is not {}",
            w.out_trade_no,
            refunded_order(p, r)
        ));
    }
    if w.amount != r.amount || w.total != p.amount {
        return Some(format!(
            "amount {}/{} is not {}/{}",
            w.amount, w.total, r.amount, p.amount
        ));
    }
    None
}

async fn apply_answer(
    gw: &Gateway,
    p: &PaymentRow,
    r: &RefundRow,
    answer: &Refund,
    source: &str,
) -> anyhow::Result<RefundRow> {
    apply_reported(gw, p, r, &Reported::from(answer), source).await
}

async fn apply_reported(
    gw: &Gateway,
    p: &PaymentRow,
    r: &RefundRow,
    w: &Reported<'_>,
    source: &str,
) -> anyhow::Result<RefundRow> {
    if let Some(reason) = mismatch(p, r, w) {
        return quarantine_report(gw, p, r, w, reason, source).await;
    }
    let refund_id = Some(w.refund_id.to_string());
    let event = match w.status {
        WxStatus::Success => RefundEvent::Succeeded,
        WxStatus::Closed => RefundEvent::Closed,
        WxStatus::Abnormal => RefundEvent::Abnormal,
        WxStatus::Processing => {
            let now = gw.now_ms();
            gw.store()
                .note_refund_attempt(
                    &r.id,
                    &RefundNote {
                        submitted: true,
                        wechat_refund_id: Some(w.refund_id),
                        last_error: None,
                        next_due: Some(next_due(gw, r.sync_attempts, now)),
                        attempts: r.sync_attempts + 1,
                        now,
                    },
                )
                .await?;
            return Ok(gw
                .store()
                .refund(&r.merchant_id, &r.id)
                .await?
                .unwrap_or_else(|| r.clone()));
        }
    };
    let succeeded_at = w
        .success_time
        .and_then(|t| validate::rfc3339("success_time", t).ok())
        .map(|s| s * 1000);
    let last_error = match event {
        RefundEvent::Closed => Some("WeChat Pay closed the refund".to_string()),
        _ => None,
    };
    match transition(gw, r, event, refund_id, succeeded_at, last_error).await {
        // WeChat reports what the refund's state cannot take (money back on a refund that
        // failed): a person must look.
        Err(e) if matches!(e.downcast_ref(), Some(StoreError::RefundTransition(_))) => {
            quarantine_report(gw, p, r, w, e.to_string(), source).await
        }
        other => other,
    }
}

/// Records a signed report that cannot be applied, stops querying the refund (a person must
/// look; a query would only report the same), and leaves the refund as it is.
async fn quarantine_report(
    gw: &Gateway,
    p: &PaymentRow,
    r: &RefundRow,
    w: &Reported<'_>,
    reason: String,
    source: &str,
) -> anyhow::Result<RefundRow> {
    tracing::error!(refund = %r.id, %reason, source, "signed WeChat refund report cannot be applied; quarantined");
    let resource = json!({"out_refund_no": w.out_refund_no, "out_trade_no": w.out_trade_no, "refund_id": w.refund_id, "refund": w.amount, "total": w.total, "status": w.status.as_str()});
    let reason = format!("refund {}: {reason}", r.id);
    let ids = (r.merchant_id.as_str(), Some(p.id.as_str()));
    super::quarantine(
        gw,
        super::QuarantineOf::Refund,
        ids,
        reason,
        resource.to_string(),
    )
    .await?;
    gw.store()
        .note_refund_attempt(
            &r.id,
            &RefundNote {
                submitted: true,
                wechat_refund_id: None,
                last_error: Some(
                    "a report from WeChat could not be applied; quarantined for review",
                ),
                next_due: None,
                attempts: r.sync_attempts,
                now: gw.now_ms(),
            },
        )
        .await?;
    Ok(r.clone())
}

/// A verified, decrypted REFUND.* callback: cross-checked, then applied.
pub async fn apply_callback(
    gw: &Gateway,
    merchant_mchid: &str,
    merchant_id: &str,
    n: &wechatpay_v3::model::RefundNotification,
) -> anyhow::Result<()> {
    let Some(r) = gw
        .store()
        .refund_by_out_refund_no(merchant_id, &n.out_refund_no)
        .await?
    else {
        tracing::error!(merchant_id, out_refund_no = %n.out_refund_no, "signed refund callback for an unknown refund; quarantined");
        let reason = format!("no refund with out_refund_no {}", n.out_refund_no);
        let resource = serde_json::to_string(n)?;
        super::quarantine(
            gw,
            super::QuarantineOf::Refund,
            (merchant_id, None),
            reason,
            resource,
        )
        .await?;
        return Ok(());
    };
    let p = gw
        .store()
        .payment(merchant_id, &r.payment_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("refund {} has no payment", r.id))?;
    if n.mchid != merchant_mchid {
        let reason = format!("refund callback mchid {} is not {merchant_mchid}", n.mchid);
        let ids = (merchant_id, Some(p.id.as_str()));
        let resource = serde_json::to_string(n)?;
        super::quarantine(gw, super::QuarantineOf::Refund, ids, reason, resource).await?;
        return Ok(());
    }
    let reported = Reported {
        out_refund_no: &n.out_refund_no,
        out_trade_no: &n.out_trade_no,
        refund_id: &n.refund_id,
        amount: n.amount.refund,
        total: n.amount.total,
        status: n.refund_status,
        success_time: n.success_time.as_deref(),
    };
    apply_reported(gw, &p, &r, &reported, "callback").await?;
    Ok(())
}

/// One round of background work: refunds to send again or to query, and paid-after-close
/// payments their merchant wants refunded. Returns how many refunds were handled.
pub async fn sync_due(gw: &Gateway) -> anyhow::Result<usize> {
    for p in gw
        .store()
        .paid_after_close_to_refund(AUTO_REFUND_BATCH)
        .await?
    {
        if let Err(e) = auto_refund(gw, &p).await {
            tracing::warn!(payment = %p.id, error = ?e, "automatic refund of a paid-after-close payment failed; will retry");
        }
    }
    let claim =
        |gw: Gateway, n| async move { Ok(gw.store().claim_due_refunds(gw.now_ms(), n).await?) };
    super::work_through(gw, claim, |gw, r| async move {
        if let Err(e) = sync_one(&gw, &r).await {
            tracing::warn!(refund = %r.id, error = %e, "refund sync failed; will retry");
            let now = gw.now_ms();
            let note = RefundNote {
                submitted: false,
                wechat_refund_id: None,
                last_error: r.last_error.as_deref(),
                next_due: Some(next_due(&gw, r.sync_attempts, now)),
                attempts: r.sync_attempts + 1,
                now,
            };
            let _ = gw.store().note_refund_attempt(&r.id, &note).await;
        }
        Ok(())
    })
    .await
}

async fn sync_one(gw: &Gateway, r: &RefundRow) -> anyhow::Result<()> {
    let p = gw
        .store()
        .payment(&r.merchant_id, &r.payment_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("refund {} has no payment", r.id))?;
    let up = gw.upstream(&r.merchant_id).await?;
    match up.query_refund(&r.out_refund_no).await {
        Ok(answer) => {
            let after = apply_answer(gw, &p, r, &answer, "sync").await?;
            if after.status == RefundStatus::Abnormal {
                // Still waiting for the merchant to resolve it: ask again, slowly.
                let now = gw.now_ms();
                gw.store()
                    .note_refund_attempt(
                        &r.id,
                        &RefundNote {
                            submitted: true,
                            wechat_refund_id: None,
                            last_error: after.last_error.as_deref(),
                            next_due: Some(now + ABNORMAL_QUERY_INTERVAL_MS),
                            attempts: r.sync_attempts + 1,
                            now,
                        },
                    )
                    .await?;
            }
        }
        // WeChat never got it (it was refused for a while, or the process died first).
        Err(ClientError::Api(e)) if e.code == WechatCode::ResourceNotExists => {
            submit(gw, &p, r).await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// A payment's refunds, oldest first (at most 50: WeChat's limit).
pub async fn of_payment(
    gw: &Gateway,
    merchant_id: &str,
    payment_id: &str,
) -> ApiResult<Vec<RefundRow>> {
    Ok(gw
        .store()
        .refunds_for_payment(merchant_id, payment_id)
        .await?)
}

/// The merchant's refund with this merchant_refund_id.
pub async fn by_merchant_refund_id(
    gw: &Gateway,
    merchant_id: &str,
    merchant_refund_id: &str,
) -> ApiResult<Option<RefundRow>> {
    Ok(gw
        .store()
        .refund_by_merchant_refund_id(merchant_id, merchant_refund_id)
        .await?)
}

/// Asks WeChat about a refund and applies its answer (reconciliation's repair): the refund as
/// it is afterwards, and the status WeChat gave (an answer the refund cannot take is
/// quarantined and leaves it as it was).
pub async fn query_and_apply(
    gw: &Gateway,
    r: &RefundRow,
) -> anyhow::Result<(RefundRow, wechatpay_v3::model::RefundStatus)> {
    let p = gw
        .store()
        .payment(&r.merchant_id, &r.payment_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("refund {} has no payment", r.id))?;
    let up = gw.upstream(&r.merchant_id).await?;
    let answer = up.query_refund(&r.out_refund_no).await?;
    let after = apply_answer(gw, &p, r, &answer, "reconciliation").await?;
    Ok((after, answer.status))
}

/// Refunds a paid-after-close payment in full, when its merchant's policy says so. Idempotent:
/// the refund's merchant_refund_id is derived from the payment.
pub async fn auto_refund(gw: &Gateway, p: &PaymentRow) -> anyhow::Result<()> {
    let merchant = gw
        .store()
        .merchant(&p.merchant_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no merchant {}", p.merchant_id))?;
    if merchant.paid_after_close_policy != PaidAfterClosePolicy::Refund
        || p.status != PaymentStatus::PaidAfterClose
    {
        return Ok(());
    }
    let new = NewRefund {
        amount: Some(p.amount),
        merchant_refund_id: format!("{PAID_AFTER_CLOSE_REFUND_PREFIX}{}", p.id),
        reason: Some("Paid after the order was closed".into()),
    };
    let (merchant_id, payment_id) = crate::app::stored_ids(p);
    make(gw, &merchant_id, &payment_id, new)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    Ok(())
}
