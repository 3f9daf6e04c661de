//! [`Sim`]: the simulator's handle, shared by every handler: configuration, the state behind
//! one mutex, the simulated clock, and persistence.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::formats::real_now;
use crate::state::{Snapshot, State};

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
