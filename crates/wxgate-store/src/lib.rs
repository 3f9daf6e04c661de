//! wxgate's storage. One [`Store`] runs on SQLite (the embedded default, in WAL mode) or on
//! PostgreSQL (scale-out), chosen by the database URL. The schema is portable SQL, so one
//! implementation and one test suite serve both; where the two differ (claiming background
//! work) the store picks the statement for its backend.
//!
//! Invariants kept here:
//! - A payment's status changes, its history row and its outbox event commit in one
//!   transaction, and the change is conditional on the status and version read, so two
//!   writers can never both apply a transition.
//! - Background work is claimed with a lease (`claimed_until`); on PostgreSQL with
//!   `FOR UPDATE SKIP LOCKED`, so many nodes share it without taking the same row.

mod attempts;
mod links;
mod refunds;
mod rows;
pub mod testing;
mod webhooks;

pub use rows::*;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};
use wxgate_domain::PaidAfterClosePolicy;
use wxgate_domain::payment::{self, AttemptStatus, PaymentEvent, PaymentStatus, Transition};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL (use sqlite://… or postgres://…)")]
    UnsupportedUrl,
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Transition(#[from] payment::TransitionError),
    #[error("{0}")]
    RefundTransition(#[from] wxgate_domain::refund::RefundTransitionError),
    #[error("payment {0} not found")]
    PaymentNotFound(String),
}

impl StoreError {
    /// The database could not be reached or was too busy: worth a 503, not a 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
            )
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where the schema stands against the migrations this binary carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    UpToDate,
    /// Migrations this binary has that the database lacks.
    Behind {
        missing: Vec<i64>,
    },
    /// Migrations the database has that this binary does not know: a newer binary wrote it.
    Ahead {
        unknown: Vec<i64>,
    },
}

#[derive(Clone)]
pub struct Store {
    /// Reads.
    pool: AnyPool,
    /// Writes: on SQLite one connection, so writers queue instead of fighting for the lock; on
    /// PostgreSQL the same pool as reads.
    writer: AnyPool,
    backend: Backend,
    /// Woken whenever this process writes an event, so delivery need not wait for its poll.
    outbox: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// How long an unfinished idempotent request holds its key before a retry may take it over.
pub const IDEMPOTENCY_LOCK_MS: i64 = 60_000;

/// How long a claim on background work lasts before another node may take it over.
pub const CLAIM_LEASE_MS: i64 = 60_000;

impl Store {
    /// Connects to `sqlite://PATH` (created if missing, WAL) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let open = |connections: u32| {
            AnyPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(5))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers run beside the one writer; waiting beats failing.
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 5000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let (pool, writer) = match backend {
            // SQLite has one writer at a time. Writers queued on one connection take turns in
            // order; several connections would contend for the lock and back off in sleeps.
            Backend::Sqlite => {
                let writer = open(1).await?;
                (open(4).await?, writer)
            }
            Backend::Postgres => {
                let pool = open(16).await?;
                (pool.clone(), pool)
            }
        };
        Ok(Self {
            pool,
            writer,
            backend,
            outbox: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How a claim's inner SELECT locks its rows: on PostgreSQL it skips rows another node is
    /// claiming; SQLite has one writer, so there is nothing to skip.
    fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// Runs one statement as is (administration and tests: `CREATE DATABASE`, ...).
    pub async fn execute_raw(&self, sql: &str) -> Result<()> {
        sqlx::raw_sql(sql).execute(&self.writer).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// Applies every migration this binary carries.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    /// Compares the database's applied migrations with this binary's.
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        let applied: Vec<i64> = match sqlx::query(
            "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(rows) => rows
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()?,
            Err(sqlx::Error::Database(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let unknown: Vec<i64> = applied
            .iter()
            .copied()
            .filter(|v| !known.contains(v))
            .collect();
        if !unknown.is_empty() {
            return Ok(SchemaStatus::Ahead { unknown });
        }
        let missing: Vec<i64> = known
            .iter()
            .copied()
            .filter(|v| !applied.contains(v))
            .collect();
        if !missing.is_empty() {
            return Ok(SchemaStatus::Behind { missing });
        }
        Ok(SchemaStatus::UpToDate)
    }

    // ---- merchants and API keys ----

    pub async fn insert_merchant(&self, m: &MerchantRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO merchants (id, name, mode, mchid, appid, mini_program_appid, api_base_url, merchant_serial_no, \
             secrets_sealed, platform_public_key_id, platform_public_key, platform_certificate, currencies, \
             paid_after_close_policy, created_at, merchant_category_code) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
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
        .execute(&self.writer)
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
        .execute(&self.writer)
        .await?
        .rows_affected()
            == 1)
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
                .execute(&self.writer)
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
        .execute(&self.writer)
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
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- payments ----

    /// Inserts a new payment with its first history row; if the merchant already has a payment
    /// with this `merchant_order_id`, returns that one instead.
    pub async fn insert_payment(&self, p: &PaymentRow) -> Result<InsertOutcome> {
        check_money(p)?;
        let mut tx = self.writer.begin().await?;
        let inserted = insert_payment_row(&mut tx, p).await?;
        if inserted == 0 {
            tx.rollback().await?;
            return match self
                .payment_by_order_id(&p.merchant_id, &p.merchant_order_id)
                .await?
            {
                Some(existing) => Ok(InsertOutcome::Existing(Box::new(existing))),
                None => Err(StoreError::Corrupt(format!(
                    "payment {} conflicts but is not there",
                    p.id
                ))),
            };
        }
        // A payment that knows its product has its first WeChat order from the start; a hosted
        // one gets it when its page first opens.
        if let Some(integration) = p.integration.product() {
            let first = PaymentAttemptRow {
                merchant_id: p.merchant_id.clone(),
                out_trade_no: p.out_trade_no.clone(),
                payment_id: p.id.clone(),
                seq: 1,
                integration,
                status: AttemptStatus::Open,
                wechat_credential: None,
                transaction_id: None,
                created_at: p.created_at,
                updated_at: p.created_at,
            };
            insert_attempt(&mut tx, &first).await?;
        }
        sqlx::query("INSERT INTO payment_status_history (payment_id, version, status, source, at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&p.id)
            .bind(p.version)
            .bind(p.status.as_str())
            .bind("created")
            .bind(p.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(InsertOutcome::Inserted)
    }

    pub async fn payment(&self, merchant_id: &str, id: &str) -> Result<Option<PaymentRow>> {
        let p = sqlx::query_as::<_, PaymentRow>(
            "SELECT * FROM payments WHERE merchant_id = $1 AND id = $2",
        )
        .bind(merchant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        p.as_ref().map(check_money).transpose()?;
        Ok(p)
    }

    pub async fn payment_by_order_id(
        &self,
        merchant_id: &str,
        merchant_order_id: &str,
    ) -> Result<Option<PaymentRow>> {
        Ok(sqlx::query_as::<_, PaymentRow>(
            "SELECT * FROM payments WHERE merchant_id = $1 AND merchant_order_id = $2",
        )
        .bind(merchant_id)
        .bind(merchant_order_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn payment_by_out_trade_no(
        &self,
        merchant_id: &str,
        out_trade_no: &str,
    ) -> Result<Option<PaymentRow>> {
        // Any attempt's order leads to its payment.
        Ok(sqlx::query_as::<_, PaymentRow>(
            "SELECT p.* FROM payment_attempts a JOIN payments p ON p.id = a.payment_id \
             WHERE a.merchant_id = $1 AND a.out_trade_no = $2",
        )
        .bind(merchant_id)
        .bind(out_trade_no)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Newest first, `limit` at most, optionally after a cursor (a payment id from a previous
    /// page), filtered by status and creation time.
    pub async fn list_payments(
        &self,
        merchant_id: &str,
        filter: &PaymentFilter,
    ) -> Result<Vec<PaymentRow>> {
        let mut sql = String::from("SELECT * FROM payments WHERE merchant_id = $1");
        let mut n = 1;
        let mut next = |clause: &str, sql: &mut String| {
            n += 1;
            sql.push_str(&clause.replace('?', &format!("${n}")));
        };
        if filter.status.is_some() {
            next(" AND status = ?", &mut sql);
        }
        if filter.created_gte.is_some() {
            next(" AND created_at >= ?", &mut sql);
        }
        if filter.created_lt.is_some() {
            next(" AND created_at < ?", &mut sql);
        }
        if filter.before.is_some() {
            next(" AND (created_at, id) < (?, ", &mut sql);
            next("?)", &mut sql);
        }
        next(" ORDER BY created_at DESC, id DESC LIMIT ?", &mut sql);
        let mut query = sqlx::query_as::<_, PaymentRow>(&sql).bind(merchant_id);
        if let Some(s) = &filter.status {
            query = query.bind(s.as_str());
        }
        if let Some(t) = filter.created_gte {
            query = query.bind(t);
        }
        if let Some(t) = filter.created_lt {
            query = query.bind(t);
        }
        if let Some((t, id)) = &filter.before {
            query = query.bind(*t).bind(id.clone());
        }
        Ok(query.bind(filter.limit).fetch_all(&self.pool).await?)
    }

    /// The payment behind a checkout token.
    pub async fn payment_by_checkout_token(&self, token: &str) -> Result<Option<PaymentRow>> {
        Ok(
            sqlx::query_as::<_, PaymentRow>("SELECT * FROM payments WHERE checkout_token = $1")
                .bind(token)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records the payer's openid, learnt by the hosted checkout, if none is recorded yet.
    pub async fn set_payer_openid(&self, id: &str, openid: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE payments SET payer_openid = $1, updated_at = $2 WHERE id = $3 AND payer_openid IS NULL",
        )
        .bind(openid)
        .bind(now)
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Applies `event` to a payment: the status change, its history row and its outbox event
    /// (payload rendered by `render` from the row after the change) commit together, and only
    /// if nobody changed the payment in between (else it re-reads and tries again).
    pub async fn transition(
        &self,
        merchant_id: &str,
        payment_id: &str,
        event: PaymentEvent,
        facts: &TransitionFacts,
        render: impl Fn(&PaymentRow) -> (String, String) + Sync,
    ) -> Result<TransitionOutcome> {
        for _ in 0..8 {
            let current = self
                .payment(merchant_id, payment_id)
                .await?
                .ok_or_else(|| StoreError::PaymentNotFound(payment_id.to_string()))?;
            let from = current.status;
            let to = match payment::apply(from, event)? {
                Transition::Unchanged => return Ok(TransitionOutcome::Unchanged(current)),
                Transition::To(to) => to,
            };
            let mut tx = self.writer.begin().await?;
            let Some(after) =
                write_payment_transition(&mut tx, &current, to, facts, &render).await?
            else {
                tx.rollback().await?;
                continue;
            };
            tx.commit().await?;
            if Transition::event_type(to).is_some() {
                self.outbox.notify_one();
            }
            return Ok(TransitionOutcome::Changed {
                from,
                payment: after,
            });
        }
        Err(StoreError::Corrupt(format!(
            "payment {payment_id} kept changing under a transition"
        )))
    }

    /// A payment and its status history in one round trip (the read path).
    pub async fn payment_with_history(
        &self,
        merchant_id: &str,
        id: &str,
    ) -> Result<Option<(PaymentRow, Vec<HistoryRow>)>> {
        let rows = sqlx::query(
            "SELECT p.*, h.status AS h_status, h.source AS h_source, h.at AS h_at \
             FROM payments p JOIN payment_status_history h ON h.payment_id = p.id \
             WHERE p.merchant_id = $1 AND p.id = $2 ORDER BY h.version",
        )
        .bind(merchant_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let payment = <PaymentRow as sqlx::FromRow<'_, sqlx::any::AnyRow>>::from_row(first)?;
        let history = rows
            .iter()
            .map(|r| {
                let status: String = r.try_get("h_status")?;
                Ok(HistoryRow {
                    status: PaymentStatus::try_from(status).map_err(StoreError::Corrupt)?,
                    source: r.try_get("h_source")?,
                    at: r.try_get("h_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((payment, history)))
    }

    pub async fn history(&self, payment_id: &str) -> Result<Vec<HistoryRow>> {
        Ok(sqlx::query_as::<_, HistoryRow>(
            "SELECT status, source, at FROM payment_status_history WHERE payment_id = $1 ORDER BY version",
        )
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn events_for(&self, merchant_id: &str, object_id: &str) -> Result<Vec<EventRow>> {
        Ok(sqlx::query_as::<_, EventRow>(
            "SELECT * FROM events WHERE merchant_id = $1 AND object_id = $2 ORDER BY object_version",
        )
        .bind(merchant_id)
        .bind(object_id)
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- background status sync ----

    /// Claims up to `limit` pending payments whose sync is due, for `CLAIM_LEASE_MS`.
    pub async fn claim_due_syncs(&self, now: i64, limit: i64) -> Result<Vec<PaymentRow>> {
        let select = format!(
            "SELECT id FROM payments WHERE status = 'pending' AND sync_due_at <= $2 \
             AND (claimed_until IS NULL OR claimed_until < $2) ORDER BY sync_due_at LIMIT $3{}",
            self.skip_locked()
        );
        let sql =
            format!("UPDATE payments SET claimed_until = $1 WHERE id IN ({select}) RETURNING *");
        Ok(sqlx::query_as::<_, PaymentRow>(&sql)
            .bind(now + CLAIM_LEASE_MS)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.writer)
            .await?)
    }

    /// Releases a claim and sets the next sync (none when `next_due` is `None`). Only a payment
    /// that is still pending is rescheduled: one that changed meanwhile keeps no sync.
    pub async fn reschedule_sync(
        &self,
        payment_id: &str,
        next_due: Option<i64>,
        attempts: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE payments SET sync_due_at = CASE WHEN status = 'pending' THEN $1 ELSE NULL END, \
             sync_attempts = $2, claimed_until = NULL WHERE id = $3",
        )
        .bind(next_due)
        .bind(attempts)
        .bind(payment_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    // ---- idempotency ----

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
        .execute(&self.writer)
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
        .execute(&self.writer)
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
        .execute(&self.writer)
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

    /// Forgets a key whose request failed in a way the merchant may retry.
    pub async fn abandon_idempotent(&self, merchant_id: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2 AND status_code IS NULL")
            .bind(merchant_id)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    // ---- quarantine ----

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
        .execute(&self.writer)
        .await?;
        Ok(())
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

/// Writes an outbox event and, in the same transaction, one pending delivery for every
/// endpoint of the merchant subscribed to its type, and one to the notify_url of `payment_id`
/// (the payment the event is about, or the refunded one) if it has one.
async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &EventRow,
    payment_id: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (id, merchant_id, event_type, object_id, object_version, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&e.id)
    .bind(&e.merchant_id)
    .bind(&e.event_type)
    .bind(&e.object_id)
    .bind(e.object_version)
    .bind(&e.payload)
    .bind(e.created_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, merchant_id, status, attempts, \
         round_attempts, next_attempt_at, created_at) \
         SELECT $1, id, merchant_id, 'pending', 0, 0, $2, $2 FROM webhook_endpoints \
         WHERE merchant_id = $3 AND deleted_at IS NULL \
         AND (events = '*' OR ',' || events || ',' LIKE $4)",
    )
    .bind(&e.id)
    .bind(e.created_at)
    .bind(&e.merchant_id)
    .bind(format!("%,{},%", e.event_type))
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, merchant_id, url, status, attempts, \
         round_attempts, next_attempt_at, created_at) \
         SELECT $1, $2, merchant_id, notify_url, 'pending', 0, 0, $3, $3 FROM payments \
         WHERE id = $4 AND notify_url IS NOT NULL",
    )
    .bind(&e.id)
    .bind(NOTIFY_URL_ENDPOINT)
    .bind(e.created_at)
    .bind(payment_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Within `tx`: moves `current` to `to`, if its version is still the one read, with its history
/// What a payment's status change means for its attempts: the one that paid succeeded; when
/// the payment ends unpaid, its open orders were closed.
async fn settle_attempts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    current: &PaymentRow,
    to: PaymentStatus,
    facts: &TransitionFacts,
) -> Result<()> {
    let paid = matches!(to, PaymentStatus::Succeeded | PaymentStatus::PaidAfterClose);
    if let (true, Some(out_trade_no), Some(transaction_id)) =
        (paid, &facts.out_trade_no, &facts.transaction_id)
    {
        sqlx::query(
            "UPDATE payment_attempts SET status = 'succeeded', transaction_id = $1, updated_at = $2 \
             WHERE merchant_id = $3 AND out_trade_no = $4",
        )
        .bind(transaction_id)
        .bind(facts.now)
        .bind(&current.merchant_id)
        .bind(out_trade_no)
        .execute(&mut **tx)
        .await?;
    } else if matches!(
        to,
        PaymentStatus::Cancelled | PaymentStatus::Expired | PaymentStatus::Failed
    ) {
        sqlx::query(
            "UPDATE payment_attempts SET status = 'closed', updated_at = $1 \
             WHERE payment_id = $2 AND status = 'open'",
        )
        .bind(facts.now)
        .bind(&current.id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// row and its outbox event (payload rendered from the row after the change). `None` when
/// someone changed the payment first.
async fn write_payment_transition(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    current: &PaymentRow,
    to: PaymentStatus,
    facts: &TransitionFacts,
    render: &(dyn Fn(&PaymentRow) -> (String, String) + Sync),
) -> Result<Option<PaymentRow>> {
    let version = current.version + 1;
    let updated = sqlx::query(
        "UPDATE payments SET status = $1, version = $2, updated_at = $3, \
         transaction_id = COALESCE(transaction_id, $4), paid_at = COALESCE(paid_at, $5), \
         sync_due_at = $6, out_trade_no = COALESCE($9, out_trade_no) WHERE id = $7 AND version = $8",
    )
    .bind(to.as_str())
    .bind(version)
    .bind(facts.now)
    .bind(&facts.transaction_id)
    .bind(facts.paid_at)
    .bind(if to.is_pending() {
        current.sync_due_at
    } else {
        None
    })
    .bind(&current.id)
    .bind(current.version)
    .bind(facts.transaction_id.as_ref().and(facts.out_trade_no.as_ref()))
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    settle_attempts(tx, current, to, facts).await?;
    sqlx::query(
        "INSERT INTO payment_status_history (payment_id, version, status, source, at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&current.id)
    .bind(version)
    .bind(to.as_str())
    .bind(&facts.source)
    .bind(facts.now)
    .execute(&mut **tx)
    .await?;
    let after = sqlx::query_as::<_, PaymentRow>("SELECT * FROM payments WHERE id = $1")
        .bind(&current.id)
        .fetch_one(&mut **tx)
        .await?;
    check_money(&after)?;
    if let Some(event_type) = Transition::event_type(to) {
        let (event_id, payload) = render(&after);
        insert_event(
            tx,
            &EventRow {
                id: event_id,
                merchant_id: current.merchant_id.clone(),
                event_type: event_type.to_string(),
                object_id: current.id.clone(),
                object_version: version,
                payload,
                created_at: facts.now,
            },
            &current.id,
        )
        .await?;
    }
    Ok(Some(after))
}

/// Inserts an attempt inside a transaction.
pub(crate) async fn insert_attempt(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    a: &PaymentAttemptRow,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO payment_attempts (merchant_id, out_trade_no, payment_id, seq, integration, status, \
         wechat_credential, transaction_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&a.merchant_id)
    .bind(&a.out_trade_no)
    .bind(&a.payment_id)
    .bind(a.seq)
    .bind(a.integration.as_str())
    .bind(a.status.as_str())
    .bind(&a.wechat_credential)
    .bind(&a.transaction_id)
    .bind(a.created_at)
    .bind(a.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts a payment row unless its merchant_order_id is taken: how many rows went in.
async fn insert_payment_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    p: &PaymentRow,
) -> Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO payments (id, merchant_id, merchant_order_id, out_trade_no, amount, currency, description, \
         integration, status, version, fingerprint, payer_openid, client_ip, return_url, cancel_url, attach, metadata, \
         wechat_credential, transaction_id, paid_at, expires_at, created_at, updated_at, sync_due_at, sync_attempts, \
         claimed_until, notify_url, checkout_token, hosted_url, payment_link_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
         $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&p.id)
    .bind(&p.merchant_id)
    .bind(&p.merchant_order_id)
    .bind(&p.out_trade_no)
    .bind(p.amount)
    .bind(&p.currency)
    .bind(&p.description)
    .bind(p.integration.as_str())
    .bind(p.status.as_str())
    .bind(p.version)
    .bind(&p.fingerprint)
    .bind(&p.payer_openid)
    .bind(&p.client_ip)
    .bind(&p.return_url)
    .bind(&p.cancel_url)
    .bind(&p.attach)
    .bind(&p.metadata)
    .bind(&p.wechat_credential)
    .bind(&p.transaction_id)
    .bind(p.paid_at)
    .bind(p.expires_at)
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(p.sync_due_at)
    .bind(p.sync_attempts)
    .bind(p.claimed_until)
    .bind(&p.notify_url)
    .bind(&p.checkout_token)
    .bind(&p.hosted_url)
    .bind(&p.payment_link_id)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// The payment's money invariant, checked where its sums are written (inside the writing
/// transaction, so a breach rolls back) and where a payment is read: refunds that succeeded
/// never exceed what is reserved for refunds, which never exceeds what was paid.
pub(crate) fn check_money(p: &PaymentRow) -> Result<()> {
    let holds = p.amount > 0
        && 0 <= p.amount_refunded
        && p.amount_refunded <= p.amount_reserved
        && p.amount_reserved <= p.amount;
    if holds {
        Ok(())
    } else {
        tracing::error!(payment = %p.id, amount = p.amount, reserved = p.amount_reserved, refunded = p.amount_refunded, "money invariant broken");
        Err(StoreError::Corrupt(format!(
            "payment {}: refunded {} ≤ reserved {} ≤ amount {} does not hold",
            p.id, p.amount_refunded, p.amount_reserved, p.amount
        )))
    }
}
