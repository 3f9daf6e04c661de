//! Merchant requests before background work. Background work (status, refund and payout sync)
//! runs many items at once so that WeChat's latency does not bound how fast it drains; but
//! when the node's CPU is busy, each of those items takes a turn on the same threads as the
//! requests a merchant or payer is waiting on. So background work follows how busy the node
//! is while requests come in. A probe reads, every [`PROBE_EVERY`], how late the runtime woke
//! it (the lag every task meets before it runs) and, where the kernel keeps it (Linux's
//! pressure stall information), for how much of that time some thread on the node waited for
//! a CPU (which the lag alone does not show when other processes on the node take the cores).
//! While either is high, background work narrows (its width halves at each busy reading) and
//! starts its items one per [`PROBE_EVERY`] instead of all at once. When both are low it
//! widens a step at a time, but only while more is due than the width lets run (a width nobody
//! fills says nothing about whether a wider one would keep the node calm), so a wave of
//! background work that comes due after a quiet spell starts at the width the last one ended
//! at, not in a burst at full width. While no request comes in, the node is background work's
//! alone: it widens whatever the lag (a node syncing a backlog may use all its cores).
//!
//! Against WeChat's real latency an item mostly waits on the network, the CPU stays idle and
//! background work keeps its full width; on a busy node, requests meet at most a few
//! background items ahead of them, and background work still moves.

use std::io::{Read, Seek};
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
/// Some thread waiting for a CPU this share of the time means the node is busy. (Merchant
/// requests at half the rate a two-core node can sign kept it near 0.15; a status-sync wave
/// beside them took it to 0.5.)
pub const BUSY_STALL: f64 = 0.3;
/// Threads waiting for a CPU less than this share of the time (and a calm lag) mean the node
/// is calm.
pub const CALM_STALL: f64 = 0.15;

/// One reading of the probe.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// How late the runtime woke the probe.
    pub lag: Duration,
    /// The share of the time since the last reading in which some thread on the node waited
    /// for a CPU (0 where the kernel does not say).
    pub stall: f64,
    /// Whether a request came in since the last reading.
    pub serving: bool,
}

impl Reading {
    fn busy(&self) -> bool {
        self.serving && (self.lag >= BUSY_LAG || self.stall >= BUSY_STALL)
    }

    fn calm(&self) -> bool {
        !self.serving || (self.lag < CALM_LAG && self.stall < CALM_STALL)
    }
}

/// How busy this node is, as background work sees it; shared by every kind of it.
#[derive(Debug)]
pub struct Pressure {
    width: AtomicUsize,
    /// Whether the last reading was calm.
    calm: AtomicBool,
    /// Rounds of background work that have more due than the width lets run, now.
    held_back: AtomicUsize,
    /// Whether a request came in since the last reading.
    serving: AtomicBool,
}

impl Default for Pressure {
    fn default() -> Self {
        Self {
            width: AtomicUsize::new(FULL_WIDTH),
            calm: AtomicBool::new(true),
            held_back: AtomicUsize::new(0),
            serving: AtomicBool::new(false),
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

    /// A request came in (one a merchant, a payer or WeChat waits on: not a health check or a
    /// metrics scrape).
    pub fn request_arrived(&self) {
        // Read first: between readings, only the first request writes the shared flag.
        if !self.serving.load(Ordering::Relaxed) {
            self.serving.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a request came in since the last call.
    fn served_since_last(&self) -> bool {
        self.serving.swap(false, Ordering::Relaxed)
    }

    /// Marks a round of background work as held back by the width (more is due than it lets
    /// run) until the answer is dropped: only then does a calm node widen.
    pub fn held_back(&self) -> HeldBack<'_> {
        self.held_back.fetch_add(1, Ordering::Relaxed);
        HeldBack(self)
    }

    /// Follows one reading of the probe; answers the new width.
    pub fn observe(&self, reading: Reading) -> usize {
        self.calm.store(reading.calm(), Ordering::Relaxed);
        let wanted = self.held_back.load(Ordering::Relaxed) > 0;
        let next = next_width(self.width(), reading, wanted);
        self.width.store(next, Ordering::Relaxed);
        next
    }
}

/// A round of background work held back by the width, while it lives (see
/// [`Pressure::held_back`]).
#[derive(Debug)]
pub struct HeldBack<'a>(&'a Pressure);

impl Drop for HeldBack<'_> {
    fn drop(&mut self) {
        self.0.held_back.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The width after `reading` at width `now`: halved when busy; one wider when calm and
/// background work `wanted` more; kept otherwise; always within
/// [`LEAST_WIDTH`]..=[`FULL_WIDTH`].
pub fn next_width(now: usize, reading: Reading, wanted: bool) -> usize {
    let next = if reading.busy() {
        now / 2
    } else if reading.calm() && wanted {
        now + 1
    } else {
        now
    };
    next.clamp(LEAST_WIDTH, FULL_WIDTH)
}

/// The kernel's running total of time in which some thread waited for a CPU (pressure stall
/// information): for this process's cgroup where the kernel keeps one for it, else for the
/// whole system.
pub struct CpuStall {
    file: std::fs::File,
    /// The total and when it was read, at the last reading.
    last: Option<(std::time::Instant, Duration)>,
    /// The file's text at the last reading.
    text: String,
}

impl CpuStall {
    /// Opens this node's count, or answers `None` where the kernel keeps none.
    pub fn of_this_node() -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|groups| cgroup_v2_path(&groups).map(str::to_string))
            .map(|path| format!("/sys/fs/cgroup{}/cpu.pressure", path.trim_end_matches('/')));
        let file = own
            .and_then(|path| std::fs::File::open(path).ok())
            .or_else(|| std::fs::File::open("/proc/pressure/cpu").ok())?;
        Some(Self {
            file,
            last: None,
            text: String::with_capacity(STALL_FILE_SIZE),
        })
    }

    /// The share of the time since the last call in which some thread waited for a CPU (0 on
    /// the first call, or when the count cannot be read). A read of a kernel file: a few
    /// microseconds, never a wait on a disk.
    fn share_since_last(&mut self) -> f64 {
        let now = std::time::Instant::now();
        let Some(total) = self.read_total() else {
            return 0.0;
        };
        let share = match self.last {
            Some((at, before)) if now > at => {
                total.saturating_sub(before).as_secs_f64() / now.duration_since(at).as_secs_f64()
            }
            _ => 0.0,
        };
        self.last = Some((now, total));
        share
    }

    /// Reads the file again into the buffer kept for it (no allocation per reading).
    fn read_total(&mut self) -> Option<Duration> {
        self.text.clear();
        self.file.rewind().ok()?;
        self.file.read_to_string(&mut self.text).ok()?;
        some_total(&self.text)
    }
}

/// Room for a pressure file (two lines of about 70 characters).
const STALL_FILE_SIZE: usize = 256;

/// The cgroup (v2) this process is in, from `/proc/self/cgroup` (`/` in a container's own
/// cgroup namespace); `None` without cgroup v2.
fn cgroup_v2_path(groups: &str) -> Option<&str> {
    groups.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The `some` line's `total=` (microseconds) of a pressure file.
fn some_total(text: &str) -> Option<Duration> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    let micros = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()?;
    Some(Duration::from_micros(micros))
}

/// Reads the runtime's lag (and the node's CPU stall, from `stall` when there is one) every
/// [`PROBE_EVERY`] into `pressure`, and tells `on_change` of the width at the start and of each
/// new one, until `stop` turns true.
pub async fn probe(
    pressure: &Pressure,
    mut stall: Option<CpuStall>,
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
                let reading = Reading {
                    lag: Instant::now().saturating_duration_since(due),
                    stall: stall.as_mut().map_or(0.0, CpuStall::share_since_last),
                    serving: pressure.served_since_last(),
                };
                let after = pressure.observe(reading);
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

    const BUSY: Reading = lagging(BUSY_LAG);
    const CALM: Reading = lagging(Duration::from_micros(500));

    const fn lagging(lag: Duration) -> Reading {
        Reading {
            lag,
            stall: 0.0,
            serving: true,
        }
    }

    fn stalled(stall: f64) -> Reading {
        Reading { stall, ..CALM }
    }

    #[test]
    fn a_busy_node_halves_the_width_down_to_the_least() {
        let pressure = Pressure::default();
        assert_eq!(pressure.width(), FULL_WIDTH);
        let seen: Vec<usize> = (0..6).map(|_| pressure.observe(BUSY)).collect();
        assert_eq!(seen, [16, 8, 4, 2, 2, 2]);
    }

    #[test]
    fn a_calm_node_widens_one_step_at_a_time_up_to_full_while_more_is_due() {
        let pressure = Pressure::default();
        for _ in 0..5 {
            pressure.observe(BUSY);
        }
        assert_eq!(pressure.observe(CALM), LEAST_WIDTH, "nothing held back");
        let held = pressure.held_back();
        assert_eq!(pressure.observe(CALM), LEAST_WIDTH + 1);
        assert_eq!(pressure.observe(CALM), LEAST_WIDTH + 2);
        for _ in 0..FULL_WIDTH {
            pressure.observe(CALM);
        }
        assert_eq!(pressure.width(), FULL_WIDTH);
        drop(held);
        pressure.observe(BUSY);
        assert_eq!(
            pressure.observe(CALM),
            FULL_WIDTH / 2,
            "held back no longer"
        );
    }

    #[test]
    fn a_lag_between_calm_and_busy_keeps_the_width() {
        let micro = Duration::from_micros(1);
        assert_eq!(next_width(10, lagging(CALM_LAG), true), 10);
        assert_eq!(next_width(10, lagging(BUSY_LAG - micro), true), 10);
        assert_eq!(next_width(10, lagging(BUSY_LAG), true), 5);
        assert_eq!(next_width(10, lagging(BUSY_LAG), false), 5);
        assert_eq!(next_width(10, lagging(CALM_LAG - micro), true), 11);
        assert_eq!(next_width(10, lagging(CALM_LAG - micro), false), 10);
    }

    #[test]
    fn threads_waiting_for_a_cpu_make_a_node_busy_whatever_its_lag() {
        assert_eq!(next_width(10, stalled(BUSY_STALL), true), 5);
        assert_eq!(next_width(10, stalled(BUSY_STALL - 0.01), true), 10);
        assert_eq!(next_width(10, stalled(CALM_STALL), true), 10);
        assert_eq!(next_width(10, stalled(CALM_STALL - 0.01), true), 11);
    }

    #[test]
    fn without_requests_the_node_is_background_works_whatever_its_load() {
        let idle = |r: Reading| Reading {
            serving: false,
            ..r
        };
        assert_eq!(next_width(10, idle(BUSY), true), 11);
        assert_eq!(next_width(10, idle(stalled(1.0)), true), 11);
        assert_eq!(next_width(10, idle(BUSY), false), 10);
        let pressure = Pressure::default();
        pressure.request_arrived();
        assert!(pressure.served_since_last());
        assert!(!pressure.served_since_last(), "one reading per arrival");
    }

    #[test]
    fn the_stall_count_is_read_from_the_kernels_pressure_file() {
        let file = "some avg10=0.38 avg60=9.24 avg300=16.66 total=294550952\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(some_total(file), Some(Duration::from_micros(294_550_952)));
        assert_eq!(some_total("full avg10=0.00 total=5\n"), None);
        assert_eq!(some_total("some avg10=0.00 total=x\n"), None);
        assert_eq!(cgroup_v2_path("1:cpu:/\n0::/\n"), Some("/"));
        assert_eq!(
            cgroup_v2_path("0::/system.slice/wxgate.service\n"),
            Some("/system.slice/wxgate.service")
        );
        assert_eq!(cgroup_v2_path("4:memory:/x\n"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_node_spaces_background_items_and_a_calm_one_does_not() {
        let pressure = Pressure::default();
        let started = Instant::now();
        pressure.turn().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        pressure.observe(lagging(CALM_LAG));
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
        let _held = pressure.held_back();
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
    async fn the_probe_reads_a_late_wake_up_as_lag_while_requests_come_in_and_stops_when_told() {
        let pressure = std::sync::Arc::new(Pressure::default());
        let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let probing = {
            let pressure = pressure.clone();
            tokio::spawn(async move {
                probe(
                    &pressure,
                    None,
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
        // wakes late. With no request in, background work has the node: the width stays.
        tokio::time::advance(PROBE_EVERY + BUSY_LAG).await;
        let quiet = tokio::time::timeout(PROBE_EVERY, changes.recv()).await;
        assert!(quiet.is_err(), "no request came in: {quiet:?}");
        assert_eq!(pressure.width(), FULL_WIDTH);
        // With a request in, the late wake-up halves the width, and the probe reports it
        // (waited for on the paused clock).
        pressure.request_arrived();
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
