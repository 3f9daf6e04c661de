//! Fresh databases for tests, on either backend: SQLite in a temporary folder always;
//! PostgreSQL when `WXGATE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! is reachable. With `WXGATE_REQUIRE_POSTGRES=1` (CI) an unreachable PostgreSQL is an error
//! instead of a visible skip.

use crate::{Backend, Store};

/// A database made for one test; [`TestDatabase::cleanup`] drops it.
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    dir: Option<std::path::PathBuf>,
    admin: Option<(String, String)>,
}

impl TestDatabase {
    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url).await.expect("test database");
        store.migrate().await.expect("migrations");
        store
    }

    /// Ends every server connection to this database, as a server restart would (PostgreSQL;
    /// nothing on SQLite): the store's pooled connections are left broken.
    pub async fn drop_connections(&self) {
        let Some((admin_url, name)) = &self.admin else {
            return;
        };
        let admin = Store::connect(admin_url).await.expect("admin connection");
        admin
            .execute_raw(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .await
            .expect("pg_terminate_backend");
        admin.close().await;
    }

    pub async fn cleanup(self) {
        if let Some((admin_url, name)) = self.admin {
            if let Ok(admin) = Store::connect(&admin_url).await {
                let _ = admin
                    .execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                admin.close().await;
            }
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub fn sqlite() -> TestDatabase {
    let dir = std::env::temp_dir().join(format!("wxgate-test-{:x}", unique()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    TestDatabase {
        url: format!("sqlite://{}", dir.join("wxgate.db").display()),
        backend: Backend::Sqlite,
        dir: Some(dir),
        admin: None,
    }
}

/// A fresh PostgreSQL database, or `None` (with a message) when none is reachable.
pub async fn postgres() -> Option<TestDatabase> {
    let admin_url = std::env::var("WXGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let required = std::env::var("WXGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let admin = match Store::connect(&admin_url).await {
        Ok(a) => a,
        Err(e) if !required => {
            eprintln!(
                "SKIPPED the PostgreSQL half of this test: {admin_url} is not reachable ({e})"
            );
            return None;
        }
        Err(e) => panic!("PostgreSQL is required but {admin_url} is not reachable: {e}"),
    };
    let name = format!("wxgate_test_{:x}", unique());
    admin
        .execute_raw(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    admin.close().await;
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a database URL with a path");
    Some(TestDatabase {
        url: format!("{base}/{name}"),
        backend: Backend::Postgres,
        dir: None,
        admin: Some((admin_url, name)),
    })
}

/// SQLite, and PostgreSQL when available.
pub async fn all() -> Vec<TestDatabase> {
    let mut dbs = vec![sqlite()];
    dbs.extend(postgres().await);
    dbs
}

/// A paid payment (and maybe its succeeded refund) to load in bulk.
#[derive(Debug, Clone)]
pub struct SeedPayment {
    pub out_trade_no: String,
    pub transaction_id: String,
    pub amount: i64,
    /// Unix milliseconds.
    pub paid_at: i64,
    /// (out_refund_no, amount, Unix milliseconds).
    pub refund: Option<(String, i64, i64)>,
}

/// Every table whose rows the store looks up one at a time by id, for a merchant, with its
/// lookup (`Store::merchant_row`, and `Store::payment` for payments).
pub use crate::by_id::BY_ID;

impl Store {
    /// Removes the record of one applied migration (its tables stay), so the schema reads as
    /// behind this binary: for tests of what refuses such a database.
    pub async fn forget_migration_for_test(&self, version: i64) -> crate::Result<()> {
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
            .bind(version)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    /// Drops `table`: with `forget_migration_for_test`, a database as it was before the
    /// migration that made it.
    pub async fn drop_table_for_test(&self, table: &str) -> crate::Result<()> {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    /// Payments by status and integration counted from their rows, as `ops_snapshot` gives
    /// them from the counts the writes keep (ordered, none zero): the two must agree.
    pub async fn payment_counts_from_rows(&self) -> crate::Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT status, integration, CAST(COUNT(*) AS BIGINT) FROM payments \
             GROUP BY status, integration ORDER BY status, integration",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// How the database plans each background claim (payments, refunds, payouts, then
    /// webhook deliveries: all, all but some endpoints', one endpoint's), one step a line:
    /// see [`Store::plan_for_test`].
    pub async fn claim_plans_for_test(&self) -> crate::Result<[String; 6]> {
        use crate::webhooks::ClaimScope;
        let claim = || vec![2_i64.into(), 1_i64.into(), 2_i64.into()];
        let scoped = || vec![2_i64.into(), 1_i64.into(), 2_i64.into(), "we_1".into()];
        let deliveries = |scope| self.claim_deliveries_sql(&scope);
        Ok([
            self.plan_for_test(&self.claim_due_syncs_sql(), claim())
                .await?,
            self.plan_for_test(&self.claim_due_refunds_sql(), claim())
                .await?,
            self.plan_for_test(&self.claim_due_payouts_sql(), claim())
                .await?,
            self.plan_for_test(&deliveries(ClaimScope::All), claim())
                .await?,
            self.plan_for_test(&deliveries(ClaimScope::AllBut("we_1".into())), scoped())
                .await?,
            self.plan_for_test(&deliveries(ClaimScope::Endpoint("we_1".into())), scoped())
                .await?,
        ])
    }

    /// How the database plans the lookups of one row by its key: a payment's detail, an
    /// attempt's credential, the payment's credential, then one row by its id from each of
    /// [`BY_ID`]'s tables, in that order.
    pub async fn lookup_plans_for_test(&self) -> crate::Result<Vec<String>> {
        let credential = || vec!["c".into(), 1_i64.into(), "k".into(), "o".into()];
        let id = || vec!["id_1".into()];
        let mut plans = vec![
            self.plan_for_test(self.detail_sql(), id()).await?,
            self.plan_for_test(crate::attempts::ATTEMPT_CREDENTIAL_SQL, credential())
                .await?,
            self.plan_for_test(crate::attempts::PAYMENT_CREDENTIAL_SQL, {
                let mut values = credential();
                values.push("m".into());
                values
            })
            .await?,
        ];
        for (_, sql) in BY_ID {
            plans.push(self.plan_for_test(sql, id()).await?);
        }
        Ok(plans)
    }

    /// How the database plans the sweep of orders paid payments left open.
    pub async fn left_open_plan_for_test(&self) -> crate::Result<String> {
        let values = vec![1_i64.into(), 0_i64.into(), "".into(), 64_i64.into()];
        self.plan_for_test(crate::attempts::LEFT_OPEN_SQL, values)
            .await
    }

    /// How the database plans `sql`, one step a line. SQLite: `EXPLAIN QUERY PLAN` with
    /// `values` bound. PostgreSQL: the generic plan, the one a pooled connection keeps for a
    /// statement it has prepared once it has run it a few times; on a new database its tables
    /// have neither rows nor statistics, where a wrong choice costs nothing yet and is kept.
    async fn plan_for_test(
        &self,
        sql: &str,
        values: Vec<crate::batch::Value>,
    ) -> crate::Result<String> {
        let mut conn = self.pool.acquire().await?;
        let (rows, column) = match self.backend {
            crate::Backend::Sqlite => {
                let explained = format!("EXPLAIN QUERY PLAN {sql}");
                let query = sqlx::query_with(&explained, crate::batch::arguments(values)?);
                (query.fetch_all(&mut *conn).await, 3)
            }
            crate::Backend::Postgres => {
                let nulls = vec!["NULL"; values.len()].join(", ");
                let setup = format!(
                    "SET plan_cache_mode = force_generic_plan; PREPARE plan_probe AS {sql}"
                );
                sqlx::raw_sql(&setup).execute(&mut *conn).await?;
                let explained = format!("EXPLAIN EXECUTE plan_probe({nulls})");
                (sqlx::query(&explained).fetch_all(&mut *conn).await, 0)
            }
        };
        // Not given back to the pool: it plans unlike the others now.
        conn.detach();
        let steps = rows?
            .iter()
            .map(|row| sqlx::Row::try_get::<String, _>(row, column))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(steps.join("\n"))
    }

    /// Loads a merchant's history of paid payments and succeeded refunds in one transaction,
    /// for load tests of what reads them (reconciliation); the ledger is not posted.
    pub async fn seed_paid_payments(
        &self,
        merchant_id: &str,
        seeds: &[SeedPayment],
    ) -> crate::Result<()> {
        use crate::{PaymentAttemptRow, PaymentRow};
        use wxgate_domain::payment::AttemptStatus;
        use wxgate_domain::{Integration, PaymentIntegration, PaymentStatus};
        let mut writing = self.write().await?;
        let mut tx = writing.begin().await?;
        for s in seeds {
            let id = wxgate_domain::id::PaymentId::generate().to_string();
            let payment = PaymentRow {
                id: id.clone(),
                merchant_id: merchant_id.to_string(),
                merchant_order_id: s.out_trade_no.clone(),
                out_trade_no: s.out_trade_no.clone(),
                amount: s.amount,
                currency: "CNY".into(),
                description: "seeded".into(),
                integration: PaymentIntegration::Product(Integration::Native),
                status: PaymentStatus::Succeeded,
                version: 2,
                metadata: "{}".into(),
                transaction_id: Some(s.transaction_id.clone()),
                paid_at: Some(s.paid_at),
                expires_at: s.paid_at + 7_200_000,
                created_at: s.paid_at,
                updated_at: s.paid_at,
                ..PaymentRow::default()
            };
            crate::payments::insert_payment_row(&mut tx, &payment).await?;
            let attempt = PaymentAttemptRow {
                merchant_id: merchant_id.to_string(),
                out_trade_no: s.out_trade_no.clone(),
                payment_id: id.clone(),
                seq: 1,
                integration: Integration::Native,
                status: AttemptStatus::Succeeded,
                wechat_credential: None,
                transaction_id: Some(s.transaction_id.clone()),
                created_at: s.paid_at,
                updated_at: s.paid_at,
            };
            crate::payments::insert_attempt(&mut tx, &attempt).await?;
            if let Some((out_refund_no, amount, at)) = &s.refund {
                sqlx::query(
                    "INSERT INTO refunds (id, merchant_id, payment_id, merchant_refund_id, out_refund_no, \
                     amount, currency, status, version, fingerprint, submitted, created_at, updated_at, \
                     succeeded_at, sync_attempts, submitted_at) \
                     VALUES ($1, $2, $3, $4, $4, $5, 'CNY', 'succeeded', 2, '', 1, $6, $6, $6, 0, $6)",
                )
                .bind(wxgate_domain::id::RefundId::generate().to_string())
                .bind(merchant_id)
                .bind(&id)
                .bind(out_refund_no)
                .bind(amount)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
