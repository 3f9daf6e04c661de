//! Reconciliation of one merchant's day: the gateway's records against WeChat's trade bill
//! and fund-flow bill (a three-way match), as a pure function from the three sides to typed
//! findings and the ledger postings the bills justify.
//!
//! Rules:
//! - A bill's payment row is matched by out_trade_no to a WeChat order the gateway made (any
//!   attempt of a payment); a refund row by out_refund_no.
//! - Each row's amount must equal the gateway's; a payment row must find the gateway's order
//!   paid, a refund row the refund succeeded (a bill's `PROCESSING` is a refund in flight).
//! - A payment's fee must be the merchant's rate of what WeChat settles of it (its amount less
//!   a merchant-funded coupon), rounded half up to the fen.
//! - The fund-flow bill must settle each matched payment's 应结 amount; only then do its
//!   settlement, fee and coupon discount count in the day's postings (a payment in question
//!   stays pending). One WeChat paid that the gateway does not have paid has put nothing in
//!   pending: its settlement is held with its finding, for the repair to post once the gateway
//!   has the payment paid.
//! - What the gateway has on the day that the bill lacks is `missing_at_wechat`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::ledger::PostingKind;

/// What kind of disagreement a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyKind {
    MissingInGateway,
    MissingAtWechat,
    AmountMismatch,
    StatusMismatch,
    DuplicateAtWechat,
    FeeUnexpected,
}

impl DiscrepancyKind {
    pub const ALL: [DiscrepancyKind; 6] = [
        Self::MissingInGateway,
        Self::MissingAtWechat,
        Self::AmountMismatch,
        Self::StatusMismatch,
        Self::DuplicateAtWechat,
        Self::FeeUnexpected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingInGateway => "missing_in_gateway",
            Self::MissingAtWechat => "missing_at_wechat",
            Self::AmountMismatch => "amount_mismatch",
            Self::StatusMismatch => "status_mismatch",
            Self::DuplicateAtWechat => "duplicate_at_wechat",
            Self::FeeUnexpected => "fee_unexpected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a reconciliation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReconciliationStatus {
    /// Due to run (or to run again after a failed attempt).
    #[default]
    Pending,
    /// WeChat is still building the bill; it runs again later.
    WaitingForBill,
    Completed,
    /// Gave up after repeated errors; `last_error` says why.
    Failed,
}

impl ReconciliationStatus {
    pub const ALL: [ReconciliationStatus; 4] = [
        Self::Pending,
        Self::WaitingForBill,
        Self::Completed,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::WaitingForBill => "waiting_for_bill",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where a discrepancy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyStatus {
    /// Needs a person.
    #[default]
    Open,
    /// The job asked WeChat and brought the gateway in line (with the usual events).
    Repaired,
    /// Closed with a reason: by an operator, or by the job when WeChat's live answer agrees
    /// with the gateway and the bill only caught a moment in flight.
    Resolved,
}

impl DiscrepancyStatus {
    pub const ALL: [DiscrepancyStatus; 3] = [Self::Open, Self::Repaired, Self::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Repaired => "repaired",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

try_from_string!(ReconciliationStatus, "reconciliation status");
try_from_string!(DiscrepancyStatus, "discrepancy status");
try_from_string!(DiscrepancyKind, "discrepancy kind");

/// Where the gateway's WeChat order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Paid,
    Pending,
    Unpaid,
}

/// A WeChat order the gateway made, as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOrder {
    pub out_trade_no: String,
    pub payment_id: String,
    pub amount: i64,
    pub state: OrderState,
    /// Paid on the day reconciled (so the bill must show it).
    pub paid_on_day: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundState {
    Succeeded,
    Pending,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRefund {
    pub out_refund_no: String,
    pub refund_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub state: RefundState,
    /// Sent to WeChat on the day reconciled.
    pub on_day: bool,
}

/// A payment row of the trade bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillPayment {
    pub out_trade_no: String,
    pub transaction_id: String,
    /// The order's amount (订单金额), compared with the gateway's, in minor units of
    /// `currency`.
    pub amount: i64,
    pub currency: String,
    /// What WeChat settles for it (应结订单金额: less coupons others funded), compared with the
    /// fund-flow bill, in minor units of `settlement_currency`.
    pub settlement: i64,
    /// `currency`, unless WeChat settles the merchant in another one.
    pub settlement_currency: String,
    /// In minor units of `currency`, as WeChat rounded it.
    pub fee: i64,
}

impl BillPayment {
    /// In one currency, WeChat settles at most the amount (less only coupons' shares).
    pub fn settles_within_amount(&self) -> bool {
        settles_within(
            self.amount,
            self.settlement,
            &self.currency,
            &self.settlement_currency,
        )
    }

    /// What WeChat's fee is charged on: the money it settles (a merchant-funded coupon's share
    /// is never settled, so never charged), or the order's amount when it settles in another
    /// currency.
    pub fn fee_base(&self) -> i64 {
        if self.settlement_currency == self.currency {
            self.settlement
        } else {
            self.amount
        }
    }
}

/// A refund row of the trade bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillRefund {
    pub out_refund_no: String,
    pub refund_id: String,
    pub amount: i64,
    pub currency: String,
    /// What the refund took of the merchant's settled money (退款应结订单金额), in minor units
    /// of `settlement_currency`.
    pub settlement: i64,
    /// `currency`, unless WeChat settles the merchant in another one.
    pub settlement_currency: String,
    pub processing: bool,
}

impl BillRefund {
    /// In one currency, a refund takes at most its amount of the settled money.
    pub fn settles_within_amount(&self) -> bool {
        settles_within(
            self.amount,
            self.settlement,
            &self.currency,
            &self.settlement_currency,
        )
    }
}

/// A bill row's settlement in its own currency lies between nothing and its amount; one
/// settled in another currency is compared through the fund-flow bill instead.
fn settles_within(amount: i64, settlement: i64, currency: &str, settled_in: &str) -> bool {
    settled_in != currency || (0..=amount).contains(&settlement)
}

/// What a fund-flow movement is, from its business type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    Settlement,
    Fee,
    Refund,
    FeeReturn,
    Other,
}

/// One movement of the basic account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowMovement {
    /// The transaction or refund it belongs to.
    pub business_no: String,
    pub kind: FlowKind,
    pub amount: i64,
}

/// Where the gateway's payout stands, for reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// At WeChat, not finished (awaiting confirmation, processing).
    Open,
    Succeeded,
    /// Failed or cancelled: WeChat returns the amount to the operation account.
    Returned,
}

/// A payout whose transfer WeChat took, as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPayout {
    pub out_bill_no: String,
    pub payout_id: String,
    pub amount: i64,
    pub state: PayoutState,
    /// Made on the day reconciled (so the operation account's bill must show it leave).
    pub on_day: bool,
    /// Failed or cancelled on the day reconciled (so the bill must show its amount back).
    pub returned_on_day: bool,
}

/// A movement of the operation account's fund-flow bill that belongs to a transfer: the
/// transfer leaving, or its amount coming back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutFlow {
    /// 业务凭证号: the transfer's out_bill_no.
    pub out_bill_no: String,
    pub amount: i64,
    pub returned: bool,
}

/// Everything one day's reconciliation reads.
#[derive(Debug, Clone, Default)]
pub struct DayInput {
    /// The gateway's orders paid on the day, and any other the bills name.
    pub orders: Vec<GatewayOrder>,
    /// The gateway's refunds sent on the day, and any other the bills name.
    pub refunds: Vec<GatewayRefund>,
    pub bill_payments: Vec<BillPayment>,
    pub bill_refunds: Vec<BillRefund>,
    pub flows: Vec<FlowMovement>,
    /// The gateway's payouts made on the day, and any other the operation account's bill names.
    pub payouts: Vec<GatewayPayout>,
    /// The operation account's movements of transfers.
    pub payout_flows: Vec<PayoutFlow>,
    /// The merchant's fee rate, basis points.
    pub fee_rate_bp: u32,
}

/// One side of a finding: what that side holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Side {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
    /// For a payment WeChat paid that the gateway does not have paid: what the fund-flow bill
    /// settled of it and the fee it took, held out of the day's postings until the gateway has
    /// the payment paid (the repair posts them then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_fee: Option<i64>,
    /// Which record: `gateway`, `trade_bill` or `fund_flow_bill`.
    pub source: &'static str,
}

/// What a finding or discrepancy is about: a payment (and one of its refunds), or a payout.
#[derive(Debug, Clone, Copy, Default)]
pub struct About<'a> {
    pub payment_id: Option<&'a str>,
    pub refund_id: Option<&'a str>,
    pub payout_id: Option<&'a str>,
}

/// What the job can do about a discrepancy by asking WeChat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Query this order and apply what WeChat says through the normal sync path.
    SyncPayment { payment_id: String },
    /// Query this refund likewise.
    SyncRefund { refund_id: String },
    /// Query this payout's transfer likewise.
    SyncPayout { payout_id: String },
}

impl Repair {
    /// The one rule: a status the two sides disagree on can be settled by asking WeChat, for
    /// the refund when it is about one, else for the payment's order.
    pub fn of(kind: DiscrepancyKind, about: About<'_>) -> Option<Self> {
        if kind != DiscrepancyKind::StatusMismatch {
            return None;
        }
        let owned = |id: &str| id.to_string();
        match about {
            About {
                payout_id: Some(id),
                ..
            } => Some(Self::SyncPayout {
                payout_id: owned(id),
            }),
            About {
                refund_id: Some(id),
                ..
            } => Some(Self::SyncRefund {
                refund_id: owned(id),
            }),
            About {
                payment_id: Some(id),
                ..
            } => Some(Self::SyncPayment {
                payment_id: owned(id),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: DiscrepancyKind,
    /// The out_trade_no or out_refund_no the finding is about.
    pub reference: String,
    pub payment_id: Option<String>,
    pub refund_id: Option<String>,
    pub payout_id: Option<String>,
    pub gateway: Option<Side>,
    pub wechat: Option<Side>,
}

impl Finding {
    /// What a query could settle about it.
    pub fn repair(&self) -> Option<Repair> {
        Repair::of(
            self.kind,
            About {
                payment_id: self.payment_id.as_deref(),
                refund_id: self.refund_id.as_deref(),
                payout_id: self.payout_id.as_deref(),
            },
        )
    }
}

/// What the fund-flow bill settled of the payments and refunds that matched, in one currency:
/// the day's settlement, fees, fees returned and conversions, posted to the ledger as one
/// posting each (as WeChat settles: per day). A payment in question is left out, and stays
/// pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Settled {
    pub payments: u64,
    pub settlement: i64,
    pub fees: i64,
    pub fees_returned: i64,
    /// Settled in this currency and converted into the merchant's settlement currency
    /// (payments), or taken from it to pay refunds in another.
    pub converted_out: i64,
    /// Arrived in this currency by conversion (payments settled in it, or refunds paid in it).
    pub converted_in: i64,
    /// What merchant-funded coupons took off the payments: their amount less what WeChat
    /// settled (订单金额 − 应结订单金额).
    pub discounts: i64,
    /// The coupons' share of the refunds: their amount less what they took of the settled money
    /// (申请退款金额 − 退款金额).
    pub discounts_returned: i64,
}

impl Settled {
    /// The postings these sums make: (kind, amount), none for a zero sum.
    pub fn postings(&self) -> Vec<(PostingKind, i64)> {
        [
            (PostingKind::Settlement, self.settlement),
            (PostingKind::Fee, self.fees),
            (PostingKind::FeeReturn, self.fees_returned),
            (PostingKind::ConversionOut, self.converted_out),
            (PostingKind::ConversionIn, self.converted_in),
            (PostingKind::Discount, self.discounts),
            (PostingKind::DiscountReturn, self.discounts_returned),
        ]
        .into_iter()
        .filter(|(_, amount)| *amount > 0)
        .collect()
    }
}

/// Counts and sums of both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Totals {
    pub gateway_payments: u64,
    pub gateway_payment_amount: i64,
    pub gateway_refunds: u64,
    pub gateway_refund_amount: i64,
    pub wechat_payments: u64,
    pub wechat_payment_amount: i64,
    pub wechat_refunds: u64,
    pub wechat_refund_amount: i64,
    pub wechat_fees: i64,
    pub gateway_payouts: u64,
    pub gateway_payout_amount: i64,
    pub wechat_payouts: u64,
    pub wechat_payout_amount: i64,
}

#[derive(Debug, Clone, Default)]
pub struct DayResult {
    pub findings: Vec<Finding>,
    /// What was settled, by currency.
    pub settled: BTreeMap<String, Settled>,
    pub totals: Totals,
}

/// WeChat's fee on `amount` at `rate_bp` basis points, rounded half up to the fen.
pub fn expected_fee(amount: i64, rate_bp: u32) -> i64 {
    (amount * i64::from(rate_bp) + 5_000) / 10_000
}

/// `amount` (in a row's pricing currency) at the rate the row's own totals imply, `to` for
/// `from`, rounded half away from zero: how a fee charged in the pricing currency comes out of
/// money settled in another. Zero when `from` is zero.
pub fn at_row_rate(amount: i64, to: i64, from: i64) -> i64 {
    if from == 0 {
        return 0;
    }
    let (n, d) = (i128::from(amount) * i128::from(to), i128::from(from));
    let half = d.abs() / 2;
    let rounded = if (n < 0) == (d < 0) {
        (n.abs() + half) / d.abs()
    } else {
        -((n.abs() + half) / d.abs())
    };
    i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX })
}

/// Rows grouped by a key, in order of first appearance.
fn grouped<'a, T>(rows: &'a [T], key: impl Fn(&'a T) -> &'a str) -> Vec<(&'a str, Vec<&'a T>)> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut groups: Vec<(&str, Vec<&T>)> = Vec::new();
    for row in rows {
        let k = key(row);
        match index.get(k) {
            Some(&i) => groups[i].1.push(row),
            None => {
                index.insert(k, groups.len());
                groups.push((k, vec![row]));
            }
        }
    }
    groups
}

/// Reconciles one day.
pub fn reconcile(input: &DayInput) -> DayResult {
    let mut result = DayResult::default();
    let flows = FlowIndex::new(&input.flows);
    match_payments(input, &flows, &mut result);
    match_refunds(input, &flows, &mut result);
    match_payouts(input, &mut result);
    result.totals.wechat_fees = input.bill_payments.iter().map(|p| p.fee).sum();
    result
}

/// Fund-flow movements by the transaction or refund they belong to.
struct FlowIndex<'a> {
    by_business_no: HashMap<&'a str, Vec<&'a FlowMovement>>,
}

impl<'a> FlowIndex<'a> {
    fn new(flows: &'a [FlowMovement]) -> Self {
        let mut by_business_no: HashMap<&str, Vec<&FlowMovement>> = HashMap::new();
        for f in flows {
            by_business_no.entry(&f.business_no).or_default().push(f);
        }
        Self { by_business_no }
    }

    fn of(&self, business_no: &str, kind: FlowKind) -> impl Iterator<Item = &'a FlowMovement> {
        self.by_business_no
            .get(business_no)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |f| f.kind == kind)
    }

    fn sum(&self, business_no: &str, kind: FlowKind) -> i64 {
        self.of(business_no, kind).map(|f| f.amount).sum()
    }
}

fn side(source: &'static str) -> Side {
    Side {
        source,
        ..Side::default()
    }
}

fn gateway_order_side(o: &GatewayOrder) -> Side {
    Side {
        amount: Some(o.amount),
        status: Some(
            match o.state {
                OrderState::Paid => "paid",
                OrderState::Pending => "pending",
                OrderState::Unpaid => "unpaid",
            }
            .into(),
        ),
        ..side("gateway")
    }
}

fn bill_payment_side(row: &BillPayment, rows: usize) -> Side {
    Side {
        amount: Some(row.amount),
        status: Some("SUCCESS".into()),
        fee: Some(row.fee),
        rows: Some(rows),
        ..side("trade_bill")
    }
}

fn payment_finding(kind: DiscrepancyKind, reference: &str, o: Option<&GatewayOrder>) -> Finding {
    Finding {
        kind,
        reference: reference.to_string(),
        payment_id: o.map(|o| o.payment_id.clone()),
        refund_id: None,
        payout_id: None,
        gateway: o.map(gateway_order_side),
        wechat: None,
    }
}

fn match_payments(input: &DayInput, flows: &FlowIndex<'_>, result: &mut DayResult) {
    let orders: HashMap<&str, &GatewayOrder> = input
        .orders
        .iter()
        .map(|o| (o.out_trade_no.as_str(), o))
        .collect();
    let groups = grouped(&input.bill_payments, |p| p.out_trade_no.as_str());
    for (no, rows) in &groups {
        let row = rows[0];
        result.totals.wechat_payments += rows.len() as u64;
        result.totals.wechat_payment_amount += rows.iter().map(|r| r.amount).sum::<i64>();
        let order = orders.get(no).copied();
        let wechat = bill_payment_side(row, rows.len());
        let found = |kind| Finding {
            wechat: Some(wechat.clone()),
            ..payment_finding(kind, no, order)
        };
        if rows.len() > 1 {
            result
                .findings
                .push(found(DiscrepancyKind::DuplicateAtWechat));
        }
        let Some(order) = order else {
            result
                .findings
                .push(found(DiscrepancyKind::MissingInGateway));
            continue;
        };
        if order.amount != row.amount || !row.settles_within_amount() {
            result.findings.push(found(DiscrepancyKind::AmountMismatch));
            continue;
        }
        if row.fee != expected_fee(row.fee_base(), input.fee_rate_bp) {
            result.findings.push(found(DiscrepancyKind::FeeUnexpected));
        }
        let domestic = row.settlement_currency == row.currency;
        match (order.state == OrderState::Paid, domestic) {
            (true, _) => settle_payment(order, row, flows, result),
            // Paid at WeChat, not here: no payment posting has put its amount in pending yet
            // (one may never: a report that cannot be applied is quarantined), so its
            // settlement is held with the finding. A cross-border statement's is settled on
            // its day.
            (false, true) => {
                let mut mismatch = found(DiscrepancyKind::StatusMismatch);
                if let Some((settled, fee)) = flow_settled(order, row, flows, result) {
                    let held = mismatch.wechat.as_mut().expect("a bill row's side");
                    (held.settled, held.settled_fee) = (Some(settled), Some(fee));
                }
                result.findings.push(mismatch);
            }
            (false, false) => {
                result.findings.push(found(DiscrepancyKind::StatusMismatch));
                settle_payment(order, row, flows, result);
            }
        }
    }
    let in_bill: HashSet<&str> = groups.iter().map(|(no, _)| *no).collect();
    for o in input.orders.iter().filter(|o| o.paid_on_day) {
        result.totals.gateway_payments += 1;
        result.totals.gateway_payment_amount += o.amount;
        if !in_bill.contains(o.out_trade_no.as_str()) {
            result.findings.push(payment_finding(
                DiscrepancyKind::MissingAtWechat,
                &o.out_trade_no,
                Some(o),
            ));
        }
    }
}

/// What the fund-flow bill settled of a matched payment and the fee it took, when it settled
/// what the trade bill says (else the difference is a finding, and `None`).
fn flow_settled(
    order: &GatewayOrder,
    row: &BillPayment,
    flows: &FlowIndex<'_>,
    result: &mut DayResult,
) -> Option<(i64, i64)> {
    let settled = flows.sum(&row.transaction_id, FlowKind::Settlement);
    if settled != row.settlement {
        result.findings.push(Finding {
            wechat: Some(Side {
                amount: Some(settled),
                ..side("fund_flow_bill")
            }),
            ..payment_finding(
                DiscrepancyKind::AmountMismatch,
                &row.out_trade_no,
                Some(order),
            )
        });
        return None;
    }
    Some((settled, flows.sum(&row.transaction_id, FlowKind::Fee)))
}

/// Checks the fund-flow bill settled a matched payment; if it did, adds the settlement and the
/// fee it shows to the day's postings.
fn settle_payment(
    order: &GatewayOrder,
    row: &BillPayment,
    flows: &FlowIndex<'_>,
    result: &mut DayResult,
) {
    let Some((settled, fees)) = flow_settled(order, row, flows, result) else {
        return;
    };
    let sums = result.settled.entry(row.currency.clone()).or_default();
    sums.payments += 1;
    if row.settlement_currency == row.currency {
        sums.settlement += settled;
        sums.discounts += row.amount - settled;
        sums.fees += fees;
        return;
    }
    // Settled in another currency: the payment's amount leaves pending and is converted; what
    // it became (and the fee taken from it) is in the settlement currency.
    sums.settlement += row.amount;
    sums.converted_out += row.amount;
    let into = result
        .settled
        .entry(row.settlement_currency.clone())
        .or_default();
    into.converted_in += settled;
    into.fees += fees;
}

fn refund_finding(kind: DiscrepancyKind, reference: &str, r: Option<&GatewayRefund>) -> Finding {
    Finding {
        kind,
        reference: reference.to_string(),
        payment_id: r.map(|r| r.payment_id.clone()),
        refund_id: r.map(|r| r.refund_id.clone()),
        payout_id: None,
        gateway: r.map(|r| Side {
            amount: Some(r.amount),
            status: Some(
                match r.state {
                    RefundState::Succeeded => "succeeded",
                    RefundState::Pending => "pending",
                    RefundState::Failed => "failed",
                }
                .into(),
            ),
            ..side("gateway")
        }),
        wechat: None,
    }
}

fn match_refunds(input: &DayInput, flows: &FlowIndex<'_>, result: &mut DayResult) {
    let refunds: HashMap<&str, &GatewayRefund> = input
        .refunds
        .iter()
        .map(|r| (r.out_refund_no.as_str(), r))
        .collect();
    let groups = grouped(&input.bill_refunds, |r| r.out_refund_no.as_str());
    for (no, rows) in &groups {
        let row = rows[0];
        result.totals.wechat_refunds += rows.len() as u64;
        result.totals.wechat_refund_amount += rows.iter().map(|r| r.amount).sum::<i64>();
        let refund = refunds.get(no).copied();
        let wechat = Side {
            amount: Some(row.amount),
            status: Some(
                if row.processing {
                    "PROCESSING"
                } else {
                    "SUCCESS"
                }
                .into(),
            ),
            rows: Some(rows.len()),
            ..side("trade_bill")
        };
        let found = |kind| Finding {
            wechat: Some(wechat.clone()),
            ..refund_finding(kind, no, refund)
        };
        if rows.len() > 1 {
            result
                .findings
                .push(found(DiscrepancyKind::DuplicateAtWechat));
        }
        let Some(refund) = refund else {
            result
                .findings
                .push(found(DiscrepancyKind::MissingInGateway));
            continue;
        };
        if refund.amount != row.amount || !row.settles_within_amount() {
            result.findings.push(found(DiscrepancyKind::AmountMismatch));
            continue;
        }
        let agrees = matches!(
            (refund.state, row.processing),
            (RefundState::Succeeded, false) | (RefundState::Pending, true)
        );
        if !agrees {
            result.findings.push(found(DiscrepancyKind::StatusMismatch));
        }
        let succeeded = refund.state == RefundState::Succeeded;
        let fee_returned = flows.sum(&row.refund_id, FlowKind::FeeReturn);
        refund_settled(row, fee_returned, succeeded, result);
    }
    missing_refunds(input, &groups, result);
}

/// What a matched refund moved: the fee it returned and, for a merchant settled in another
/// currency, the settled money converted back to pay it in the payment's currency. A coupon's
/// share of it comes back to `settled` only once the gateway has the refund succeeded (its
/// refund posting took the whole amount); one still in question moves none.
fn refund_settled(row: &BillRefund, fee_returned: i64, succeeded: bool, result: &mut DayResult) {
    if row.settlement_currency == row.currency {
        let sums = result.settled.entry(row.currency.clone()).or_default();
        sums.fees_returned += fee_returned;
        if succeeded {
            sums.discounts_returned += row.amount - row.settlement;
        }
        return;
    }
    let from = result
        .settled
        .entry(row.settlement_currency.clone())
        .or_default();
    from.converted_out += row.settlement;
    from.fees_returned += fee_returned;
    let into = result.settled.entry(row.currency.clone()).or_default();
    into.converted_in += row.amount;
}

/// The gateway's refunds of the day that the bill lacks.
fn missing_refunds(input: &DayInput, groups: &[(&str, Vec<&BillRefund>)], result: &mut DayResult) {
    let in_bill: HashSet<&str> = groups.iter().map(|(no, _)| *no).collect();
    for r in input
        .refunds
        .iter()
        .filter(|r| r.on_day && r.state != RefundState::Failed)
    {
        result.totals.gateway_refunds += 1;
        result.totals.gateway_refund_amount += r.amount;
        if !in_bill.contains(r.out_refund_no.as_str()) {
            result.findings.push(refund_finding(
                DiscrepancyKind::MissingAtWechat,
                &r.out_refund_no,
                Some(r),
            ));
        }
    }
}

fn payout_finding(kind: DiscrepancyKind, reference: &str, p: Option<&GatewayPayout>) -> Finding {
    Finding {
        kind,
        reference: reference.to_string(),
        payment_id: None,
        refund_id: None,
        payout_id: p.map(|p| p.payout_id.clone()),
        gateway: p.map(|p| Side {
            amount: Some(p.amount),
            status: Some(
                match p.state {
                    PayoutState::Open => "open",
                    PayoutState::Succeeded => "succeeded",
                    PayoutState::Returned => "returned",
                }
                .into(),
            ),
            ..side("gateway")
        }),
        wechat: None,
    }
}

/// The operation account's transfers against the gateway's payouts: each payout made on the
/// day left once, for its amount; a transfer the gateway does not know, or one WeChat returned
/// that the gateway thinks paid or open, is a finding.
fn match_payouts(input: &DayInput, result: &mut DayResult) {
    let payouts: HashMap<&str, &GatewayPayout> = input
        .payouts
        .iter()
        .map(|p| (p.out_bill_no.as_str(), p))
        .collect();
    let groups = grouped(&input.payout_flows, |f| f.out_bill_no.as_str());
    for (no, flows) in &groups {
        let payout = payouts.get(no).copied();
        let out: Vec<&&PayoutFlow> = flows.iter().filter(|f| !f.returned).collect();
        let left: i64 = out.iter().map(|f| f.amount).sum();
        result.totals.wechat_payouts += out.len() as u64;
        result.totals.wechat_payout_amount += left;
        let found = |kind, amount, status: &str| Finding {
            wechat: Some(Side {
                amount: Some(amount),
                status: Some(status.into()),
                rows: Some(flows.len()),
                ..side("fund_flow_bill")
            }),
            ..payout_finding(kind, no, payout)
        };
        let Some(payout) = payout else {
            let kind = DiscrepancyKind::MissingInGateway;
            result.findings.push(found(kind, left, "transferred"));
            continue;
        };
        if out.len() > 1 {
            let kind = DiscrepancyKind::DuplicateAtWechat;
            result.findings.push(found(kind, left, "transferred"));
        } else if payout.on_day && left != payout.amount {
            let kind = DiscrepancyKind::AmountMismatch;
            result.findings.push(found(kind, left, "transferred"));
        }
        let returned = flows.iter().any(|f| f.returned);
        if returned && payout.state != PayoutState::Returned {
            let kind = DiscrepancyKind::StatusMismatch;
            result.findings.push(found(kind, left, "returned"));
        }
        if !returned && payout.returned_on_day && !out.is_empty() {
            // The gateway has it failed or cancelled; WeChat's bill has the money gone.
            let kind = DiscrepancyKind::StatusMismatch;
            result.findings.push(found(kind, left, "transferred"));
        }
    }
    let in_bill: HashSet<&str> = groups
        .iter()
        .filter(|(_, flows)| flows.iter().any(|f| !f.returned))
        .map(|(no, _)| *no)
        .collect();
    for p in input.payouts.iter().filter(|p| p.on_day) {
        result.totals.gateway_payouts += 1;
        result.totals.gateway_payout_amount += p.amount;
        if !in_bill.contains(p.out_bill_no.as_str()) {
            let kind = DiscrepancyKind::MissingAtWechat;
            result
                .findings
                .push(payout_finding(kind, &p.out_bill_no, Some(p)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(no: &str, amount: i64) -> GatewayOrder {
        GatewayOrder {
            out_trade_no: no.into(),
            payment_id: format!("pay_{no}"),
            amount,
            state: OrderState::Paid,
            paid_on_day: true,
        }
    }

    fn bill(no: &str, amount: i64) -> BillPayment {
        BillPayment {
            out_trade_no: no.into(),
            transaction_id: format!("42{no}"),
            amount,
            currency: "CNY".into(),
            settlement: amount,
            settlement_currency: "CNY".into(),
            fee: expected_fee(amount, 60),
        }
    }

    fn settled(no: &str, amount: i64) -> Vec<FlowMovement> {
        let fee = expected_fee(amount, 60);
        vec![
            FlowMovement {
                business_no: format!("42{no}"),
                kind: FlowKind::Settlement,
                amount,
            },
            FlowMovement {
                business_no: format!("42{no}"),
                kind: FlowKind::Fee,
                amount: fee,
            },
        ]
    }

    fn clean_day() -> DayInput {
        DayInput {
            orders: vec![order("a", 1_000), order("b", 250)],
            bill_payments: vec![bill("a", 1_000), bill("b", 250)],
            flows: [settled("a", 1_000), settled("b", 250)].concat(),
            fee_rate_bp: 60,
            ..DayInput::default()
        }
    }

    fn kinds(r: &DayResult) -> Vec<DiscrepancyKind> {
        r.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_clean_day_has_no_findings_and_posts_settlements_and_fees() {
        let r = reconcile(&clean_day());
        assert_eq!(kinds(&r), []);
        let posted = r.settled["CNY"].postings();
        assert_eq!(
            posted,
            [(PostingKind::Settlement, 1_250), (PostingKind::Fee, 8)]
        );
        assert_eq!(
            (
                r.totals.gateway_payment_amount,
                r.totals.wechat_payment_amount
            ),
            (1_250, 1_250)
        );
    }

    #[test]
    fn each_fault_is_found_once_and_alone() {
        let mut day = clean_day();
        day.bill_payments.remove(0);
        assert_eq!(kinds(&reconcile(&day)), [DiscrepancyKind::MissingAtWechat]);

        let mut day = clean_day();
        day.bill_payments.push(bill("stranger", 100));
        assert_eq!(kinds(&reconcile(&day)), [DiscrepancyKind::MissingInGateway]);

        let mut day = clean_day();
        day.bill_payments[0].amount += 1;
        day.bill_payments[0].settlement += 1;
        day.flows[0].amount += 1;
        let r = reconcile(&day);
        assert_eq!(kinds(&r), [DiscrepancyKind::AmountMismatch]);
        assert_eq!(
            (r.settled["CNY"].payments, r.settled["CNY"].settlement),
            (1, 250),
            "a payment in question stays pending"
        );

        let mut day = clean_day();
        day.bill_payments.push(bill("b", 250));
        assert_eq!(
            kinds(&reconcile(&day)),
            [DiscrepancyKind::DuplicateAtWechat]
        );

        let mut day = clean_day();
        day.orders[1].state = OrderState::Pending;
        let r = reconcile(&day);
        assert_eq!(kinds(&r), [DiscrepancyKind::StatusMismatch]);
        // Its settlement is held with the finding, out of the day's: nothing put it in pending.
        assert_eq!(r.settled["CNY"].settlement, 1_000);
        let held = r.findings[0].wechat.as_ref().unwrap();
        assert_eq!((held.settled, held.settled_fee), (Some(250), Some(2)));
        assert_eq!(
            r.findings[0].repair(),
            Some(Repair::SyncPayment {
                payment_id: "pay_b".into()
            })
        );

        let mut day = clean_day();
        day.bill_payments[1].fee = 5;
        assert_eq!(kinds(&reconcile(&day)), [DiscrepancyKind::FeeUnexpected]);

        let mut day = clean_day();
        day.flows.remove(0);
        assert_eq!(kinds(&reconcile(&day)), [DiscrepancyKind::AmountMismatch]);
    }

    #[test]
    fn refunds_match_by_out_refund_no_and_status() {
        let refund = GatewayRefund {
            out_refund_no: "r1".into(),
            refund_id: "re_1".into(),
            payment_id: "pay_a".into(),
            amount: 100,
            state: RefundState::Succeeded,
            on_day: true,
        };
        let row = BillRefund {
            out_refund_no: "r1".into(),
            refund_id: "50r1".into(),
            amount: 100,
            currency: "CNY".into(),
            settlement: 100,
            settlement_currency: "CNY".into(),
            processing: false,
        };
        let mut day = clean_day();
        day.refunds = vec![refund.clone()];
        day.bill_refunds = vec![row.clone()];
        assert_eq!(kinds(&reconcile(&day)), []);
        day.bill_refunds[0].processing = true;
        let r = reconcile(&day);
        assert_eq!(kinds(&r), [DiscrepancyKind::StatusMismatch]);
        assert_eq!(
            r.findings[0].repair(),
            Some(Repair::SyncRefund {
                refund_id: "re_1".into()
            })
        );
        day.bill_refunds.clear();
        assert_eq!(kinds(&reconcile(&day)), [DiscrepancyKind::MissingAtWechat]);
    }

    #[test]
    fn a_merchant_funded_coupon_is_a_discount_and_its_share_of_a_refund_comes_back() {
        // 10.00 paid, 1.00 of it by a 免充值 coupon: 9.00 settled, the fee on that; 5.00
        // refunded, 0.50 of it the coupon's share, so 4.50 left the settled money.
        let mut day = clean_day();
        day.orders = vec![order("a", 1_000)];
        day.bill_payments = vec![BillPayment {
            settlement: 900,
            fee: expected_fee(900, 60),
            ..bill("a", 1_000)
        }];
        day.flows = settled("a", 900);
        day.refunds = vec![GatewayRefund {
            out_refund_no: "r1".into(),
            refund_id: "re_1".into(),
            payment_id: "pay_a".into(),
            amount: 500,
            state: RefundState::Succeeded,
            on_day: true,
        }];
        let refund_row = BillRefund {
            out_refund_no: "r1".into(),
            refund_id: "50r1".into(),
            amount: 500,
            currency: "CNY".into(),
            settlement: 450,
            settlement_currency: "CNY".into(),
            processing: false,
        };
        day.bill_refunds = vec![refund_row.clone()];
        let r = reconcile(&day);
        assert_eq!(kinds(&r), []);
        assert_eq!(
            r.settled["CNY"].postings(),
            [
                (PostingKind::Settlement, 900),
                (PostingKind::Fee, 5),
                (PostingKind::Discount, 100),
                (PostingKind::DiscountReturn, 50),
            ]
        );
        // A refund the gateway does not have succeeded (WeChat's bill says PROCESSING, and it
        // may yet fail) gives no coupon share back: its refund posting is not there either.
        let mut open = day.clone();
        open.refunds[0].state = RefundState::Pending;
        open.bill_refunds[0].processing = true;
        let r = reconcile(&open);
        assert_eq!(kinds(&r), []);
        assert_eq!(r.settled["CNY"].discounts_returned, 0);
        // Settled for more than the amount, or a refund taking more than itself: in question.
        let mut more = day.clone();
        more.bill_payments[0].settlement = 1_001;
        more.flows = settled("a", 1_001);
        assert_eq!(kinds(&reconcile(&more)), [DiscrepancyKind::AmountMismatch]);
        let mut more = day.clone();
        more.bill_refunds[0].settlement = 501;
        assert_eq!(kinds(&reconcile(&more)), [DiscrepancyKind::AmountMismatch]);
    }

    #[test]
    fn a_day_settled_in_another_currency_posts_its_conversions() {
        // 100.00 HKD paid, settled as 12.81 USD with its 0.60 HKD fee (0.08 USD); 25.00 HKD
        // refunded, which took 3.20 USD and returned 0.02 USD of fee.
        let flow = |no: &str, kind, amount| FlowMovement {
            business_no: no.into(),
            kind,
            amount,
        };
        let day = DayInput {
            orders: vec![order("a", 10_000)],
            refunds: vec![GatewayRefund {
                out_refund_no: "r1".into(),
                refund_id: "re_1".into(),
                payment_id: "pay_a".into(),
                amount: 2_500,
                state: RefundState::Succeeded,
                on_day: true,
            }],
            bill_payments: vec![BillPayment {
                currency: "HKD".into(),
                settlement: 1_281,
                settlement_currency: "USD".into(),
                ..bill("a", 10_000)
            }],
            bill_refunds: vec![BillRefund {
                out_refund_no: "r1".into(),
                refund_id: "50r1".into(),
                amount: 2_500,
                currency: "HKD".into(),
                settlement: 320,
                settlement_currency: "USD".into(),
                processing: false,
            }],
            flows: vec![
                flow("42a", FlowKind::Settlement, 1_281),
                flow("42a", FlowKind::Fee, at_row_rate(60, 1_281, 10_000)),
                flow("50r1", FlowKind::FeeReturn, 2),
            ],
            fee_rate_bp: 60,
            ..DayInput::default()
        };
        let r = reconcile(&day);
        assert_eq!(kinds(&r), []);
        assert_eq!(
            r.settled["HKD"].postings(),
            [
                (PostingKind::Settlement, 10_000),
                (PostingKind::ConversionOut, 10_000),
                (PostingKind::ConversionIn, 2_500),
            ]
        );
        assert_eq!(
            r.settled["USD"].postings(),
            [
                (PostingKind::Fee, 8),
                (PostingKind::FeeReturn, 2),
                (PostingKind::ConversionOut, 320),
                (PostingKind::ConversionIn, 1_281),
            ]
        );
    }

    #[test]
    fn amounts_convert_at_the_rate_a_row_implies() {
        assert_eq!(at_row_rate(60, 1_281, 10_000), 8);
        assert_eq!(at_row_rate(-15, 320, 2_500), -2);
        assert_eq!(at_row_rate(50, 1, 100), 1);
        assert_eq!(at_row_rate(49, 1, 100), 0);
        assert_eq!(at_row_rate(7, 3, 0), 0);
    }

    #[test]
    fn fees_round_half_up_to_the_fen() {
        assert_eq!(expected_fee(101, 60), 1);
        assert_eq!(expected_fee(250, 60), 2);
        assert_eq!(expected_fee(83, 60), 0);
        assert_eq!(expected_fee(3, 3_900), 1);
    }

    #[test]
    fn payouts_match_the_operation_account() {
        use PayoutState::{Open, Returned, Succeeded};
        let payout = |no: &str, amount, state| GatewayPayout {
            out_bill_no: no.into(),
            payout_id: format!("po_{no}"),
            amount,
            state,
            on_day: true,
            returned_on_day: state == Returned,
        };
        let flow = |no: &str, amount, returned| PayoutFlow {
            out_bill_no: no.into(),
            amount,
            returned,
        };
        let input = DayInput {
            payouts: vec![
                payout("ok", 500, Succeeded),
                payout("gone", 300, Open),
                payout("back", 200, Returned),
                payout("off", 100, Succeeded),
                payout("late", 400, Succeeded),
                payout("kept", 600, Returned),
            ],
            payout_flows: vec![
                flow("ok", 500, false),
                flow("back", 200, false),
                flow("back", 200, true),
                flow("off", 101, false),
                flow("late", 400, false),
                flow("late", 400, true),
                flow("stranger", 50, false),
                flow("kept", 600, false),
            ],
            ..Default::default()
        };
        let r = reconcile(&input);
        let found: Vec<(DiscrepancyKind, &str)> = r
            .findings
            .iter()
            .map(|f| (f.kind, f.reference.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (DiscrepancyKind::AmountMismatch, "off"),
                (DiscrepancyKind::StatusMismatch, "late"),
                (DiscrepancyKind::MissingInGateway, "stranger"),
                (DiscrepancyKind::StatusMismatch, "kept"),
                (DiscrepancyKind::MissingAtWechat, "gone"),
            ]
        );
        assert_eq!(
            r.findings[1].repair(),
            Some(Repair::SyncPayout {
                payout_id: "po_late".into()
            })
        );
        assert_eq!(r.findings[2].repair(), None);
        let t = r.totals;
        assert_eq!((t.wechat_payouts, t.wechat_payout_amount), (6, 1_851));
        assert_eq!((t.gateway_payouts, t.gateway_payout_amount), (6, 2_100));
    }
}
