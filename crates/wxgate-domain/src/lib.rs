//! wxgate's domain: money, payments, their state machine and the events it emits.
//!
//! Nothing here does IO or can fail on IO. Wire types are parsed into these types at the edge;
//! storage and HTTP live in other crates.

pub mod id;
pub mod merchant;
pub mod money;
pub mod payment;
pub mod refund;
pub mod webhook;

pub use merchant::{MerchantMode, PaidAfterClosePolicy};
pub use money::{Currency, Money, MoneyError};
pub use payment::{
    Integration, PaymentEvent, PaymentIntegration, PaymentStatus, Transition, TransitionError,
};
