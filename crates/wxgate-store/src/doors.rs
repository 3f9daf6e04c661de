//! Front doors' credentials (their secrets sealed) and the tokens they issue (hashed).

use super::*;

impl Store {
    pub async fn insert_door_credential(&self, c: &DoorCredentialRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO door_credentials (door, key_id, merchant_id, secret_sealed, created_at, \
             revoked_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&c.door)
        .bind(&c.key_id)
        .bind(&c.merchant_id)
        .bind(&c.secret_sealed)
        .bind(c.created_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// The active credential a door's caller names.
    pub async fn door_credential(
        &self,
        door: &str,
        key_id: &str,
    ) -> Result<Option<DoorCredentialRow>> {
        Ok(sqlx::query_as::<_, DoorCredentialRow>(
            "SELECT * FROM door_credentials WHERE door = $1 AND key_id = $2 AND revoked_at IS NULL",
        )
        .bind(door)
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A merchant's newest active credential for a door (what signs its notifications).
    pub async fn door_credential_of(
        &self,
        door: &str,
        merchant_id: &str,
    ) -> Result<Option<DoorCredentialRow>> {
        Ok(sqlx::query_as::<_, DoorCredentialRow>(
            "SELECT * FROM door_credentials WHERE door = $1 AND merchant_id = $2 \
             AND revoked_at IS NULL ORDER BY created_at DESC, key_id LIMIT 1",
        )
        .bind(door)
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Revokes a door's credential, in one transaction with the merchant's tokens and sessions
    /// of that door (a token does not say which credential issued it, so all of them end; the
    /// door's callers log in again with a credential still active). False when no active
    /// credential has the id.
    pub async fn revoke_door_credential(&self, door: &str, key_id: &str, now: i64) -> Result<bool> {
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        let revoked: Option<(String,)> = sqlx::query_as(
            "UPDATE door_credentials SET revoked_at = $1 WHERE door = $2 AND key_id = $3 \
             AND revoked_at IS NULL RETURNING merchant_id",
        )
        .bind(now)
        .bind(door)
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((merchant_id,)) = revoked else {
            tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query("DELETE FROM door_tokens WHERE door = $1 AND merchant_id = $2")
            .bind(door)
            .bind(&merchant_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Keeps a token a door issued (its hash), until `expires_at`.
    pub async fn insert_door_token(
        &self,
        token_hash: &str,
        door: &str,
        merchant_id: &str,
        (now, expires_at): (i64, i64),
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO door_tokens (token_hash, door, merchant_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(door)
        .bind(merchant_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *self.write().await?)
        .await?;
        Ok(())
    }

    /// Forgets the tokens that have expired: how many.
    pub async fn purge_expired_door_tokens(&self, now: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM door_tokens WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *self.write().await?)
                .await?
                .rows_affected(),
        )
    }

    /// The merchant behind a live token of a door.
    pub async fn door_token_merchant(
        &self,
        door: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT merchant_id FROM door_tokens WHERE token_hash = $1 AND door = $2 \
             AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(door)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }
}
