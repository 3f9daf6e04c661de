//! The trade bill (`/v3/bill/tradebill`) as typed rows, read by header name so that every
//! layout parses: ALL (27 columns), SUCCESS (20), REFUND (29) and the older files of merchants
//! without 免充值券 (24, 18 and 26 columns, where 总金额 and 代金券或立减优惠金额 stand in for
//! 应结订单金额 and 代金券金额 and the last three columns are missing).

use super::amount::{self, Fee};
use super::error::BillError;
use super::layout::{Columns, Lines, RowView};

/// Which trade bill a file is, told from its header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeLayout {
    All,
    Success,
    Refund,
}

/// 交易状态 of a row. A refunded order keeps its `Success` row; the refund is a row of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeRowState {
    Success,
    Refund,
    Revoked,
    Other(String),
}

/// 退款状态 of a refund row. `Processing` means the money was deducted and the refund is in
/// flight; the bill is not rewritten when it finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillRefundStatus {
    Success,
    Processing,
    Other(String),
}

/// The refund half of a `Refund` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundPart {
    pub refund_id: String,
    pub out_refund_no: String,
    /// 退款金额: settlement refund, fen.
    pub amount: i64,
    /// 充值券退款金额, fen.
    pub coupon_amount: i64,
    pub refund_type: String,
    pub status: BillRefundStatus,
    /// 申请退款金额, fen (absent in the older layout).
    pub requested: Option<i64>,
    /// 退款申请时间 and 退款成功时间 (REFUND files only).
    pub requested_at: Option<String>,
    pub succeeded_at: Option<String>,
}

/// One data row of a trade bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeRow {
    /// 交易时间, `yyyy-MM-dd HH:mm:ss` in Beijing time: the payment's success time, or for a
    /// refund row the time the refund was requested.
    pub time: String,
    pub appid: String,
    pub mchid: String,
    /// 特约商户号: `0` for a direct merchant.
    pub sub_mchid: String,
    pub device_info: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    pub openid: String,
    pub trade_type: String,
    pub state: TradeRowState,
    pub bank: String,
    pub currency: String,
    /// 应结订单金额 (总金额 in the older layout), fen; `0` on refund rows.
    pub settlement_total: i64,
    /// 代金券金额 (代金券或立减优惠金额), fen.
    pub coupon: i64,
    pub refund: Option<RefundPart>,
    pub description: String,
    pub attach: String,
    pub fee: Fee,
    /// 费率, as printed (`0.60%`).
    pub fee_rate: String,
    /// 订单金额, fen (absent in the older layout).
    pub order_total: Option<i64>,
    pub fee_note: Option<String>,
}

/// The summary lines, by name; the columns a layout lacks are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TradeSummary {
    pub count: u64,
    /// 应结订单总金额 (总交易额 in the older layout).
    pub settlement_total: Option<i64>,
    /// 退款总金额 (总退款金额).
    pub refund_total: Option<i64>,
    pub coupon_refund_total: Option<i64>,
    pub fee_total: Option<Fee>,
    pub order_total: Option<i64>,
    pub refund_requested_total: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeBill {
    pub layout: TradeLayout,
    /// The file predates 免充值券 (总金额 instead of 应结订单金额).
    pub legacy: bool,
    pub rows: Vec<TradeRow>,
    pub summary: TradeSummary,
}

/// Column names in the current layout, with the older name where one differs.
const SETTLEMENT: (&str, &str) = ("应结订单金额", "总金额");
const COUPON: (&str, &str) = ("代金券金额", "代金券或立减优惠金额");

/// What a trade bill says besides its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeBillHead {
    pub layout: TradeLayout,
    pub legacy: bool,
    pub summary: TradeSummary,
}

impl TradeBill {
    pub fn parse(file: &[u8]) -> Result<Self, BillError> {
        let mut rows = Vec::new();
        let head = Self::read_rows(file, |row| rows.push(row))?;
        Ok(Self {
            layout: head.layout,
            legacy: head.legacy,
            rows,
            summary: head.summary,
        })
    }

    /// Reads the bill row by row, handing each typed row to `each` (so a large bill is never
    /// held as rows all at once); answers the layout and the summary.
    pub fn read_rows(
        file: &[u8],
        mut each: impl FnMut(TradeRow),
    ) -> Result<TradeBillHead, BillError> {
        let lines = Lines::read(file)?;
        let columns = Columns::new(&lines.columns);
        let layout = if columns.has("退款申请时间") {
            TradeLayout::Refund
        } else if columns.has("微信退款单号") {
            TradeLayout::All
        } else {
            TradeLayout::Success
        };
        let legacy = !columns.has(SETTLEMENT.0) && columns.has(SETTLEMENT.1);
        for (i, fields) in lines.rows().enumerate() {
            each(parse_row(&columns.row(i + 1, &fields)?)?);
        }
        let summary = parse_summary(&lines.summary_columns, &lines.summary)?;
        Ok(TradeBillHead {
            layout,
            legacy,
            summary,
        })
    }
}

fn parse_row(r: &RowView<'_>) -> Result<TradeRow, BillError> {
    let state = match r.text("交易状态")? {
        "SUCCESS" => TradeRowState::Success,
        "REFUND" => TradeRowState::Refund,
        "REVOKED" => TradeRowState::Revoked,
        other => TradeRowState::Other(other.to_string()),
    };
    let refund = if state == TradeRowState::Refund {
        Some(parse_refund(r)?)
    } else {
        None
    };
    Ok(TradeRow {
        time: r.string("交易时间")?,
        appid: r.string("公众账号ID")?,
        mchid: r.string("商户号")?,
        sub_mchid: r.string("特约商户号")?,
        device_info: r.string("设备号")?,
        transaction_id: r.string("微信订单号")?,
        out_trade_no: r.string("商户订单号")?,
        openid: r.string("用户标识")?,
        trade_type: r.string("交易类型")?,
        state,
        bank: r.string("付款银行")?,
        currency: r.string("货币种类")?,
        settlement_total: amount::fen(SETTLEMENT.0, r.either(SETTLEMENT)?)?,
        coupon: amount::fen(COUPON.0, r.either(COUPON)?)?,
        refund,
        description: r.string("商品名称")?,
        attach: r.string("商户数据包")?,
        fee: amount::fee("手续费", r.text("手续费")?)?,
        fee_rate: r.string("费率")?,
        order_total: r.optional_fen("订单金额")?,
        fee_note: r.optional("费率备注").map(str::to_string),
    })
}

fn parse_refund(r: &RowView<'_>) -> Result<RefundPart, BillError> {
    let status = match r.text("退款状态")? {
        "SUCCESS" => BillRefundStatus::Success,
        "PROCESSING" => BillRefundStatus::Processing,
        other => BillRefundStatus::Other(other.to_string()),
    };
    let coupon_name = if r.has("充值券退款金额") {
        "充值券退款金额"
    } else {
        "代金券或立减优惠退款金额"
    };
    Ok(RefundPart {
        refund_id: r.string("微信退款单号")?,
        out_refund_no: r.string("商户退款单号")?,
        amount: amount::fen("退款金额", r.text("退款金额")?)?,
        coupon_amount: r.optional_fen(coupon_name)?.unwrap_or(0),
        refund_type: r.string("退款类型")?,
        status,
        requested: r.optional_fen("申请退款金额")?,
        requested_at: r.optional("退款申请时间").map(str::to_string),
        succeeded_at: r.optional("退款成功时间").map(str::to_string),
    })
}

fn parse_summary(names: &[String], values: &[String]) -> Result<TradeSummary, BillError> {
    let s = Columns::new(names);
    let s = s.row(0, values)?;
    let fen = |names: &[&str]| -> Result<Option<i64>, BillError> {
        for name in names {
            if let Some(text) = s.optional(name) {
                return amount::fen(name, text).map(Some);
            }
        }
        Ok(None)
    };
    let fee_total = match s.optional("手续费总金额") {
        Some(text) => Some(amount::fee("手续费总金额", text)?),
        None => None,
    };
    Ok(TradeSummary {
        count: amount::count("总交易单数", s.text("总交易单数")?)?,
        settlement_total: fen(&["应结订单总金额", "总交易额"])?,
        refund_total: fen(&["退款总金额", "总退款金额"])?,
        coupon_refund_total: fen(&["充值券退款总金额", "总代金券或立减优惠退款金额"])?,
        fee_total,
        order_total: fen(&["订单总金额"])?,
        refund_requested_total: fen(&["申请退款总金额"])?,
    })
}
