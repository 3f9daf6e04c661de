//! What each front door shows, in its own system's shapes: answers, envelopes, notifications.

pub mod connect;
pub mod open_api;
pub mod payment_intents;
pub mod two_checkout;
