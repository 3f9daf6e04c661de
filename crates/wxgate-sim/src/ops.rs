//! What happens to orders and refunds, shared by the v3 endpoints and the simulated payer.

use serde_json::json;
use wechatpay_v3::model::{
    ExchangeRate, GlobalRefund, GlobalRefundAmount, Payer, Refund, RefundAmount,
    RefundNotification, RefundStatus, Transaction, TransactionAmount,
};
use wechatpay_v3::notify::{
    EVENT_REFUND_ABNORMAL, EVENT_REFUND_CLOSED, EVENT_REFUND_SUCCESS, EVENT_TRANSACTION_SUCCESS,
};

use crate::callbacks::{self, CallbackJob};
use crate::faults::RefundOutcome;
use crate::formats::{cst_compact, digits, rfc3339_cst};
use crate::sim::Sim;
use crate::state::{Coupon, CouponKind, Family, Order, OrderState, RefundRecord, RefundState};

/// CNY per major unit, scaled by 10^8, and the currency's decimal places.
pub fn exchange_rate(currency: &str) -> Option<(i64, u32)> {
    Some(match currency {
        "CNY" => (100_000_000, 2),
        "USD" => (712_340_000, 2),
        "HKD" => (91_230_000, 2),
        "EUR" => (772_000_000, 2),
        "GBP" => (902_000_000, 2),
        "SGD" => (530_000_000, 2),
        "AUD" => (470_000_000, 2),
        "CAD" => (520_000_000, 2),
        "NZD" => (430_000_000, 2),
        "CHF" => (810_000_000, 2),
        "MOP" => (88_600_000, 2),
        "THB" => (20_500_000, 2),
        "MYR" => (160_000_000, 2),
        "KRW" => (520_000, 0),
        "JPY" => (4_800_000, 0),
        _ => return None,
    })
}

pub(crate) fn payer_cny(order: &Order, amount: i64) -> i64 {
    match order.family {
        Family::Domestic => amount,
        Family::Global => {
            let (rate, exponent) = exchange_rate(&order.currency).unwrap_or((100_000_000, 2));
            wechatpay_v3::model::payer_total_cny(amount, rate, exponent)
        }
    }
}

/// An order as query answers and callbacks show it.
pub fn transaction_view(order: &Order) -> Transaction {
    let paid = order.state.is_paid();
    let global = order.family == Family::Global;
    Transaction {
        appid: Some(order.appid.clone()),
        mchid: Some(order.mchid.clone()),
        out_trade_no: order.out_trade_no.clone(),
        transaction_id: order.transaction_id.clone(),
        trade_type: paid.then(|| order.trade_type.clone()),
        trade_state: order.state.as_str().to_string(),
        trade_state_desc: Some(order.state.desc().to_string()),
        bank_type: paid.then(|| "OTHERS".to_string()),
        attach: if paid { order.attach.clone() } else { None },
        success_time: order.success_time.map(rfc3339_cst),
        payer: order.paid_openid.clone().map(|openid| Payer { openid }),
        amount: Some(TransactionAmount {
            total: Some(order.total),
            payer_total: paid.then(|| payer_cny(order, order.total - order.coupon_amount())),
            currency: Some(order.currency.clone()),
            payer_currency: paid.then(|| "CNY".to_string()),
            exchange_rate: (global && paid).then(|| ExchangeRate {
                kind: "USERPAYMENT_RATE".to_string(),
                rate: order.exchange_rate.unwrap_or(100_000_000),
            }),
        }),
        scene_info: None,
        promotion_detail: paid.then(|| order.coupon.iter().map(|c| promotion(order, c)).collect()),
        merchant_category_code: order.merchant_category_code.clone(),
    }
}

/// A coupon as `promotion_detail` shows it.
fn promotion(order: &Order, c: &Coupon) -> serde_json::Value {
    let (wechat, merchant) = match c.kind {
        CouponKind::Cash => (c.amount, 0),
        CouponKind::Nocash => (0, c.amount),
    };
    let tail = order.transaction_id.as_deref().unwrap_or_default();
    serde_json::json!({
        "coupon_id": format!("9{}", &tail[tail.len().saturating_sub(10)..]),
        "name": if c.kind == CouponKind::Cash { "代金券" } else { "免充值券" },
        "scope": "GLOBAL",
        "type": if c.kind == CouponKind::Cash { "CASH" } else { "NOCASH" },
        "amount": c.amount,
        "stock_id": "8000001",
        "wechatpay_contribute": wechat,
        "merchant_contribute": merchant,
        "other_contribute": 0,
        "currency": "CNY",
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayError {
    NotFound,
    Paid,
    Closed,
    /// A coupon on a cross-border order, or one not below the order's total.
    Coupon,
}

/// The payer pays: NOTPAY → SUCCESS, with a 28-digit transaction id, and the callback goes out.
pub fn pay_order(
    sim: &Sim,
    key: &(String, String),
    openid: Option<String>,
    coupon: Option<Coupon>,
) -> Result<Order, PayError> {
    let now = sim.now();
    let order = {
        let mut state = sim.state();
        state.expire_if_due(key, now);
        let order = state.orders.get_mut(key).ok_or(PayError::NotFound)?;
        match order.state {
            OrderState::Success | OrderState::Refund => return Err(PayError::Paid),
            OrderState::Closed => return Err(PayError::Closed),
            OrderState::Notpay => {}
        }
        if coupon.is_some_and(|c| {
            order.family != Family::Domestic || !(1..order.total).contains(&c.amount)
        }) {
            return Err(PayError::Coupon);
        }
        order.coupon = coupon;
        let transaction_id = format!("42000{}{}", cst_compact(now, false), digits(15));
        order.state = OrderState::Success;
        order.transaction_id = Some(transaction_id.clone());
        order.success_time = Some(now);
        order.paid_openid = Some(
            openid
                .or_else(|| order.openid.clone())
                .unwrap_or_else(|| openid_for(&order.appid, "payer")),
        );
        let order = order.clone();
        state.by_transaction_id.insert(transaction_id, key.clone());
        state.dirty = true;
        order
    };
    callbacks::send(
        sim,
        CallbackJob {
            mchid: order.mchid.clone(),
            url: order.notify_url.clone(),
            event_type: EVENT_TRANSACTION_SUCCESS,
            summary: "支付成功",
            original_type: "transaction",
            plaintext: serde_json::to_vec(&transaction_view(&order)).expect("serialisable"),
            out_trade_no: order.out_trade_no.clone(),
            out_refund_no: None,
        },
    );
    Ok(order)
}

pub fn refund_view(refund: &RefundRecord) -> Refund {
    Refund {
        refund_id: refund.refund_id.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        transaction_id: refund.transaction_id.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        channel: Some("ORIGINAL".to_string()),
        user_received_account: Some("支付用户零钱".to_string()),
        success_time: refund.success_time.map(rfc3339_cst),
        create_time: Some(rfc3339_cst(refund.created_at)),
        status: status_of(refund.state),
        funds_account: Some("AVAILABLE".to_string()),
        amount: RefundAmount {
            total: refund.total,
            refund: refund.refund,
            payer_total: Some(refund.total - refund.order_coupon),
            payer_refund: Some(refund.refund - refund.coupon_refund),
            settlement_refund: Some(refund.settlement_refund()),
            settlement_total: Some(refund.total - refund.order_nocash),
            discount_refund: Some(refund.coupon_refund),
            currency: Some(refund.currency.clone()),
            from: Some(Vec::new()),
        },
        promotion_detail: Some(Vec::new()),
    }
}

pub fn global_refund_view(refund: &RefundRecord, order: Option<&Order>) -> GlobalRefund {
    let (payer_refund, rate) = match order {
        Some(o) => (
            payer_cny(o, refund.refund),
            o.exchange_rate.unwrap_or(100_000_000),
        ),
        None => (refund.refund, 100_000_000),
    };
    GlobalRefund {
        id: refund.refund_id.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        transaction_id: refund.transaction_id.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        channel: Some("ORIGINAL".to_string()),
        recv_account: Some("支付用户零钱".to_string()),
        status: status_of(refund.state),
        create_time: Some(rfc3339_cst(refund.created_at)),
        success_time: refund.success_time.map(rfc3339_cst),
        amount: GlobalRefundAmount {
            refund: refund.refund,
            total: refund.total,
            currency: refund.currency.clone(),
            payer_refund: Some(payer_refund),
            payer_currency: Some("CNY".to_string()),
            exchange_rate: Some(ExchangeRate {
                kind: "USERPAYMENT_RATE".to_string(),
                rate,
            }),
        },
    }
}

fn status_of(state: RefundState) -> RefundStatus {
    match state {
        RefundState::Processing => RefundStatus::Processing,
        RefundState::Success => RefundStatus::Success,
        RefundState::Closed => RefundStatus::Closed,
        RefundState::Abnormal => RefundStatus::Abnormal,
    }
}

/// After the simulated settling time, a refund ends as the faults said when it was created,
/// and its callback goes out.
pub fn schedule_refund_settlement(sim: &Sim, key: (String, String), outcome: RefundOutcome) {
    let sim = sim.clone();
    let delay = sim.scaled(sim.config().refund_settle_secs);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        settle_refund(&sim, &key, outcome);
    });
}

pub fn settle_refund(sim: &Sim, key: &(String, String), outcome: RefundOutcome) {
    let now = sim.now();
    let (refund, url) = {
        let mut state = sim.state();
        let Some(refund) = state.refunds.get_mut(key) else {
            return;
        };
        if refund.state != RefundState::Processing {
            return;
        }
        refund.state = match outcome {
            RefundOutcome::Success => RefundState::Success,
            RefundOutcome::Closed => RefundState::Closed,
            RefundOutcome::Abnormal => RefundState::Abnormal,
        };
        if refund.state == RefundState::Success {
            refund.success_time = Some(now);
        }
        let refund = refund.clone();
        let order_key = (refund.mchid.clone(), refund.out_trade_no.clone());
        let order_url = state.orders.get_mut(&order_key).map(|order| {
            if refund.state == RefundState::Success {
                order.state = OrderState::Refund;
            }
            order.notify_url.clone()
        });
        state.dirty = true;
        let url = refund.notify_url.clone().or(order_url);
        (refund, url)
    };
    let Some(url) = url else { return };
    let (event_type, summary) = match refund.state {
        RefundState::Success => (EVENT_REFUND_SUCCESS, "退款成功"),
        RefundState::Closed => (EVENT_REFUND_CLOSED, "退款关闭"),
        _ => (EVENT_REFUND_ABNORMAL, "退款异常"),
    };
    let notification = RefundNotification {
        mchid: refund.mchid.clone(),
        out_trade_no: refund.out_trade_no.clone(),
        transaction_id: refund.transaction_id.clone(),
        out_refund_no: refund.out_refund_no.clone(),
        refund_id: refund.refund_id.clone(),
        refund_status: status_of(refund.state),
        success_time: refund.success_time.map(rfc3339_cst),
        user_received_account: Some("支付用户零钱".to_string()),
        amount: RefundAmount {
            total: refund.total,
            refund: refund.refund,
            payer_total: Some(refund.total - refund.order_coupon),
            payer_refund: Some(refund.refund - refund.coupon_refund),
            ..Default::default()
        },
    };
    callbacks::send(
        sim,
        CallbackJob {
            mchid: refund.mchid.clone(),
            url,
            event_type,
            summary,
            original_type: "refund",
            plaintext: serde_json::to_vec(&notification).expect("serialisable"),
            out_trade_no: refund.out_trade_no.clone(),
            out_refund_no: Some(refund.out_refund_no.clone()),
        },
    );
}

/// A short description of an order for the payer's page.
pub fn order_summary(order: &Order) -> serde_json::Value {
    json!({
        "mchid": order.mchid,
        "appid": order.appid,
        "out_trade_no": order.out_trade_no,
        "description": order.description,
        "total": order.total,
        "currency": order.currency,
        "trade_type": order.trade_type,
        "trade_state": order.state.as_str(),
        "expires_at": rfc3339_cst(order.expires_at),
    })
}

/// The openid a user has under an appid: stable, 28 characters, like WeChat's.
pub fn openid_for(appid: &str, user: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{appid}\n{user}").as_bytes());
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    format!("o{}", &encoded[..27])
}

/// A paid order (and maybe its refund) to load in bulk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImportedOrder {
    pub out_trade_no: String,
    pub transaction_id: String,
    pub amount: i64,
    /// Unix seconds.
    pub paid_at: i64,
    pub refund: Option<ImportedRefund>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImportedRefund {
    pub out_refund_no: String,
    pub refund_id: String,
    pub amount: i64,
    /// Unix seconds.
    pub at: i64,
}

impl ImportedOrder {
    /// Why the order cannot be imported, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let no = &self.out_trade_no;
        if !(6..=32).contains(&no.len()) || self.amount <= 0 {
            return Some(format!(
                "order {no:?}: out_trade_no is 6 to 32 characters, amount positive"
            ));
        }
        self.refund
            .as_ref()
            .filter(|r| r.amount <= 0 || r.amount > self.amount)
            .map(|r| {
                format!(
                    "refund {:?}: its amount is from 1 to the order's",
                    r.out_refund_no
                )
            })
    }
}

/// Loads a merchant's history of paid orders and succeeded refunds at once, without callbacks
/// (load tests of reconciliation: `wxgate bench reconcile`). False when the merchant is unknown.
pub fn import_paid_orders(sim: &Sim, mchid: &str, orders: &[ImportedOrder]) -> bool {
    let mut state = sim.state();
    let Some(appid) = state.merchants.get(mchid).map(|m| m.appid.clone()) else {
        return false;
    };
    for o in orders {
        let refunded = o.refund.is_some();
        state.insert_order(Order {
            family: Family::Domestic,
            mchid: mchid.to_string(),
            appid: appid.clone(),
            out_trade_no: o.out_trade_no.clone(),
            trade_type: "NATIVE".into(),
            description: "imported".into(),
            attach: None,
            notify_url: String::new(),
            total: o.amount,
            currency: "CNY".into(),
            openid: None,
            payer_client_ip: None,
            merchant_category_code: None,
            fingerprint: String::new(),
            created_at: o.paid_at,
            expires_at: o.paid_at + 7_200,
            state: if refunded {
                OrderState::Refund
            } else {
                OrderState::Success
            },
            transaction_id: Some(o.transaction_id.clone()),
            success_time: Some(o.paid_at),
            paid_openid: Some("o_imported".into()),
            exchange_rate: None,
            prepay_id: format!("wx_imported_{}", o.out_trade_no),
            prepay_issued_at: o.paid_at,
            code_token: None,
            h5_package: None,
            h5_issued_at: 0,
            coupon: None,
        });
        if let Some(r) = &o.refund {
            state.insert_refund(RefundRecord {
                family: Family::Domestic,
                mchid: mchid.to_string(),
                refund_id: r.refund_id.clone(),
                out_refund_no: r.out_refund_no.clone(),
                out_trade_no: o.out_trade_no.clone(),
                transaction_id: o.transaction_id.clone(),
                refund: r.amount,
                total: o.amount,
                currency: "CNY".into(),
                reason: None,
                notify_url: None,
                fingerprint: String::new(),
                created_at: r.at,
                success_time: Some(r.at),
                state: RefundState::Success,
                order_coupon: 0,
                order_nocash: 0,
                coupon_refund: 0,
                nocash_refund: 0,
            });
        }
    }
    state.dirty = true;
    true
}
