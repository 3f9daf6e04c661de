//! The application layer: the gateway's work on domain values. Every entry point (the merchant
//! API, the hosted checkout, payment links, the CLI, and the front doors to come) calls these
//! functions; none of them knows HTTP. Each returns a domain value or an
//! [`ApiError`](crate::error::ApiError) with a stable code.

pub mod links;
pub mod merchants;
pub mod payments;
pub mod refunds;
pub mod webhooks;
