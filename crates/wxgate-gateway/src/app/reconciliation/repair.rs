//! Repairs: what a query to WeChat can settle about a discrepancy, applied through the normal
//! sync path, at completion and again later for those still open.

use wechatpay_v3::model::RefundStatus as WeChatRefundStatus;
use wxgate_domain::ledger::{Posting, PostingKind};
use wxgate_domain::payment::AttemptStatus;
use wxgate_domain::reconciliation::{self as recon, DiscrepancyStatus};
use wxgate_domain::refund::RefundStatus;
use wxgate_store::{DiscrepancyRow, PostingSource};

use crate::gateway::Gateway;
use crate::upstream::Upstream;

/// How far back open discrepancies are repaired again, and how many per round.
pub const REPAIR_WINDOW_MS: i64 = 2 * 86_400_000;
const REPAIR_BATCH: i64 = 16;

/// Asks WeChat about each finding it can settle and applies the answer through the normal
/// sync path (with its events). A payment brought in line is `repaired`; a refund whose live
/// state already agrees with the gateway was only in flight when the bill was written, and is
/// `resolved` saying so. Anything else stays open for a person.
pub(super) async fn repair(gw: &Gateway, up: &Upstream, discrepancies: &[DiscrepancyRow]) {
    for d in discrepancies {
        repair_one(gw, up, d).await;
    }
}

/// Asks WeChat about one open discrepancy and closes it if the answer settles it.
async fn repair_one(gw: &Gateway, up: &Upstream, d: &DiscrepancyRow) {
    let outcome = match repair_of(d) {
        Some(recon::Repair::SyncPayment { payment_id }) => {
            repair_payment(gw, up, &payment_id, d).await
        }
        Some(recon::Repair::SyncRefund { refund_id }) => repair_refund(gw, up, &refund_id).await,
        Some(recon::Repair::SyncPayout { payout_id }) => repair_payout(gw, up, &payout_id).await,
        None => return,
    };
    let closed = match outcome {
        Ok(Some((status, why))) => {
            gw.store()
                .close_discrepancy(d, status, &why, gw.now_ms())
                .await
        }
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(discrepancy = %d.id, error = %e, "repair failed; left open");
            return;
        }
    };
    if let Err(e) = closed {
        tracing::warn!(discrepancy = %d.id, error = %e, "could not record a repair");
    }
}

/// What a query could settle about a discrepancy.
pub(super) fn repair_of(d: &DiscrepancyRow) -> Option<recon::Repair> {
    let about = recon::About {
        payment_id: d.payment_id.as_deref(),
        refund_id: d.refund_id.as_deref(),
        payout_id: d.payout_id.as_deref(),
    };
    recon::Repair::of(d.kind, about)
}

/// Tries the repairs of recent discrepancies still open again (a node that stopped between
/// completing a reconciliation and its repairs, or a WeChat that did not answer): those of the
/// last `REPAIR_WINDOW_MS`, `REPAIR_BATCH` at a time. How many were tried.
pub async fn retry_repairs(gw: &Gateway) -> anyhow::Result<usize> {
    let since = gw.now_ms() - REPAIR_WINDOW_MS;
    let open = gw.store().open_repairable(since, REPAIR_BATCH).await?;
    for d in &open {
        match gw.upstream(&d.merchant_id).await {
            Ok(up) => repair_one(gw, &up, d).await,
            Err(e) => {
                tracing::warn!(discrepancy = %d.id, error = %e, "no WeChat client to repair with")
            }
        }
    }
    Ok(open.len())
}

/// Queries the order WeChat says was paid and applies it to the payment; once the payment is
/// paid, the settlement the discrepancy held is posted.
async fn repair_payment(
    gw: &Gateway,
    up: &Upstream,
    payment_id: &str,
    d: &DiscrepancyRow,
) -> anyhow::Result<Option<(DiscrepancyStatus, String)>> {
    let out_trade_no = d.reference.as_str();
    let Some(p) = gw.store().payment(&up.merchant.id, payment_id).await? else {
        return Ok(None);
    };
    // A payment with a quarantined report waits for a person: a later sweep would only ask
    // WeChat and quarantine the report again.
    if gw.store().has_quarantined(&p.id).await? {
        return Ok(None);
    }
    let tx = up.query(out_trade_no).await?;
    if !matches!(
        tx.state(),
        Some(wechatpay_v3::model::TradeState::Success | wechatpay_v3::model::TradeState::Refund)
    ) {
        return Ok(None);
    }
    let before = p.status;
    let after = crate::app::orders::apply_paid(gw, &up.merchant, &p, &tx, "reconciliation").await?;
    // Closed only once this order's money is in the ledger (not when another order paid the
    // payment and this one's report was quarantined).
    if !settle_held(gw, d).await? {
        return Ok(None);
    }
    if after.status != before {
        let why = format!(
            "WeChat's query says {out_trade_no} was paid: the payment went from {} to {}",
            before.as_str(),
            after.status.as_str()
        );
        return Ok(Some((DiscrepancyStatus::Repaired, why)));
    }
    // Brought in line already (by a callback, the status sync or an earlier try).
    Ok(Some((
        DiscrepancyStatus::Resolved,
        format!(
            "WeChat's query says {out_trade_no} was paid, and the payment is {}",
            before.as_str()
        ),
    )))
}

/// Whether the order a payment's status mismatch is about has its money in the ledger (its
/// attempt paid the payment, or was paid twice and is refunded); if so, posts what the
/// discrepancy held out of its day (the fund-flow bill's settlement and fee, and what a
/// merchant-funded coupon took off). Once per discrepancy: the postings' source is its id.
pub(super) async fn settle_held(gw: &Gateway, d: &DiscrepancyRow) -> anyhow::Result<bool> {
    let Some((attempt, p)) = gw
        .store()
        .payment_attempt(&d.merchant_id, &d.reference)
        .await?
    else {
        return Ok(false);
    };
    if !matches!(
        attempt.status,
        AttemptStatus::Succeeded | AttemptStatus::Duplicate
    ) {
        return Ok(false);
    }
    let side: serde_json::Value = match d.wechat_side.as_deref() {
        Some(side) => serde_json::from_str(side)?,
        None => serde_json::Value::Null,
    };
    let held = (side["amount"].as_i64(), side["settled"].as_i64());
    let (Some(amount), Some(settled)) = held else {
        return Ok(true);
    };
    let fee = side["settled_fee"].as_i64().unwrap_or(0);
    let src = PostingSource {
        merchant_id: &d.merchant_id,
        currency: &p.currency,
        source_id: &d.id,
        payment_id: Some(&p.id),
        refund_id: None,
        now: gw.now_ms(),
    };
    let postings = [
        (PostingKind::Settlement, settled),
        (PostingKind::Discount, amount - settled),
        (PostingKind::Fee, fee),
    ]
    .into_iter()
    .filter(|(_, amount)| *amount > 0)
    .map(|(kind, amount)| Ok((Posting::new(kind, amount)?, src.clone())))
    .collect::<anyhow::Result<Vec<_>>>()?;
    gw.store().post_all(&postings).await?;
    Ok(true)
}

/// Queries the refund and applies WeChat's answer to it.
async fn repair_refund(
    gw: &Gateway,
    up: &Upstream,
    refund_id: &str,
) -> anyhow::Result<Option<(DiscrepancyStatus, String)>> {
    let Some(before) = gw.store().refund(&up.merchant.id, refund_id).await? else {
        return Ok(None);
    };
    let (after, at_wechat) = crate::app::refunds::query_and_apply(gw, &before).await?;
    if after.status != before.status {
        return Ok(Some((
            DiscrepancyStatus::Repaired,
            format!(
                "WeChat's query moved the refund from {} to {}",
                before.status.as_str(),
                after.status.as_str()
            ),
        )));
    }
    // Resolved only when both say the money went back; anything else WeChat says of a refund
    // the gateway counts as succeeded was quarantined and stays open for a person.
    let agree = after.status == RefundStatus::Succeeded && at_wechat == WeChatRefundStatus::Success;
    Ok(agree.then(|| {
        (
            DiscrepancyStatus::Resolved,
            "WeChat's query says SUCCESS, as the gateway does: the bill was written while the refund was in flight".to_string(),
        )
    }))
}

/// Queries the payout's transfer and applies WeChat's answer to it.
async fn repair_payout(
    gw: &Gateway,
    up: &Upstream,
    payout_id: &str,
) -> anyhow::Result<Option<(DiscrepancyStatus, String)>> {
    let Some(before) = gw.store().payout(&up.merchant.id, payout_id).await? else {
        return Ok(None);
    };
    let after = crate::app::payouts::query_and_apply(gw, &before).await?;
    Ok((after.status != before.status).then(|| {
        (
            DiscrepancyStatus::Repaired,
            format!(
                "WeChat's query moved the payout from {} to {}",
                before.status, after.status
            ),
        )
    }))
}
