//! What WeChat says about a payment's orders, applied: a paid transaction (cross-checked, or
//! quarantined), an order closed at WeChat before the payment ends, the payment's other orders
//! closed once one pays, and an order paid twice refunded. Callbacks (`http::notify`), status
//! sync (`sync`) and cancels (`app::payments`, the hosted checkout) all come through here.

use anyhow::Context;
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode;
use wechatpay_v3::model::{TradeState, Transaction};
use wxgate_domain::payment::{AttemptStatus, PaymentEvent, PaymentStatus};
use wxgate_store::{
    MerchantRow, PaymentAttemptRow, PaymentRow, StoreError, TransitionFacts, TransitionOutcome,
};

use crate::gateway::Gateway;
use crate::views;

/// How many times a payment's end is tried again when its payer started a new order while the
/// last one closed (each round closes the new one).
const CLOSE_ROUNDS_MAX: usize = 4;
/// How long a paid payment is left to close its other orders itself before the sweep does.
pub const LEFT_OPEN_AFTER_MS: i64 = 60_000;
/// Payments whose left-open orders one sweep closes, and how many it closes at once.
const LEFT_OPEN_BATCH: i64 = 64;
const LEFT_OPEN_CONCURRENCY: usize = 8;

/// Applies an unpaid end (`event`: cancelled, expired or failed) decided on what WeChat says of
/// `p`'s current order: it happens only while that is still the payment's current order
/// (`TransitionFacts::closed_order`), so an order started meanwhile is never left open.
pub async fn settle(
    gw: &Gateway,
    p: &PaymentRow,
    event: PaymentEvent,
    source: &str,
) -> anyhow::Result<PaymentRow> {
    let facts = TransitionFacts {
        now: gw.now_ms(),
        source: source.into(),
        closed_order: Some(p.out_trade_no.clone()),
        ..Default::default()
    };
    Ok(
        match gw
            .store()
            .transition_from(p.clone(), event, &facts, views::event_payload)
            .await?
        {
            TransitionOutcome::Changed { payment, .. } | TransitionOutcome::Unchanged(payment) => {
                payment
            }
        },
    )
}

/// Closes the payment's orders at WeChat, then `event` (cancelled or expired) is applied; a
/// payment that slipped in wins. An order the payer started meanwhile is closed in another
/// round. Returns the payment after.
pub async fn close_and_settle(
    gw: &Gateway,
    merchant_id: &str,
    p: &PaymentRow,
    event: PaymentEvent,
) -> anyhow::Result<PaymentRow> {
    let mut p = p.clone();
    for _ in 0..CLOSE_ROUNDS_MAX {
        let after = close_once_and_settle(gw, merchant_id, &p, event).await?;
        if !(after.status.is_pending() && after.out_trade_no != p.out_trade_no) {
            return Ok(after);
        }
        p = after;
    }
    Ok(p)
}

/// Closes the current order at WeChat (and the earlier open ones), then queries once more: a
/// payment that slipped in wins; otherwise `event` is applied, unless a new order was started.
async fn close_once_and_settle(
    gw: &Gateway,
    merchant_id: &str,
    p: &PaymentRow,
    event: PaymentEvent,
) -> anyhow::Result<PaymentRow> {
    let up = gw.upstream(merchant_id).await?;
    if let Some(paid) = earlier_attempt_paid(gw, &up, p, true).await? {
        return Ok(paid);
    }
    close_order(&up, &p.out_trade_no)
        .await
        .context("closing the order at WeChat")?;
    match up.query(&p.out_trade_no).await {
        Ok(tx) if matches!(tx.state(), Some(TradeState::Success | TradeState::Refund)) => {
            apply_paid(gw, &up.merchant, p, &tx, "close_query").await
        }
        Ok(_) => settle(gw, p, event, "close").await,
        Err(ClientError::Api(e)) if e.code == ErrorCode::OrderNotExist => {
            settle(gw, p, event, "close").await
        }
        Err(e) => Err(e).context("querying the order after closing it"),
    }
}

/// Closes an order at WeChat; one that is not there, already closed, or paid needs no close
/// (the query that follows says which).
pub(crate) async fn close_order(
    up: &crate::upstream::Upstream,
    out_trade_no: &str,
) -> Result<(), ClientError> {
    match up.close(out_trade_no).await {
        Err(ClientError::Api(e))
            if matches!(
                e.code,
                ErrorCode::OrderNotExist | ErrorCode::OrderClosed | ErrorCode::OrderPaid
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Looks at the payment's open orders other than its current one (an earlier device or
/// credential): one found paid is applied and the payment after it returned; one found
/// closed is recorded. With `close`, each is closed at WeChat first (the payment is ending).
pub async fn earlier_attempt_paid(
    gw: &Gateway,
    up: &crate::upstream::Upstream,
    p: &PaymentRow,
    close: bool,
) -> anyhow::Result<Option<PaymentRow>> {
    for a in other_open_attempts(gw, p).await? {
        if close {
            close_order(up, &a.out_trade_no)
                .await
                .context("closing an earlier order at WeChat")?;
        }
        match up.query(&a.out_trade_no).await {
            Ok(tx) if matches!(tx.state(), Some(TradeState::Success | TradeState::Refund)) => {
                return apply_paid(gw, &up.merchant, p, &tx, "sync").await.map(Some);
            }
            Ok(tx) if matches!(tx.state(), Some(TradeState::Closed)) => {
                gw.store()
                    .close_attempt(&p.merchant_id, &a.out_trade_no, gw.now_ms())
                    .await?;
            }
            Ok(_) => {}
            Err(ClientError::Api(e)) if e.code == ErrorCode::OrderNotExist => {}
            Err(e) => return Err(e).context("querying an earlier order"),
        }
    }
    Ok(None)
}

/// Why a signed WeChat transaction does not belong to this payment, if it does not.
pub fn mismatch(merchant: &MerchantRow, p: &PaymentRow, tx: &Transaction) -> Option<String> {
    if tx.mchid.as_deref() != Some(merchant.mchid.as_str()) {
        return Some(format!(
            "mchid {:?} is not the merchant's {}",
            tx.mchid, merchant.mchid
        ));
    }
    let appid_ok = tx
        .appid
        .as_deref()
        .is_some_and(|a| a == merchant.appid || Some(a) == merchant.mini_program_appid.as_deref());
    if !appid_ok {
        return Some(format!("appid {:?} is not the merchant's", tx.appid));
    }
    if !wxgate_domain::payment::is_attempt_of(&p.id, &tx.out_trade_no) {
        return Some(format!(
            "out_trade_no {} is no order of payment {}",
            tx.out_trade_no, p.id
        ));
    }
    let amount = tx.amount.as_ref();
    if amount.and_then(|a| a.total) != Some(p.amount) {
        return Some(format!(
            "amount {:?} is not {}",
            amount.and_then(|a| a.total),
            p.amount
        ));
    }
    if let Some(currency) = amount.and_then(|a| a.currency.as_deref())
        && currency != p.currency
    {
        return Some(format!("currency {currency} is not {}", p.currency));
    }
    if tx.transaction_id.is_none() {
        return Some("a paid transaction without transaction_id".into());
    }
    None
}

/// Applies a paid transaction after cross-checking it; a mismatch is quarantined, not applied.
/// The order that pays first makes the payment succeed (the payment's other open orders are
/// then closed); an order paid after that is the shopper paying twice, and is refunded.
pub async fn apply_paid(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    tx: &Transaction,
    source: &str,
) -> anyhow::Result<PaymentRow> {
    let now = gw.now_ms();
    if let Some(reason) = mismatch(merchant, p, tx) {
        return quarantine(gw, merchant, p, tx, reason, source).await;
    }
    if paid_by_another(p, tx) {
        return record_duplicate(gw, p, tx).await;
    }
    let paid_at = tx
        .success_time
        .as_deref()
        .and_then(|t| wechatpay_v3::validate::rfc3339("success_time", t).ok())
        .map(|s| s * 1000)
        .unwrap_or(now);
    let facts = TransitionFacts {
        now,
        source: source.into(),
        transaction_id: tx.transaction_id.clone(),
        paid_at: Some(paid_at),
        out_trade_no: Some(tx.out_trade_no.clone()),
        payer: payer_paid(tx),
        closed_order: None,
    };
    let applied = gw
        .store()
        .transition_from(p.clone(), PaymentEvent::Paid, &facts, views::event_payload)
        .await;
    match applied {
        Ok(TransitionOutcome::Changed { payment, .. }) => {
            gw.metrics().paid(source, (now - paid_at) as f64 / 1000.0);
            after_paid(gw, &payment).await;
            Ok(payment)
        }
        // Another order paid it meanwhile: this one was paid twice.
        Ok(TransitionOutcome::Unchanged(payment)) if paid_by_another(&payment, tx) => {
            record_duplicate(gw, &payment, tx).await
        }
        Ok(TransitionOutcome::Unchanged(payment)) => Ok(payment),
        // WeChat says paid, but the payment is in a state that cannot take it (failed): money
        // moved where the gateway did not expect it; a person must look.
        Err(StoreError::Transition(e)) => {
            quarantine(gw, merchant, p, tx, e.to_string(), source).await
        }
        Err(e) => Err(e.into()),
    }
}

/// What the payer paid and the rate WeChat applied, as the transaction reports them.
fn payer_paid(tx: &Transaction) -> Option<wxgate_store::PayerPaid> {
    let amount = tx.amount.as_ref()?;
    Some(wxgate_store::PayerPaid {
        amount: amount.payer_total?,
        currency: amount.payer_currency.clone()?,
        exchange_rate: amount.exchange_rate.as_ref().map(|r| r.rate),
    })
}

/// Whether the payment was already paid by another WeChat transaction than `tx`.
fn paid_by_another(p: &PaymentRow, tx: &Transaction) -> bool {
    p.transaction_id.is_some() && p.transaction_id != tx.transaction_id
}

/// What follows a payment's payment: a paid-after-close refund by the merchant's policy, and
/// the payment's other open orders closed at WeChat so they cannot be paid too.
async fn after_paid(gw: &Gateway, payment: &PaymentRow) {
    if payment.status == PaymentStatus::PaidAfterClose
        && let Err(e) = crate::app::refunds::auto_refund(gw, payment).await
    {
        // The background round tries again.
        tracing::warn!(payment = %payment.id, error = ?e, "automatic refund of a paid-after-close payment failed");
    }
    if let Err(e) = close_other_attempts(gw, payment).await {
        // An order left open that the shopper pays later is refunded as paid twice.
        tracing::warn!(payment = %payment.id, error = ?e, "closing a paid payment's other orders failed");
    }
}

/// The payment's open WeChat orders other than its current one (an earlier device or
/// credential), oldest first.
pub(crate) async fn other_open_attempts(
    gw: &Gateway,
    p: &PaymentRow,
) -> wxgate_store::Result<Vec<PaymentAttemptRow>> {
    let mut attempts = gw.store().payment_attempts(&p.id).await?;
    attempts.retain(|a| a.status == AttemptStatus::Open && a.out_trade_no != p.out_trade_no);
    Ok(attempts)
}

/// Closes, at WeChat, every open order of the payment but the one that paid it. An order found
/// paid meanwhile is the shopper paying twice, and is refunded.
pub async fn close_other_attempts(gw: &Gateway, p: &PaymentRow) -> anyhow::Result<()> {
    let open = other_open_attempts(gw, p).await?;
    let up = gw.upstream(&p.merchant_id).await?;
    for a in open {
        match up.close(&a.out_trade_no).await {
            Ok(()) => {}
            Err(ClientError::Api(e)) if e.code == ErrorCode::OrderPaid => {
                // Paid too: the shopper paid twice (the payment itself is paid already).
                let tx = up.query(&a.out_trade_no).await?;
                match mismatch(&up.merchant, p, &tx) {
                    Some(reason) => {
                        quarantine(gw, &up.merchant, p, &tx, reason, "close_query").await?;
                    }
                    None if paid_by_another(p, &tx) => {
                        record_duplicate(gw, p, &tx).await?;
                    }
                    None => {}
                }
                continue;
            }
            Err(ClientError::Api(e))
                if matches!(e.code, ErrorCode::OrderNotExist | ErrorCode::OrderClosed) => {}
            Err(e) => return Err(e).context("closing another order of a paid payment"),
        }
        gw.store()
            .close_attempt(&p.merchant_id, &a.out_trade_no, gw.now_ms())
            .await?;
    }
    Ok(())
}

/// The sweep of the orders paid payments left open: their close after the payment failed
/// (WeChat unreachable) or never ran (the node stopped). Until closed, a shopper could pay one
/// too (then refunded as paid twice); WeChat ends them itself only at their expiry. A payment
/// is taken once it has been still for `LEFT_OPEN_AFTER_MS`, so its own close goes first. Each
/// sweep takes the next `LEFT_OPEN_BATCH` after where the last one stopped (starting over at
/// the end), so payments whose close keeps failing never hold up the others.
#[derive(Debug, Default)]
pub struct LeftOpenSweep {
    after: Option<(i64, String)>,
}

impl LeftOpenSweep {
    /// One sweep, `LEFT_OPEN_CONCURRENCY` closes at a time: how many payments it closed orders
    /// of (one that fails is tried again when the sweep comes round to it).
    pub async fn run(&mut self, gw: &Gateway) -> anyhow::Result<usize> {
        use futures_util::StreamExt;
        let before = gw.now_ms() - LEFT_OPEN_AFTER_MS;
        let after = self.after.as_ref().map(|(at, id)| (*at, id.as_str()));
        let left = gw
            .store()
            .payments_with_orders_left_open(before, after, LEFT_OPEN_BATCH)
            .await?;
        self.after = match left.last() {
            Some(p) if left.len() as i64 == LEFT_OPEN_BATCH => Some((p.updated_at, p.id.clone())),
            _ => None,
        };
        let closes = futures_util::stream::iter(left)
            .map(|p| close_left_open(gw.clone(), p))
            .buffer_unordered(LEFT_OPEN_CONCURRENCY);
        Ok(closes.filter(|ok| std::future::ready(*ok)).count().await)
    }
}

/// Closes one payment's orders left open: whether it did.
async fn close_left_open(gw: Gateway, p: PaymentRow) -> bool {
    let closed = close_other_attempts(&gw, &p).await;
    if let Err(e) = &closed {
        tracing::warn!(payment = %p.id, error = ?e, "closing an order a paid payment left open failed; a later sweep tries again");
    }
    closed.is_ok()
}

/// An order of a payment that another order already paid: recorded with its
/// `payment.duplicate_paid` event, then refunded in full through the refund path.
async fn record_duplicate(
    gw: &Gateway,
    p: &PaymentRow,
    tx: &Transaction,
) -> anyhow::Result<PaymentRow> {
    let Some((attempt, _)) = gw
        .store()
        .payment_attempt(&p.merchant_id, &tx.out_trade_no)
        .await?
    else {
        anyhow::bail!("no order {} of payment {}", tx.out_trade_no, p.id);
    };
    let transaction_id = tx.transaction_id.as_deref().unwrap_or_default();
    tracing::warn!(payment = %p.id, out_trade_no = %tx.out_trade_no, "an order of an already paid payment was paid: refunding it");
    let event = views::duplicate_event(p, &attempt.out_trade_no, transaction_id);
    let refund = crate::app::refunds::duplicate_refund(gw, p, &attempt.out_trade_no);
    gw.store()
        .mark_duplicate(&attempt, transaction_id, gw.now_ms(), event, &refund)
        .await?;
    crate::app::refunds::refund_duplicate(gw, p, &refund).await?;
    Ok(p.clone())
}

/// Records a signed transaction that cannot be applied, stops syncing the payment (it needs a
/// person, and syncing would only record it again), and leaves the payment as it is.
async fn quarantine(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    tx: &Transaction,
    reason: String,
    source: &str,
) -> anyhow::Result<PaymentRow> {
    tracing::error!(payment = %p.id, %reason, source, "signed WeChat transaction cannot be applied; quarantined");
    let ids = (merchant.id.as_str(), Some(p.id.as_str()));
    let resource = serde_json::to_string(tx)?;
    super::quarantine(gw, super::QuarantineOf::Payment, ids, reason, resource).await?;
    gw.store()
        .reschedule_sync(&p.id, None, p.sync_attempts)
        .await?;
    Ok(p.clone())
}
