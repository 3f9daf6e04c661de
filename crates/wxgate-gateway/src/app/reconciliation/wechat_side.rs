//! WeChat's side of a day, read into the match's values: a domestic merchant's trade bill, basic
//! fund-flow bill and operation-account fund-flow bill (its payouts), or a cross-border
//! merchant's statement (which stands for the first two).

use wechatpay_v3::bill::statement::StatementRow;
use wechatpay_v3::bill::{BillRefundStatus, FlowDirection, FundFlowBill, TradeBill, TradeRowState};
use wechatpay_v3::model::{
    BillOutcome, FundFlowBillRequest, StatementOutcome, StatementsRequest, TradeBillRequest,
};
use wxgate_domain::reconciliation::{self as recon, DayInput, FlowKind, FlowMovement};

use crate::pace::Api;
use crate::upstream::Upstream;

/// The day as WeChat has it, in the match's values; `None` while WeChat is still building it.
pub async fn wechat_day(up: &Upstream, date: &str) -> anyhow::Result<Option<DayInput>> {
    let fee_rate_bp = up.merchant.fee_rate_bp;
    if up.cross_border() {
        return statement_input(up, date, fee_rate_bp).await;
    }
    match fetch_bills(up, date).await? {
        Some(bills) => Ok(Some(bill_input(&bills, fee_rate_bp)?)),
        None => Ok(None),
    }
}

/// Both bills of a day as downloaded (checked, uncompressed), once WeChat has them; `None` for
/// a bill WeChat says does not exist (nothing moved).
struct Bills {
    trade: Option<Vec<u8>>,
    flow: Option<Vec<u8>>,
    /// The operation account's: where payouts leave from.
    operation: Option<Vec<u8>>,
}

async fn fetch_bills(up: &Upstream, date: &str) -> anyhow::Result<Option<Bills>> {
    let trade = TradeBillRequest {
        bill_date: date.to_string(),
        bill_type: Some("ALL".into()),
        tar_type: Some("GZIP".into()),
    };
    let trade = match up.client(Api::Bill).await.trade_bill(&trade).await? {
        BillOutcome::Creating => return Ok(None),
        BillOutcome::NoStatement => None,
        BillOutcome::Ready(answer) => Some(
            up.client(Api::Bill)
                .await
                .download_bill(&answer, true)
                .await?,
        ),
    };
    let Some(flow) = fund_flow(up, date, "BASIC").await? else {
        return Ok(None);
    };
    // A merchant without an operation account (it never made a payout) may be refused its
    // bill: that day's payments are still reconciled, its payouts with nothing to match.
    let operation = match fund_flow(up, date, "OPERATION").await {
        Ok(Some(bill)) => bill,
        Ok(None) => return Ok(None),
        Err(e) if is_refusal(&e) => {
            tracing::warn!(merchant = %up.merchant.id, error = %e, "no operation-account bill");
            None
        }
        Err(e) => return Err(e),
    };
    Ok(Some(Bills {
        trade,
        flow,
        operation,
    }))
}

/// Whether an error is WeChat's plain refusal (a 4xx it will answer again the same way).
fn is_refusal(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<wechatpay_v3::client::ClientError>(),
        Some(wechatpay_v3::client::ClientError::Api(api)) if api.status < 500 && !api.is_retryable()
    )
}

/// One account's fund-flow bill of the day: `None` while WeChat builds it, `Some(None)` when
/// nothing moved.
async fn fund_flow(
    up: &Upstream,
    date: &str,
    account_type: &str,
) -> anyhow::Result<Option<Option<Vec<u8>>>> {
    let req = FundFlowBillRequest {
        bill_date: date.to_string(),
        account_type: Some(account_type.into()),
        tar_type: Some("GZIP".into()),
    };
    Ok(
        match up.client(Api::Bill).await.fund_flow_bill(&req).await? {
            BillOutcome::Creating => None,
            BillOutcome::NoStatement => Some(None),
            BillOutcome::Ready(answer) => Some(Some(
                up.client(Api::Bill)
                    .await
                    .download_bill(&answer, true)
                    .await?,
            )),
        },
    )
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
    let csv = match up.client(Api::Bill).await.global_statements(&req).await? {
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

/// The exponent of a statement's currency code.
fn exponent(code: &str) -> anyhow::Result<u32> {
    Ok(wxgate_domain::Currency::parse(code)
        .map_err(|e| anyhow::anyhow!("statement currency {code:?}: {e}"))?
        .exponent())
}

/// One statement row into the day: a payment (with its settlement and fee) or a refund (with
/// the fee it returns). Amounts are in minor units of the row's pricing currency, settled ones
/// in the settlement currency's. The fee is charged in the pricing currency (手续费, like every
/// amount of the row but the settled ones); for a merchant settled in another currency it is
/// taken out of the settlement at the row's own rate.
fn statement_row(input: &mut DayInput, row: StatementRow) -> anyhow::Result<()> {
    let e = exponent(&row.currency)?;
    let fee = row.fee.minor_units("手续费", e)?;
    let flow = |business_no: &str, kind, amount| FlowMovement {
        business_no: business_no.to_string(),
        kind,
        amount,
    };
    match row.trade_state.as_str() {
        "SUCCESS" => {
            let amount = row.amount.minor_units("订单金额", e)?;
            let settlement = row
                .settlement_amount
                .minor_units("应结订单金额", exponent(&row.settlement_currency)?)?;
            let converted = row.settlement_currency != row.currency;
            let settled_fee = in_settlement(fee, (settlement, amount), converted);
            input
                .flows
                .push(flow(&row.transaction_id, FlowKind::Settlement, settlement));
            input
                .flows
                .push(flow(&row.transaction_id, FlowKind::Fee, settled_fee));
            input.bill_payments.push(recon::BillPayment {
                amount,
                currency: row.currency,
                settlement,
                settlement_currency: row.settlement_currency,
                fee,
                out_trade_no: row.out_trade_no,
                transaction_id: row.transaction_id,
            });
        }
        "REFUND" => statement_refund(input, row, fee, e)?,
        _ => {}
    }
    Ok(())
}

/// An amount of a row's pricing currency (its fee) in the money the row settled: itself, or
/// for a merchant settled in another currency, converted at the row's own rate (`settled`
/// for `priced`).
fn in_settlement(amount: i64, (settled, priced): (i64, i64), converted: bool) -> i64 {
    match converted {
        true => recon::at_row_rate(amount, settled, priced),
        false => amount,
    }
}

/// A statement's refund row: the refund, and the fee it returns (in the settlement currency).
fn statement_refund(
    input: &mut DayInput,
    row: StatementRow,
    fee: i64,
    e: u32,
) -> anyhow::Result<()> {
    let amount = row.refund_requested.minor_units("申请退款金额", e)?;
    // A row without a refund settlement currency settles in the pricing one.
    let settlement_currency = match row.refund_settlement_currency.as_str() {
        "" => row.currency.clone(),
        code => code.to_string(),
    };
    let settlement = row
        .refund_settlement_amount
        .minor_units("退款应结订单金额", exponent(&settlement_currency)?)?;
    let converted = settlement_currency != row.currency;
    let returned = in_settlement(-fee, (settlement, amount), converted);
    input.flows.push(FlowMovement {
        business_no: row.refund_id.clone(),
        kind: FlowKind::FeeReturn,
        amount: returned,
    });
    input.bill_refunds.push(recon::BillRefund {
        amount,
        currency: row.currency,
        settlement,
        settlement_currency,
        processing: row.refund_status == "PROCESSING",
        out_refund_no: row.out_refund_no,
        refund_id: row.refund_id,
    });
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
                settlement_currency: row.currency.clone(),
                currency: row.currency,
                settlement: row.settlement_total,
                fee: row.fee.fen_rounded(),
            }),
            (TradeRowState::Refund, Some(part)) => input.bill_refunds.push(recon::BillRefund {
                out_refund_no: part.out_refund_no,
                refund_id: part.refund_id,
                amount: part.requested.unwrap_or(part.amount),
                settlement: part.amount,
                settlement_currency: row.currency.clone(),
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
                amount: row.amount,
            })
        })?;
    }
    if let Some(file) = &bills.operation {
        FundFlowBill::read_rows(file, |row| {
            // Transfers leave as expenses; a failed or cancelled one's amount comes back.
            if row.business_name == TRANSFER_BUSINESS_NAME {
                input.payout_flows.push(recon::PayoutFlow {
                    out_bill_no: row.voucher,
                    amount: row.amount,
                    returned: row.direction == FlowDirection::Income,
                });
            }
        })?;
    }
    Ok(input)
}

/// 业务名称 of a merchant transfer's movements in the operation account.
const TRANSFER_BUSINESS_NAME: &str = "商家转账";

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
