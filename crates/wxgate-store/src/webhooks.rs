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

    pub async fn insert_webhook_endpoint(&self, e: &WebhookEndpointRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, events, secret_id, secret_sealed, created_at, deleted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(&e.id)
        .bind(&e.merchant_id)
        .bind(&e.url)
        .bind(&e.events)
        .bind(&e.secret_id)
        .bind(&e.secret_sealed)
        .bind(e.created_at)
        .execute(&self.writer)
        .await?;
        Ok(())
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
        .execute(&self.writer)
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
        .execute(&self.writer)
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
        let mut tx = self.writer.begin().await?;
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
        let lock = self.skip_locked();
        let skip_clause = if skip.is_empty() {
            ""
        } else {
            " AND ',' || $4 || ',' NOT LIKE '%,' || endpoint_id || ',%'"
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET claimed_until = $1 WHERE (event_id, endpoint_id) IN \
             (SELECT event_id, endpoint_id FROM webhook_deliveries WHERE next_attempt_at <= $2 \
             AND (claimed_until IS NULL OR claimed_until < $2){skip_clause} \
             ORDER BY next_attempt_at LIMIT $3{lock}) RETURNING *"
        );
        let mut query = sqlx::query_as::<_, DeliveryRow>(&sql)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit);
        if !skip.is_empty() {
            query = query.bind(skip.join(","));
        }
        Ok(query.fetch_all(&self.writer).await?)
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
        .execute(&self.writer)
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
        let (status, next_at, delivered_at) = match outcome {
            AttemptOutcome::Delivered => ("delivered", None, Some(attempt.at)),
            AttemptOutcome::Retry { next_at } => ("pending", Some(next_at), None),
            AttemptOutcome::Dead => ("dead", None, None),
        };
        let mut tx = self.writer.begin().await?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, delivered_at = $3, \
             attempts = attempts + 1, round_attempts = round_attempts + 1, claimed_until = NULL, \
             last_attempt_at = $4, last_status_code = $5, last_error = $6 \
             WHERE event_id = $7 AND endpoint_id = $8 AND claimed_until = $9 AND status = 'pending'",
        )
        .bind(status)
        .bind(next_at)
        .bind(delivered_at)
        .bind(attempt.at)
        .bind(attempt.status_code)
        .bind(&attempt.error)
        .bind(&d.event_id)
        .bind(&d.endpoint_id)
        .bind(d.claimed_until)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (event_id, endpoint_id, attempt, at, status_code, latency_ms, error) \
             SELECT event_id, endpoint_id, attempts, $1, $2, $3, $4 FROM webhook_deliveries \
             WHERE event_id = $5 AND endpoint_id = $6",
        )
        .bind(attempt.at)
        .bind(attempt.status_code)
        .bind(attempt.latency_ms)
        .bind(&attempt.error)
        .bind(&d.event_id)
        .bind(&d.endpoint_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.activity_changed();
        Ok(true)
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
        let mut tx = self.writer.begin().await?;
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
        Ok(
            sqlx::query_as::<_, EventRow>(
                "SELECT * FROM events WHERE merchant_id = $1 AND id = $2",
            )
            .bind(merchant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?,
        )
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

    pub async fn attempts(&self, event_id: &str) -> Result<Vec<AttemptRow>> {
        Ok(sqlx::query_as::<_, AttemptRow>(
            "SELECT * FROM webhook_attempts WHERE event_id = $1 ORDER BY endpoint_id, attempt",
        )
        .bind(event_id)
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
