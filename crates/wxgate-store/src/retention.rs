//! What is kept only for a while: events, with their deliveries and attempt logs, once none of
//! their deliveries is pending.

use crate::listing::placeholders;
use crate::{EVENT_PURGE_BATCH, Result, Store};

impl Store {
    /// Forgets up to `EVENT_PURGE_BATCH` of a merchant's events made before `before` that no
    /// delivery is pending for, with their deliveries and attempts, in one transaction: how
    /// many events. A delivery made pending again meanwhile (a redelivery) keeps its event.
    pub async fn forget_events(&self, merchant_id: &str, before: i64) -> Result<u64> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM events e WHERE e.merchant_id = $1 AND e.created_at < $2 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
             WHERE d.event_id = e.id AND d.status = 'pending') \
             ORDER BY e.created_at LIMIT $3",
        )
        .bind(merchant_id)
        .bind(before)
        .bind(EVENT_PURGE_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let list = placeholders(1, ids.len());
        let statements = [
            format!(
                "DELETE FROM webhook_deliveries WHERE event_id IN ({list}) AND status <> 'pending'"
            ),
            format!(
                "DELETE FROM webhook_attempts WHERE event_id IN ({list}) AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_attempts.event_id)"
            ),
            format!(
                "DELETE FROM events WHERE id IN ({list}) AND NOT EXISTS \
                 (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = events.id)"
            ),
        ];
        let mut forgotten = 0;
        for sql in &statements {
            let mut query = sqlx::query(sql);
            for (id,) in &ids {
                query = query.bind(id.as_str());
            }
            forgotten = query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(forgotten)
    }
}
