//! An offline WeChat Pay API v3 server: the sandbox WeChat Pay does not ship.
//!
//! Any v3 client works against it unchanged: it verifies `Authorization` over the raw request,
//! signs every 2xx answer (204 included) with the merchant's platform certificate or WeChat Pay
//! public key, encrypts and signs callbacks and retries them on WeChat's schedule, and serves
//! bills in WeChat's layout. A simulated payer (`/sim/payer/pay` and a small web page) pays,
//! cancels or fails orders; webpage authorization hands out openids; faults can be injected.
//!
//! Module map: [`sim`] the simulator's handle (configuration, state, clock, persistence);
//! [`merchant`] credentials and signing keys; [`state`] the in-memory model; [`wire`] what
//! every `/v3/...` handler shares (the request, answers, WeChat's error body); [`api`] the
//! `/v3/...` endpoints; [`ops`] paying and refunding, shared by the API and the payer;
//! [`payer`] the payer, its pages and OAuth; [`callbacks`] callback delivery; [`bills`] bill
//! files; [`admin`] `/sim/...` administration; [`faults`] fault injection; [`formats`]
//! WeChat's time and id formats.

pub mod admin;
pub mod api;
pub mod bills;
pub mod callbacks;
pub mod faults;
pub mod formats;
pub mod merchant;
pub mod ops;
pub mod payer;
pub mod sim;
pub mod state;
pub mod statements;
pub mod transfers;
pub mod wire;

use axum::Router;
use tokio::net::TcpListener;

pub use formats::rfc3339_cst;
pub use sim::{Sim, SimConfig};

/// All of the simulator's routes.
pub fn router(sim: Sim) -> Router {
    Router::new()
        .merge(admin::routes())
        .merge(payer::routes())
        .merge(api::routes())
        .with_state(sim)
}

/// Serves on `listener` until `shutdown` completes, persisting state now and then when a data
/// folder is set, and once more at the end.
pub async fn serve(
    listener: TcpListener,
    sim: Sim,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let persister = sim.start_persister();
    axum::serve(listener, router(sim.clone()))
        .with_graceful_shutdown(shutdown)
        .await?;
    if let Some(task) = persister {
        task.abort();
    }
    sim.persist()?;
    Ok(())
}
