//! Front doors: other systems' APIs, translated onto the application layer. Each door owns its
//! wire shapes, authentication and error envelope; the rules are the `/v1` API's.

pub mod connect;
pub mod open_api;
pub mod payment_intents;
pub mod two_checkout;
