//! The fund-flow bill (`/v3/bill/fundflowbill`) as typed rows: every movement of one account
//! (BASIC, OPERATION or FEES) on one day, with the balance after it.

use super::amount;
use super::error::BillError;
use super::layout::{Columns, Lines, RowView};

/// 收支类型.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowDirection {
    Income,
    Expense,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundFlowRow {
    /// 记账时间, `yyyy-MM-dd HH:mm:ss` in Beijing time.
    pub time: String,
    /// 微信支付业务单号: the transaction, refund or transfer bill number.
    pub business_no: String,
    /// 资金流水单号: unique per movement.
    pub flow_no: String,
    /// 业务名称 (交易, 退款, …) and 业务类型 (交易, 扣除交易手续费, 退还交易手续费, …): WeChat
    /// adds values over time, so they stay text.
    pub business_name: String,
    pub business_type: String,
    pub direction: FlowDirection,
    /// 收支金额, fen, always positive; `direction` gives the sign.
    pub amount: i64,
    /// 账户结余 after this movement, fen.
    pub balance: i64,
    pub applicant: String,
    pub note: String,
    /// 业务凭证号: usually the merchant's own order or refund number.
    pub voucher: String,
}

impl FundFlowRow {
    /// The amount with its sign: positive for income.
    pub fn signed_amount(&self) -> i64 {
        match self.direction {
            FlowDirection::Income => self.amount,
            FlowDirection::Expense => -self.amount,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FundFlowSummary {
    pub count: u64,
    pub income_count: u64,
    pub income: i64,
    pub expense_count: u64,
    pub expense: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundFlowBill {
    pub rows: Vec<FundFlowRow>,
    pub summary: FundFlowSummary,
}

impl FundFlowBill {
    pub fn parse(file: &[u8]) -> Result<Self, BillError> {
        let mut rows = Vec::new();
        let summary = Self::read_rows(file, |row| rows.push(row))?;
        Ok(Self { rows, summary })
    }

    /// Reads the bill row by row, handing each typed row to `each`; answers the summary.
    pub fn read_rows(
        file: &[u8],
        mut each: impl FnMut(FundFlowRow),
    ) -> Result<FundFlowSummary, BillError> {
        let lines = Lines::read(file)?;
        let columns = Columns::new(&lines.columns);
        for (i, fields) in lines.rows().enumerate() {
            each(parse_row(&columns.row(i + 1, &fields)?)?);
        }
        let s = Columns::new(&lines.summary_columns);
        let s = s.row(0, &lines.summary)?;
        let count = |name: &str| -> Result<u64, BillError> { amount::count(name, s.text(name)?) };
        let fen = |name: &str| -> Result<i64, BillError> { amount::fen(name, s.text(name)?) };
        Ok(FundFlowSummary {
            count: count("资金流水总笔数")?,
            income_count: count("收入笔数")?,
            income: fen("收入金额")?,
            expense_count: count("支出笔数")?,
            expense: fen("支出金额")?,
        })
    }
}

fn parse_row(r: &RowView<'_>) -> Result<FundFlowRow, BillError> {
    let direction = match r.text("收支类型")? {
        "收入" => FlowDirection::Income,
        "支出" => FlowDirection::Expense,
        other => {
            return Err(BillError::Amount {
                field: "收支类型".into(),
                value: other.to_string(),
            });
        }
    };
    let amount = amount::fen("收支金额(元)", r.text("收支金额(元)")?)?;
    if amount < 0 {
        return Err(BillError::Amount {
            field: "收支金额(元)".into(),
            value: r.text("收支金额(元)")?.to_string(),
        });
    }
    Ok(FundFlowRow {
        time: r.string("记账时间")?,
        business_no: r.string("微信支付业务单号")?,
        flow_no: r.string("资金流水单号")?,
        business_name: r.string("业务名称")?,
        business_type: r.string("业务类型")?,
        direction,
        amount,
        balance: amount::fen("账户结余(元)", r.text("账户结余(元)")?)?,
        applicant: r.string("资金变更提交申请人")?,
        note: unescape(r.optional("备注").unwrap_or_default()),
        voucher: unescape(r.optional("业务凭证号").unwrap_or_default()),
    })
}

/// Undoes the bill's escaping of free text: `\1` stands for a space, `\r` and `\n` (two
/// characters each) for CR and LF.
pub fn unescape(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_string();
    }
    text.replace("\\1", " ")
        .replace("\\r", "\r")
        .replace("\\n", "\n")
}
