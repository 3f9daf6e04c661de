//! Payments and their state machine.
//!
//! ```text
//! pending ──paid──────▶ succeeded
//!    │  ───cancelled──▶ cancelled ──paid──▶ paid_after_close
//!    │  ───expired────▶ expired   ──paid──▶ paid_after_close
//!    └───failed───────▶ failed
//! ```
//!
//! `succeeded`, `failed` and `paid_after_close` never leave. `cancelled` and `expired` are final
//! for everything the merchant or the gateway does; the one way out is WeChat proving that money
//! moved after all (a payment that slipped in while the order was being closed), which is
//! `paid_after_close`, handled by the merchant's policy. Applying an event a payment already
//! reflects changes nothing, so duplicate and reordered callbacks are harmless.

use serde::{Deserialize, Serialize};

/// The stored integration of a payment whose WeChat product the hosted checkout page picks by
/// the shopper's device (it becomes one of [`Integration`] when the page first opens).
pub const HOSTED: &str = "hosted";

/// The most WeChat orders (attempts) one payment may make.
pub const ATTEMPTS_PER_PAYMENT_MAX: i64 = 20;

/// The n-th attempt's out_trade_no: the payment id, then `{payment id}_{n}` (at most 32
/// characters of WeChat's alphabet: a payment id is 28).
pub fn attempt_out_trade_no(payment_id: &str, seq: i64) -> String {
    if seq == 1 {
        payment_id.to_string()
    } else {
        format!("{payment_id}_{seq}")
    }
}

/// Whether `out_trade_no` names one of the payment's attempts (the names are derived from
/// the payment id, so no lookup is needed).
pub fn is_attempt_of(payment_id: &str, out_trade_no: &str) -> bool {
    out_trade_no == payment_id
        || out_trade_no
            .strip_prefix(payment_id)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|n| n.parse::<i64>().ok())
            .is_some_and(|n| (2..=ATTEMPTS_PER_PAYMENT_MAX).contains(&n))
}

/// Where one WeChat order of a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AttemptStatus {
    /// Made at WeChat and payable.
    #[default]
    Open,
    /// It paid the payment.
    Succeeded,
    /// Closed at WeChat (or found closed) unpaid.
    Closed,
    /// Paid after another order had paid the payment: refunded in full.
    Duplicate,
}

impl AttemptStatus {
    pub const ALL: [AttemptStatus; 4] =
        [Self::Open, Self::Succeeded, Self::Closed, Self::Duplicate];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Succeeded => "succeeded",
            Self::Closed => "closed",
            Self::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl TryFrom<String> for AttemptStatus {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown attempt status {value:?}"))
    }
}

/// How the shopper pays: each maps to one WeChat prepay product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Integration {
    /// Desktop: a QR code of the `code_url`.
    Native,
    /// Mobile browser: a redirect to WeChat's H5 cashier.
    H5,
    /// Inside WeChat (Official Account page): the JS API.
    Jsapi,
    /// A Mini Program: `wx.requestPayment`.
    MiniProgram,
    /// A native app with the WeChat OpenSDK.
    App,
}

impl Integration {
    pub const ALL: [Integration; 5] = [
        Self::Native,
        Self::H5,
        Self::Jsapi,
        Self::MiniProgram,
        Self::App,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::H5 => "h5",
            Self::Jsapi => "jsapi",
            Self::MiniProgram => "mini_program",
            Self::App => "app",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }

    /// Whether WeChat needs the payer's openid (JSAPI and Mini Programs).
    pub fn needs_openid(self) -> bool {
        matches!(self, Self::Jsapi | Self::MiniProgram)
    }

    /// Whether WeChat needs the payer's IP address (H5).
    pub fn needs_client_ip(self) -> bool {
        matches!(self, Self::H5)
    }
}

impl TryFrom<String> for Integration {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown integration {value:?}"))
    }
}

/// What a payment was created for: one WeChat product, or the hosted checkout, whose page
/// picks the product by the shopper's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PaymentIntegration {
    #[default]
    Hosted,
    Product(Integration),
}

impl PaymentIntegration {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hosted => HOSTED,
            Self::Product(p) => p.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        if s == HOSTED {
            return Some(Self::Hosted);
        }
        Integration::parse(s).map(Self::Product)
    }

    /// The WeChat product, when the payment was made for one.
    pub fn product(self) -> Option<Integration> {
        match self {
            Self::Hosted => None,
            Self::Product(p) => Some(p),
        }
    }
}

impl TryFrom<String> for PaymentIntegration {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown integration {value:?}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    #[default]
    Pending,
    Succeeded,
    Cancelled,
    Expired,
    Failed,
    PaidAfterClose,
    /// Refunds have given back the whole amount.
    Refunded,
}

/// Decodes a stored status (the store reads rows through this): an unknown one is an error.
impl TryFrom<String> for PaymentStatus {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown status {value:?}"))
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 7] = [
        Self::Pending,
        Self::Succeeded,
        Self::Cancelled,
        Self::Expired,
        Self::Failed,
        Self::PaidAfterClose,
        Self::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Failed => "failed",
            Self::PaidAfterClose => "paid_after_close",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The payer paid (some or all of it may have been refunded since).
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::PaidAfterClose | Self::Refunded
        )
    }

    pub fn is_pending(self) -> bool {
        self == Self::Pending
    }

    /// Paid and not refunded in full: WeChat takes refunds of it.
    pub fn is_refundable(self) -> bool {
        matches!(self, Self::Succeeded | Self::PaidAfterClose)
    }
}

/// What can happen to a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentEvent {
    /// WeChat reports the order paid (callback or query).
    Paid,
    /// The merchant cancelled and WeChat confirmed the order closed.
    Cancelled,
    /// The payment's time ran out and WeChat confirmed the order closed.
    Expired,
    /// WeChat reports the payment failed.
    Failed,
    /// Succeeded refunds add up to the whole amount.
    FullyRefunded,
}

impl PaymentEvent {
    pub const ALL: [PaymentEvent; 5] = [
        Self::Paid,
        Self::Cancelled,
        Self::Expired,
        Self::Failed,
        Self::FullyRefunded,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The payment moves to this status; the outbox event has [`Transition::event_type`].
    To(PaymentStatus),
    /// The payment already reflects the event: nothing to write.
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} payment cannot take {event:?}")]
pub struct TransitionError {
    pub from: PaymentStatus,
    pub event: PaymentEvent,
}

/// The state machine, in one place.
pub fn apply(from: PaymentStatus, event: PaymentEvent) -> Result<Transition, TransitionError> {
    use PaymentEvent as E;
    use PaymentStatus as S;
    let to = match (from, event) {
        (S::Pending, E::Paid) => S::Succeeded,
        (S::Pending, E::Cancelled) => S::Cancelled,
        (S::Pending, E::Expired) => S::Expired,
        (S::Pending, E::Failed) => S::Failed,
        (S::Cancelled | S::Expired, E::Paid) => S::PaidAfterClose,
        (S::Succeeded | S::PaidAfterClose, E::FullyRefunded) => S::Refunded,
        (S::Succeeded | S::PaidAfterClose | S::Refunded, E::Paid)
        | (S::Refunded, E::FullyRefunded)
        | (S::Cancelled, E::Cancelled)
        | (S::Expired, E::Expired)
        | (S::Failed, E::Failed) => return Ok(Transition::Unchanged),
        _ => return Err(TransitionError { from, event }),
    };
    Ok(Transition::To(to))
}

impl Transition {
    /// The merchant-facing event a move to `status` emits.
    pub fn event_type(status: PaymentStatus) -> Option<&'static str> {
        match status {
            PaymentStatus::Pending => None,
            PaymentStatus::Succeeded => Some("payment.succeeded"),
            PaymentStatus::Cancelled => Some("payment.cancelled"),
            PaymentStatus::Expired => Some("payment.expired"),
            PaymentStatus::Failed => Some("payment.failed"),
            PaymentStatus::PaidAfterClose => Some("payment.paid_after_close"),
            PaymentStatus::Refunded => Some("payment.refunded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus::*;
    type E = PaymentEvent;

    #[test]
    fn attempt_names_derive_from_the_payment_and_fit_wechat() {
        let id = "pay_0123456789abcdefghijklmn";
        assert_eq!(attempt_out_trade_no(id, 1), id);
        assert_eq!(attempt_out_trade_no(id, 2), format!("{id}_2"));
        let last = attempt_out_trade_no(id, ATTEMPTS_PER_PAYMENT_MAX);
        assert!(last.len() <= 32, "{last}");
        for seq in 1..=ATTEMPTS_PER_PAYMENT_MAX {
            assert!(is_attempt_of(id, &attempt_out_trade_no(id, seq)));
        }
        for other in [
            "pay_0123456789abcdefghijklmm".to_string(),
            format!("{id}_1"),
            format!("{id}_0"),
            format!("{id}_x"),
            format!("{id}_{}", ATTEMPTS_PER_PAYMENT_MAX + 1),
            format!("{id}2"),
        ] {
            assert!(!is_attempt_of(id, &other), "{other}");
        }
    }

    /// Every state × every event.
    #[test]
    fn state_machine_table() {
        let err = Err;
        let table: [(PaymentStatus, [Result<Transition, ()>; 5]); 7] = [
            // from: Paid, Cancelled, Expired, Failed, FullyRefunded
            (
                Pending,
                [
                    Ok(Transition::To(Succeeded)),
                    Ok(Transition::To(Cancelled)),
                    Ok(Transition::To(Expired)),
                    Ok(Transition::To(Failed)),
                    err(()),
                ],
            ),
            (
                Succeeded,
                [
                    Ok(Transition::Unchanged),
                    err(()),
                    err(()),
                    err(()),
                    Ok(Transition::To(Refunded)),
                ],
            ),
            (
                Cancelled,
                [
                    Ok(Transition::To(PaidAfterClose)),
                    Ok(Transition::Unchanged),
                    err(()),
                    err(()),
                    err(()),
                ],
            ),
            (
                Expired,
                [
                    Ok(Transition::To(PaidAfterClose)),
                    err(()),
                    Ok(Transition::Unchanged),
                    err(()),
                    err(()),
                ],
            ),
            (
                Failed,
                [
                    err(()),
                    err(()),
                    err(()),
                    Ok(Transition::Unchanged),
                    err(()),
                ],
            ),
            (
                PaidAfterClose,
                [
                    Ok(Transition::Unchanged),
                    err(()),
                    err(()),
                    err(()),
                    Ok(Transition::To(Refunded)),
                ],
            ),
            (
                Refunded,
                [
                    Ok(Transition::Unchanged),
                    err(()),
                    err(()),
                    err(()),
                    Ok(Transition::Unchanged),
                ],
            ),
        ];
        assert_eq!(table.len(), PaymentStatus::ALL.len());
        for (from, row) in table {
            for (event, expected) in E::ALL.into_iter().zip(row) {
                let got = apply(from, event).map_err(|_| ());
                assert_eq!(got, expected, "{from:?} × {event:?}");
            }
        }
    }

    #[test]
    fn terminal_states_never_leave() {
        // Paid payments leave only to become refunded, by refunds.
        for from in [Succeeded, Failed, PaidAfterClose, Refunded] {
            for event in [E::Paid, E::Cancelled, E::Expired, E::Failed] {
                assert!(
                    !matches!(apply(from, event), Ok(Transition::To(_))),
                    "{from:?} left on {event:?}"
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
        for i in Integration::ALL {
            assert_eq!(Integration::parse(i.as_str()), Some(i));
        }
    }
}
