//! Polite calls to WeChat: each merchant's calls from this node are paced per API, and
//! background work (status sync, refund and payout sync, reconciliation) may use only part of
//! each API's pace, so it never starves the calls a merchant or payer is waiting on.
//!
//! WeChat caps every merchant's call rate per API (for example 600 orders and 1,800 queries
//! per second on its published table, 150 refunds, 100 transfers) and answers 429
//! `FREQUENCY_LIMITED` past it. So each [`Api`] has a pace of its own, in those proportions to
//! the configured order rate: a wave of status queries never takes from creates. A call
//! waits for its turn (it is queued, never refused here), at most [`LONGEST_WAIT`]:
//! past that it goes anyway and WeChat's own answer decides. After WeChat answers 429
//! the merchant's background calls wait [`CALM_AFTER_LIMITED`] while merchant-facing ones go
//! on with the client's own backoff.
//!
//! Whether a call is background work is known from where it runs: everything under
//! [`as_background`] is; the background workers run their rounds under it.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;
use wechatpay_v3::client::{CallObserver, CallReport};

/// How long a merchant's background calls pause after WeChat said it was calling too often.
pub const CALM_AFTER_LIMITED: Duration = Duration::from_secs(1);
/// The longest a call waits for its turn before it goes anyway.
pub const LONGEST_WAIT: Duration = Duration::from_secs(2);
/// The share of a merchant's pace that background work may use: one call in this many.
pub const BACKGROUND_SHARE_DIVISOR: u32 = 2;

tokio::task_local! {
    static BACKGROUND: ();
}

/// Runs `work` as background work: its calls to WeChat take the background share.
pub async fn as_background<F: Future>(work: F) -> F::Output {
    BACKGROUND.scope((), work).await
}

fn in_background() -> bool {
    BACKGROUND.try_with(|_| ()).is_ok()
}

/// The APIs WeChat caps separately, each paced on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Prepay (every product, domestic and cross-border) and closing an order.
    Order = 0,
    /// Querying an order.
    Query = 1,
    /// Refunds and their queries.
    Refund = 2,
    /// Merchant transfers (payouts): create, query, cancel.
    Transfer = 3,
    /// Bills and statements.
    Bill = 4,
}

impl Api {
    const ALL: [Self; 5] = [
        Self::Order,
        Self::Query,
        Self::Refund,
        Self::Transfer,
        Self::Bill,
    ];

    /// This API's cap as a fraction of the order cap (numerator, denominator), after WeChat's
    /// table: 1,800 queries, 150 refunds and 100 transfers a second against 600 orders.
    fn scale(self) -> (u32, u32) {
        match self {
            Self::Order | Self::Bill => (1, 1),
            Self::Query => (3, 1),
            Self::Refund => (1, 4),
            Self::Transfer => (1, 6),
        }
    }
}

/// One API's pace: every call's, and background work's share of it.
struct Lane {
    every_call: Queue,
    background: Queue,
}

/// The runtime's clock, as the limits read it: time since the limit was made, on the same
/// clock the waits sleep on (so a paused runtime in a test moves both).
#[derive(Debug, Clone, Copy)]
struct RuntimeClock(Instant);

impl Clock for RuntimeClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A rate limit on the runtime's clock.
type Limit = RateLimiter<NotKeyed, InMemoryState, RuntimeClock, NoOpMiddleware<Duration>>;

/// A rate limit whose waiting calls go in the order they came: the first waits for the
/// limit, the others for it. (Waiting on the limit alone, every waiter wakes at the next free
/// moment and one wins; the others sleep again, and a call can lose many times in a row.)
struct Queue {
    limit: Limit,
    first: tokio::sync::Mutex<()>,
}

impl Queue {
    fn new(quota: Quota) -> Self {
        Self {
            limit: RateLimiter::direct_with_clock(quota, RuntimeClock(Instant::now())),
            first: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits until this call may go: its turn in the queue, then the limit, sleeping on the
    /// runtime's own timer. (The limiter's `until_ready` sleeps on a timer thread of its own:
    /// two more thread wake-ups per paced call.)
    async fn ready(&self) {
        let _first = self.first.lock().await;
        while let Err(not_until) = self.limit.check() {
            let wait = not_until.wait_time_from(self.limit.clock().now());
            tokio::time::sleep(wait).await;
        }
    }
}

/// One merchant's pace on this node.
pub struct Pace {
    /// Indexed by [`Api`] (`Api::ALL` is in the order of its discriminants).
    lanes: [Lane; Api::ALL.len()],
    /// Until when background calls wait, after a 429.
    calm_until: Mutex<Option<Instant>>,
}

impl Pace {
    /// A pace of `orders` calls a second to the order API, the other APIs in proportion
    /// ([`Api::scale`], at least one a second), background work taking at most a
    /// 1/[`BACKGROUND_SHARE_DIVISOR`] of each.
    pub fn per_second(orders: NonZeroU32) -> Self {
        Self::with_quotas(|api| {
            let (times, over) = api.scale();
            let every_call = (orders.get().saturating_mul(times) / over).max(1);
            let share = (every_call / BACKGROUND_SHARE_DIVISOR).max(1);
            let per_second = |n| Quota::per_second(NonZeroU32::new(n).expect("at least one"));
            (per_second(every_call), per_second(share))
        })
    }

    /// A pace whose quotas (every call's, background work's) `quotas` gives for each API.
    fn with_quotas(quotas: impl Fn(Api) -> (Quota, Quota)) -> Self {
        let lanes = Api::ALL.map(|api| {
            let (every_call, background) = quotas(api);
            Lane {
                every_call: Queue::new(every_call),
                background: Queue::new(background),
            }
        });
        Self {
            lanes,
            calm_until: Mutex::new(None),
        }
    }

    /// Waits until a call to `api` may go, at most [`LONGEST_WAIT`]: background work first
    /// waits out a calm period and its share, then every call waits for the API's pace.
    pub async fn turn(&self, api: Api) {
        let _ = tokio::time::timeout(LONGEST_WAIT, self.wait(api)).await;
    }

    async fn wait(&self, api: Api) {
        let lane = &self.lanes[api as usize];
        if in_background() {
            let calm = *self.calm_until.lock().expect("pace lock");
            if let Some(until) = calm {
                tokio::time::sleep_until(until).await;
            }
            lane.background.ready().await;
        }
        lane.every_call.ready().await;
    }

    /// WeChat said this merchant calls too often: background calls pause.
    pub fn limited(&self) {
        *self.calm_until.lock().expect("pace lock") = Some(Instant::now() + CALM_AFTER_LIMITED);
    }

    /// An observer of the client's calls that notes WeChat's 429s here, then tells `then`.
    pub fn observer(self: Arc<Self>, then: Option<CallObserver>) -> CallObserver {
        CallObserver(Arc::new(move |report| {
            if says_limited(report) {
                self.limited();
            }
            if let Some(then) = &then {
                (then.0)(report);
            }
        }))
    }
}

/// Whether an answer from WeChat says the merchant calls too often.
fn says_limited(report: &CallReport<'_>) -> bool {
    report.status == 429
        || matches!(
            report.error_code,
            Some("FREQUENCY_LIMITED" | "RATELIMIT_EXCEEDED")
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pace that refills once an hour, so nothing here depends on how fast the test runs.
    fn hourly(every_call: u32, background: u32) -> Pace {
        let q = |n| Quota::per_hour(NonZeroU32::new(n).expect("positive"));
        Pace::with_quotas(|_| (q(every_call), q(background)))
    }

    async fn goes_at_once(pace: &Pace, background: bool) -> bool {
        goes_at_once_to(pace, Api::Order, background).await
    }

    async fn goes_at_once_to(pace: &Pace, api: Api, background: bool) -> bool {
        let turn = async {
            if background {
                as_background(pace.turn(api)).await
            } else {
                pace.turn(api).await
            }
        };
        tokio::time::timeout(Duration::from_millis(1), turn)
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_takes_only_its_share_and_merchant_calls_keep_theirs() {
        let pace = hourly(4, 2);
        assert!(goes_at_once(&pace, true).await);
        assert!(goes_at_once(&pace, true).await);
        assert!(!goes_at_once(&pace, true).await, "the share is used up");
        assert!(goes_at_once(&pace, false).await);
        assert!(goes_at_once(&pace, false).await);
        assert!(!goes_at_once(&pace, false).await, "the pace is used up");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_background_calls_wait_and_merchant_calls_do_not() {
        let pace = hourly(100, 50);
        pace.limited();
        assert!(goes_at_once(&pace, false).await);
        assert!(!goes_at_once(&pace, true).await);
        tokio::time::advance(CALM_AFTER_LIMITED).await;
        assert!(goes_at_once(&pace, true).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_no_longer_than_the_longest_wait() {
        let pace = hourly(1, 1);
        assert!(goes_at_once(&pace, false).await);
        let mut turn = std::pin::pin!(pace.turn(Api::Order));
        let almost = LONGEST_WAIT - Duration::from_millis(1);
        assert!(tokio::time::timeout(almost, &mut turn).await.is_err());
        let past = Duration::from_millis(2);
        assert!(tokio::time::timeout(past, &mut turn).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn each_api_has_its_own_pace_so_queries_never_take_from_orders() {
        let pace = hourly(2, 1);
        assert!(goes_at_once_to(&pace, Api::Query, false).await);
        assert!(goes_at_once_to(&pace, Api::Query, false).await);
        assert!(
            !goes_at_once_to(&pace, Api::Query, false).await,
            "queries used up"
        );
        assert!(goes_at_once_to(&pace, Api::Order, false).await);
        assert!(goes_at_once_to(&pace, Api::Refund, true).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_goes_before_one_that_comes_later() {
        // One call a millisecond, no burst.
        let queue = Arc::new(Queue::new(
            Quota::with_period(Duration::from_millis(1)).expect("positive"),
        ));
        let went = Arc::new(Mutex::new(Vec::new()));
        let call = |i| {
            let (queue, went) = (queue.clone(), went.clone());
            tokio::spawn(async move {
                queue.ready().await;
                went.lock().unwrap().push(i);
            })
        };
        let first = call(0);
        tokio::task::yield_now().await;
        // The second waits for the next millisecond.
        let second = call(1);
        tokio::task::yield_now().await;
        // A third call is ready to run when the clock passes that millisecond, and runs before
        // the second's timer wakes it.
        let third = call(2);
        tokio::time::advance(Duration::from_millis(3)).await;
        for c in [first, second, third] {
            c.await.unwrap();
        }
        assert_eq!(*went.lock().unwrap(), [0, 1, 2]);
    }

    #[test]
    fn the_apis_are_paced_in_wechats_proportions_to_the_order_rate() {
        let per_second = |api: Api| {
            let (times, over) = api.scale();
            600 * times / over
        };
        assert_eq!(per_second(Api::Order), 600);
        assert_eq!(per_second(Api::Query), 1_800);
        assert_eq!(per_second(Api::Refund), 150);
        assert_eq!(per_second(Api::Transfer), 100);
        // The lanes are indexed by discriminant, built in the order of `ALL`.
        for (i, api) in Api::ALL.iter().enumerate() {
            assert_eq!(*api as usize, i, "{api:?}");
        }
    }

    fn report(status: u16, error_code: Option<&'static str>) -> CallReport<'static> {
        CallReport {
            method: "GET",
            path: "/v3/pay/transactions/out-trade-no/o1",
            status,
            error_code,
            seconds: 0.01,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_calms_background_work_on_a_limited_answer_and_passes_reports_on() {
        let pace = Arc::new(hourly(100, 50));
        let seen = Arc::new(Mutex::new(0));
        let counter = seen.clone();
        let then = CallObserver(Arc::new(move |_| *counter.lock().unwrap() += 1));
        let observer = pace.clone().observer(Some(then));
        (observer.0)(&report(500, Some("SYSTEM_ERROR")));
        assert!(goes_at_once(&pace, true).await, "a 500 is not a limit");
        (observer.0)(&report(403, Some("FREQUENCY_LIMITED")));
        assert!(!goes_at_once(&pace, true).await);
        assert_eq!(*seen.lock().unwrap(), 2);
    }
}
