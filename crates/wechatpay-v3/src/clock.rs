//! An injectable clock. Verification takes the current time as a value; the client asks a
//! [`Clock`] for it, so tests can fix time (the official callback vector is signed in 2021).

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current Unix time in seconds.
pub trait Clock: Send + Sync + 'static {
    fn now_unix(&self) -> i64;

    /// The current Unix time in milliseconds; a clock that knows only seconds says so.
    fn now_unix_ms(&self) -> i64 {
        self.now_unix() * 1000
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn now_unix_ms(&self) -> i64 {
        (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    }
}

/// A clock that says what it is told: it stands still until it is set or advanced.
#[derive(Debug, Default)]
pub struct FixedClock {
    now_ms: AtomicI64,
}

impl FixedClock {
    pub fn new(now_unix: i64) -> Self {
        Self::at_ms(now_unix * 1000)
    }

    pub fn at_ms(now_unix_ms: i64) -> Self {
        Self {
            now_ms: AtomicI64::new(now_unix_ms),
        }
    }

    pub fn set(&self, now_unix: i64) {
        self.now_ms.store(now_unix * 1000, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms`.
    pub fn advance_ms(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.now_unix_ms().div_euclid(1000)
    }

    fn now_unix_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}
