//! Reconciliations and their discrepancies; what the gateway holds for a day, read for them.

use wxgate_domain::reconciliation::{DiscrepancyStatus, ReconciliationStatus};

use super::*;
use crate::listing::{List, placeholders};
use crate::outbox::insert_event;

/// Bill references looked up per query.
pub(crate) const LOOKUP_CHUNK: usize = 500;

const ORDER_COLUMNS: &str = "a.out_trade_no, a.payment_id, p.amount, a.status AS attempt_status, \
     CASE WHEN a.out_trade_no = p.out_trade_no THEN p.paid_at ELSE NULL END AS paid_at";

impl Store {
    /// The reconciliation of a merchant's day, made if there is none yet (due at once). True
    /// when it was made now.
    pub async fn request_reconciliation(
        &self,
        merchant_id: &str,
        bill_date: &str,
        now: i64,
    ) -> Result<(ReconciliationRow, bool)> {
        let made = sqlx::query(
            "INSERT INTO reconciliations (id, merchant_id, bill_date, status, version, attempts, \
             next_attempt_at, discrepancy_count, repaired_count, created_at, updated_at) \
             VALUES ($1, $2, $3, 'pending', 1, 0, $4, 0, 0, $4, $4) \
             ON CONFLICT (merchant_id, bill_date) DO NOTHING",
        )
        .bind(wxgate_domain::id::ReconciliationId::generate().to_string())
        .bind(merchant_id)
        .bind(bill_date)
        .bind(now)
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query_as::<_, ReconciliationRow>(
            "SELECT * FROM reconciliations WHERE merchant_id = $1 AND bill_date = $2",
        )
        .bind(merchant_id)
        .bind(bill_date)
        .fetch_one(&mut *self.write().await?)
        .await?;
        Ok((row, made))
    }

    pub async fn reconciliation(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> Result<Option<ReconciliationRow>> {
        self.merchant_row(merchant_id, id).await
    }

    pub async fn list_reconciliations(
        &self,
        merchant_id: &str,
        filter: &ReconciliationFilter,
    ) -> Result<Vec<ReconciliationRow>> {
        let mut list = List::new("reconciliations WHERE merchant_id = ?", merchant_id);
        list.and("status = ?", filter.status.map(|s| s.as_str()));
        list.and("bill_date >= ?", filter.date_gte.clone());
        list.and("bill_date <= ?", filter.date_lte.clone());
        list.fetch(
            &self.pool,
            ("bill_date", "id"),
            filter.before.clone(),
            filter.limit,
        )
        .await
    }

    /// Claims up to `limit` reconciliations that are due, for `CLAIM_LEASE_MS` (without
    /// touching the writer when none is).
    pub async fn claim_due_reconciliations(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<ReconciliationRow>> {
        // The worker asks on every round of every node and there is rarely anything due: a
        // read answers that, so the writer (SQLite has one) is only taken for real work.
        const DUE: &str = "FROM reconciliations WHERE status IN ('pending', 'waiting_for_bill') \
             AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1)";
        let due: Option<(String,)> = sqlx::query_as(&format!("SELECT id {DUE} LIMIT 1"))
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE reconciliations SET claimed_until = $2 WHERE id IN \
             (SELECT id {DUE} ORDER BY next_attempt_at LIMIT $3{}) RETURNING *",
            self.skip_locked()
        );
        Ok(sqlx::query_as::<_, ReconciliationRow>(&sql)
            .bind(now)
            .bind(now + CLAIM_LEASE_MS)
            .bind(limit)
            .fetch_all(&mut *self.write().await?)
            .await?)
    }

    /// Claims one reconciliation that is not finished (and not claimed by another node), to
    /// run it now whatever its schedule says (the CLI does).
    pub async fn claim_reconciliation(
        &self,
        merchant_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<ReconciliationRow>> {
        Ok(sqlx::query_as::<_, ReconciliationRow>(
            "UPDATE reconciliations SET claimed_until = $1 WHERE merchant_id = $2 AND id = $3 \
             AND status IN ('pending', 'waiting_for_bill') \
             AND (claimed_until IS NULL OR claimed_until < $4) RETURNING *",
        )
        .bind(now + CLAIM_LEASE_MS)
        .bind(merchant_id)
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *self.write().await?)
        .await?)
    }

    /// Releases a claimed reconciliation to run again at `next_attempt_at` (waiting for the
    /// bill, or after an error), or marks it failed when `next_attempt_at` is `None`.
    pub async fn defer_reconciliation(
        &self,
        r: &ReconciliationRow,
        status: ReconciliationStatus,
        next_attempt_at: Option<i64>,
        error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE reconciliations SET status = $1, next_attempt_at = $2, last_error = $3, \
             attempts = attempts + 1, claimed_until = NULL, updated_at = $4 \
             WHERE id = $5 AND status IN ('pending', 'waiting_for_bill')",
        )
        .bind(status.as_str())
        .bind(next_attempt_at)
        .bind(error)
        .bind(now)
        .bind(&r.id)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Completes a reconciliation: its discrepancies, counts and events in one transaction,
    /// once (false if it was completed already).
    pub async fn complete_reconciliation(
        &self,
        r: &ReconciliationRow,
        done: &Completion,
    ) -> Result<bool> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let version = r.version + 1;
        let updated = sqlx::query(
            "UPDATE reconciliations SET status = 'completed', totals = $1, discrepancy_count = $2, \
             completed_at = $3, updated_at = $3, claimed_until = NULL, next_attempt_at = NULL, \
             last_error = NULL, attempts = attempts + 1, version = $4 \
             WHERE id = $5 AND status IN ('pending', 'waiting_for_bill')",
        )
        .bind(&done.totals)
        .bind(done.discrepancies.len() as i64)
        .bind(done.now)
        .bind(version + done.events.len() as i64 - 1)
        .bind(&r.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for d in &done.discrepancies {
            insert_discrepancy(&mut tx, d).await?;
        }
        for (i, e) in done.events.iter().enumerate() {
            let event = EventRow {
                object_version: version + i as i64,
                ..e.clone()
            };
            insert_event(&mut tx, &event, &r.id).await?;
        }
        tx.commit().await?;
        self.events_written();
        Ok(true)
    }

    pub async fn discrepancies(&self, reconciliation_id: &str) -> Result<Vec<DiscrepancyRow>> {
        Ok(sqlx::query_as::<_, DiscrepancyRow>(
            "SELECT * FROM discrepancies WHERE reconciliation_id = $1 ORDER BY created_at, id",
        )
        .bind(reconciliation_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn discrepancy(&self, merchant_id: &str, id: &str) -> Result<Option<DiscrepancyRow>> {
        self.merchant_row(merchant_id, id).await
    }

    /// Closes an open discrepancy as repaired or resolved, with why. False when it was not
    /// open.
    pub async fn close_discrepancy(
        &self,
        d: &DiscrepancyRow,
        status: DiscrepancyStatus,
        resolution: &str,
        now: i64,
    ) -> Result<bool> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let closed = sqlx::query(
            "UPDATE discrepancies SET status = $1, resolution = $2, resolved_at = $3 \
             WHERE id = $4 AND status = 'open'",
        )
        .bind(status.as_str())
        .bind(resolution)
        .bind(now)
        .bind(&d.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if closed && status == DiscrepancyStatus::Repaired {
            sqlx::query(
                "UPDATE reconciliations SET repaired_count = repaired_count + 1, updated_at = $1 \
                 WHERE id = $2",
            )
            .bind(now)
            .bind(&d.reconciliation_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(closed)
    }

    /// Open status discrepancies made since `since`, oldest first: those a query may settle.
    pub async fn open_repairable(&self, since: i64, limit: i64) -> Result<Vec<DiscrepancyRow>> {
        Ok(sqlx::query_as::<_, DiscrepancyRow>(
            "SELECT * FROM discrepancies WHERE status = 'open' AND kind = 'status_mismatch' \
             AND created_at >= $1 ORDER BY created_at, id LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The gateway's WeChat orders paid in [from, to) (Unix ms): each payment's paying order.
    pub async fn orders_paid_between(
        &self,
        merchant_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<DayOrderRow>> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM payments p JOIN payment_attempts a \
             ON a.merchant_id = p.merchant_id AND a.out_trade_no = p.out_trade_no \
             WHERE p.merchant_id = $1 AND p.paid_at >= $2 AND p.paid_at < $3"
        );
        Ok(sqlx::query_as::<_, DayOrderRow>(&sql)
            .bind(merchant_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The gateway's WeChat orders with these out_trade_nos (any attempt of any payment).
    pub async fn orders_by_out_trade_no(
        &self,
        merchant_id: &str,
        out_trade_nos: &[String],
    ) -> Result<Vec<DayOrderRow>> {
        let mut found = Vec::new();
        for chunk in out_trade_nos.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM payment_attempts a JOIN payments p ON p.id = a.payment_id \
                 WHERE a.merchant_id = $1 AND a.out_trade_no IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query_as::<_, DayOrderRow>(&sql).bind(merchant_id);
            for no in chunk {
                query = query.bind(no.clone());
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    /// The gateway's refunds WeChat took in [from, to) (Unix ms): the day WeChat's bill puts
    /// them in.
    pub async fn refunds_made_between(
        &self,
        merchant_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<DayRefundRow>> {
        Ok(sqlx::query_as::<_, DayRefundRow>(
            "SELECT out_refund_no, id, payment_id, amount, status, submitted_at FROM refunds \
             WHERE merchant_id = $1 AND submitted_at >= $2 AND submitted_at < $3",
        )
        .bind(merchant_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn refunds_by_out_refund_no(
        &self,
        merchant_id: &str,
        out_refund_nos: &[String],
    ) -> Result<Vec<DayRefundRow>> {
        let mut found = Vec::new();
        for chunk in out_refund_nos.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT out_refund_no, id, payment_id, amount, status, submitted_at FROM refunds \
                 WHERE merchant_id = $1 AND out_refund_no IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query_as::<_, DayRefundRow>(&sql).bind(merchant_id);
            for no in chunk {
                query = query.bind(no.clone());
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }
}

async fn insert_discrepancy(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    d: &DiscrepancyRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO discrepancies (id, reconciliation_id, merchant_id, kind, reference, payment_id, \
         refund_id, payout_id, gateway_side, wechat_side, status, resolution, created_at, \
         resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&d.id)
    .bind(&d.reconciliation_id)
    .bind(&d.merchant_id)
    .bind(d.kind.as_str())
    .bind(&d.reference)
    .bind(&d.payment_id)
    .bind(&d.refund_id)
    .bind(&d.payout_id)
    .bind(&d.gateway_side)
    .bind(&d.wechat_side)
    .bind(d.status.as_str())
    .bind(&d.resolution)
    .bind(d.created_at)
    .bind(d.resolved_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
