//! Webhook endpoints, deliveries claimed by workers, the attempt log, and the event feed.

use crate::listing::{List, placeholders};
use std::sync::Arc;

use crate::{
    AttemptOutcome, AttemptRow, DeliveryRow, EventFilter, EventRow, NOTIFY_URL_ENDPOINT,
    NotifySecretRow, Redeliver, Result, Store, WebhookEndpointRow,
};

/// Event ids per `IN (…)` query.
const EVENTS_PER_QUERY: usize = 256;

impl Store {
    /// Woken whenever this process writes an event.
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }

    /// Adds an endpoint unless the merchant already has `max` live ones: false then, nothing
    /// written. The count and the insert are one transaction, and on PostgreSQL the merchant's
    /// row is locked first, so concurrent creates cannot pass `max` together (SQLite has one
    /// writer).
    pub async fn insert_webhook_endpoint(&self, e: &WebhookEndpointRow, max: i64) -> Result<bool> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        if self.backend == crate::Backend::Postgres {
            sqlx::query("SELECT id FROM merchants WHERE id = $1 FOR UPDATE")
                .bind(&e.merchant_id)
                .execute(&mut *tx)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, events, secret_id, secret_sealed, created_at, deleted_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, NULL WHERE (SELECT COUNT(*) FROM webhook_endpoints \
             WHERE merchant_id = $2 AND deleted_at IS NULL) < $8",
        )
        .bind(&e.id)
        .bind(&e.merchant_id)
        .bind(&e.url)
        .bind(&e.events)
        .bind(&e.secret_id)
        .bind(&e.secret_sealed)
        .bind(e.created_at)
        .bind(max)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(inserted == 1)
    }

    /// Sets the merchant's notify secret, replacing any earlier one.
    pub async fn set_notify_secret(&self, s: &NotifySecretRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO notify_secrets (merchant_id, secret_id, secret_sealed, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (merchant_id) DO UPDATE SET secret_id = excluded.secret_id, \
             secret_sealed = excluded.secret_sealed, created_at = excluded.created_at",
        )
        .bind(&s.merchant_id)
        .bind(&s.secret_id)
        .bind(&s.secret_sealed)
        .bind(s.created_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    pub async fn notify_secret(&self, merchant_id: &str) -> Result<Option<NotifySecretRow>> {
        Ok(sqlx::query_as::<_, NotifySecretRow>(
            "SELECT * FROM notify_secrets WHERE merchant_id = $1",
        )
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The merchant's endpoints that are not deleted, oldest first.
    pub async fn webhook_endpoints(&self, merchant_id: &str) -> Result<Vec<WebhookEndpointRow>> {
        Ok(sqlx::query_as::<_, WebhookEndpointRow>(
            "SELECT * FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
        )
        .bind(merchant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// An endpoint by id, deleted or not (deliveries keep pointing at it).
    pub async fn webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpointRow>> {
        Ok(
            sqlx::query_as::<_, WebhookEndpointRow>(
                "SELECT * FROM webhook_endpoints WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// Gives an endpoint a new signing secret. False if there is no such endpoint.
    pub async fn rotate_webhook_secret(
        &self,
        merchant_id: &str,
        id: &str,
        secret_id: &str,
        secret_sealed: &str,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE webhook_endpoints SET secret_id = $1, secret_sealed = $2 \
             WHERE id = $3 AND merchant_id = $4 AND deleted_at IS NULL",
        )
        .bind(secret_id)
        .bind(secret_sealed)
        .bind(id)
        .bind(merchant_id)
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected()
            == 1)
    }

    /// Deletes an endpoint and cancels its pending deliveries. False if there was none to delete.
    pub async fn delete_webhook_endpoint(
        &self,
        merchant_id: &str,
        id: &str,
        now: i64,
    ) -> Result<bool> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let deleted = sqlx::query(
            "UPDATE webhook_endpoints SET deleted_at = $1 WHERE id = $2 AND merchant_id = $3 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(merchant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_at = NULL \
             WHERE endpoint_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Claims up to `limit` due deliveries for `lease_ms`. A claim expires on its own, so a
    /// worker that dies mid-delivery leaves the delivery to be retried by another.
    /// Endpoints in `skip` are left out (the caller has no room for them).
    pub async fn claim_due_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        skip: &[String],
    ) -> Result<Vec<DeliveryRow>> {
        let scope = if skip.is_empty() {
            ClaimScope::All
        } else {
            ClaimScope::AllBut(skip.join(","))
        };
        self.claim_deliveries(now, lease_ms, limit, scope).await
    }

    /// Claims up to `limit` due deliveries of one endpoint, oldest due first: how a node keeps
    /// a busy endpoint's lane fed without claiming more than the lane can take.
    pub async fn claim_due_deliveries_of(
        &self,
        endpoint_id: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        let scope = ClaimScope::Endpoint(endpoint_id.to_string());
        self.claim_deliveries(now, lease_ms, limit, scope).await
    }

    async fn claim_deliveries(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
        scope: ClaimScope,
    ) -> Result<Vec<DeliveryRow>> {
        let sql = self.claim_deliveries_sql(&scope);
        let query = sqlx::query_as::<_, DeliveryRow>(&sql)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit);
        let query = match scope {
            ClaimScope::All => query,
            ClaimScope::AllBut(list) | ClaimScope::Endpoint(list) => query.bind(list),
        };
        Ok(query.fetch_all(&mut *self.write().await?).await?)
    }

    /// A claim of due deliveries in `scope`: up to `$3` pending deliveries due at `$2`, leased
    /// until `$1` (`$4` the scope's endpoints). It says `status = 'pending'`, the condition
    /// the index of due deliveries is made under (migration 0017): without it PostgreSQL, on
    /// a new table, planned the outer update as a scan of every delivery ever made.
    pub(crate) fn claim_deliveries_sql(&self, scope: &ClaimScope) -> String {
        let lock = self.skip_locked();
        let scope_clause = match scope {
            ClaimScope::All => "",
            ClaimScope::AllBut(_) => " AND ',' || $4 || ',' NOT LIKE '%,' || endpoint_id || ',%'",
            ClaimScope::Endpoint(_) => " AND endpoint_id = $4",
        };
        format!(
            "UPDATE webhook_deliveries SET claimed_until = $1 WHERE (event_id, endpoint_id) IN \
             (SELECT event_id, endpoint_id FROM webhook_deliveries WHERE status = 'pending' \
             AND next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until < $2){scope_clause} \
             ORDER BY next_attempt_at LIMIT $3{lock}) RETURNING *"
        )
    }

    /// Gives a claimed delivery back untried, to be picked up again at `next_at`.
    pub async fn release_delivery(&self, d: &DeliveryRow, next_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1, claimed_until = NULL \
             WHERE event_id = $2 AND endpoint_id = $3 AND claimed_until = $4 AND status = 'pending'",
        )
        .bind(next_at)
        .bind(&d.event_id)
        .bind(&d.endpoint_id)
        .bind(d.claimed_until)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Logs an attempt on a claimed delivery and applies its outcome, in one transaction. False
    /// (and nothing written) when the claim was lost meanwhile or the delivery was cancelled.
    pub async fn record_attempt(
        &self,
        d: &DeliveryRow,
        attempt: &AttemptRow,
        outcome: AttemptOutcome,
    ) -> Result<bool> {
        let recorded = self
            .record_attempts(&[(d.clone(), attempt.clone(), outcome)])
            .await?;
        Ok(recorded.first().copied().unwrap_or(false))
    }

    /// Logs attempts on claimed deliveries and applies their outcomes, all in one transaction
    /// of two statements (group commit: a busy node records many attempts for the cost of one).
    /// For each, in order: whether it was recorded (false when its claim was lost meanwhile or
    /// the delivery was cancelled; nothing is written for it).
    pub async fn record_attempts(
        &self,
        batch: &[(DeliveryRow, AttemptRow, AttemptOutcome)],
    ) -> Result<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let mut recorded: Vec<Option<i64>> = vec![None; batch.len()];
        // One statement applies outcomes to distinct deliveries; the same delivery twice in a
        // group (a stale claim beside the current one) waits for the next statement.
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        while !pending.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let (round, rest): (Vec<usize>, Vec<usize>) = pending
                .into_iter()
                .partition(|&i| seen.insert((&batch[i].0.event_id, &batch[i].0.endpoint_id)));
            let items: Vec<_> = round.iter().map(|&i| &batch[i]).collect();
            let applied = apply_outcomes(&mut tx, &items).await?;
            for i in round {
                let d = &batch[i].0;
                recorded[i] = applied
                    .iter()
                    .find(|(e, p, _)| *e == d.event_id && *p == d.endpoint_id)
                    .map(|(.., n)| *n);
            }
            pending = rest;
        }
        let logged: Vec<(&AttemptRow, i64)> = batch
            .iter()
            .zip(&recorded)
            .filter_map(|((_, a, _), n)| n.map(|n| (a, n)))
            .collect();
        if !logged.is_empty() {
            log_attempts(&mut tx, &logged).await?;
        }
        tx.commit().await?;
        self.activity_changed();
        Ok(recorded.iter().map(Option::is_some).collect())
    }

    /// Schedules events again, now, to every endpoint subscribed to them (a new round of the
    /// retry schedule for deliveries that already exist). Returns how many were scheduled.
    pub async fn redeliver(&self, merchant_id: &str, scope: &Redeliver, now: i64) -> Result<u64> {
        // The events in scope, as a condition on `e` with parameters from $3 on.
        let in_scope = match scope {
            Redeliver::Event(_) => "e.merchant_id = $1 AND e.id = $3",
            Redeliver::Range {
                delivery_status: None,
                ..
            } => "e.merchant_id = $1 AND e.created_at >= $3 AND e.created_at < $4",
            Redeliver::Range {
                delivery_status: Some(_),
                ..
            } => {
                "e.merchant_id = $1 AND e.created_at >= $3 AND e.created_at < $4 \
                 AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = $5)"
            }
        };
        let to_endpoints = format!(
            "INSERT INTO webhook_deliveries (event_id, endpoint_id, merchant_id, status, attempts, \
             round_attempts, next_attempt_at, created_at) \
             SELECT e.id, w.id, e.merchant_id, 'pending', 0, 0, $2, $2 \
             FROM events e JOIN webhook_endpoints w ON w.merchant_id = e.merchant_id \
             WHERE {in_scope} AND w.deleted_at IS NULL \
             AND (w.events = '*' OR ',' || w.events || ',' LIKE '%,' || e.event_type || ',%') \
             ON CONFLICT (event_id, endpoint_id) DO UPDATE SET status = 'pending', \
             round_attempts = 0, next_attempt_at = excluded.next_attempt_at, claimed_until = NULL"
        );
        // Deliveries to payments' own notify URLs exist from the event's commit on.
        let to_notify_urls = format!(
            "UPDATE webhook_deliveries SET status = 'pending', round_attempts = 0, next_attempt_at = $2, \
             claimed_until = NULL \
             WHERE (endpoint_id = '{NOTIFY_URL_ENDPOINT}' OR endpoint_id LIKE 'door:%') AND event_id IN (SELECT e.id FROM events e WHERE {in_scope})"
        );
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let mut scheduled = bind_scope(&to_endpoints, merchant_id, now, scope)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        scheduled += bind_scope(&to_notify_urls, merchant_id, now, scope)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        if scheduled > 0 {
            self.events_written();
        }
        Ok(scheduled)
    }

    /// How many of the merchant's events were created in `[gte, lt)`.
    pub async fn count_events(&self, merchant_id: &str, gte: i64, lt: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM events WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3",
        )
        .bind(merchant_id)
        .bind(gte)
        .bind(lt)
        .fetch_one(&self.pool)
        .await?;
        Ok(sqlx::Row::try_get::<i64, _>(&row, 0)?)
    }

    pub async fn event(&self, merchant_id: &str, id: &str) -> Result<Option<EventRow>> {
        self.merchant_row(merchant_id, id).await
    }

    /// An event by id, whoever it belongs to (delivery workers).
    pub async fn event_by_id(&self, id: &str) -> Result<Option<EventRow>> {
        Ok(
            sqlx::query_as::<_, EventRow>("SELECT * FROM events WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The events with these ids, in one query per `EVENTS_PER_QUERY` (delivery workers).
    pub async fn events_by_ids(&self, ids: &[String]) -> Result<Vec<EventRow>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(EVENTS_PER_QUERY) {
            let sql = format!(
                "SELECT * FROM events WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, EventRow>(&sql);
            for id in chunk {
                query = query.bind(id.clone());
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    /// Newest first, `limit` at most, after an optional cursor, filtered.
    pub async fn list_events(&self, merchant_id: &str, f: &EventFilter) -> Result<Vec<EventRow>> {
        let mut list = List::new("events e WHERE e.merchant_id = ?", merchant_id);
        list.and("e.event_type = ?", f.event_type.clone());
        list.and("e.object_id = ?", f.object_id.clone());
        list.and(
            "EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = ?)",
            f.delivery_status.clone(),
        );
        list.fetch(
            &self.pool,
            ("e.created_at", "e.id"),
            f.before.clone(),
            f.limit,
        )
        .await
    }

    pub async fn deliveries(&self, event_id: &str) -> Result<Vec<DeliveryRow>> {
        Ok(sqlx::query_as::<_, DeliveryRow>(
            "SELECT * FROM webhook_deliveries WHERE event_id = $1 ORDER BY created_at, endpoint_id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest `limit` attempts at an event's deliveries (an event sent again and again to
    /// a failing endpoint gathers many), by endpoint and attempt.
    pub async fn attempts(&self, event_id: &str, limit: i64) -> Result<Vec<AttemptRow>> {
        Ok(sqlx::query_as::<_, AttemptRow>(
            "SELECT * FROM (SELECT * FROM webhook_attempts WHERE event_id = $1 \
             ORDER BY at DESC, endpoint_id, attempt DESC LIMIT $2) latest \
             ORDER BY endpoint_id, attempt",
        )
        .bind(event_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// `sql` with its parameters bound: $1 the merchant, $2 now, then the scope's.
fn bind_scope<'q>(
    sql: &'q str,
    merchant_id: &str,
    now: i64,
    scope: &Redeliver,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let query = sqlx::query(sql).bind(merchant_id.to_string()).bind(now);
    match scope {
        Redeliver::Event(id) => query.bind(id.clone()),
        Redeliver::Range {
            created_gte,
            created_lt,
            delivery_status,
        } => {
            let query = query.bind(*created_gte).bind(*created_lt);
            match delivery_status {
                Some(s) => query.bind(s.clone()),
                None => query,
            }
        }
    }
}

/// Which due deliveries a claim may take.
pub(crate) enum ClaimScope {
    All,
    /// All but those of these endpoints (comma-separated ids).
    AllBut(String),
    Endpoint(String),
}

/// Values per row of [`apply_outcomes`]' VALUES list.
const OUTCOME_COLUMNS: usize = 9;

/// Applies each outcome to its delivery when the delivery is still pending under the same
/// claim; the deliveries it applied to, with their attempt counts after it.
async fn apply_outcomes(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    batch: &[&(DeliveryRow, AttemptRow, AttemptOutcome)],
) -> Result<Vec<(String, String, i64)>> {
    // The VALUES list's columns are column1… on both backends; the casts type the parameters.
    let rows: Vec<String> = (0..batch.len())
        .map(|i| {
            let n = |k: usize| i * OUTCOME_COLUMNS + k;
            format!(
                "(CAST(${} AS TEXT), CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS TEXT), \
                 CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), \
                 CAST(${} AS TEXT))",
                n(1), n(2), n(3), n(4), n(5), n(6), n(7), n(8), n(9)
            )
        })
        .collect();
    let sql = format!(
        "UPDATE webhook_deliveries SET status = v.column4, next_attempt_at = v.column5, \
         delivered_at = v.column6, attempts = attempts + 1, round_attempts = round_attempts + 1, \
         claimed_until = NULL, last_attempt_at = v.column7, last_status_code = v.column8, \
         last_error = v.column9 FROM (VALUES {}) AS v \
         WHERE webhook_deliveries.event_id = v.column1 AND webhook_deliveries.endpoint_id = v.column2 \
         AND webhook_deliveries.claimed_until = v.column3 AND webhook_deliveries.status = 'pending' \
         RETURNING webhook_deliveries.event_id, webhook_deliveries.endpoint_id, webhook_deliveries.attempts",
        rows.join(", ")
    );
    let mut query = sqlx::query_as::<_, (String, String, i64)>(&sql);
    for (d, attempt, outcome) in batch.iter().copied() {
        let (status, next_at, delivered_at) = match *outcome {
            AttemptOutcome::Delivered => ("delivered", None, Some(attempt.at)),
            AttemptOutcome::Retry { next_at } => ("pending", Some(next_at), None),
            AttemptOutcome::Dead => ("dead", None, None),
        };
        query = query
            .bind(&d.event_id)
            .bind(&d.endpoint_id)
            .bind(d.claimed_until)
            .bind(status)
            .bind(next_at)
            .bind(delivered_at)
            .bind(attempt.at)
            .bind(attempt.status_code)
            .bind(&attempt.error);
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

/// Values per row of [`log_attempts`]' VALUES list.
const ATTEMPT_COLUMNS: usize = 7;

/// Writes the attempt log's rows, each with its delivery's attempt number.
async fn log_attempts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    logged: &[(&AttemptRow, i64)],
) -> Result<()> {
    let rows: Vec<String> = (0..logged.len())
        .map(|i| {
            let n = |k: usize| i * ATTEMPT_COLUMNS + k;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                n(1),
                n(2),
                n(3),
                n(4),
                n(5),
                n(6),
                n(7)
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO webhook_attempts (event_id, endpoint_id, attempt, at, status_code, latency_ms, error) \
         VALUES {}",
        rows.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for (a, number) in logged {
        query = query
            .bind(&a.event_id)
            .bind(&a.endpoint_id)
            .bind(*number)
            .bind(a.at)
            .bind(a.status_code)
            .bind(a.latency_ms)
            .bind(&a.error);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
