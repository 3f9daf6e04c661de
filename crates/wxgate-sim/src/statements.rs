//! Cross-border statements (`GET /v3/global/statements?date=yyyyMMdd&mchid=`): the day's
//! global payments and refunds as CSV in WeChat's 38-column layout, answered directly and
//! signed over `{"sha1":"<digest>"}` with the digest in `Wechatpay-Statement-Sha1`. Days
//! become available as domestic bills do (09:00 the next day); there is no summary section.
//! A merchant with a settlement currency of its own has its rows' settled amounts (应结订单金额,
//! 退款应结订单金额) converted into it at the simulator's rates; the fee stays in the pricing
//! currency, like every other amount of the row.

use axum::http::StatusCode;
use time::Date;

use crate::bills::{available, bill_time, fee_fen, no_statement, on_date, rate_text};
use crate::ops::{exchange_rate, payer_cny};
use crate::state::{Family, Order, RefundRecord, RefundState};
use crate::wire::{Answer, Request, WxError};

/// How far back statements can be had.
pub const HISTORY_DAYS: i64 = 180;

const COLUMNS: [&str; 38] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "子商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "充值券币种",
    "充值券金额",
    "优惠券币种",
    "优惠券金额",
    "微信退款单号",
    "商户退款单号",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "标价币种",
    "订单金额(标价币种)",
    "用户支付币种",
    "用户支付金额",
    "结算币种",
    "应结订单金额",
    "支付汇率",
    "退款汇率",
    "申请退款金额",
    "用户退款币种",
    "用户退款金额",
    "退款结算币种",
    "退款应结订单金额",
    "充值券退款金额",
    "优惠券退款金额",
];

/// Minor units as the major-unit text the statement prints (`1999` cents → `19.99`).
fn major(minor: i64, exponent: u32) -> String {
    if exponent == 0 {
        return minor.to_string();
    }
    let unit = 10i64.pow(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / unit,
        abs % unit,
        width = exponent as usize
    )
}

/// A rate scaled by 10^8 as a decimal.
fn rate(scaled: i64) -> String {
    format!("{}.{:08}", scaled / 100_000_000, scaled % 100_000_000)
}

fn parse_date(value: &str) -> Result<Date, WxError> {
    let format = time::macros::format_description!("[year][month][day]");
    Date::parse(value, &format).map_err(|_| {
        WxError::param(
            wechatpay_v3::validate::FieldError::new("date", "must be a date yyyyMMdd"),
            "query",
        )
    })
}

pub fn global_statements(req: &Request<'_>) -> Result<Answer, WxError> {
    let date = parse_date(
        req.query
            .get("date")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    if req.query.get("mchid") != Some(&req.merchant.mchid) {
        return Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "mchid 与请求方不一致",
        ));
    }
    let date = available(req, date, HISTORY_DAYS)?;
    let (orders, refunds) = day(req, date);
    if orders.is_empty() && refunds.is_empty() {
        return Err(no_statement("账单不存在"));
    }
    let rate_bp = req.merchant.fee_rate_bp;
    let settles_in = req.merchant.settlement_currency.as_deref();
    let mut rows: Vec<(i64, Vec<String>)> = orders
        .iter()
        .map(|o| {
            let at = o.success_time.unwrap_or_default();
            (at, payment_row(o, rate_bp, settles_in))
        })
        .collect();
    rows.extend(
        refunds
            .iter()
            .map(|(r, o)| (r.created_at, refund_row(r, o, rate_bp, settles_in))),
    );
    rows.sort_by_key(|(t, _)| *t);
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
    Ok(Answer::Statement(statement_file(&rows)))
}

/// The day's global payments and refunds (each refund with its order).
fn day(req: &Request<'_>, date: Date) -> (Vec<Order>, Vec<(RefundRecord, Order)>) {
    let state = req.sim.state();
    let mchid = &req.merchant.mchid;
    let orders = state
        .orders
        .values()
        .filter(|o| &o.mchid == mchid && o.family == Family::Global)
        .filter(|o| o.state.is_paid() && on_date(o.success_time, date))
        .cloned()
        .collect();
    let refunds = state
        .refunds
        .values()
        .filter(|r| &r.mchid == mchid && r.family == Family::Global)
        .filter(|r| on_date(Some(r.created_at), date))
        .filter(|r| matches!(r.state, RefundState::Success | RefundState::Processing))
        .filter_map(|r| {
            let key = crate::state::State::order_key(mchid, &r.out_trade_no);
            state.orders.get(&key).map(|o| (r.clone(), o.clone()))
        })
        .collect();
    (orders, refunds)
}

/// The fields every row shares, from its order: columns 1–11 and 20–21, 23–30.
fn order_fields(o: &Order, rate_bp: u32) -> Vec<String> {
    let exponent = exchange_rate(&o.currency).map_or(2, |(_, e)| e);
    let m = |v: i64| major(v, exponent);
    let mut f = vec![String::new(); 38];
    f[0] = bill_time(o.success_time.unwrap_or_default());
    f[1] = o.appid.clone();
    f[2] = o.mchid.clone();
    f[5] = o.transaction_id.clone().unwrap_or_default();
    f[6] = o.out_trade_no.clone();
    f[7] = o.paid_openid.clone().unwrap_or_default();
    f[8] = o.trade_type.clone();
    f[10] = "OTHERS".into();
    f[19] = o.description.clone();
    f[20] = o.attach.clone().unwrap_or_default();
    f[22] = rate_text(rate_bp);
    f[23] = o.currency.clone();
    f[25] = "CNY".into();
    f[27] = o.currency.clone();
    f[29] = rate(o.exchange_rate.unwrap_or(100_000_000));
    for i in [12, 14, 36, 37] {
        f[i] = m(0);
    }
    f
}

/// `amount` (minor units of `from`) in minor units of `to`, at the simulator's rates against
/// CNY, rounded half up; and `to`'s exponent.
fn converted(amount: i64, from: &str, to: &str) -> (i64, u32) {
    let (from_rate, from_exp) = exchange_rate(from).unwrap_or((100_000_000, 2));
    let (to_rate, to_exp) = exchange_rate(to).unwrap_or((100_000_000, 2));
    let n = i128::from(amount) * i128::from(from_rate) * 10i128.pow(to_exp);
    let d = i128::from(to_rate) * 10i128.pow(from_exp);
    (i64::try_from((n + d / 2) / d).unwrap_or(i64::MAX), to_exp)
}

/// The settlement currency of an order and what `amount` of it settles as there: the
/// merchant's own settlement currency when it has one, else the order's.
fn settlement(o: &Order, amount: i64, settles_in: Option<&str>) -> (String, String) {
    let to = settles_in.unwrap_or(&o.currency);
    let (settled, exponent) = converted(amount, &o.currency, to);
    (to.to_string(), major(settled, exponent))
}

fn payment_row(o: &Order, rate_bp: u32, settles_in: Option<&str>) -> Vec<String> {
    let exponent = exchange_rate(&o.currency).map_or(2, |(_, e)| e);
    let mut f = order_fields(o, rate_bp);
    f[9] = "SUCCESS".into();
    f[21] = major(fee_fen(o.total, rate_bp), exponent);
    f[24] = major(o.total, exponent);
    f[26] = major(payer_cny(o, o.total), 2);
    (f[27], f[28]) = settlement(o, o.total, settles_in);
    f
}

fn refund_row(r: &RefundRecord, o: &Order, rate_bp: u32, settles_in: Option<&str>) -> Vec<String> {
    let exponent = exchange_rate(&o.currency).map_or(2, |(_, e)| e);
    let mut f = order_fields(o, rate_bp);
    f[0] = bill_time(r.created_at);
    f[9] = "REFUND".into();
    f[15] = r.refund_id.clone();
    f[16] = r.out_refund_no.clone();
    f[17] = "ORIGINAL".into();
    f[18] = if r.state == RefundState::Success {
        "SUCCESS"
    } else {
        "PROCESSING"
    }
    .into();
    f[21] = major(-fee_fen(r.refund, rate_bp), exponent);
    f[24] = major(0, exponent);
    f[26] = major(0, 2);
    f[28] = major(0, exponent);
    f[30] = f[29].clone();
    f[31] = major(r.refund, exponent);
    f[32] = "CNY".into();
    f[33] = major(payer_cny(o, r.refund), 2);
    (f[34], f[35]) = settlement(o, r.refund, settles_in);
    f[27] = f[34].clone();
    f
}

/// The CSV: a BOM, the header and backtick-prefixed rows, CRLF, no summary.
fn statement_file(rows: &[Vec<String>]) -> Vec<u8> {
    let mut out = String::from("\u{feff}");
    out.push_str(&COLUMNS.join(","));
    out.push_str("\r\n");
    for row in rows {
        let ticked: Vec<String> = row.iter().map(|f| format!("`{f}")).collect();
        out.push_str(&ticked.join(","));
        out.push_str("\r\n");
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_amounts_convert_through_cny_and_round_half_up() {
        // HK$100.00 = ¥912.30 = US$12.807…; US$10.00 = ¥71.234 = ¥1,484.04…
        assert_eq!(converted(10_000, "HKD", "USD"), (1_281, 2));
        assert_eq!(converted(1_000, "USD", "JPY"), (1_484, 0));
        assert_eq!(converted(1_999, "USD", "USD"), (1_999, 2));
        assert_eq!(major(1_484, 0), "1484");
    }
}
