//! Payment links: permanent URLs whose Pay button makes a new payment each time.

use crate::{PaymentLinkRow, PaymentRow, Result, Store};

impl Store {
    pub async fn insert_payment_link(&self, l: &PaymentLinkRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO payment_links (id, merchant_id, token, url, currency, amount, amount_min, amount_max, \
             description, return_url, max_uses, uses, expires_at, active, created_at, merchant_reference) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&l.id)
        .bind(&l.merchant_id)
        .bind(&l.token)
        .bind(&l.url)
        .bind(&l.currency)
        .bind(l.amount)
        .bind(l.amount_min)
        .bind(l.amount_max)
        .bind(&l.description)
        .bind(&l.return_url)
        .bind(l.max_uses)
        .bind(l.uses)
        .bind(l.expires_at)
        .bind(l.active.stored())
        .bind(l.created_at)
        .bind(&l.merchant_reference)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    pub async fn payment_link(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> Result<Option<PaymentLinkRow>> {
        self.merchant_row(merchant_id, id).await
    }

    /// The merchant's link with this reference.
    pub async fn payment_link_by_reference(
        &self,
        merchant_id: &str,
        reference: &str,
    ) -> Result<Option<PaymentLinkRow>> {
        Ok(sqlx::query_as::<_, PaymentLinkRow>(
            "SELECT * FROM payment_links WHERE merchant_id = $1 AND merchant_reference = $2",
        )
        .bind(merchant_id)
        .bind(reference)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn payment_link_by_token(&self, token: &str) -> Result<Option<PaymentLinkRow>> {
        Ok(
            sqlx::query_as::<_, PaymentLinkRow>("SELECT * FROM payment_links WHERE token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The merchant's links, newest first (at most `limit`).
    /// The merchant's links, newest first: `limit` of them, after the link `after` when given
    /// (the cursor is the link's `(created_at, id)`).
    pub async fn payment_links(
        &self,
        merchant_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<PaymentLinkRow>> {
        let (at, id) = after.unwrap_or((i64::MAX, String::new()));
        Ok(sqlx::query_as::<_, PaymentLinkRow>(
            "SELECT * FROM payment_links WHERE merchant_id = $1 \
             AND (created_at < $2 OR (created_at = $2 AND id < $3) OR $4 = 0) \
             ORDER BY created_at DESC, id DESC LIMIT $5",
        )
        .bind(merchant_id)
        .bind(at)
        .bind(id)
        .bind(i64::from(at != i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn deactivate_payment_link(&self, merchant_id: &str, id: &str) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE payment_links SET active = 0 WHERE merchant_id = $1 AND id = $2")
                .bind(merchant_id)
                .bind(id)
                .execute(&mut *self.write().await?)
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// Takes one use of a link, if it is active, not expired and not used up: true if taken.
    pub async fn use_payment_link(&self, id: &str, now: i64) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE payment_links SET uses = uses + 1 WHERE id = $1 AND active = 1 \
             AND (max_uses IS NULL OR uses < max_uses) AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected()
            == 1)
    }

    /// The payments made through a link, newest first.
    /// The payments made through a link, newest first: `limit` of them, after the payment
    /// `after` when given (its `(created_at, id)`).
    pub async fn payments_of_link(
        &self,
        merchant_id: &str,
        link_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<PaymentRow>> {
        let (at, id) = after.unwrap_or((i64::MAX, String::new()));
        Ok(sqlx::query_as::<_, PaymentRow>(
            "SELECT * FROM payments WHERE merchant_id = $1 AND payment_link_id = $2 \
             AND (created_at < $3 OR (created_at = $3 AND id < $4) OR $5 = 0) \
             ORDER BY created_at DESC, id DESC LIMIT $6",
        )
        .bind(merchant_id)
        .bind(link_id)
        .bind(at)
        .bind(id)
        .bind(i64::from(at != i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
