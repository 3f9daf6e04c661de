//! What operators watch, counted from the database: payments by status and integration, the
//! webhook backlog and its oldest delivery, the status-sync backlog; and the connection pools'
//! use.

use super::*;

impl Store {
    /// The figures of `/metrics` as they are at `now` (Unix ms).
    pub async fn ops_snapshot(&self, now: i64) -> Result<OpsSnapshot> {
        let payments: Vec<(String, String, i64)> = sqlx::query_as(crate::counts::COUNTS_SQL)
            .fetch_all(&self.pool)
            .await?;
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT), MIN(created_at) FROM webhook_deliveries \
             WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        let (sync_due,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM payments WHERE status = 'pending' \
             AND sync_due_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(OpsSnapshot {
            payments,
            deliveries_pending: pending,
            oldest_delivery_ms: oldest.map_or(0, |t| (now - t).max(0)),
            sync_due,
            pools: self.pool_use(),
        })
    }

    /// Whether the PostgreSQL server runs without autovacuum (never on SQLite). Without it
    /// the tables have no statistics and keep their dead rows: each status sync leaves a dead
    /// entry in the index of pending payments, which every later claim walks past
    /// (docs/BENCHMARKS.md).
    pub async fn autovacuum_off(&self) -> Result<bool> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        let (setting,): (String,) = sqlx::query_as("SELECT current_setting('autovacuum')")
            .fetch_one(&self.pool)
            .await?;
        Ok(setting == "off")
    }

    /// Each connection pool's use now: on SQLite the readers' and the one writer's, on
    /// PostgreSQL the one shared pool.
    pub fn pool_use(&self) -> Vec<PoolUse> {
        let of = |name, pool: &AnyPool| PoolUse {
            name,
            open: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        };
        match &self.sole {
            // The writer's one connection is held by the store; it is idle while nobody writes.
            Some(sole) => vec![
                of("reads", &self.pool),
                PoolUse {
                    name: "writer",
                    open: 1,
                    idle: u32::from(sole.try_lock().is_ok()),
                    max: 1,
                },
            ],
            None => vec![of("shared", &self.pool)],
        }
    }
}
