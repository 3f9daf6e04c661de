//! Trade and fund-flow bills in WeChat's layout, built from the simulator's own orders and
//! refunds. Apply answers `{hash_type, hash_value, download_url}` (signed); the download on the
//! simulator's own host answers the raw file (gzip when asked), unsigned.
//!
//! Day D's bills exist from 09:00 on D+1 (Beijing time, on the simulator's clock, which
//! `POST /sim/clock` moves): `STATEMENT_CREATING` before, `NO_STATEMENT_EXIST` for a day
//! without movements. Payment rows fall on their success day, refund rows on the day they
//! were requested. Fees are charged per payment at the merchant's rate, rounded to the fen,
//! and returned in proportion on refunds. `Faults::bill` makes the bills wrong on purpose.

use axum::http::StatusCode;
use serde_json::json;
use time::{Date, OffsetDateTime};
use wechatpay_v3::bill::{self, Fee};
use wechatpay_v3::model::{FundFlowBillRequest, TradeBillRequest, TransferState};

use crate::faults::BillFaults;
use crate::state::{BillFile, Order, RefundRecord, RefundState};
use crate::wire::{Answer, Request, WxError};

/// How long a download URL works.
pub const DOWNLOAD_VALID_SECS: i64 = 5 * 60;
/// How far back bills can be applied for.
pub const HISTORY_DAYS: i64 = 90;
/// The content type of a plain bill download and of a GZIP one. The official SDKs do not
/// check it; these are the types their `Accept` headers name for the two.
pub const PLAIN_CONTENT_TYPE: &str = "text/plain;charset=utf-8";
pub const GZIP_CONTENT_TYPE: &str = "application/x-gzip";
/// Bills of day D are built from this hour of D+1, Beijing time.
pub const BILL_READY_HOUR: u8 = 9;

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

pub(crate) fn cst(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
}

pub(crate) fn bill_time(unix: i64) -> String {
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

pub(crate) fn on_date(unix: Option<i64>, date: Date) -> bool {
    unix.is_some_and(|t| cst(t).date() == date)
}

/// The fee on `amount` fen at `rate_bp` basis points, rounded half up to the fen.
pub fn fee_fen(amount: i64, rate_bp: u32) -> i64 {
    (amount * i64::from(rate_bp) + 5_000) / 10_000
}

pub(crate) fn rate_text(rate_bp: u32) -> String {
    format!("{}.{:02}%", rate_bp / 100, rate_bp % 100)
}

/// The date asked for, if its bill can be had now: a future date or one older than
/// `HISTORY_DAYS` is refused, a day whose bill is not built yet is `STATEMENT_CREATING`.
fn checked_date(req: &Request<'_>, value: &str) -> Result<Date, WxError> {
    let date = wechatpay_v3::validate::bill_date("bill_date", value)
        .map_err(|e| WxError::param(e, "query"))?;
    available(req, date, HISTORY_DAYS)
}

/// `date` if its bills can be had now: a future date or one older than `history_days` is
/// refused, a day whose bills are not built yet is `STATEMENT_CREATING`.
pub(crate) fn available(req: &Request<'_>, date: Date, history_days: i64) -> Result<Date, WxError> {
    let now = cst(req.sim.now());
    let today = now.date();
    if date > today {
        return Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "账单日期不能晚于今天",
        ));
    }
    if (today - date).whole_days() > history_days {
        return Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "仅支持申请三个月内的账单",
        ));
    }
    let built = date == today || (date.next_day() == Some(today) && now.hour() < BILL_READY_HOUR);
    if built {
        return Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "STATEMENT_CREATING",
            "账单生成中",
        ));
    }
    Ok(date)
}

/// A payment as the day's bills show it.
#[derive(Clone)]
struct PaymentItem {
    order: Order,
    /// What the bills say was paid (a fault may make it differ from the order).
    amount: i64,
    /// What WeChat settles of it (应结订单金额): less a merchant-funded coupon.
    settlement: i64,
    /// Charged on the settlement.
    fee: i64,
    /// Printed twice in the trade bill.
    doubled: bool,
}

/// A refund as the day's bills show it.
#[derive(Clone)]
struct RefundItem {
    refund: RefundRecord,
    order: Option<Order>,
    fee_returned: i64,
    /// 退款状态 in the trade bill.
    status: &'static str,
}

/// Everything that moved on one day, with the faults applied.
struct Day {
    payments: Vec<PaymentItem>,
    refunds: Vec<RefundItem>,
    rate_bp: u32,
}

impl Day {
    fn build(req: &Request<'_>, date: Date) -> Self {
        let rate_bp = req.merchant.fee_rate_bp;
        let state = req.sim.state();
        let mchid = &req.merchant.mchid;
        let mut payments: Vec<PaymentItem> = state
            .orders
            .values()
            .filter(|o| &o.mchid == mchid && o.state.is_paid() && on_date(o.success_time, date))
            .map(|o| PaymentItem {
                order: o.clone(),
                amount: o.total,
                settlement: o.settlement_total(),
                fee: fee_fen(o.settlement_total(), rate_bp),
                doubled: false,
            })
            .collect();
        let mut refunds: Vec<RefundItem> = state
            .refunds
            .values()
            .filter(|r| &r.mchid == mchid && on_date(Some(r.created_at), date))
            .filter(|r| matches!(r.state, RefundState::Success | RefundState::Processing))
            .map(|r| RefundItem {
                refund: r.clone(),
                order: state
                    .orders
                    .get(&crate::state::State::order_key(mchid, &r.out_trade_no))
                    .cloned(),
                fee_returned: fee_fen(r.settlement_refund(), rate_bp),
                status: match r.state {
                    RefundState::Success => "SUCCESS",
                    _ => "PROCESSING",
                },
            })
            .collect();
        let faults = state.faults_for(Some(mchid)).bill;
        drop(state);
        payments.sort_by_key(|p| (p.order.success_time, p.order.out_trade_no.clone()));
        refunds.sort_by_key(|r| (r.refund.created_at, r.refund.out_refund_no.clone()));
        let mut day = Self {
            payments,
            refunds,
            rate_bp,
        };
        day.apply(&faults, date);
        day
    }

    /// Makes the bills wrong the way `faults` says, on the earliest rows.
    fn apply(&mut self, faults: &BillFaults, date: Date) {
        let n = |k: u32| k as usize;
        let missing = n(faults.missing_rows).min(self.payments.len());
        self.payments.drain(..missing);
        for p in self.payments.iter_mut().take(n(faults.amount_off_rows)) {
            p.amount += 1;
            p.settlement += 1;
        }
        for p in self.payments.iter_mut().take(n(faults.duplicate_rows)) {
            p.doubled = true;
        }
        for r in self
            .refunds
            .iter_mut()
            .take(n(faults.refund_processing_rows))
        {
            r.status = "PROCESSING";
        }
        // A stranger's rows are modelled on a real payment of the day; a day without one
        // gets none.
        if let Some(model) = self.payments.first().map(|p| p.order.clone()) {
            for i in 0..faults.extra_rows {
                let stranger = self.stranger(&model, date, i);
                self.payments.push(stranger);
            }
        }
    }

    /// A payment WeChat shows that the merchant never made.
    fn stranger(&self, model: &Order, date: Date, i: u32) -> PaymentItem {
        let noon = date
            .with_hms(12, 0, 0)
            .expect("valid time")
            .assume_offset(time::macros::offset!(+8));
        let mut order = model.clone();
        order.out_trade_no = format!("stranger_{}_{i}", date.to_julian_day());
        order.transaction_id = Some(format!("4200009999{:08}{i:06}", date.to_julian_day()));
        order.success_time = Some(noon.unix_timestamp() + i64::from(i));
        let amount = 100 + i64::from(i);
        order.coupon = None;
        PaymentItem {
            order,
            amount,
            settlement: amount,
            fee: fee_fen(amount, self.rate_bp),
            doubled: false,
        }
    }
}

/// A paid order's line in the trade bill, in WeChat's column order.
fn payment_row(p: &PaymentItem, rate: &str) -> Vec<String> {
    let o = &p.order;
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
        yuan(p.settlement),
        yuan(o.coupon_amount()),
        "0".into(),
        "0".into(),
        "0.00".into(),
        "0.00".into(),
        String::new(),
        String::new(),
        o.description.clone(),
        o.attach.clone().unwrap_or_default(),
        Fee::from_fen(p.fee).to_bill_text(),
        rate.to_string(),
        yuan(p.amount),
        "0.00".into(),
        String::new(),
    ]
}

/// A refund's line in the trade bill, in WeChat's column order: dated when it was requested,
/// with the fee it returns as a negative fee.
fn refund_row(item: &RefundItem, rate: &str) -> Vec<String> {
    let (r, order) = (&item.refund, item.order.as_ref());
    let yuan = bill::yuan;
    vec![
        bill_time(r.created_at),
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
        yuan(r.settlement_refund()),
        yuan(r.coupon_refund - r.nocash_refund),
        "ORIGINAL".into(),
        item.status.into(),
        order.map(|o| o.description.clone()).unwrap_or_default(),
        order.and_then(|o| o.attach.clone()).unwrap_or_default(),
        Fee::from_fen(-item.fee_returned).to_bill_text(),
        rate.to_string(),
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
    let day = Day::build(req, date);
    let rate = rate_text(day.rate_bp);
    let mut rows: Vec<(i64, Vec<String>)> = Vec::new();
    let mut totals = TradeTotals::default();
    if with_payments {
        for p in &day.payments {
            let copies = if p.doubled { 2 } else { 1 };
            for _ in 0..copies {
                totals.payment(p);
                let time = p.order.success_time.unwrap_or_default();
                rows.push((time, payment_row(p, &rate)));
            }
        }
    }
    if with_refunds {
        for r in &day.refunds {
            totals.refund(r);
            rows.push((r.refund.created_at, refund_row(r, &rate)));
        }
    }
    if rows.is_empty() {
        return Err(no_statement("该日期无交易，账单文件不存在"));
    }
    rows.sort_by_key(|(t, _)| *t);
    let count = rows.len();
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
    let file = bill::write(
        &TRADE_COLUMNS,
        &rows,
        &TRADE_SUMMARY,
        &totals.summary(count),
    );
    issue_download(req, file, query.tar_type.as_deref() == Some("GZIP"))
}

/// The trade bill's summary sums.
#[derive(Default)]
struct TradeTotals {
    settled: i64,
    ordered: i64,
    refunded: i64,
    cash_coupon_refunded: i64,
    requested: i64,
    fees: i64,
}

impl TradeTotals {
    fn payment(&mut self, p: &PaymentItem) {
        self.settled += p.settlement;
        self.ordered += p.amount;
        self.fees += p.fee;
    }

    fn refund(&mut self, r: &RefundItem) {
        self.refunded += r.refund.settlement_refund();
        self.cash_coupon_refunded += r.refund.coupon_refund - r.refund.nocash_refund;
        self.requested += r.refund.refund;
        self.fees -= r.fee_returned;
    }

    fn summary(&self, count: usize) -> Vec<String> {
        let yuan = bill::yuan;
        vec![
            count.to_string(),
            yuan(self.settled),
            yuan(self.refunded),
            yuan(self.cash_coupon_refunded),
            Fee::from_fen(self.fees).to_bill_text(),
            yuan(self.ordered),
            yuan(self.requested),
        ]
    }
}

pub fn apply_fund_flow_bill(req: &Request<'_>) -> Result<Answer, WxError> {
    let query = FundFlowBillRequest {
        bill_date: req.query.get("bill_date").cloned().unwrap_or_default(),
        account_type: req.query.get("account_type").cloned(),
        tar_type: req.query.get("tar_type").cloned(),
    };
    query.validate().map_err(|e| WxError::param(e, "query"))?;
    let date = checked_date(req, &query.bill_date)?;
    let (entries, balance) = match query.account_type.as_deref().unwrap_or("BASIC") {
        "BASIC" => (
            fund_entries(&Day::build(req, date)),
            opening_balance(req, date),
        ),
        "OPERATION" => operation_entries(req, date),
        _ => (Vec::new(), 0),
    };
    if entries.is_empty() {
        return Err(no_statement("该日期无资金流水，账单文件不存在"));
    }
    let file = fund_flow_file(&entries, balance);
    issue_download(req, file, query.tar_type.as_deref() == Some("GZIP"))
}

/// The operation account's movements on one day, and its balance at the day's start: each
/// transfer leaving when WeChat took it, and the amount of a failed or cancelled one coming
/// back when it ended. (Top-ups through the sandbox admin are not movements of the bill.)
fn operation_entries(req: &Request<'_>, date: Date) -> (Vec<FundEntry>, i64) {
    let state = req.sim.state();
    let mchid = &req.merchant.mchid;
    let on_day = |t: i64| cst(t).date() == date;
    let since_day = |t: i64| cst(t).date() >= date;
    let mut entries = Vec::new();
    let mut moved_since = 0;
    for t in state.transfers.values().filter(|t| &t.mchid == mchid) {
        let entry = |time, income| FundEntry {
            time,
            business_no: t.transfer_bill_no.clone(),
            voucher: t.out_bill_no.clone(),
            name: "商家转账",
            kind: if income { "退款" } else { "商家转账" },
            income,
            amount: t.amount,
        };
        if since_day(t.created_at) {
            moved_since -= t.amount;
        }
        if on_day(t.created_at) {
            entries.push(entry(t.created_at, false));
        }
        let returned = matches!(t.state, TransferState::Fail | TransferState::Cancelled);
        if returned && since_day(t.updated_at) {
            moved_since += t.amount;
        }
        if returned && on_day(t.updated_at) {
            entries.push(entry(t.updated_at, true));
        }
    }
    entries.sort_by_key(|e| e.time);
    let now = state.operation_balances.get(mchid).copied();
    let opening = now.unwrap_or(crate::state::OPERATION_OPENING_FEN) - moved_since;
    (entries, opening)
}

/// The basic account's balance at the start of `date`: what every earlier payment settled less
/// its fee, less what every earlier refund took less the fee it returned.
fn opening_balance(req: &Request<'_>, date: Date) -> i64 {
    let rate_bp = req.merchant.fee_rate_bp;
    let state = req.sim.state();
    let mchid = &req.merchant.mchid;
    let before = |t: i64| cst(t).date() < date;
    let paid: i64 = state
        .orders
        .values()
        .filter(|o| &o.mchid == mchid && o.state.is_paid())
        .filter(|o| o.success_time.is_some_and(before))
        .map(|o| o.settlement_total() - fee_fen(o.settlement_total(), rate_bp))
        .sum();
    let refunded: i64 = state
        .refunds
        .values()
        .filter(|r| &r.mchid == mchid && before(r.created_at))
        .filter(|r| matches!(r.state, RefundState::Success | RefundState::Processing))
        .map(|r| r.settlement_refund() - fee_fen(r.settlement_refund(), rate_bp))
        .sum();
    paid - refunded
}

/// The fund-flow file for `entries`, starting from `balance`.
fn fund_flow_file(entries: &[FundEntry], mut balance: i64) -> Vec<u8> {
    let (mut income_n, mut income, mut expense_n, mut expense) = (0, 0i64, 0, 0i64);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            balance += e.signed();
            if e.income {
                income_n += 1;
                income += e.amount;
            } else {
                expense_n += 1;
                expense += e.amount;
            }
            vec![
                bill_time(e.time),
                e.business_no.clone(),
                format!("{}{:010}", crate::formats::cst_compact(e.time, true), i + 1),
                e.name.to_string(),
                e.kind.to_string(),
                if e.income { "收入" } else { "支出" }.to_string(),
                bill::yuan(e.amount),
                bill::yuan(balance),
                "system".into(),
                String::new(),
                e.voucher.clone(),
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
    bill::write(&FUND_COLUMNS, &rows, &FUND_SUMMARY, &summary)
}

/// One line of the fund-flow bill.
struct FundEntry {
    time: i64,
    business_no: String,
    voucher: String,
    name: &'static str,
    kind: &'static str,
    income: bool,
    amount: i64,
}

impl FundEntry {
    fn signed(&self) -> i64 {
        if self.income {
            self.amount
        } else {
            -self.amount
        }
    }
}

/// The basic account's movements on one day: each payment in and its fee out, each refund
/// out and its fee back, in time order.
fn fund_entries(day: &Day) -> Vec<FundEntry> {
    let mut entries = Vec::new();
    let mut push = |time, business_no: &str, voucher: &str, name, kind, income, amount| {
        if amount > 0 {
            entries.push(FundEntry {
                time,
                business_no: business_no.to_string(),
                voucher: voucher.to_string(),
                name,
                kind,
                income,
                amount,
            });
        }
    };
    for p in &day.payments {
        let (o, time) = (&p.order, p.order.success_time.unwrap_or_default());
        let tx = o.transaction_id.as_deref().unwrap_or_default();
        push(
            time,
            tx,
            &o.out_trade_no,
            "交易",
            "交易",
            true,
            p.settlement,
        );
        push(
            time,
            tx,
            &o.out_trade_no,
            "交易",
            "扣除交易手续费",
            false,
            p.fee,
        );
    }
    for r in &day.refunds {
        let (rf, time) = (&r.refund, r.refund.created_at);
        push(
            time,
            &rf.refund_id,
            &rf.out_refund_no,
            "退款",
            "退款",
            false,
            rf.settlement_refund(),
        );
        let fee = r.fee_returned;
        push(
            time,
            &rf.refund_id,
            &rf.out_refund_no,
            "退款",
            "退还交易手续费",
            true,
            fee,
        );
    }
    entries.sort_by_key(|e| e.time);
    entries
}

/// A bill file a day without statements does not have.
pub(crate) fn no_statement(message: &str) -> WxError {
    WxError::new(StatusCode::BAD_REQUEST, "NO_STATEMENT_EXIST", message)
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
                gzipped,
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
            Ok(Answer::File {
                bytes: b.bytes.clone(),
                content_type: if b.gzipped {
                    GZIP_CONTENT_TYPE
                } else {
                    PLAIN_CONTENT_TYPE
                },
            })
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
