//! Reconciliation against WeChat's bills: a merchant's day is requested (by the API, the CLI or
//! the daily schedule), claimed from the database by one node, matched three ways (the
//! gateway's records, the trade bill, the fund-flow bill) by the pure
//! [`reconcile`](wxgate_domain::reconciliation::reconcile), and written with its discrepancies
//! and events in one transaction. Bills justify the day's settlement and fee postings; findings
//! WeChat can settle by a query are repaired through the normal sync path.

use std::collections::HashSet;

use time::{Date, OffsetDateTime, UtcOffset};
use wechatpay_v3::bill::statement::StatementRow;
use wechatpay_v3::bill::{BillRefundStatus, FlowDirection, FundFlowBill, TradeBill, TradeRowState};
use wechatpay_v3::model::{
    BillOutcome, FundFlowBillRequest, StatementOutcome, StatementsRequest, TradeBillRequest,
};
use wxgate_domain::id::{DiscrepancyId, MerchantId, ReconciliationId};
use wxgate_domain::ledger::{Posting, PostingKind};
use wxgate_domain::reconciliation::{
    self as recon, DayInput, DayResult, DiscrepancyStatus, Finding, FlowKind, FlowMovement,
    GatewayOrder, GatewayRefund, OrderState, ReconciliationStatus, RefundState,
};
use wxgate_domain::refund::RefundStatus;
use wxgate_store::{
    Completion, DayOrderRow, DayRefundRow, DiscrepancyRow, EventRow, PostingSource,
    ReconciliationRow,
};

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
/// How far back open discrepancies are repaired again, and how many per round.
pub const REPAIR_WINDOW_MS: i64 = 2 * 86_400_000;
const REPAIR_BATCH: i64 = 16;
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

/// Runs one reconciliation now, whatever its schedule (the CLI): it as it is afterwards.
/// `None` when it is finished already or another node holds it.
pub async fn run_now(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &str,
) -> anyhow::Result<Option<ReconciliationRow>> {
    let claimed = gw
        .store()
        .claim_reconciliation(merchant_id, id, gw.now_ms())
        .await?;
    let Some(r) = claimed else {
        return Ok(None);
    };
    run_claimed(gw, &r).await?;
    Ok(gw.store().reconciliation(merchant_id, id).await?)
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

/// Both bills of a day as downloaded (checked, uncompressed), once WeChat has them; `None` for
/// a bill WeChat says does not exist (nothing moved).
struct Bills {
    trade: Option<Vec<u8>>,
    flow: Option<Vec<u8>>,
}

async fn fetch_bills(up: &Upstream, date: &str) -> anyhow::Result<Option<Bills>> {
    let trade = TradeBillRequest {
        bill_date: date.to_string(),
        bill_type: Some("ALL".into()),
        tar_type: Some("GZIP".into()),
    };
    let trade = match up.client.trade_bill(&trade).await? {
        BillOutcome::Creating => return Ok(None),
        BillOutcome::NoStatement => None,
        BillOutcome::Ready(answer) => Some(up.client.download_bill(&answer, true).await?),
    };
    let flow = FundFlowBillRequest {
        bill_date: date.to_string(),
        account_type: Some("BASIC".into()),
        tar_type: Some("GZIP".into()),
    };
    let flow = match up.client.fund_flow_bill(&flow).await? {
        BillOutcome::Creating => return Ok(None),
        BillOutcome::NoStatement => None,
        BillOutcome::Ready(answer) => Some(up.client.download_bill(&answer, true).await?),
    };
    Ok(Some(Bills { trade, flow }))
}

async fn run_one(gw: &Gateway, r: &ReconciliationRow) -> anyhow::Result<()> {
    let up = gw.upstream(&r.merchant_id).await?;
    let started = std::time::Instant::now();
    let fee_rate_bp = up.merchant.fee_rate_bp;
    let input = if up.cross_border() {
        statement_input(&up, &r.bill_date, fee_rate_bp).await?
    } else {
        match fetch_bills(&up, &r.bill_date).await? {
            Some(bills) => Some(bill_input(&bills, fee_rate_bp)?),
            None => None,
        }
    };
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

/// A cross-border merchant's day from its statement (`None` while WeChat builds it). The
/// statement is both bills: its rows are the trade bill's, and what it says is settled (应结)
/// stands in for the fund-flow bill's movements.
async fn statement_input(
    up: &Upstream,
    date: &str,
    fee_rate_bp: i64,
) -> anyhow::Result<Option<DayInput>> {
    let req = StatementsRequest {
        date: date.to_string(),
        mchid: up.merchant.mchid.clone(),
    };
    let csv = match up.client.global_statements(&req).await? {
        StatementOutcome::Creating => return Ok(None),
        StatementOutcome::NoStatement => Vec::new(),
        StatementOutcome::Ready(csv) => csv,
    };
    let mut input = DayInput {
        fee_rate_bp: u32::try_from(fee_rate_bp).unwrap_or(0),
        ..DayInput::default()
    };
    let mut failed = None;
    if !csv.is_empty() {
        wechatpay_v3::bill::statement::read_rows(&csv, |row| {
            if let Err(e) = statement_row(&mut input, row) {
                failed.get_or_insert(e);
            }
        })?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Some(input)),
    }
}

/// One statement row into the day: a payment (with its settlement and fee) or a refund (with
/// the fee it returns), amounts in minor units of the row's currency.
fn statement_row(input: &mut DayInput, row: StatementRow) -> anyhow::Result<()> {
    let exponent = |code: &str| -> anyhow::Result<u32> {
        Ok(wxgate_domain::Currency::parse(code)
            .map_err(|e| anyhow::anyhow!("statement currency {code:?}: {e}"))?
            .exponent())
    };
    let e = exponent(&row.currency)?;
    let fee = row.fee.minor_units("手续费", e)?;
    let flow = |business_no: &str, kind, amount| FlowMovement {
        business_no: business_no.to_string(),
        flow_no: String::new(),
        kind,
        amount,
    };
    anyhow::ensure!(
        row.trade_state != "SUCCESS" || row.settlement_currency == row.currency,
        "{} is settled in {} but priced in {}: settlement in another currency is not reconciled yet",
        row.out_trade_no,
        row.settlement_currency,
        row.currency
    );
    match row.trade_state.as_str() {
        "SUCCESS" => {
            let settlement = row
                .settlement_amount
                .minor_units("应结订单金额", exponent(&row.settlement_currency)?)?;
            input
                .flows
                .push(flow(&row.transaction_id, FlowKind::Settlement, settlement));
            input
                .flows
                .push(flow(&row.transaction_id, FlowKind::Fee, fee));
            input.bill_payments.push(recon::BillPayment {
                amount: row.amount.minor_units("订单金额", e)?,
                currency: row.currency,
                settlement,
                fee,
                out_trade_no: row.out_trade_no,
                transaction_id: row.transaction_id,
            });
        }
        "REFUND" => {
            input
                .flows
                .push(flow(&row.refund_id, FlowKind::FeeReturn, -fee));
            input.bill_refunds.push(recon::BillRefund {
                amount: row.refund_requested.minor_units("申请退款金额", e)?,
                currency: row.currency,
                processing: row.refund_status == "PROCESSING",
                out_refund_no: row.out_refund_no,
                refund_id: row.refund_id,
            });
        }
        _ => {}
    }
    Ok(())
}

/// The bills' side of the day, in domain values.
fn bill_input(bills: &Bills, fee_rate_bp: i64) -> anyhow::Result<DayInput> {
    let mut input = DayInput {
        fee_rate_bp: u32::try_from(fee_rate_bp).unwrap_or(0),
        ..DayInput::default()
    };
    if let Some(file) = &bills.trade {
        TradeBill::read_rows(file, |row| match (row.state, row.refund) {
            (TradeRowState::Success, _) => input.bill_payments.push(recon::BillPayment {
                out_trade_no: row.out_trade_no,
                transaction_id: row.transaction_id,
                amount: row.order_total.unwrap_or(row.settlement_total),
                currency: row.currency,
                settlement: row.settlement_total,
                fee: row.fee.fen_rounded(),
            }),
            (TradeRowState::Refund, Some(part)) => input.bill_refunds.push(recon::BillRefund {
                out_refund_no: part.out_refund_no,
                refund_id: part.refund_id,
                amount: part.requested.unwrap_or(part.amount),
                currency: row.currency,
                processing: part.status == BillRefundStatus::Processing,
            }),
            _ => {}
        })?;
    }
    if let Some(file) = &bills.flow {
        FundFlowBill::read_rows(file, |row| {
            input.flows.push(FlowMovement {
                kind: flow_kind(&row.business_type, row.direction),
                business_no: row.business_no,
                flow_no: row.flow_no,
                amount: row.amount,
            })
        })?;
    }
    Ok(input)
}

/// What a fund-flow movement is, by its business type (业务类型) and direction.
fn flow_kind(business_type: &str, direction: FlowDirection) -> FlowKind {
    match (business_type, direction) {
        ("交易", FlowDirection::Income) => FlowKind::Settlement,
        ("扣除交易手续费", FlowDirection::Expense) => FlowKind::Fee,
        ("退款", FlowDirection::Expense) => FlowKind::Refund,
        ("退还交易手续费", FlowDirection::Income) => FlowKind::FeeReturn,
        _ => FlowKind::Other,
    }
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
    Ok(())
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
        state: match o.attempt_status.as_str() {
            "succeeded" | "duplicate" => OrderState::Paid,
            "open" => OrderState::Pending,
            _ => OrderState::Unpaid,
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
        on_day: (from..to).contains(&r.created_at),
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
        gateway_side: side(&f.gateway)?,
        wechat_side: side(&f.wechat)?,
        status: DiscrepancyStatus::Open,
        resolution: None,
        created_at: now,
        resolved_at: None,
    })
}

/// Asks WeChat about each finding it can settle and applies the answer through the normal
/// sync path (with its events). A payment brought in line is `repaired`; a refund whose live
/// state already agrees with the gateway was only in flight when the bill was written, and is
/// `resolved` saying so. Anything else stays open for a person.
async fn repair(gw: &Gateway, up: &Upstream, discrepancies: &[DiscrepancyRow]) {
    for d in discrepancies {
        repair_one(gw, up, d).await;
    }
}

/// Asks WeChat about one open discrepancy and closes it if the answer settles it.
async fn repair_one(gw: &Gateway, up: &Upstream, d: &DiscrepancyRow) {
    let repair = recon::Repair::of(d.kind, d.payment_id.as_deref(), d.refund_id.as_deref());
    let outcome = match repair {
        Some(recon::Repair::SyncPayment { payment_id }) => {
            repair_payment(gw, up, &payment_id, &d.reference).await
        }
        Some(recon::Repair::SyncRefund { refund_id }) => repair_refund(gw, up, &refund_id).await,
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

/// Queries the order WeChat says was paid and applies it to the payment.
async fn repair_payment(
    gw: &Gateway,
    up: &Upstream,
    payment_id: &str,
    out_trade_no: &str,
) -> anyhow::Result<Option<(DiscrepancyStatus, String)>> {
    let tx = up.query(out_trade_no).await?;
    if !matches!(
        tx.state(),
        Some(wechatpay_v3::model::TradeState::Success | wechatpay_v3::model::TradeState::Refund)
    ) {
        return Ok(None);
    }
    let Some(p) = gw.store().payment(&up.merchant.id, payment_id).await? else {
        return Ok(None);
    };
    let before = p.status;
    let after = crate::app::orders::apply_paid(gw, &up.merchant, &p, &tx, "reconciliation").await?;
    if after.status != before {
        let why = format!(
            "WeChat's query says {out_trade_no} was paid: the payment went from {} to {}",
            before.as_str(),
            after.status.as_str()
        );
        return Ok(Some((DiscrepancyStatus::Repaired, why)));
    }
    // Brought in line already (by a callback, the status sync or an earlier try).
    Ok(before.is_paid().then(|| {
        (
            DiscrepancyStatus::Resolved,
            format!(
                "WeChat's query says {out_trade_no} was paid, and the payment is {}",
                before.as_str()
            ),
        )
    }))
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
    let after = crate::app::refunds::query_and_apply(gw, &before).await?;
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
    Ok((after.status == RefundStatus::Succeeded).then(|| {
        (
            DiscrepancyStatus::Resolved,
            "WeChat's query says SUCCESS, as the gateway does: the bill was written while the refund was in flight".to_string(),
        )
    }))
}
