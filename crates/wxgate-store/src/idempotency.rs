//! Idempotency keys: the first answer to a request, replayed for its retries.

use super::*;

impl Store {
    /// Starts an idempotent request, or tells the caller to replay, wait, or refuse.
    pub async fn begin_idempotent(
        &self,
        merchant_id: &str,
        key: &str,
        request_hash: &str,
        now: i64,
    ) -> Result<IdempotencyStart> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (merchant_id, idempotency_key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(merchant_id)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(&mut *self.write().await?)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(IdempotencyStart::Started);
        }
        // A first request that never finished (the process died, the client went away) does not
        // hold its key for ever: after the lock time the same request may take it over.
        let taken_over = sqlx::query(
            "UPDATE idempotency_keys SET created_at = $1 WHERE merchant_id = $2 AND idempotency_key = $3 \
             AND request_hash = $4 AND status_code IS NULL AND created_at < $5",
        )
        .bind(now)
        .bind(merchant_id)
        .bind(key)
        .bind(request_hash)
        .bind(now - IDEMPOTENCY_LOCK_MS)
        .execute(&mut *self.write().await?)
        .await?;
        if taken_over.rows_affected() == 1 {
            return Ok(IdempotencyStart::Started);
        }
        let row = sqlx::query(
            "SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2",
        )
        .bind(merchant_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            // Abandoned between our insert and read: the caller may try again.
            return Ok(IdempotencyStart::InProgress);
        };
        let stored_hash: String = row.try_get(0)?;
        if stored_hash != request_hash {
            return Ok(IdempotencyStart::Mismatch);
        }
        let status: Option<i64> = row.try_get(1)?;
        let body: Option<String> = row.try_get(2)?;
        Ok(match (status, body) {
            (Some(status), Some(body)) => IdempotencyStart::Replay {
                status: status as u16,
                body,
            },
            _ => IdempotencyStart::InProgress,
        })
    }

    pub async fn finish_idempotent(
        &self,
        merchant_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET status_code = $1, response_body = $2 WHERE merchant_id = $3 AND idempotency_key = $4",
        )
        .bind(status as i64)
        .bind(body)
        .bind(merchant_id)
        .bind(key)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// The answer stored under a key, as stored (`None` while the request runs, or for no key).
    pub async fn idempotent_answer(&self, merchant_id: &str, key: &str) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT response_body FROM idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2",
        )
        .bind(merchant_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(body,)| body))
    }

    /// Forgets up to `IDEMPOTENCY_PURGE_BATCH` keys made before `before`, oldest first, in
    /// one statement: how many. (The caller repeats while a whole batch goes, so a large
    /// backlog never holds the writer long.)
    pub async fn purge_idempotency_keys(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM idempotency_keys WHERE (merchant_id, idempotency_key) IN \
             (SELECT merchant_id, idempotency_key FROM idempotency_keys WHERE created_at < $1 \
             ORDER BY created_at LIMIT $2)",
        )
        .bind(before)
        .bind(IDEMPOTENCY_PURGE_BATCH)
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected())
    }

    /// Forgets a key whose request failed in a way the merchant may retry.
    pub async fn abandon_idempotent(&self, merchant_id: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2 AND status_code IS NULL")
            .bind(merchant_id)
            .bind(key)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }
}
