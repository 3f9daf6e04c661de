//! The application layer: the gateway's work on domain values. Every entry point (the merchant
//! API, the hosted checkout, payment links, the CLI, and the front doors to come) calls these
//! functions; none of them knows HTTP. Each returns a domain value or an
//! [`ApiError`](crate::error::ApiError) with a stable code.

pub mod doors;
pub mod links;
pub mod merchants;
pub mod operations;
pub mod orders;
pub mod payments;
pub mod payouts;
pub mod reconciliation;
pub mod refunds;
pub mod reports;
pub mod webhooks;

use wxgate_domain::id::{MerchantId, PaymentId};
use wxgate_store::PaymentRow;

/// A stored payment's merchant and payment ids, typed.
pub fn stored_ids(p: &PaymentRow) -> (MerchantId, PaymentId) {
    (
        MerchantId::stored(p.merchant_id.as_str()),
        PaymentId::stored(p.id.as_str()),
    )
}
