//! Fault injection, set globally or per merchant over `/sim/faults`. Rates are probabilities
//! from 0 to 1; a test that wants a fault every time sets 1 and clears it afterwards.

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every v3 answer.
    pub latency_ms: u64,
    /// Share of v3 requests answered 500 SYSTEM_ERROR without doing anything.
    pub error_500_rate: f64,
    /// Share of v3 requests answered 429 FREQUENCY_LIMITED without doing anything.
    pub error_429_rate: f64,
    /// Share of v3 requests that are carried out and committed, then answered only after
    /// `hang_ms` (so the client times out not knowing the outcome).
    pub timeout_after_commit_rate: f64,
    /// How long a "timeout after commit" answer is held back.
    pub hang_ms: u64,
    /// Share of callbacks never sent.
    pub drop_callback_rate: f64,
    /// Share of callbacks sent twice.
    pub duplicate_callback_rate: f64,
    /// Share of callbacks held back by `reorder_delay_ms`, so later ones overtake them.
    pub reorder_callback_rate: f64,
    pub reorder_delay_ms: u64,
    /// Share of signed answers and first callback attempts that carry a
    /// `WECHATPAY/SIGNTEST/` probe signature instead of a valid one.
    pub signature_probe_rate: f64,
    /// While set, closing an unpaid order lets a payment slip in first: the order is paid
    /// (and its callback sent) and close still answers 204.
    pub paid_after_close: bool,
    /// Closing an order answers 500 SYSTEM_ERROR without doing anything.
    pub fail_close: bool,
    /// How refunds end: `success` (default), `closed` or `abnormal`.
    pub refund_outcome: Option<RefundOutcome>,
    /// Refund creation answers 403 NOT_ENOUGH (merchant balance too low).
    pub refund_not_enough: bool,
    /// Prepays of this trade type (`NATIVE`, `JSAPI`, `APP`, `MWEB`) answer 403 NO_AUTH, as
    /// for a merchant whose WeChat Pay product is not enabled.
    pub refuse_trade_type: Option<String>,
    /// What the day's bills get wrong, for reconciliation tests.
    pub bill: BillFaults,
}

/// Errors in the bills, each applied to that many of a day's rows (the earliest first), in
/// both the trade bill and the fund-flow bill unless said otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BillFaults {
    /// Payments left out of the bills.
    pub missing_rows: u32,
    /// Payments the bills show that the merchant never created.
    pub extra_rows: u32,
    /// Payments whose amount is one fen higher in the bills.
    pub amount_off_rows: u32,
    /// Refunds the trade bill shows as still `PROCESSING`.
    pub refund_processing_rows: u32,
    /// Payments printed twice in the trade bill.
    pub duplicate_rows: u32,
}

/// The most rows one bill fault may touch.
const MAX_BILL_FAULT_ROWS: u32 = 10_000;

impl BillFaults {
    fn validate(&self) -> Result<(), String> {
        for (name, n) in [
            ("bill.missing_rows", self.missing_rows),
            ("bill.extra_rows", self.extra_rows),
            ("bill.amount_off_rows", self.amount_off_rows),
            ("bill.refund_processing_rows", self.refund_processing_rows),
            ("bill.duplicate_rows", self.duplicate_rows),
        ] {
            if n > MAX_BILL_FAULT_ROWS {
                return Err(format!(
                    "{name} must be at most {MAX_BILL_FAULT_ROWS}, got {n}"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RefundOutcome {
    Success,
    Closed,
    Abnormal,
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_500_rate", self.error_500_rate),
            ("error_429_rate", self.error_429_rate),
            ("timeout_after_commit_rate", self.timeout_after_commit_rate),
            ("drop_callback_rate", self.drop_callback_rate),
            ("duplicate_callback_rate", self.duplicate_callback_rate),
            ("reorder_callback_rate", self.reorder_callback_rate),
            ("signature_probe_rate", self.signature_probe_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        for (name, ms) in [
            ("latency_ms", self.latency_ms),
            ("hang_ms", self.hang_ms),
            ("reorder_delay_ms", self.reorder_delay_ms),
        ] {
            if ms > 600_000 {
                return Err(format!("{name} must be at most 600000, got {ms}"));
            }
        }
        self.bill.validate()
    }

    pub fn hang_ms(&self) -> u64 {
        if self.hang_ms == 0 {
            15_000
        } else {
            self.hang_ms
        }
    }
}

/// True with probability `rate`.
pub fn roll(rate: f64) -> bool {
    rate > 0.0 && (rate >= 1.0 || rand::rng().random::<f64>() < rate)
}
