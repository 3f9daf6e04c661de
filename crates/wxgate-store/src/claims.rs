//! Background status sync: due payments claimed with a lease.

use super::*;
use crate::batch::Batch;

impl Store {
    /// Claims up to `limit` pending payments whose sync is due, for `CLAIM_LEASE_MS`.
    pub async fn claim_due_syncs(&self, now: i64, limit: i64) -> Result<Vec<PaymentRow>> {
        Ok(sqlx::query_as::<_, PaymentRow>(&self.claim_due_syncs_sql())
            .bind(now + CLAIM_LEASE_MS)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *self.write().await?)
            .await?)
    }

    /// Releases a claim and sets the next sync (none when `next_due` is `None`). Only a payment
    /// that is still pending is rescheduled: one that changed meanwhile keeps no sync.
    pub async fn reschedule_sync(
        &self,
        payment_id: &str,
        next_due: Option<i64>,
        attempts: i64,
    ) -> Result<()> {
        let mut batch = Batch::default();
        batch.push(
            "UPDATE payments SET sync_due_at = CASE WHEN status = 'pending' THEN $1 ELSE NULL END, \
             sync_attempts = $2, claimed_until = NULL WHERE id = $3",
            vec![next_due.into(), attempts.into(), payment_id.into()],
        );
        self.write().await?.atomically(batch).await?;
        Ok(())
    }

    /// The claim: up to `$3` pending payments due at `$2`, leased until `$1`, answered whole.
    /// It reads the index of pending payments by due time (migration 0015).
    pub(crate) fn claim_due_syncs_sql(&self) -> String {
        let select = format!(
            "SELECT id FROM payments WHERE status = 'pending' AND sync_due_at <= $2 \
             AND (claimed_until IS NULL OR claimed_until < $2) ORDER BY sync_due_at LIMIT $3{}",
            self.skip_locked()
        );
        format!("UPDATE payments SET claimed_until = $1 WHERE id IN ({select}) RETURNING *")
    }
}
