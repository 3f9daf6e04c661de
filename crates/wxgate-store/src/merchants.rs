//! Merchants and their API keys.

use super::*;

impl Store {
    pub async fn insert_merchant(&self, m: &MerchantRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO merchants (id, name, mode, mchid, appid, mini_program_appid, api_base_url, merchant_serial_no, \
             secrets_sealed, platform_public_key_id, platform_public_key, platform_certificate, currencies, \
             paid_after_close_policy, created_at, merchant_category_code, fee_rate_bp, settlement_currency) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(&m.id)
        .bind(&m.name)
        .bind(m.mode.as_str())
        .bind(&m.mchid)
        .bind(&m.appid)
        .bind(&m.mini_program_appid)
        .bind(&m.api_base_url)
        .bind(&m.merchant_serial_no)
        .bind(&m.secrets_sealed)
        .bind(&m.platform_public_key_id)
        .bind(&m.platform_public_key)
        .bind(&m.platform_certificate)
        .bind(&m.currencies)
        .bind(m.paid_after_close_policy.as_str())
        .bind(m.created_at)
        .bind(&m.merchant_category_code)
        .bind(m.fee_rate_bp)
        .bind(&m.settlement_currency)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    pub async fn merchant(&self, id: &str) -> Result<Option<MerchantRow>> {
        Ok(
            sqlx::query_as::<_, MerchantRow>("SELECT * FROM merchants WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Makes a merchant cross-border (an MCC) or domestic (`None`), pricing in `currencies`
    /// (comma-separated ISO 4217 codes).
    pub async fn set_merchant_region(
        &self,
        merchant_id: &str,
        currencies: &str,
        merchant_category_code: Option<&str>,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE merchants SET currencies = $1, merchant_category_code = $2 WHERE id = $3",
        )
        .bind(currencies)
        .bind(merchant_category_code)
        .bind(merchant_id)
        .execute(&mut *self.write().await?)
        .await?
        .rows_affected()
            == 1)
    }

    /// The currency WeChat settles the merchant in (`None`: each payment's own).
    pub async fn set_settlement_currency(
        &self,
        merchant_id: &str,
        currency: Option<&str>,
    ) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE merchants SET settlement_currency = $1 WHERE id = $2")
                .bind(currency)
                .bind(merchant_id)
                .execute(&mut *self.write().await?)
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// `accept` or `refund`: what happens to a payment that arrives after its order was closed.
    pub async fn set_paid_after_close_policy(
        &self,
        merchant_id: &str,
        policy: PaidAfterClosePolicy,
    ) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE merchants SET paid_after_close_policy = $1 WHERE id = $2")
                .bind(policy.as_str())
                .bind(merchant_id)
                .execute(&mut *self.write().await?)
                .await?
                .rows_affected()
                == 1,
        )
    }

    pub async fn merchants(&self) -> Result<Vec<MerchantRow>> {
        Ok(
            sqlx::query_as::<_, MerchantRow>("SELECT * FROM merchants ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// A merchant's API keys (never the keys: only their ids and times).
    pub async fn api_keys(&self, merchant_id: &str) -> Result<Vec<ApiKeyRow>> {
        Ok(sqlx::query_as::<_, ApiKeyRow>(
            "SELECT id, merchant_id, created_at, revoked_at FROM api_keys \
             WHERE merchant_id = $1 ORDER BY created_at, id",
        )
        .bind(merchant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn insert_api_key(
        &self,
        id: &str,
        merchant_id: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, merchant_id, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(merchant_id)
        .bind(key_hash)
        .bind(now)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// The merchant that owns an unrevoked key with this hash.
    pub async fn merchant_for_key_hash(&self, key_hash: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT merchant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Revokes a key; false when there was no such unrevoked key.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut *self.write().await?)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
