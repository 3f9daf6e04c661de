//! The simulator's state: merchants, orders, refunds, bills waiting to be downloaded, the
//! callback log and the fault settings. One mutex guards it; no lock is held across an await.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wechatpay_v3::model::TransferState;

use crate::faults::Faults;
use crate::merchant::{Merchant, MerchantRecord};

/// Which API family an order came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Domestic,
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderState {
    Notpay,
    Success,
    Refund,
    Closed,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Notpay => "NOTPAY",
            Self::Success => "SUCCESS",
            Self::Refund => "REFUND",
            Self::Closed => "CLOSED",
        }
    }

    pub fn desc(self) -> &'static str {
        match self {
            Self::Notpay => "未支付",
            Self::Success => "支付成功",
            Self::Refund => "转入退款",
            Self::Closed => "已关闭",
        }
    }

    pub fn is_paid(self) -> bool {
        matches!(self, Self::Success | Self::Refund)
    }
}

/// What kind of coupon a payer used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CouponKind {
    /// 充值券: funded ahead (by WeChat or another party); the merchant is settled the whole
    /// amount.
    Cash,
    /// 免充值券: funded by the merchant; its amount is never settled to the merchant.
    Nocash,
}

/// A coupon that paid part of a domestic order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coupon {
    #[serde(rename = "type")]
    pub kind: CouponKind,
    /// In fen, below the order's total (the payer pays at least a fen).
    pub amount: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub family: Family,
    pub mchid: String,
    pub appid: String,
    pub out_trade_no: String,
    /// `NATIVE`, `JSAPI`, `APP` or `MWEB`.
    pub trade_type: String,
    pub description: String,
    pub attach: Option<String>,
    pub notify_url: String,
    pub total: i64,
    pub currency: String,
    pub openid: Option<String>,
    pub payer_client_ip: Option<String>,
    pub merchant_category_code: Option<String>,
    /// The business parameters a re-submitted prepay must repeat.
    pub fingerprint: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub state: OrderState,
    pub transaction_id: Option<String>,
    pub success_time: Option<i64>,
    pub paid_openid: Option<String>,
    /// CNY per major unit of `currency`, scaled by 10^8 (cross-border only).
    pub exchange_rate: Option<i64>,
    pub prepay_id: String,
    pub prepay_issued_at: i64,
    pub code_token: Option<String>,
    pub h5_package: Option<String>,
    pub h5_issued_at: i64,
    /// The coupon the payer used, if any.
    #[serde(default)]
    pub coupon: Option<Coupon>,
}

impl Order {
    /// What coupons paid of it.
    pub fn coupon_amount(&self) -> i64 {
        self.coupon.map_or(0, |c| c.amount)
    }

    /// What a merchant-funded coupon took off it: never settled to the merchant.
    pub fn nocash_amount(&self) -> i64 {
        self.coupon
            .filter(|c| c.kind == CouponKind::Nocash)
            .map_or(0, |c| c.amount)
    }

    /// What WeChat settles for it (应结订单金额).
    pub fn settlement_total(&self) -> i64 {
        self.total - self.nocash_amount()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RefundState {
    Processing,
    Success,
    Closed,
    Abnormal,
}

impl RefundState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Success => "SUCCESS",
            Self::Closed => "CLOSED",
            Self::Abnormal => "ABNORMAL",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundRecord {
    pub family: Family,
    pub mchid: String,
    pub refund_id: String,
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub refund: i64,
    pub total: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
    pub fingerprint: String,
    pub created_at: i64,
    pub success_time: Option<i64>,
    pub state: RefundState,
    /// What coupons paid of the refunded order, and what of that a merchant-funded one did.
    #[serde(default)]
    pub order_coupon: i64,
    #[serde(default)]
    pub order_nocash: i64,
    /// The coupons' share of this refund (it goes back to the coupon, not to the payer), and
    /// the merchant-funded one's (never taken from the merchant's settled money).
    #[serde(default)]
    pub coupon_refund: i64,
    #[serde(default)]
    pub nocash_refund: i64,
}

impl RefundRecord {
    /// What the refund takes of the merchant's settled money (退款金额 in the bill).
    pub fn settlement_refund(&self) -> i64 {
        self.refund - self.nocash_refund
    }
}

/// A coupon of `coupon` on an order of `total`: its share of a refund of `refund` after
/// `before` was refunded, in proportion, rounded down on the running sum, so the shares of
/// refunds that add up to the total add up to the coupon.
pub fn coupon_share(coupon: i64, total: i64, before: i64, refund: i64) -> i64 {
    let upto = |refunded: i64| {
        let share = i128::from(coupon) * i128::from(refunded) / i128::from(total.max(1));
        i64::try_from(share).unwrap_or(coupon)
    };
    upto(before + refund) - upto(before)
}

/// What a sandbox merchant's operation account holds at first: 100,000.00 CNY.
pub const OPERATION_OPENING_FEN: i64 = 10_000_000;

/// A merchant transfer (payout) as the simulator keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRecord {
    pub mchid: String,
    pub appid: String,
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    pub openid: String,
    /// Decrypted, when the merchant sent one.
    pub user_name: Option<String>,
    pub amount: i64,
    pub remark: String,
    pub notify_url: Option<String>,
    pub state: TransferState,
    pub fail_reason: Option<String>,
    pub package_info: Option<String>,
    pub fingerprint: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A bill file waiting behind a download token.
#[derive(Debug, Clone)]
pub struct BillFile {
    pub mchid: String,
    pub bytes: Vec<u8>,
    pub gzipped: bool,
    pub expires_at: i64,
}

/// One callback as the simulator sent (or did not send) it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallbackLog {
    pub id: String,
    pub mchid: String,
    pub event_type: String,
    pub url: String,
    pub out_trade_no: String,
    pub out_refund_no: Option<String>,
    /// HTTP status of each attempt (0: no answer).
    pub attempts: Vec<u16>,
    pub acknowledged: bool,
    pub dropped: bool,
}

#[derive(Default)]
pub struct State {
    pub merchants: HashMap<String, Arc<Merchant>>,
    pub orders: HashMap<(String, String), Order>,
    pub refunds: HashMap<(String, String), RefundRecord>,
    pub by_transaction_id: HashMap<String, (String, String)>,
    pub by_prepay_id: HashMap<String, (String, String)>,
    pub by_code_token: HashMap<String, (String, String)>,
    pub by_refund_id: HashMap<String, (String, String)>,
    /// OAuth codes: code → (appid, openid, issued_at).
    pub oauth_codes: HashMap<String, (String, String, i64)>,
    pub bills: HashMap<String, BillFile>,
    /// Merchant transfers by (mchid, out_bill_no), and their WeChat numbers and packages.
    pub transfers: HashMap<(String, String), TransferRecord>,
    pub by_transfer_bill_no: HashMap<String, (String, String)>,
    pub by_package: HashMap<String, (String, String)>,
    /// Each merchant's operation account (运营账户), fen, once it was touched.
    pub operation_balances: HashMap<String, i64>,
    pub callbacks: Vec<CallbackLog>,
    pub global_faults: Faults,
    pub merchant_faults: HashMap<String, Faults>,
    pub dirty: bool,
}

/// What the data folder holds.
#[derive(Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub merchants: Vec<MerchantRecord>,
    pub orders: Vec<Order>,
    pub refunds: Vec<RefundRecord>,
    #[serde(default)]
    pub transfers: Vec<TransferRecord>,
    #[serde(default)]
    pub operation_balances: HashMap<String, i64>,
    pub global_faults: Faults,
    pub merchant_faults: HashMap<String, Faults>,
}

impl State {
    pub fn order_key(mchid: &str, out_trade_no: &str) -> (String, String) {
        (mchid.to_string(), out_trade_no.to_string())
    }

    /// The faults in force for a merchant: its own if set, else the global ones.
    pub fn faults_for(&self, mchid: Option<&str>) -> Faults {
        mchid
            .and_then(|m| self.merchant_faults.get(m))
            .cloned()
            .unwrap_or_else(|| self.global_faults.clone())
    }

    pub fn insert_order(&mut self, order: Order) {
        let key = Self::order_key(&order.mchid, &order.out_trade_no);
        self.by_prepay_id
            .insert(order.prepay_id.clone(), key.clone());
        if let Some(token) = &order.code_token {
            self.by_code_token.insert(token.clone(), key.clone());
        }
        if let Some(id) = &order.transaction_id {
            self.by_transaction_id.insert(id.clone(), key.clone());
        }
        self.orders.insert(key, order);
        self.dirty = true;
    }

    /// What the refunds of a merchant's order that WeChat did not close asked back.
    pub fn refunded_of(&self, mchid: &str, out_trade_no: &str) -> i64 {
        self.refunds
            .values()
            .filter(|r| r.mchid == mchid && r.out_trade_no == out_trade_no)
            .filter(|r| r.state != RefundState::Closed)
            .map(|r| r.refund)
            .sum()
    }

    pub fn insert_refund(&mut self, refund: RefundRecord) {
        let key = Self::order_key(&refund.mchid, &refund.out_refund_no);
        self.by_refund_id
            .insert(refund.refund_id.clone(), key.clone());
        self.refunds.insert(key, refund);
        self.dirty = true;
    }

    pub fn insert_transfer(&mut self, t: TransferRecord) {
        let key = Self::order_key(&t.mchid, &t.out_bill_no);
        self.by_transfer_bill_no
            .insert(t.transfer_bill_no.clone(), key.clone());
        if let Some(p) = &t.package_info {
            self.by_package.insert(p.clone(), key.clone());
        }
        self.transfers.insert(key, t);
        self.dirty = true;
    }

    /// A merchant's operation account, opened with `OPERATION_OPENING_FEN` on first use.
    pub fn operation_balance(&mut self, mchid: &str) -> &mut i64 {
        self.operation_balances
            .entry(mchid.to_string())
            .or_insert(OPERATION_OPENING_FEN)
    }

    /// Closes an unpaid order whose time has run out.
    pub fn expire_if_due(&mut self, key: &(String, String), now: i64) {
        if let Some(order) = self.orders.get_mut(key)
            && order.state == OrderState::Notpay
            && now > order.expires_at
        {
            order.state = OrderState::Closed;
            self.dirty = true;
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            merchants: self.merchants.values().map(|m| m.record()).collect(),
            orders: self.orders.values().cloned().collect(),
            refunds: self.refunds.values().cloned().collect(),
            transfers: self.transfers.values().cloned().collect(),
            operation_balances: self.operation_balances.clone(),
            global_faults: self.global_faults.clone(),
            merchant_faults: self.merchant_faults.clone(),
        }
    }

    pub fn restore(snapshot: Snapshot) -> anyhow::Result<Self> {
        let mut state = Self::default();
        for record in &snapshot.merchants {
            state.merchants.insert(
                record.mchid.clone(),
                Arc::new(Merchant::from_record(record)?),
            );
        }
        for order in snapshot.orders {
            state.insert_order(order);
        }
        for refund in snapshot.refunds {
            state.insert_refund(refund);
        }
        for transfer in snapshot.transfers {
            state.insert_transfer(transfer);
        }
        state.operation_balances = snapshot.operation_balances;
        state.global_faults = snapshot.global_faults;
        state.merchant_faults = snapshot.merchant_faults;
        state.dirty = false;
        Ok(state)
    }
}

#[cfg(test)]
mod coupon_tests {
    use super::coupon_share;

    #[test]
    fn coupon_shares_of_refunds_add_up_to_the_coupon() {
        // 10.00 paid, 9.99 of it by a coupon: two halves give back 4.99 and 5.00 of it.
        assert_eq!(coupon_share(999, 1000, 0, 500), 499);
        assert_eq!(coupon_share(999, 1000, 500, 500), 500);
        // A thousand 1-fen refunds give back the whole coupon and the payer's 1 fen, no more.
        let shares: i64 = (0..1000).map(|k| coupon_share(999, 1000, k, 1)).sum();
        assert_eq!(shares, 999);
        assert_eq!(coupon_share(0, 1000, 0, 1000), 0);
        assert_eq!(
            coupon_share(i64::MAX / 2, i64::MAX, 0, i64::MAX),
            i64::MAX / 2
        );
    }
}
