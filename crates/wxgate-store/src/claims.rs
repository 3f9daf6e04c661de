//! Background work claimed with a lease: the claim every kind of it shares, and the status
//! sync's claims of due payments.

use super::*;
use crate::batch::Batch;

impl Store {
    /// Claims up to `limit` pending payments whose sync is due, for `CLAIM_LEASE_MS`.
    pub async fn claim_due_syncs(&self, now: i64, limit: i64) -> Result<Vec<PaymentRow>> {
        self.claim_rows(&self.claim_due_syncs_sql(), now, limit)
            .await
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

    /// The claim: up to `$3` pending payments due at `$2`, leased until `$1`.
    pub(crate) fn claim_due_syncs_sql(&self) -> String {
        self.claim_sql("payments", "status = 'pending'")
    }

    /// Runs a claim (`claim_sql`) at `now` for up to `limit` rows, leased for
    /// `CLAIM_LEASE_MS`: the rows claimed.
    pub(crate) async fn claim_rows<R>(&self, sql: &str, now: i64, limit: i64) -> Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        Ok(sqlx::query_as::<_, R>(sql)
            .bind(now + CLAIM_LEASE_MS)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *self.write().await?)
            .await?)
    }

    /// A claim of background work: up to `$3` rows of `table` that are `open` and due at
    /// `$2`, leased until `$1`, answered whole. Each table has an index of its due times made
    /// under the same `open` condition (migrations 0015 and 0016), which both planners use
    /// with or without statistics because the claim says that condition word for word.
    pub(crate) fn claim_sql(&self, table: &str, open: &str) -> String {
        let lock = self.skip_locked();
        format!(
            "UPDATE {table} SET claimed_until = $1 WHERE id IN (SELECT id FROM {table} \
             WHERE {open} AND sync_due_at <= $2 \
             AND (claimed_until IS NULL OR claimed_until < $2) ORDER BY sync_due_at LIMIT $3{lock}) \
             RETURNING *"
        )
    }
}
