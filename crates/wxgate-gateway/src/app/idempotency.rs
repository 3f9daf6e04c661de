//! How long idempotency keys are kept: a day, as payment APIs commonly keep them. After that a
//! retry with the same key is a new request (a payment's `merchant_order_id` still finds the
//! payment it made).

use crate::gateway::Gateway;

/// How long a key and the answer it replays are kept.
pub const IDEMPOTENCY_KEY_KEPT_MS: i64 = 24 * 3_600_000;

/// Forgets the keys older than `IDEMPOTENCY_KEY_KEPT_MS`, a batch at a time (the background
/// round does, every few minutes): how many.
pub async fn forget_old_keys(gw: &Gateway) -> anyhow::Result<u64> {
    let before = gw.now_ms() - IDEMPOTENCY_KEY_KEPT_MS;
    let mut forgotten = 0;
    loop {
        let n = gw.store().purge_idempotency_keys(before).await?;
        forgotten += n;
        if n < wxgate_store::IDEMPOTENCY_PURGE_BATCH as u64 {
            return Ok(forgotten);
        }
    }
}
