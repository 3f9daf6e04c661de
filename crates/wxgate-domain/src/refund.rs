//! Refunds: their state machine and WeChat's rules, checked before WeChat is asked.

use serde::{Deserialize, Serialize};

use crate::PaymentStatus;

/// At most this many refunds per payment (WeChat's limit).
pub const REFUNDS_PER_PAYMENT_MAX: i64 = 50;
/// A payment can be refunded for this long after it was paid (WeChat's limit: one year).
pub const REFUND_WINDOW_MS: i64 = 365 * 24 * 3600 * 1000;
/// How often an abnormal refund is queried while it waits for the merchant to resolve it.
pub const ABNORMAL_QUERY_INTERVAL_MS: i64 = 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Reserved and sent (or about to be sent, or to be sent again) to WeChat.
    #[default]
    Pending,
    /// The money is back with the payer.
    Succeeded,
    /// WeChat closed the refund; the amount is free to refund again.
    Failed,
    /// WeChat could not pay the money back (the payer's card or account refused it). The
    /// merchant resolves it in the WeChat Pay merchant platform (or through the abnormal-refund
    /// API), after which WeChat reports it succeeded.
    Abnormal,
}

/// Decodes a stored status (the store reads rows through this): an unknown one is an error.
impl TryFrom<String> for RefundStatus {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown status {value:?}"))
    }
}

impl std::fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 4] =
        [Self::Pending, Self::Succeeded, Self::Failed, Self::Abnormal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Abnormal => "abnormal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The merchant-facing event a move to this status emits.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Self::Pending => None,
            Self::Succeeded => Some("refund.succeeded"),
            Self::Failed => Some("refund.failed"),
            Self::Abnormal => Some("refund.abnormal"),
        }
    }
}

/// What WeChat reports about a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundEvent {
    /// SUCCESS
    Succeeded,
    /// CLOSED
    Closed,
    /// ABNORMAL
    Abnormal,
}

impl RefundEvent {
    pub const ALL: [RefundEvent; 3] = [Self::Succeeded, Self::Closed, Self::Abnormal];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundTransition {
    To(RefundStatus),
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} refund cannot take {event:?}")]
pub struct RefundTransitionError {
    pub from: RefundStatus,
    pub event: RefundEvent,
}

/// The refund state machine. Succeeded and failed are final; an abnormal refund can still be
/// resolved either way.
pub fn apply(
    from: RefundStatus,
    event: RefundEvent,
) -> Result<RefundTransition, RefundTransitionError> {
    use RefundEvent as E;
    use RefundStatus as S;
    let to = match (from, event) {
        (S::Succeeded, E::Succeeded) | (S::Failed, E::Closed) | (S::Abnormal, E::Abnormal) => {
            return Ok(RefundTransition::Unchanged);
        }
        (S::Pending | S::Abnormal, E::Succeeded) => S::Succeeded,
        (S::Pending | S::Abnormal, E::Closed) => S::Failed,
        (S::Pending, E::Abnormal) => S::Abnormal,
        _ => return Err(RefundTransitionError { from, event }),
    };
    Ok(RefundTransition::To(to))
}

/// Why a refund may not be made, each a stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefusal {
    #[error("only succeeded payments can be refunded; this one is {0}")]
    PaymentNotRefundable(&'static str),
    #[error("the payment was made more than 365 days ago")]
    RefundWindowClosed,
    #[error("a payment can have at most {REFUNDS_PER_PAYMENT_MAX} refunds")]
    TooManyRefunds,
    #[error("the refund would bring refunds to {would_be}, above the paid {paid}")]
    ExceedsPayment { would_be: i64, paid: i64 },
    #[error("the amount must be above 0")]
    InvalidAmount,
}

impl RefundRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            Self::PaymentNotRefundable(_) => "payment_not_refundable",
            Self::RefundWindowClosed => "refund_window_closed",
            Self::TooManyRefunds => "too_many_refunds",
            Self::ExceedsPayment { .. } => "refund_exceeds_payment",
            Self::InvalidAmount => "invalid_amount",
        }
    }
}

/// What the rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refundable {
    pub status: PaymentStatus,
    pub paid_at: Option<i64>,
    pub amount: i64,
    /// Refunds not failed: pending, abnormal and succeeded ones hold their amount.
    pub reserved: i64,
    pub refund_count: i64,
}

/// WeChat's rules for a new refund of `amount`, at `now`.
pub fn check(r: &Refundable, amount: i64, now: i64) -> Result<(), RefundRefusal> {
    if !r.status.is_refundable() {
        return Err(RefundRefusal::PaymentNotRefundable(r.status.as_str()));
    }
    if now - r.paid_at.unwrap_or(now) > REFUND_WINDOW_MS {
        return Err(RefundRefusal::RefundWindowClosed);
    }
    if r.refund_count >= REFUNDS_PER_PAYMENT_MAX {
        return Err(RefundRefusal::TooManyRefunds);
    }
    if amount <= 0 {
        return Err(RefundRefusal::InvalidAmount);
    }
    // Compared without adding, so no amount can overflow.
    if amount > r.amount - r.reserved {
        return Err(RefundRefusal::ExceedsPayment {
            would_be: r.reserved.saturating_add(amount),
            paid: r.amount,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_state_machine_table() {
        use RefundEvent as E;
        use RefundStatus as S;
        use RefundTransition::{To, Unchanged};
        let table = [
            (S::Pending, E::Succeeded, Some(To(S::Succeeded))),
            (S::Pending, E::Closed, Some(To(S::Failed))),
            (S::Pending, E::Abnormal, Some(To(S::Abnormal))),
            (S::Succeeded, E::Succeeded, Some(Unchanged)),
            (S::Succeeded, E::Closed, None),
            (S::Succeeded, E::Abnormal, None),
            (S::Failed, E::Succeeded, None),
            (S::Failed, E::Closed, Some(Unchanged)),
            (S::Failed, E::Abnormal, None),
            (S::Abnormal, E::Succeeded, Some(To(S::Succeeded))),
            (S::Abnormal, E::Closed, Some(To(S::Failed))),
            (S::Abnormal, E::Abnormal, Some(Unchanged)),
        ];
        assert_eq!(table.len(), S::ALL.len() * E::ALL.len());
        for (from, event, expected) in table {
            assert_eq!(apply(from, event).ok(), expected, "{from:?} × {event:?}");
        }
        for s in S::ALL {
            assert_eq!(RefundStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn rules() {
        let paid = Refundable {
            status: PaymentStatus::Succeeded,
            paid_at: Some(0),
            amount: 1000,
            reserved: 400,
            refund_count: 2,
        };
        assert_eq!(check(&paid, 600, 1), Ok(()));
        assert_eq!(
            check(&paid, 601, 1).unwrap_err().code(),
            "refund_exceeds_payment"
        );
        assert_eq!(check(&paid, 0, 1).unwrap_err().code(), "invalid_amount");
        assert_eq!(
            check(&paid, i64::MAX, 1).unwrap_err().code(),
            "refund_exceeds_payment"
        );
        assert_eq!(
            check(&paid, 1, REFUND_WINDOW_MS + 1).unwrap_err().code(),
            "refund_window_closed"
        );
        let fifty = Refundable {
            refund_count: 50,
            ..paid
        };
        assert_eq!(check(&fifty, 1, 1).unwrap_err().code(), "too_many_refunds");
        let pending = Refundable {
            status: PaymentStatus::Pending,
            ..paid
        };
        assert_eq!(
            check(&pending, 1, 1).unwrap_err().code(),
            "payment_not_refundable"
        );
        let late = Refundable {
            status: PaymentStatus::PaidAfterClose,
            ..paid
        };
        assert_eq!(check(&late, 600, 1), Ok(()));
    }
}
