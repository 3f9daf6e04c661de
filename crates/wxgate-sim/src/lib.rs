//! An offline WeChat Pay API v3 server: the sandbox WeChat Pay does not ship.
//!
//! Any v3 client works against it unchanged: it verifies `Authorization` over the raw request,
//! signs every 2xx answer (204 included) with the merchant's platform certificate or WeChat Pay
//! public key, encrypts and signs callbacks and retries them on WeChat's schedule, and serves
//! bills in WeChat's layout. A simulated payer (`/sim/payer/pay` and a small web page) pays,
//! cancels or fails orders; webpage authorization hands out openids; faults can be injected.
//!
//! Module map: [`merchant`] credentials and signing keys; [`state`] the in-memory model;
//! [`api`] the `/v3/...` endpoints; [`payer`] the payer, its pages and OAuth; [`callbacks`]
//! callback delivery; [`bills`] bill files; [`admin`] `/sim/...` administration;
//! [`faults`] fault injection.

pub mod admin;
pub mod api;
pub mod bills;
pub mod callbacks;
pub mod faults;
pub mod merchant;
pub mod ops;
pub mod payer;
pub mod state;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use rand::Rng;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;

use state::{Snapshot, State};

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Persist state here; in memory only when `None`.
    pub data_dir: Option<PathBuf>,
    /// Divides every callback retry delay and refund settling time, so tests need not wait.
    pub time_scale: f64,
    /// Simulated seconds from a refund's creation to its outcome.
    pub refund_settle_secs: f64,
    /// How long the simulator waits for a merchant to answer a callback.
    pub callback_timeout: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            time_scale: 1.0,
            refund_settle_secs: 5.0,
            callback_timeout: Duration::from_secs(5),
        }
    }
}

/// The simulator: share it with [`router`].
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimConfig,
    state: Mutex<State>,
    /// Seconds added to the real clock for business time (order expiry, bills), moved by
    /// `POST /sim/clock`. Signature timestamps always use the real clock.
    clock_offset: AtomicI64,
    http: reqwest::Client,
}

impl Sim {
    /// A simulator with state loaded from `config.data_dir` when there is some.
    pub fn new(config: SimConfig) -> anyhow::Result<Self> {
        let state = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(SNAPSHOT_FILE);
                if path.exists() {
                    let snapshot: Snapshot = serde_json::from_slice(&std::fs::read(&path)?)?;
                    State::restore(snapshot)?
                } else {
                    State::default()
                }
            }
            None => State::default(),
        };
        let http = reqwest::Client::builder()
            .timeout(config.callback_timeout)
            .user_agent("Mozilla/4.0")
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                clock_offset: AtomicI64::new(0),
                http,
            }),
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .expect("simulator state lock poisoned")
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Business time: the real clock plus the offset set over `/sim/clock`.
    pub fn now(&self) -> i64 {
        real_now() + self.inner.clock_offset.load(Ordering::SeqCst)
    }

    pub fn advance_clock(&self, secs: i64) -> i64 {
        self.inner.clock_offset.fetch_add(secs, Ordering::SeqCst) + secs
    }

    /// A simulated duration as real time, after `--time-scale`.
    pub fn scaled(&self, simulated_secs: f64) -> Duration {
        Duration::from_secs_f64((simulated_secs / self.inner.config.time_scale.max(1e-6)).max(0.0))
    }

    /// Writes the state to the data folder if it changed.
    pub fn persist(&self) -> anyhow::Result<()> {
        let Some(dir) = &self.inner.config.data_dir else {
            return Ok(());
        };
        let bytes = {
            let mut state = self.state();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            serde_json::to_vec(&state.snapshot())?
        };
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, dir.join(SNAPSHOT_FILE))?;
        Ok(())
    }
}

const SNAPSHOT_FILE: &str = "simulator.json";

impl Sim {
    /// With a data folder, writes changed state every half second until the task is aborted.
    pub fn start_persister(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.config.data_dir.as_ref()?;
        let sim = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if let Err(e) = sim.persist() {
                    tracing::error!(error = %e, "could not persist simulator state");
                }
            }
        }))
    }
}

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

pub(crate) fn real_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 in China Standard Time, the way WeChat writes times.
pub fn rfc3339_cst(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
        .format(&Rfc3339)
        .expect("a valid time formats")
}

pub(crate) fn digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

pub(crate) fn lower_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).expect("below 16"))
        .collect()
}

/// `yyyyMMdd` / `yyyyMMddHHmmss` of a time in China Standard Time.
pub(crate) fn cst_compact(unix: i64, with_time: bool) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    let date = format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day());
    if with_time {
        format!("{date}{:02}{:02}{:02}", t.hour(), t.minute(), t.second())
    } else {
        date
    }
}
