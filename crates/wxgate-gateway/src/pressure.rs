//! Merchant requests before background work. Background work (status, refund and payout sync)
//! runs many items at once so that WeChat's latency does not bound how fast it drains; but
//! when the node's CPU is busy, each of those items takes a turn on the same threads as the
//! requests a merchant or payer is waiting on. So background work follows how busy the node
//! is: a probe measures how late the runtime wakes a timer (the lag every task meets before it
//! runs). While the lag is high, background work narrows (its width halves at each busy
//! reading) and starts its items one per [`PROBE_EVERY`] instead of all at once; when the lag
//! is gone it widens a step at a time.
//!
//! Against WeChat's real latency an item mostly waits on the network, the CPU stays idle and
//! background work keeps its full width; on a busy node, requests meet at most a few
//! background items ahead of them, and background work still moves.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// Items of one kind of background work in flight at once on an idle node.
pub const FULL_WIDTH: usize = 32;
/// Items in flight at once however busy the node is, so background work always moves.
pub const LEAST_WIDTH: usize = 2;
/// How often the probe wakes; also how far apart background items start while the node is
/// busy.
pub const PROBE_EVERY: Duration = Duration::from_millis(10);
/// A wake-up this late means the node is busy: background work halves its width. (The
/// runtime's timer has millisecond ticks, so an idle node wakes up to 1 ms late.)
pub const BUSY_LAG: Duration = Duration::from_millis(3);
/// A wake-up earlier than this means the node is calm: background work widens by one.
pub const CALM_LAG: Duration = Duration::from_millis(2);

/// How busy this node is, as background work sees it; shared by every kind of it.
#[derive(Debug)]
pub struct Pressure {
    width: AtomicUsize,
    /// Whether the last reading was calm.
    calm: AtomicBool,
}

impl Default for Pressure {
    fn default() -> Self {
        Self {
            width: AtomicUsize::new(FULL_WIDTH),
            calm: AtomicBool::new(true),
        }
    }
}

impl Pressure {
    /// Items of one kind of background work that may be in flight now.
    pub fn width(&self) -> usize {
        self.width.load(Ordering::Relaxed)
    }

    /// Waits before a background item starts: one [`PROBE_EVERY`] while the node is not calm;
    /// while it is, not at all at full width, and the probe's period shared out by the width
    /// below it (so a width coming back after a busy spell starts its items spread out, not in
    /// a burst that makes the node busy again).
    pub async fn turn(&self) {
        let width = self.width();
        let wait = if !self.calm.load(Ordering::Relaxed) {
            PROBE_EVERY
        } else if width < FULL_WIDTH {
            PROBE_EVERY / width as u32
        } else {
            return;
        };
        tokio::time::sleep(wait).await;
    }

    /// Follows one reading of the runtime's lag; answers the new width.
    pub fn observe(&self, lag: Duration) -> usize {
        self.calm.store(lag < CALM_LAG, Ordering::Relaxed);
        let next = next_width(self.width(), lag);
        self.width.store(next, Ordering::Relaxed);
        next
    }
}

/// The width after a reading of `lag` at width `now`: halved when busy, one wider when calm,
/// kept in between; always within [`LEAST_WIDTH`]..=[`FULL_WIDTH`].
pub fn next_width(now: usize, lag: Duration) -> usize {
    let next = if lag >= BUSY_LAG {
        now / 2
    } else if lag < CALM_LAG {
        now + 1
    } else {
        now
    };
    next.clamp(LEAST_WIDTH, FULL_WIDTH)
}

/// Reads the runtime's lag every [`PROBE_EVERY`] into `pressure` (and tells `on_change` of the
/// width at the start and of each new one) until `stop` turns true.
pub async fn probe(
    pressure: &Pressure,
    on_change: impl Fn(usize),
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    // A late tick does not make the next ones come in a burst.
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    on_change(pressure.width());
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            due = every.tick() => {
                let before = pressure.width();
                let after = pressure.observe(Instant::now().saturating_duration_since(due));
                if after != before {
                    on_change(after);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: Duration = BUSY_LAG;
    const CALM: Duration = Duration::from_micros(500);

    #[test]
    fn a_busy_node_halves_the_width_down_to_the_least() {
        let pressure = Pressure::default();
        assert_eq!(pressure.width(), FULL_WIDTH);
        let seen: Vec<usize> = (0..6).map(|_| pressure.observe(BUSY)).collect();
        assert_eq!(seen, [16, 8, 4, 2, 2, 2]);
    }

    #[test]
    fn a_calm_node_widens_one_step_at_a_time_up_to_full() {
        let pressure = Pressure::default();
        for _ in 0..5 {
            pressure.observe(BUSY);
        }
        assert_eq!(pressure.observe(CALM), LEAST_WIDTH + 1);
        assert_eq!(pressure.observe(CALM), LEAST_WIDTH + 2);
        for _ in 0..FULL_WIDTH {
            pressure.observe(CALM);
        }
        assert_eq!(pressure.width(), FULL_WIDTH);
    }

    #[test]
    fn a_lag_between_calm_and_busy_keeps_the_width() {
        assert_eq!(next_width(10, CALM_LAG), 10);
        assert_eq!(next_width(10, BUSY_LAG - Duration::from_micros(1)), 10);
        assert_eq!(next_width(10, BUSY_LAG), 5);
        assert_eq!(next_width(10, CALM_LAG - Duration::from_micros(1)), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_node_spaces_background_items_and_a_calm_one_does_not() {
        let pressure = Pressure::default();
        let started = Instant::now();
        pressure.turn().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        pressure.observe(CALM_LAG);
        pressure.turn().await;
        assert_eq!(
            started.elapsed(),
            PROBE_EVERY,
            "a lag between calm and busy is not calm"
        );
        pressure.observe(CALM);
        pressure.turn().await;
        assert_eq!(started.elapsed(), PROBE_EVERY, "calm at full width");
        pressure.observe(BUSY);
        pressure.observe(CALM);
        assert_eq!(pressure.width(), FULL_WIDTH / 2 + 1);
        pressure.turn().await;
        let spread = PROBE_EVERY / (FULL_WIDTH / 2 + 1) as u32;
        // The runtime's timer rounds up to its millisecond tick.
        let waited = started.elapsed() - PROBE_EVERY;
        assert!(
            waited >= spread && waited <= spread + Duration::from_millis(1),
            "calm below full width: {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_reads_a_late_wake_up_as_lag_and_stops_when_told() {
        let pressure = std::sync::Arc::new(Pressure::default());
        let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let probing = {
            let pressure = pressure.clone();
            tokio::spawn(async move {
                probe(
                    &pressure,
                    |w| changed.send(w).expect("the test listens"),
                    stop,
                )
                .await;
            })
        };
        let mut seen = vec![changes.recv().await.expect("the width at the start")];
        // On the paused clock a sleep moves time from timer to timer, so every tick is on
        // time (`advance` would move past a tick before the probe runs): a calm node stays at
        // full width.
        tokio::time::sleep(PROBE_EVERY * 5).await;
        assert_eq!(pressure.width(), FULL_WIDTH);
        // The clock jumps past a tick, as when the runtime's threads were held: the probe
        // wakes late, and reports the new width (waited for on the paused clock).
        tokio::time::advance(PROBE_EVERY + BUSY_LAG).await;
        let late = tokio::time::timeout(PROBE_EVERY, changes.recv()).await;
        seen.extend(late.ok().flatten());
        assert_eq!(
            pressure.width(),
            FULL_WIDTH / 2,
            "a late tick halves the width"
        );
        assert_eq!(seen, [FULL_WIDTH, FULL_WIDTH / 2]);
        stop_tx.send(true).unwrap();
        probing.await.unwrap();
    }
}
