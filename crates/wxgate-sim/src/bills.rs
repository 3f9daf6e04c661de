//! Trade and fund-flow bills in WeChat's layout, built from the simulator's own orders and
//! refunds. Apply answers `{hash_type, hash_value, download_url}` (signed); the download on the
//! simulator's own host answers the raw file (gzip when asked), unsigned.
//!
//! One deliberate difference from WeChat: the bill of the current day is available at once
//! (with what has happened so far), so tests need not wait for tomorrow.

use axum::http::StatusCode;
use serde_json::json;
use time::{Date, OffsetDateTime};
use wechatpay_v3::bill;
use wechatpay_v3::model::{FundFlowBillRequest, TradeBillRequest};

use crate::state::{BillFile, Order, RefundRecord, RefundState};
use crate::wire::{Answer, Request, WxError};

/// How long a download URL works.
pub const DOWNLOAD_VALID_SECS: i64 = 5 * 60;
/// How far back bills can be applied for.
pub const HISTORY_DAYS: i64 = 90;
/// The simulated fee rate, in thousandths of a percent (0.60 %).
const FEE_RATE_MILLI_PERCENT: i64 = 600;

const TRADE_COLUMNS: [&str; 27] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];
const TRADE_SUMMARY: [&str; 7] = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
];
const FUND_COLUMNS: [&str; 11] = [
    "记账时间",
    "微信支付业务单号",
    "资金流水单号",
    "业务名称",
    "业务类型",
    "收支类型",
    "收支金额（元）",
    "账户结余（元）",
    "资金变更提交申请人",
    "备注",
    "业务凭证号",
];
const FUND_SUMMARY: [&str; 5] = [
    "资金流水总笔数",
    "收入笔数",
    "收入金额",
    "支出笔数",
    "支出金额",
];

fn cst(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
}

fn bill_time(unix: i64) -> String {
    let t = cst(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn on_date(unix: Option<i64>, date: Date) -> bool {
    unix.is_some_and(|t| cst(t).date() == date)
}

/// Fee in units of 10^-5 yuan, formatted with five decimals as WeChat does.
fn fee(total_fen: i64) -> (i64, String) {
    let units = total_fen * FEE_RATE_MILLI_PERCENT / 100;
    (units, format!("{}.{:05}", units / 100_000, units % 100_000))
}

fn checked_date(req: &Request<'_>, value: &str) -> Result<Date, WxError> {
    let date = wechatpay_v3::validate::bill_date("bill_date", value)
        .map_err(|e| WxError::param(e, "query"))?;
    let today = cst(req.sim.now()).date();
    if date > today {
        return Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "账单日期不能晚于今天",
        ));
    }
    if (today - date).whole_days() > HISTORY_DAYS {
        return Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "仅支持申请三个月内的账单",
        ));
    }
    Ok(date)
}

fn merchant_records(req: &Request<'_>) -> (Vec<Order>, Vec<RefundRecord>) {
    let state = req.sim.state();
    let mchid = &req.merchant.mchid;
    (
        state
            .orders
            .values()
            .filter(|o| &o.mchid == mchid)
            .cloned()
            .collect(),
        state
            .refunds
            .values()
            .filter(|r| &r.mchid == mchid)
            .cloned()
            .collect(),
    )
}

/// A paid order's line in the trade bill, in WeChat's column order.
fn payment_row(o: &Order, fee_text: String) -> Vec<String> {
    let yuan = bill::yuan;
    vec![
        bill_time(o.success_time.unwrap_or_default()),
        o.appid.clone(),
        o.mchid.clone(),
        "0".into(),
        String::new(),
        o.transaction_id.clone().unwrap_or_default(),
        o.out_trade_no.clone(),
        o.paid_openid.clone().unwrap_or_default(),
        o.trade_type.clone(),
        "SUCCESS".into(),
        "OTHERS".into(),
        o.currency.clone(),
        yuan(o.total),
        "0.00".into(),
        "0".into(),
        "0".into(),
        "0.00".into(),
        "0.00".into(),
        String::new(),
        String::new(),
        o.description.clone(),
        o.attach.clone().unwrap_or_default(),
        fee_text,
        "0.60%".into(),
        yuan(o.total),
        "0.00".into(),
        String::new(),
    ]
}

/// A refund's line in the trade bill, in WeChat's column order.
fn refund_row(r: &RefundRecord, order: Option<&Order>, fee_text: String) -> Vec<String> {
    let yuan = bill::yuan;
    vec![
        bill_time(r.success_time.unwrap_or_default()),
        order.map(|o| o.appid.clone()).unwrap_or_default(),
        r.mchid.clone(),
        "0".into(),
        String::new(),
        r.transaction_id.clone(),
        r.out_trade_no.clone(),
        order
            .and_then(|o| o.paid_openid.clone())
            .unwrap_or_default(),
        order.map(|o| o.trade_type.clone()).unwrap_or_default(),
        "REFUND".into(),
        "OTHERS".into(),
        r.currency.clone(),
        "0.00".into(),
        "0.00".into(),
        r.refund_id.clone(),
        r.out_refund_no.clone(),
        yuan(r.refund),
        "0.00".into(),
        "ORIGINAL".into(),
        "SUCCESS".into(),
        order.map(|o| o.description.clone()).unwrap_or_default(),
        order.and_then(|o| o.attach.clone()).unwrap_or_default(),
        format!("-{fee_text}"),
        "0.60%".into(),
        "0.00".into(),
        yuan(r.refund),
        String::new(),
    ]
}

pub fn apply_trade_bill(req: &Request<'_>) -> Result<Answer, WxError> {
    let query = TradeBillRequest {
        bill_date: req.query.get("bill_date").cloned().unwrap_or_default(),
        bill_type: req.query.get("bill_type").cloned(),
        tar_type: req.query.get("tar_type").cloned(),
    };
    query.validate().map_err(|e| WxError::param(e, "query"))?;
    let date = checked_date(req, &query.bill_date)?;
    let kind = query.bill_type.as_deref().unwrap_or("ALL");
    let with_payments = matches!(kind, "ALL" | "SUCCESS" | "ALL_SPECIAL" | "SUC_SPECIAL");
    let with_refunds = matches!(
        kind,
        "ALL" | "REFUND" | "ALL_SPECIAL" | "REF_SPECIAL" | "RECHARGE_REFUND"
    );
    let (orders, refunds) = merchant_records(req);
    let mut rows: Vec<(i64, Vec<String>)> = Vec::new();
    let (mut settled, mut refunded, mut fees, mut ordered, mut applied) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
    let yuan = bill::yuan;
    if with_payments {
        for o in orders
            .iter()
            .filter(|o| o.state.is_paid() && on_date(o.success_time, date))
        {
            let (fee_units, fee_text) = fee(o.total);
            settled += o.total;
            ordered += o.total;
            fees += fee_units;
            rows.push((o.success_time.unwrap_or_default(), payment_row(o, fee_text)));
        }
    }
    if with_refunds {
        for r in refunds
            .iter()
            .filter(|r| r.state == RefundState::Success && on_date(r.success_time, date))
        {
            let order = orders.iter().find(|o| o.out_trade_no == r.out_trade_no);
            let (fee_units, fee_text) = fee(r.refund);
            refunded += r.refund;
            applied += r.refund;
            fees -= fee_units;
            rows.push((
                r.success_time.unwrap_or_default(),
                refund_row(r, order, fee_text),
            ));
        }
    }
    if rows.is_empty() {
        return Err(no_statement("该日期无交易，账单文件不存在"));
    }
    rows.sort_by_key(|(t, _)| *t);
    let count = rows.len();
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
    let summary = vec![
        count.to_string(),
        yuan(settled),
        yuan(refunded),
        "0.00".into(),
        fee_yuan(fees),
        yuan(ordered),
        yuan(applied),
    ];
    let file = bill::write(&TRADE_COLUMNS, &rows, &TRADE_SUMMARY, &summary);
    issue_download(req, file, query.tar_type.as_deref() == Some("GZIP"))
}

pub fn apply_fund_flow_bill(req: &Request<'_>) -> Result<Answer, WxError> {
    let query = FundFlowBillRequest {
        bill_date: req.query.get("bill_date").cloned().unwrap_or_default(),
        account_type: req.query.get("account_type").cloned(),
        tar_type: req.query.get("tar_type").cloned(),
    };
    query.validate().map_err(|e| WxError::param(e, "query"))?;
    let date = checked_date(req, &query.bill_date)?;
    let (orders, refunds) = merchant_records(req);
    let entries = match query.account_type.as_deref().unwrap_or("BASIC") {
        "BASIC" => fund_entries(&orders, &refunds, date),
        _ => Vec::new(),
    };
    if entries.is_empty() {
        return Err(no_statement("该日期无资金流水，账单文件不存在"));
    }
    let mut entries = entries;
    entries.sort_by_key(|e| e.0);
    let mut balance = 0i64;
    let (mut income_n, mut income, mut expense_n, mut expense) = (0, 0i64, 0, 0i64);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .enumerate()
        .map(|(i, (t, id, name, kind, is_income, amount))| {
            if *is_income {
                balance += amount;
                income_n += 1;
                income += amount;
            } else {
                balance -= amount;
                expense_n += 1;
                expense += amount;
            }
            vec![
                bill_time(*t),
                id.clone(),
                format!("{}{:010}", crate::formats::cst_compact(*t, true), i + 1),
                name.to_string(),
                kind.to_string(),
                if *is_income { "收入" } else { "支出" }.to_string(),
                bill::yuan(*amount),
                bill::yuan(balance),
                "system".into(),
                String::new(),
                id.clone(),
            ]
        })
        .collect();
    let summary = vec![
        rows.len().to_string(),
        income_n.to_string(),
        bill::yuan(income),
        expense_n.to_string(),
        bill::yuan(expense),
    ];
    let file = bill::write(&FUND_COLUMNS, &rows, &FUND_SUMMARY, &summary);
    issue_download(req, file, query.tar_type.as_deref() == Some("GZIP"))
}

/// One line of the fund-flow bill: (time, business id, name, kind, income?, amount).
type FundEntry = (i64, String, &'static str, &'static str, bool, i64);

/// The basic account's movements on `date`: payments in, refunds out.
fn fund_entries(orders: &[Order], refunds: &[RefundRecord], date: Date) -> Vec<FundEntry> {
    let mut entries = Vec::new();
    for o in orders
        .iter()
        .filter(|o| o.state.is_paid() && on_date(o.success_time, date))
    {
        entries.push((
            o.success_time.unwrap_or_default(),
            o.transaction_id.clone().unwrap_or_default(),
            "交易",
            "交易",
            true,
            o.total,
        ));
    }
    for r in refunds
        .iter()
        .filter(|r| r.state == RefundState::Success && on_date(r.success_time, date))
    {
        entries.push((
            r.success_time.unwrap_or_default(),
            r.refund_id.clone(),
            "退款",
            "退款",
            false,
            r.refund,
        ));
    }
    entries
}

/// A bill file a day without statements does not have.
fn no_statement(message: &str) -> WxError {
    WxError::new(StatusCode::BAD_REQUEST, "NO_STATEMENT_EXIST", message)
}

/// A fee total in yuan with five decimals, as WeChat writes it (fees are kept in 1/100,000).
fn fee_yuan(fees: i64) -> String {
    format!(
        "{}{}.{:05}",
        if fees < 0 { "-" } else { "" },
        fees.abs() / 100_000,
        fees.abs() % 100_000
    )
}

fn issue_download(req: &Request<'_>, file: Vec<u8>, gzipped: bool) -> Result<Answer, WxError> {
    let hash_value = bill::sha1_hex(&file);
    let bytes = if gzipped { bill::gzip(&file) } else { file };
    let token = wechatpay_v3::nonce(40);
    {
        let mut state = req.sim.state();
        let now = req.sim.now();
        state.bills.retain(|_, b| b.expires_at > now);
        state.bills.insert(
            token.clone(),
            BillFile {
                mchid: req.merchant.mchid.clone(),
                bytes,
                expires_at: now + DOWNLOAD_VALID_SECS,
            },
        );
    }
    Ok(Answer::Json(json!({
        "hash_type": "SHA1",
        "hash_value": hash_value,
        "download_url": format!("{}{}?token={token}", req.base, wechatpay_v3::model::BILL_DOWNLOAD_PATH),
    })))
}

pub fn download(req: &Request<'_>) -> Result<Answer, WxError> {
    let token = req.query.get("token").ok_or_else(|| {
        WxError::param(
            wechatpay_v3::validate::FieldError::new("token", "is required"),
            "query",
        )
    })?;
    let state = req.sim.state();
    match state.bills.get(token) {
        Some(b) if b.mchid == req.merchant.mchid && b.expires_at > req.sim.now() => {
            Ok(Answer::File(b.bytes.clone()))
        }
        Some(b) if b.mchid == req.merchant.mchid => Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "下载链接已过期，请重新申请",
        )),
        _ => Err(WxError::new(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "账单文件不存在",
        )),
    }
}
