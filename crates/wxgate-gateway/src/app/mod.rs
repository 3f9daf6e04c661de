//! The application layer: the gateway's work on domain values. Every entry point (the merchant
//! API, the hosted checkout, payment links, the CLI, and the front doors to come) calls these
//! functions; none of them knows HTTP. Each returns a domain value or an
//! [`ApiError`](crate::error::ApiError) with a stable code.

pub mod doors;
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

use wxgate_domain::id::{MerchantId, PaymentId};
use wxgate_store::PaymentRow;

use crate::gateway::Gateway;

/// Works on every item of a claimed batch at once, so a slow WeChat cannot make the batch
/// outlast its claim's lease, and waits for all of them. Returns the batch's size, or the
/// first error once every item is done.
pub(crate) async fn all_at_once<T, F, Fut>(
    gw: &Gateway,
    batch: Vec<T>,
    work: F,
) -> anyhow::Result<usize>
where
    F: Fn(Gateway, T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let n = batch.len();
    let mut tasks = tokio::task::JoinSet::new();
    for item in batch {
        tasks.spawn(work(gw.clone(), item));
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let failed = match done {
            Ok(outcome) => outcome.err(),
            Err(join) => Some(join.into()),
        };
        first_error = first_error.or(failed);
    }
    first_error.map_or(Ok(n), Err)
}

/// A stored payment's merchant and payment ids, typed.
pub fn stored_ids(p: &PaymentRow) -> (MerchantId, PaymentId) {
    (
        MerchantId::stored(p.merchant_id.as_str()),
        PaymentId::stored(p.id.as_str()),
    )
}
