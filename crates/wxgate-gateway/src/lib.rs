//! The gateway: merchants with sealed WeChat credentials and hashed API keys, the payments API
//! for every WeChat integration type, WeChat's callbacks in, and the background status sync
//! that closes expired orders and repairs what a crash or a lost callback left behind.
//!
//! Layers, top to bottom (docs/ARCHITECTURE.md has the rules):
//! - [`server`] binds the listener and runs [`http::router`] and the workers;
//! - [`http`]: routes, extractors, the error envelope, idempotency; handlers only translate;
//! - [`app`]: the work, on domain values, returning [`error::ApiError`] with a stable code;
//! - workers ([`sync`], [`delivery`]), [`upstream`] (WeChat), [`wxgate_store`] (the only SQL).
//!
//! [`Application::build`] binds the listener and exposes the port, so tests start the real
//! gateway on port 0 against their own database and simulator.

pub mod app;
pub mod capped;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod error;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod next_action;
pub mod pace;
pub mod pressure;
pub mod qr;
pub mod secrets;
pub mod server;
pub mod sync;
pub mod upstream;
pub mod views;

pub use clock::now_ms;
pub use config::GatewayConfig;
pub use gateway::{AUTH_CACHE_TTL, Gateway, open_store, warn_of_database_settings};
pub use server::Application;
