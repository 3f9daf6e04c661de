//! Cross-border statements (`GET /v3/global/statements`): one CSV per day with payments and
//! refunds, amounts in the major unit of each row's currency, returned directly (no download
//! step) and signed over `{"sha1":"<SHA-1 of the CSV>"}` in place of the body.

use super::amount::scaled;
use super::error::BillError;
use super::layout::{Columns, Lines, RowView};

/// The header carrying the SHA-1 (hex) of the statement the answer holds.
pub const HEADER_STATEMENT_SHA1: &str = "Wechatpay-Statement-Sha1";

/// The message body a statement answer is signed over: `{"sha1":"<digest>"}`.
pub fn digest_body(sha1_hex: &str) -> Vec<u8> {
    format!("{{\"sha1\":\"{sha1_hex}\"}}").into_bytes()
}

/// An amount in a currency's major unit, as the statement prints it; exact in minor units once
/// the currency's exponent is known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MajorAmount(pub String);

impl MajorAmount {
    /// The amount in minor units of a currency with `exponent` decimals (`12.34` USD → 1234).
    pub fn minor_units(&self, field: &str, exponent: u32) -> Result<i64, BillError> {
        if self.0.is_empty() {
            return Ok(0);
        }
        scaled(field, &self.0, exponent)
    }
}

/// One row of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatementRow {
    pub time: String,
    pub mchid: String,
    pub sub_mchid: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    /// 交易状态: `SUCCESS`, `REFUND`, …
    pub trade_state: String,
    pub refund_id: String,
    pub out_refund_no: String,
    pub refund_status: String,
    pub fee: MajorAmount,
    /// 标价币种 and 订单金额(标价币种).
    pub currency: String,
    pub amount: MajorAmount,
    /// 用户支付币种 and 用户支付金额.
    pub payer_currency: String,
    pub payer_amount: MajorAmount,
    /// 结算币种 and 应结订单金额.
    pub settlement_currency: String,
    pub settlement_amount: MajorAmount,
    /// 支付汇率, as printed.
    pub exchange_rate: String,
    /// 申请退款金额 (in the pricing currency).
    pub refund_requested: MajorAmount,
    /// 退款结算币种 and 退款应结订单金额.
    pub refund_settlement_currency: String,
    pub refund_settlement_amount: MajorAmount,
}

/// Reads a statement row by row. Its summary lines, if it has any (no layout for them was
/// found), are left alone.
pub fn read_rows(file: &[u8], mut each: impl FnMut(StatementRow)) -> Result<(), BillError> {
    let lines = Lines::read_maybe_summary(file)?;
    let columns = Columns::new(&lines.columns);
    for (i, fields) in lines.rows().enumerate() {
        each(parse_row(&columns.row(i + 1, &fields)?)?);
    }
    Ok(())
}

fn parse_row(r: &RowView<'_>) -> Result<StatementRow, BillError> {
    let major = |name: &str| -> Result<MajorAmount, BillError> {
        Ok(MajorAmount(r.text(name)?.to_string()))
    };
    Ok(StatementRow {
        time: r.string("交易时间")?,
        mchid: r.string("商户号")?,
        sub_mchid: r.string("子商户号")?,
        transaction_id: r.string("微信订单号")?,
        out_trade_no: r.string("商户订单号")?,
        trade_state: r.string("交易状态")?,
        refund_id: r.string("微信退款单号")?,
        out_refund_no: r.string("商户退款单号")?,
        refund_status: r.string("退款状态")?,
        fee: major("手续费")?,
        currency: r.string("标价币种")?,
        amount: major("订单金额(标价币种)")?,
        payer_currency: r.string("用户支付币种")?,
        payer_amount: major("用户支付金额")?,
        settlement_currency: r.string("结算币种")?,
        settlement_amount: major("应结订单金额")?,
        exchange_rate: r.string("支付汇率")?,
        refund_requested: major("申请退款金额")?,
        refund_settlement_currency: r.string("退款结算币种")?,
        refund_settlement_amount: major("退款应结订单金额")?,
    })
}
