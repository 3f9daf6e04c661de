//! wxgate's domain: money, payments, their state machine and the events it emits.
//!
//! Nothing here does IO or can fail on IO. Wire types are parsed into these types at the edge;
//! storage and HTTP live in other crates.

/// `TryFrom<String>` through the type's own `parse`, for values read back from storage.
macro_rules! try_from_string {
    ($type:ty, $what:literal) => {
        impl TryFrom<String> for $type {
            type Error = String;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
                    .ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), value))
            }
        }
    };
}

pub mod door;
pub mod id;
pub mod ledger;
pub mod merchant;
pub mod money;
pub mod payment;
pub mod payout;
pub mod reconciliation;
pub mod refund;
pub mod report;
pub mod webhook;

pub use merchant::{MerchantMode, PaidAfterClosePolicy};
pub use money::{Currency, Money, MoneyError};
pub use payment::{
    Integration, PaymentEvent, PaymentIntegration, PaymentStatus, Transition, TransitionError,
};
