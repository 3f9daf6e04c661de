//! Reconciliation against WeChat's bills: a merchant's day is requested (by the API, the CLI or
//! the daily schedule), claimed from the database by one node, matched three ways (the
//! gateway's records, the trade bill, the fund-flow bill) by the pure
//! [`reconcile`](wxgate_domain::reconciliation::reconcile), and written with its discrepancies
//! and events in one transaction. Bills justify the day's settlement and fee postings; findings
//! WeChat can settle by a query are repaired through the normal sync path.

use std::collections::HashSet;

use anyhow::Context;

use time::{Date, OffsetDateTime, UtcOffset};
use wxgate_domain::id::{DiscrepancyId, MerchantId, ReconciliationId};
use wxgate_domain::ledger::{Posting, PostingKind};
use wxgate_domain::payment::AttemptStatus;
use wxgate_domain::payout::PayoutStatus;
use wxgate_domain::reconciliation::{
    self as recon, DayInput, DayResult, DiscrepancyStatus, Finding, GatewayOrder, GatewayPayout,
    GatewayRefund, OrderState, PayoutState, ReconciliationStatus, RefundState,
};
use wxgate_domain::refund::RefundStatus;
use wxgate_store::{
    Completion, DayOrderRow, DayRefundRow, DiscrepancyRow, EventRow, PayoutRow, PostingSource,
    ReconciliationRow,
};

mod repair;
mod wechat_side;

use repair::repair;
pub use repair::{REPAIR_WINDOW_MS, retry_repairs};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::upstream::Upstream;
use crate::views::money as views;

/// Beijing time, in which WeChat's bill days run.
pub const BILL_OFFSET: UtcOffset = time::macros::offset!(+8);
/// How far back WeChat keeps domestic bills.
pub const HISTORY_DAYS: i64 = 90;
/// WeChat asks to try a bill still being built again after about half an hour.
pub const BILL_RETRY_MS: i64 = 30 * 60 * 1000;
/// After an error (WeChat unreachable, a bill that does not parse), the next try.
pub const ERROR_RETRY_MS: i64 = 5 * 60 * 1000;
/// Tries before a reconciliation is given up as failed: two days of waiting for a bill.
pub const MAX_ATTEMPTS: i64 = 96;
/// Reconciliations claimed per round.
const CLAIM_BATCH: i64 = 4;
/// How often [`run_now`] looks again at a reconciliation another node is running, and how many
/// times at most: one claim's lease.
const HELD_POLL: std::time::Duration = std::time::Duration::from_millis(200);
const HELD_LOOKS: i64 = wxgate_store::CLAIM_LEASE_MS / HELD_POLL.as_millis() as i64 + 1;
/// The daily run for yesterday starts from this hour, Beijing time (WeChat: fetch after 10:00).
pub const DAILY_HOUR: u8 = 10;

/// The bill day a time falls on.
pub fn bill_day(ms: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(BILL_OFFSET)
        .date()
}

/// A bill day's bounds in Unix milliseconds: [start, end).
pub fn day_bounds(date: Date) -> (i64, i64) {
    let start = date.midnight().assume_offset(BILL_OFFSET).unix_timestamp() * 1000;
    (start, start + 86_400_000)
}

/// The reconciliation of a merchant's day, requested now (or the one requested before).
pub async fn request(
    gw: &Gateway,
    merchant_id: &MerchantId,
    date: Date,
) -> ApiResult<(ReconciliationRow, bool)> {
    let today = bill_day(gw.now_ms());
    if date > today || (today - date).whole_days() > HISTORY_DAYS {
        return Err(ApiError::invalid(
            ErrorCode::DateOutOfRange,
            "date",
            format!(
                "a bill date is from {HISTORY_DAYS} days ago to today (Asia/Shanghai), today being {today}"
            ),
        ));
    }
    Ok(gw
        .store()
        .request_reconciliation(merchant_id, &date.to_string(), gw.now_ms())
        .await?)
}

/// The reconciliation with its discrepancies.
pub async fn get(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &ReconciliationId,
) -> ApiResult<(ReconciliationRow, Vec<DiscrepancyRow>)> {
    let r = gw
        .store()
        .reconciliation(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("reconciliation"))?;
    let list = gw.store().discrepancies(&r.id).await?;
    Ok((r, list))
}

/// An operator closes an open discrepancy with a reason.
pub async fn resolve(
    gw: &Gateway,
    merchant_id: &MerchantId,
    reconciliation_id: &ReconciliationId,
    discrepancy_id: &DiscrepancyId,
    reason: &str,
) -> ApiResult<DiscrepancyRow> {
    let found = gw.store().discrepancy(merchant_id, discrepancy_id).await?;
    let d = found
        .filter(|d| d.reconciliation_id == reconciliation_id.as_str())
        .ok_or_else(|| ApiError::not_found("discrepancy"))?;
    let now = gw.now_ms();
    if !gw
        .store()
        .close_discrepancy(&d, DiscrepancyStatus::Resolved, reason, now)
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::DiscrepancyNotOpen,
            format!("this discrepancy is {} already", d.status.as_str()),
        ));
    }
    // A payment's status mismatch held its day's settlement: posted now if the payment's order
    // is paid here (the repair would have, had it got that far).
    if matches!(
        repair::repair_of(&d),
        Some(recon::Repair::SyncPayment { .. })
    ) && let Err(e) = repair::settle_held(gw, &d).await
    {
        tracing::warn!(discrepancy = %d.id, error = %e, "posting a resolved discrepancy's held settlement failed");
    }
    let after = gw.store().discrepancy(merchant_id, discrepancy_id).await?;
    after.ok_or_else(|| ApiError::not_found("discrepancy"))
}

/// Requests yesterday's reconciliation for every merchant, once it is past `DAILY_HOUR`. True
/// when it did (false: too early today).
pub async fn schedule_daily(gw: &Gateway) -> anyhow::Result<bool> {
    let now = gw.now_ms();
    let local = OffsetDateTime::from_unix_timestamp(now / 1000)?.to_offset(BILL_OFFSET);
    if local.hour() < DAILY_HOUR {
        return Ok(false);
    }
    let yesterday = local.date().previous_day().expect("dates in range");
    for m in gw.store().merchants().await? {
        gw.store()
            .request_reconciliation(&m.id, &yesterday.to_string(), now)
            .await?;
    }
    Ok(true)
}

/// One round: claims due reconciliations and runs each. Returns how many were handled.
pub async fn run_due(gw: &Gateway) -> anyhow::Result<usize> {
    let due = gw
        .store()
        .claim_due_reconciliations(gw.now_ms(), CLAIM_BATCH)
        .await?;
    let n = due.len();
    for r in due {
        run_claimed(gw, &r).await?;
    }
    Ok(n)
}

/// Runs one reconciliation now, whatever its schedule (the CLI): it as it is afterwards. While
/// another node runs it, waits for that node to finish or let go (at most one claim's lease),
/// and runs it itself if it was let go unfinished.
pub async fn run_now(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &ReconciliationId,
) -> anyhow::Result<ReconciliationRow> {
    run_now_waiting(gw, merchant_id, id, || tokio::time::sleep(HELD_POLL)).await
}

/// [`run_now`], with `wait` between its looks at a reconciliation another node holds.
pub async fn run_now_waiting<F: std::future::Future<Output = ()>>(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &ReconciliationId,
    mut wait: impl FnMut() -> F,
) -> anyhow::Result<ReconciliationRow> {
    let mut looks = 1;
    loop {
        let claimed = gw
            .store()
            .claim_reconciliation(merchant_id, id, gw.now_ms())
            .await?;
        if let Some(r) = &claimed {
            run_claimed(gw, r).await?;
        }
        let now = gw
            .store()
            .reconciliation(merchant_id, id)
            .await?
            .context("no such reconciliation")?;
        let open = matches!(
            now.status,
            ReconciliationStatus::Pending | ReconciliationStatus::WaitingForBill
        );
        if claimed.is_some() || !open || looks >= HELD_LOOKS {
            return Ok(now);
        }
        looks += 1;
        wait().await;
    }
}

/// Runs a claimed reconciliation; an error is recorded on it and retried later (or, after
/// `MAX_ATTEMPTS`, ends it as failed).
async fn run_claimed(gw: &Gateway, r: &ReconciliationRow) -> anyhow::Result<()> {
    let Err(e) = run_one(gw, r).await else {
        return Ok(());
    };
    tracing::warn!(reconciliation = %r.id, error = %e, "reconciliation failed; will retry");
    let next = (r.attempts + 1 < MAX_ATTEMPTS).then(|| gw.now_ms() + ERROR_RETRY_MS);
    let status = match next {
        Some(_) => ReconciliationStatus::Pending,
        None => ReconciliationStatus::Failed,
    };
    let error = format!("{e:#}");
    gw.store()
        .defer_reconciliation(r, status, next, Some(&error), gw.now_ms())
        .await?;
    Ok(())
}

/// For tests and tools: runs rounds until nothing is due.
pub async fn drain(gw: &Gateway) -> anyhow::Result<()> {
    for _ in 0..100 {
        if run_due(gw).await? == 0 {
            return Ok(());
        }
    }
    anyhow::bail!("reconciliation did not settle")
}

async fn run_one(gw: &Gateway, r: &ReconciliationRow) -> anyhow::Result<()> {
    let up = gw.upstream(&r.merchant_id).await?;
    let started = std::time::Instant::now();
    let input = wechat_side::wechat_day(&up, &r.bill_date).await?;
    let Some(input) = input else {
        let next = (r.attempts + 1 < MAX_ATTEMPTS).then(|| gw.now_ms() + BILL_RETRY_MS);
        let status = match next {
            Some(_) => ReconciliationStatus::WaitingForBill,
            None => ReconciliationStatus::Failed,
        };
        let error = "WeChat is still building the bill (STATEMENT_CREATING)";
        gw.store()
            .defer_reconciliation(r, status, next, Some(error), gw.now_ms())
            .await?;
        return Ok(());
    };
    reconcile_day(gw, &up, r, input, started).await
}

/// The day against WeChat's side of it: the gateway's side read, matched, written, repaired.
/// Logs how long each part took.
async fn reconcile_day(
    gw: &Gateway,
    up: &Upstream,
    r: &ReconciliationRow,
    mut input: DayInput,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let bills_ms = started.elapsed().as_millis();
    let date = Date::parse(
        &r.bill_date,
        time::macros::format_description!("[year]-[month]-[day]"),
    )?;
    gateway_side(gw, &r.merchant_id, date, &mut input).await?;
    let read_ms = started.elapsed().as_millis();
    let result = recon::reconcile(&input);
    drop(input);
    let match_ms = started.elapsed().as_millis();
    post_bill_postings(gw, r, &result).await?;
    let discrepancies = complete(gw, r, &result).await?;
    let write_ms = started.elapsed().as_millis();
    tracing::info!(
        reconciliation = %r.id,
        discrepancies = discrepancies.len(),
        settled_payments = result.settled.values().map(|s| s.payments).sum::<u64>(),
        "reconciled in {write_ms} ms: bills {bills_ms} ms, gateway records {} ms, match {} ms, writes {} ms",
        read_ms - bills_ms,
        match_ms - read_ms,
        write_ms - match_ms,
    );
    repair(gw, up, &discrepancies).await;
    Ok(())
}

/// The gateway's side: what it has on the day, and whatever else the bills name.
async fn gateway_side(
    gw: &Gateway,
    merchant_id: &str,
    date: Date,
    input: &mut DayInput,
) -> anyhow::Result<()> {
    let (from, to) = day_bounds(date);
    let store = gw.store();
    let mut orders = store.orders_paid_between(merchant_id, from, to).await?;
    let more = not_among(
        input.bill_payments.iter().map(|p| p.out_trade_no.as_str()),
        orders.iter().map(|o| o.out_trade_no.as_str()),
    );
    orders.extend(store.orders_by_out_trade_no(merchant_id, &more).await?);
    input.orders = orders.iter().map(|o| gateway_order(o, from, to)).collect();

    let mut refunds = store.refunds_made_between(merchant_id, from, to).await?;
    let more = not_among(
        input.bill_refunds.iter().map(|r| r.out_refund_no.as_str()),
        refunds.iter().map(|r| r.out_refund_no.as_str()),
    );
    refunds.extend(store.refunds_by_out_refund_no(merchant_id, &more).await?);
    input.refunds = refunds
        .iter()
        .map(|r| gateway_refund(r, from, to))
        .collect();

    let mut payouts = store.payouts_sent_between(merchant_id, from, to).await?;
    let more = not_among(
        input.payout_flows.iter().map(|f| f.out_bill_no.as_str()),
        payouts.iter().map(|p| p.out_bill_no.as_str()),
    );
    payouts.extend(store.payouts_by_out_bill_no(merchant_id, &more).await?);
    input.payouts = payouts
        .iter()
        .map(|p| gateway_payout(p, from, to))
        .collect();
    Ok(())
}

fn gateway_payout(p: &PayoutRow, from: i64, to: i64) -> GatewayPayout {
    GatewayPayout {
        out_bill_no: p.out_bill_no.clone(),
        payout_id: p.id.clone(),
        amount: p.amount,
        state: match p.status {
            PayoutStatus::Succeeded => PayoutState::Succeeded,
            PayoutStatus::Failed | PayoutStatus::Cancelled => PayoutState::Returned,
            _ => PayoutState::Open,
        },
        on_day: p.transfer_bill_no.is_some() && (from..to).contains(&p.created_at),
        returned_on_day: matches!(p.status, PayoutStatus::Failed | PayoutStatus::Cancelled)
            && p.transfer_bill_no.is_some()
            && p.finished_at.is_some_and(|t| (from..to).contains(&t)),
    }
}

/// The references the bills name that the day's records do not hold, each once.
fn not_among<'a>(
    named: impl Iterator<Item = &'a str>,
    held: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let held: HashSet<&str> = held.collect();
    let missing: HashSet<&str> = named.filter(|no| !held.contains(no)).collect();
    missing.into_iter().map(str::to_string).collect()
}

fn gateway_order(o: &DayOrderRow, from: i64, to: i64) -> GatewayOrder {
    GatewayOrder {
        out_trade_no: o.out_trade_no.clone(),
        payment_id: o.payment_id.clone(),
        amount: o.amount,
        state: match o.attempt_status {
            AttemptStatus::Succeeded | AttemptStatus::Duplicate => OrderState::Paid,
            AttemptStatus::Open => OrderState::Pending,
            AttemptStatus::Closed => OrderState::Unpaid,
        },
        paid_on_day: o.paid_at.is_some_and(|t| (from..to).contains(&t)),
    }
}

fn gateway_refund(r: &DayRefundRow, from: i64, to: i64) -> GatewayRefund {
    GatewayRefund {
        out_refund_no: r.out_refund_no.clone(),
        refund_id: r.id.clone(),
        payment_id: r.payment_id.clone(),
        amount: r.amount,
        state: match r.status {
            RefundStatus::Succeeded => RefundState::Succeeded,
            RefundStatus::Failed => RefundState::Failed,
            _ => RefundState::Pending,
        },
        on_day: r.submitted_at.is_some_and(|t| (from..to).contains(&t)),
    }
}

/// The day's settlement, fees and fees returned, as the fund-flow bill shows them for the
/// payments and refunds that matched: one posting each, once per day (their source is the
/// reconciliation).
async fn post_bill_postings(
    gw: &Gateway,
    r: &ReconciliationRow,
    result: &DayResult,
) -> anyhow::Result<()> {
    let now = gw.now_ms();
    // Each currency's postings of the day have their own source: the reconciliation and the
    // currency.
    let sums: Vec<(&str, String, PostingKind, i64)> = result
        .settled
        .iter()
        .flat_map(|(currency, sums)| {
            let source = format!("{}/{currency}", r.id);
            sums.postings()
                .into_iter()
                .map(move |(kind, amount)| (currency.as_str(), source.clone(), kind, amount))
        })
        .collect();
    let postings = sums
        .iter()
        .map(|(currency, source, kind, amount)| {
            let src = PostingSource {
                merchant_id: &r.merchant_id,
                currency,
                source_id: source,
                payment_id: None,
                refund_id: None,
                now,
            };
            Ok((Posting::new(*kind, *amount)?, src))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    gw.store().post_all(&postings).await?;
    Ok(())
}

/// Writes the findings as open discrepancies, with their events and the completed
/// reconciliation, in one transaction. Returns the discrepancies, in the findings' order.
async fn complete(
    gw: &Gateway,
    r: &ReconciliationRow,
    result: &DayResult,
) -> anyhow::Result<Vec<DiscrepancyRow>> {
    let now = gw.now_ms();
    let discrepancies: Vec<DiscrepancyRow> = result
        .findings
        .iter()
        .map(|f| discrepancy_row(r, f, now))
        .collect::<anyhow::Result<_>>()?;
    let totals = serde_json::to_string(&result.totals)?;
    let completed = ReconciliationRow {
        status: ReconciliationStatus::Completed,
        totals: Some(totals.clone()),
        discrepancy_count: discrepancies.len() as i64,
        completed_at: Some(now),
        attempts: r.attempts + 1,
        last_error: None,
        ..r.clone()
    };
    let event = |event_type: &str, payload: String| EventRow {
        id: wxgate_domain::id::EventId::generate().to_string(),
        merchant_id: r.merchant_id.clone(),
        event_type: event_type.to_string(),
        object_id: r.id.clone(),
        object_version: 0,
        payload,
        created_at: now,
    };
    let mut events: Vec<EventRow> = discrepancies
        .iter()
        .map(|d| {
            event(
                "reconciliation.discrepancy_found",
                views::discrepancy_event(d),
            )
        })
        .collect();
    events.push(event(
        "reconciliation.completed",
        views::reconciliation_event(&completed),
    ));
    let done = Completion {
        totals,
        discrepancies: discrepancies.clone(),
        events,
        now,
    };
    gw.store().complete_reconciliation(r, &done).await?;
    Ok(discrepancies)
}

fn discrepancy_row(r: &ReconciliationRow, f: &Finding, now: i64) -> anyhow::Result<DiscrepancyRow> {
    let side = |s: &Option<recon::Side>| -> anyhow::Result<Option<String>> {
        Ok(match s {
            Some(s) => Some(serde_json::to_string(s)?),
            None => None,
        })
    };
    Ok(DiscrepancyRow {
        id: wxgate_domain::id::DiscrepancyId::generate().to_string(),
        reconciliation_id: r.id.clone(),
        merchant_id: r.merchant_id.clone(),
        kind: f.kind,
        reference: f.reference.clone(),
        payment_id: f.payment_id.clone(),
        refund_id: f.refund_id.clone(),
        payout_id: f.payout_id.clone(),
        gateway_side: side(&f.gateway)?,
        wechat_side: side(&f.wechat)?,
        status: DiscrepancyStatus::Open,
        resolution: None,
        created_at: now,
        resolved_at: None,
    })
}
