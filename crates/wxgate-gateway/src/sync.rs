//! Status sync: the background work that keeps every payment true to WeChat without relying on
//! callbacks. Pending payments are queried on a tiered schedule (often at first, then less
//! often); at expiry the order is closed at WeChat and queried once more, so a payment that
//! slipped in during the close is caught. Work is claimed from the database with a lease, so
//! any number of nodes can run this and a node that dies leaves its work to the others.

use tokio::sync::watch;
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode;
use wechatpay_v3::model::{TradeState, Transaction};
use wxgate_domain::payment::PaymentEvent;
use wxgate_store::PaymentRow;

use crate::app::orders::{apply_paid, close_and_settle, earlier_attempt_paid, settle};
use crate::app::reconciliation;
use crate::gateway::Gateway;

/// How often open reconciliation discrepancies are repaired again (and the front doors'
/// expired tokens forgotten).
const REPAIR_SWEEP: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs until `stop` turns true: payments and refunds, then reconciliations (and once a day,
/// when configured, requests yesterday's for every merchant). All of it is background work for
/// the pace of calls to WeChat.
pub async fn run(gw: Gateway, mut stop: watch::Receiver<bool>) {
    let mut rounds = Rounds {
        scheduled_on: None,
        // The first sweep comes one interval after start, like every later one.
        repaired_at: std::time::Instant::now(),
        left_open: crate::app::orders::LeftOpenSweep::default(),
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(gw.config().sync_interval) => {}
        }
        crate::pace::as_background(rounds.once(&gw)).await;
    }
}

/// What the background rounds remember between them.
struct Rounds {
    /// The day whose daily reconciliations were last requested.
    scheduled_on: Option<time::Date>,
    repaired_at: std::time::Instant,
    /// Where the sweep of orders left open goes on from.
    left_open: crate::app::orders::LeftOpenSweep,
}

impl Rounds {
    async fn once(&mut self, gw: &Gateway) {
        if let Err(e) = sync_due(gw).await {
            tracing::warn!(error = %e, "status sync round failed");
        }
        if let Err(e) = crate::app::refunds::sync_due(gw).await {
            tracing::warn!(error = %e, "refund sync round failed");
        }
        if let Err(e) = crate::app::payouts::sync_due(gw).await {
            tracing::warn!(error = %e, "payout sync round failed");
        }
        let today = reconciliation::bill_day(gw.now_ms());
        if gw.config().reconcile_daily && self.scheduled_on != Some(today) {
            match reconciliation::schedule_daily(gw).await {
                Ok(true) => self.scheduled_on = Some(today),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "scheduling daily reconciliations failed"),
            }
        }
        if let Err(e) = reconciliation::run_due(gw).await {
            tracing::warn!(error = %e, "reconciliation round failed");
        }
        if self.repaired_at.elapsed() >= REPAIR_SWEEP {
            self.repaired_at = std::time::Instant::now();
            if let Err(e) = reconciliation::retry_repairs(gw).await {
                tracing::warn!(error = %e, "retrying reconciliation repairs failed");
            }
            if let Err(e) = self.left_open.run(gw).await {
                tracing::warn!(error = %e, "closing orders paid payments left open failed");
            }
            if let Err(e) = crate::app::doors::forget_expired_tokens(gw).await {
                tracing::warn!(error = %e, "forgetting expired door tokens failed");
            }
            if let Err(e) = crate::app::webhooks::forget_old_events(gw).await {
                tracing::warn!(error = %e, "forgetting old events failed");
            }
            if let Err(e) = crate::app::idempotency::forget_old_keys(gw).await {
                tracing::warn!(error = %e, "forgetting old idempotency keys failed");
            }
        }
    }
}

/// One round: claims due payments and syncs each, claiming more as they finish (see
/// [`work_through`](crate::app::work_through)). Returns how many were handled.
pub async fn sync_due(gw: &Gateway) -> anyhow::Result<usize> {
    let claim =
        |gw: Gateway, n| async move { Ok(gw.store().claim_due_syncs(gw.now_ms(), n).await?) };
    crate::app::work_through(gw, claim, |gw, p| async move {
        if let Err(e) = sync_one(&gw, &p).await {
            tracing::warn!(payment = %p.id, error = %e, "status sync failed; will retry");
            reschedule(&gw, &p, gw.now_ms()).await?;
        }
        Ok(())
    })
    .await
}

/// When to look again at a pending payment: by the schedule, but never later than its expiry.
/// The first order at WeChat used the schedule's first entry (a payment's creation, or a
/// hosted payment's first device, `Store::start_attempt`); after the n-th query comes entry n.
fn next_due(gw: &Gateway, p: &PaymentRow, now: i64) -> Option<i64> {
    let schedule = &gw.config().sync_schedule_ms;
    let step = schedule
        .get(((p.sync_attempts + 1) as usize).min(schedule.len().saturating_sub(1)))
        .copied()
        .unwrap_or(60_000);
    Some(if now >= p.expires_at {
        now + step
    } else {
        (now + step).min(p.expires_at)
    })
}

async fn sync_one(gw: &Gateway, p: &PaymentRow) -> anyhow::Result<()> {
    let now = gw.now_ms();
    let up = gw.upstream(&p.merchant_id).await?;
    let expired = now >= p.expires_at;
    let current = up.query(&p.out_trade_no).await;
    // When the current order can no longer be paid, the payment's other open orders (an
    // earlier device) are closed at WeChat as they are looked at, so none stays payable on an
    // ended payment. One found paid pays the payment instead.
    let end = unpaid_end(&current, expired);
    if earlier_attempt_paid(gw, &up, p, end.is_some())
        .await?
        .is_some()
    {
        return Ok(());
    }
    if let Some(event) = end {
        settle(gw, p, event, "sync").await?;
        return Ok(());
    }
    match current {
        Ok(tx) if matches!(tx.state(), Some(TradeState::Success | TradeState::Refund)) => {
            apply_paid(gw, &up.merchant, p, &tx, "sync").await?;
        }
        Ok(_) if expired => {
            close_and_settle(gw, &p.merchant_id, p, PaymentEvent::Expired).await?;
        }
        Ok(_) => reschedule(gw, p, now).await?,
        // The prepay never reached WeChat: nothing can be paid yet (at expiry it ends, above).
        Err(ClientError::Api(e)) if e.code == ErrorCode::OrderNotExist => {
            reschedule(gw, p, now).await?
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// How a payment ends when its current order, as WeChat answered about it, can no longer be
/// paid: failed; closed (cancelled, or expired once past its time); or, past its time, never
/// made at WeChat. `None` while it may still be paid (or WeChat did not answer).
fn unpaid_end(current: &Result<Transaction, ClientError>, expired: bool) -> Option<PaymentEvent> {
    let lapsed = if expired {
        PaymentEvent::Expired
    } else {
        PaymentEvent::Cancelled
    };
    match current {
        Ok(tx) => match tx.state() {
            Some(TradeState::Payerror | TradeState::Revoked) => Some(PaymentEvent::Failed),
            Some(TradeState::Closed) => Some(lapsed),
            _ => None,
        },
        Err(ClientError::Api(e)) if e.code == ErrorCode::OrderNotExist && expired => {
            Some(PaymentEvent::Expired)
        }
        Err(_) => None,
    }
}

/// A pending payment is asked about again later.
async fn reschedule(gw: &Gateway, p: &PaymentRow, now: i64) -> anyhow::Result<()> {
    gw.store()
        .reschedule_sync(&p.id, next_due(gw, p, now), p.sync_attempts + 1)
        .await?;
    Ok(())
}

/// For tests and tools: runs rounds until nothing is due.
pub async fn drain(gw: &Gateway) -> anyhow::Result<()> {
    for _ in 0..100 {
        if sync_due(gw).await? == 0 {
            return Ok(());
        }
    }
    anyhow::bail!("status sync did not settle")
}
