//! Signed WeChat reports that could not be applied, kept for a person to look at.

use super::*;

impl Store {
    pub async fn quarantine(&self, q: &QuarantineRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO quarantined_callbacks (id, merchant_id, payment_id, reason, resource, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&q.id)
        .bind(&q.merchant_id)
        .bind(&q.payment_id)
        .bind(&q.reason)
        .bind(&q.resource)
        .bind(q.received_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Whether a report about this payment waits for a person.
    pub async fn has_quarantined(&self, payment_id: &str) -> Result<bool> {
        let found: Option<(String,)> =
            sqlx::query_as("SELECT id FROM quarantined_callbacks WHERE payment_id = $1 LIMIT 1")
                .bind(payment_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    pub async fn quarantined(&self, merchant_id: &str) -> Result<Vec<QuarantineRow>> {
        Ok(sqlx::query_as::<_, QuarantineRow>(
            "SELECT * FROM quarantined_callbacks WHERE merchant_id = $1 ORDER BY received_at",
        )
        .bind(merchant_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
