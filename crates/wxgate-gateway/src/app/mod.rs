//! The application layer: the gateway's work on domain values. Every entry point (the merchant
//! API, the hosted checkout, payment links, the CLI, and the front doors to come) calls these
//! functions; none of them knows HTTP. Each returns a domain value or an
//! [`ApiError`](crate::error::ApiError) with a stable code.

pub mod doors;
pub mod idempotency;
pub mod links;
pub mod merchants;
pub mod operations;
pub mod orders;
pub mod payments;
pub mod payouts;
pub mod reconciliation;
pub mod refunds;
pub mod reports;
pub mod webhooks;

use std::future::Future;
use std::time::{Duration, Instant};

use wxgate_domain::id::{MerchantId, PaymentId};
use wxgate_store::PaymentRow;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;

/// A claim is made only when at least half the width is free, so a busy queue is claimed in
/// batches rather than one row per finished item.
fn claim_at_least(width: usize) -> usize {
    (width / 2).max(1)
}
/// How long one call keeps claiming before it lets the other kinds of background work run.
const ROUND_BUDGET: Duration = Duration::from_secs(2);

/// Claims due work and works on it with as many items in flight as the node's pressure allows
/// now ([`crate::pressure`]: fewer, started a little apart, while merchant requests keep the CPU
/// busy), claiming more as items finish, until nothing more is due or [`ROUND_BUDGET`] has
/// passed. Each item starts when it is claimed (or its turn comes, on a busy node), so one
/// slow answer from WeChat neither holds up the rest nor makes a claim outlast its lease.
/// `claim(gw, n)` claims at most `n` items. Items run as background work for the pace of calls
/// to WeChat. Returns how many items were handled, or the first error once every started item
/// is done.
pub(crate) async fn work_through<T, C, CF, F, Fut>(
    gw: &Gateway,
    mut claim: C,
    work: F,
) -> anyhow::Result<usize>
where
    C: FnMut(Gateway, i64) -> CF,
    CF: Future<Output = anyhow::Result<Vec<T>>>,
    F: Fn(Gateway, T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut handled, mut more_due, mut first_error) = (0, true, None);
    // The round claims again while more is due and its budget lasts; until then it counts as
    // held back by the width.
    let claims_again = |more_due: bool| more_due && started.elapsed() < ROUND_BUDGET;
    let mut held = Some(gw.pressure().held_back());
    loop {
        let width = gw.pressure().width();
        let room = width.saturating_sub(tasks.len());
        if claims_again(more_due) && room >= claim_at_least(width) {
            match claim(gw.clone(), room as i64).await {
                Ok(batch) => {
                    more_due = batch.len() == room;
                    for item in batch {
                        gw.pressure().turn().await;
                        tasks.spawn(crate::pace::as_background(work(gw.clone(), item)));
                    }
                }
                Err(e) => (more_due, first_error) = (false, first_error.or(Some(e))),
            }
        }
        if !claims_again(more_due) {
            drop(held.take());
        }
        let Some(done) = tasks.join_next().await else {
            return first_error.map_or(Ok(handled), Err);
        };
        handled += 1;
        let failed = match done {
            Ok(outcome) => outcome.err(),
            Err(join) => Some(join.into()),
        };
        first_error = first_error.or(failed);
    }
}

/// What a signed WeChat report is about, when it is quarantined.
#[derive(Debug, Clone, Copy)]
pub(crate) enum QuarantineOf {
    Payment,
    Refund,
    Payout,
}

/// Keeps a signed WeChat report that cannot be applied (it contradicts what the gateway holds,
/// or names nothing it knows) for an operator to review, and counts it in `/metrics`.
pub(crate) async fn quarantine(
    gw: &Gateway,
    about: QuarantineOf,
    (merchant_id, payment_id): (&str, Option<&str>),
    reason: String,
    resource: String,
) -> anyhow::Result<()> {
    gw.store()
        .quarantine(&wxgate_store::QuarantineRow {
            id: wxgate_domain::id::generate("qtn"),
            merchant_id: merchant_id.to_string(),
            payment_id: payment_id.map(str::to_string),
            reason,
            resource,
            received_at: gw.now_ms(),
        })
        .await?;
    let object = match about {
        QuarantineOf::Payment => "payment",
        QuarantineOf::Refund => "refund",
        QuarantineOf::Payout => "payout",
    };
    gw.metrics().quarantined(object);
    Ok(())
}

/// A stored payment's merchant and payment ids, typed.
pub fn stored_ids(p: &PaymentRow) -> (MerchantId, PaymentId) {
    (
        MerchantId::stored(p.merchant_id.as_str()),
        PaymentId::stored(p.id.as_str()),
    )
}

/// A `notify_url`: a public http(s) URL (loopback and private addresses only when allowed).
pub fn check_notify_url(url: Option<&str>, allow_private: bool) -> ApiResult<()> {
    if let Some(url) = url {
        crate::delivery::check_url(url, allow_private).map_err(|m| {
            ApiError::invalid(
                ErrorCode::InvalidNotifyUrl,
                "notify_url",
                m.replacen("url", "notify_url", 1),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::pressure::{LEAST_WIDTH, Reading};

    /// A reading of a node with requests in, neither lagging nor stalled.
    const CALM: Reading = Reading {
        lag: Duration::ZERO,
        stall: 0.0,
        serving: true,
    };

    /// Works through `due` items with the width at its least; each item reads the node as
    /// calm. Answers the width after the round, and after one more calm reading.
    async fn round_at_least_width(due: usize) -> (usize, usize) {
        let db = wxgate_store::testing::sqlite();
        let config = crate::GatewayConfig::new(
            &db.url,
            crate::secrets::MasterKey::generate(),
            "http://127.0.0.1",
        );
        let gw = Gateway::new(db.store().await, config);
        let busy = Reading {
            lag: crate::pressure::BUSY_LAG,
            ..CALM
        };
        while gw.pressure().width() > LEAST_WIDTH {
            gw.pressure().observe(busy);
        }
        let source = Arc::new(Mutex::new((0..due).collect::<Vec<_>>()));
        let claim = |_gw: Gateway, n: i64| {
            let source = source.clone();
            async move {
                let mut left = source.lock().unwrap();
                let at = left.len().saturating_sub(n as usize);
                Ok(left.split_off(at))
            }
        };
        let handled = work_through(&gw, claim, |gw, _item| async move {
            gw.pressure().observe(CALM);
            Ok(())
        })
        .await
        .expect("the items succeed");
        assert_eq!(handled, due);
        let after_round = gw.pressure().width();
        let widths = (after_round, gw.pressure().observe(CALM));
        db.cleanup().await;
        widths
    }

    #[tokio::test]
    async fn a_calm_node_widens_while_more_is_due_than_the_width_lets_run_and_not_after() {
        let (during, after) = round_at_least_width(12).await;
        assert!(during > LEAST_WIDTH, "held back, the width grew: {during}");
        assert_eq!(after, during, "the round is over: nothing is held back");
    }

    #[tokio::test]
    async fn a_round_the_width_holds_whole_does_not_widen_it() {
        let (during, after) = round_at_least_width(1).await;
        assert_eq!((during, after), (LEAST_WIDTH, LEAST_WIDTH));
    }
}
