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
mod batch;
mod by_id;
mod claims;
mod column_index;
mod columns;
mod counts;
mod direct;
mod doors;
mod group;
mod idempotency;
mod ledger;
mod links;
mod listing;
mod merchants;
mod ops;
mod outbox;
mod payments;
mod payouts;
mod quarantine;
mod reconciliations;
mod refunds;
mod reports;
mod retention;
mod rows;
pub mod testing;
mod webhooks;

pub use rows::*;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row};
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
    /// From a direct SQLite reader (`direct.rs`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    #[error("{0}")]
    PayoutTransition(#[from] wxgate_domain::payout::PayoutTransitionError),
    #[error("payment {0} not found")]
    PaymentNotFound(String),
}

impl StoreError {
    /// The database could not be reached or was too busy: worth a 503, not a 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(e)) => e.code().is_some_and(|c| {
                // PostgreSQL's connection exceptions (08…) and operator intervention (57P…:
                // the server shut down or restarting, this backend terminated).
                c.starts_with("08") || c.starts_with("57P")
            }),
            Self::Database(e) => matches!(
                e,
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
            ),
            Self::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::CannotOpen)
            ),
            _ => false,
        }
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
    /// On SQLite, the writer pool's one connection, taken out of it for good: writes take turns
    /// on this lock instead, because sqlx pings a connection handed back to its pool (one more
    /// round trip to its worker thread after every write, while the next write waits). `None`
    /// inside once the store is closed.
    sole: Option<Arc<tokio::sync::Mutex<Option<Sole>>>>,
    backend: Backend,
    /// Woken whenever this process writes an event, so delivery need not wait for its poll.
    outbox: Arc<tokio::sync::Notify>,
    /// Bumped whenever this process writes an event or records a webhook attempt: any number
    /// of followers (the demo's activity lines) watch it.
    activity: Arc<tokio::sync::watch::Sender<u64>>,
    /// Payment transitions waiting for the SQLite writer, committed together (`group.rs`).
    group: Arc<std::sync::Mutex<Vec<Waiting>>>,
    /// On an SQLite file, connections that read on the calling thread (`direct.rs`).
    readers: Option<Arc<Readers>>,
}

/// What a checkpoint found (`Store::checkpoint`): pages in the log, and how many of them are
/// now in the database file (fewer while a reader still reads an older state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub log: i64,
    pub copied: i64,
}

/// Read-only SQLite connections to the store's file, idle until a read takes one.
struct Readers {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
    /// Each read's column positions, by its statement's text: a few texts, known at build.
    columns: std::sync::Mutex<std::collections::HashMap<String, Arc<column_index::ColumnIndex>>>,
    /// The connection that copies the log into the database (`Store::checkpoint`), once opened.
    checkpointer: std::sync::Mutex<Option<rusqlite::Connection>>,
}

/// Renders a transition's event (id and payload) from the payment after it.
pub(crate) type Render = Arc<dyn Fn(&PaymentRow) -> (String, String) + Send + Sync>;

/// A payment transition to write: `current` moved to `to`.
pub(crate) struct Move {
    pub(crate) current: PaymentRow,
    pub(crate) to: PaymentStatus,
    pub(crate) facts: TransitionFacts,
    pub(crate) render: Render,
}

/// One payment transition waiting for the SQLite writer, and where its answer goes.
struct Waiting {
    transition: Move,
    answer: tokio::sync::oneshot::Sender<Result<Option<PaymentRow>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// How long a write waits for its turn at the writer before the database counts as busy, as
/// long as a pool waits for a connection.
const WRITER_WAIT: Duration = Duration::from_secs(5);

/// The writer's connection, while a write holds it.
pub(crate) enum Writing {
    Sole(tokio::sync::OwnedMappedMutexGuard<Option<Sole>, Sole>),
    Pooled(PoolConnection<Any>),
}

/// The SQLite writer's connections: sqlx's, and on a database file one of its own that runs
/// transactions of statements known in advance on the calling thread (`direct.rs`). Writes
/// take turns on both together, so they never contend for SQLite's lock.
pub(crate) struct Sole {
    conn: PoolConnection<Any>,
    direct: Option<rusqlite::Connection>,
}

impl Writing {
    /// A transaction on the writer's connection.
    pub(crate) async fn begin(&mut self) -> Result<sqlx::Transaction<'_, Any>> {
        Ok(Connection::begin(&mut **self).await?)
    }
}

impl std::ops::Deref for Writing {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            Self::Sole(held) => &held.conn,
            Self::Pooled(pooled) => pooled,
        }
    }
}

impl std::ops::DerefMut for Writing {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Self::Sole(held) => &mut held.conn,
            Self::Pooled(pooled) => pooled,
        }
    }
}

/// How long an unfinished idempotent request holds its key before a retry may take it over.
pub const IDEMPOTENCY_LOCK_MS: i64 = 60_000;
/// How many idempotency keys one purge statement forgets at most.
pub const IDEMPOTENCY_PURGE_BATCH: i64 = 5_000;
/// Events one transaction forgets at most.
pub const EVENT_PURGE_BATCH: i64 = 500;

/// How long a claim on background work lasts before another node may take it over.
pub const CLAIM_LEASE_MS: i64 = 60_000;

/// How large the SQLite log may grow (in pages of 4 KiB: 4 MiB, SQLite's own default for
/// `wal_autocheckpoint`) before a checkpoint makes sure it starts over (`Store::checkpoint`).
pub const LOG_START_OVER_PAGES: i64 = 1000;

/// How many connections the store's one PostgreSQL pool holds at most.
pub const POSTGRES_CONNECTIONS: u32 = 16;

/// What every SQLite connection runs first: WAL lets readers run beside the one writer, and
/// waiting for a lock beats failing. A commit copies the log into the database itself only
/// once the log holds 10,000 pages (40 MiB): a serving node copies it every 250 ms off the
/// writer (`Store::checkpoint`), so the commit that would have done it does not wait for the
/// disk, and a page changed many times meanwhile is written once.
const SQLITE_PRAGMAS: [&str; 5] = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA wal_autocheckpoint = 10000",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = NORMAL",
];

/// A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out
/// (a server restart or a dropped connection is found there, not by the caller's statement).
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// A pool of at most `connections` connections to `options`.
async fn open_pool(
    options: &AnyConnectOptions,
    backend: Backend,
    connections: u32,
) -> Result<AnyPool> {
    let pool = AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx's own check is a ping on every acquire; each backend sets its own below.
        .test_before_acquire(false);
    let pool = match backend {
        // An SQLite connection is a file handle: nothing to ping; it runs the pragmas.
        Backend::Sqlite => pool.after_connect(|conn, _| {
            Box::pin(async move {
                for pragma in SQLITE_PRAGMAS {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        }),
        // A ping is a round trip of its own: on every acquire it doubled a read's round trips
        // to PostgreSQL. Only a connection idle for a while is pinged; one used moments ago is
        // as alive as a ping would find it.
        Backend::Postgres => pool.before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        }),
    };
    Ok(pool.connect_with(options.clone()).await?)
}

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
        let readers = match backend {
            Backend::Sqlite => Readers::of(&url)?.map(Arc::new),
            Backend::Postgres => None,
        };
        let (pool, writer) = match backend {
            // SQLite has one writer at a time. Writers queued on one connection take turns in
            // order; several connections would contend for the lock and back off in sleeps.
            Backend::Sqlite => {
                let writer = open_pool(&options, backend, 1).await?;
                (open_pool(&options, backend, 4).await?, writer)
            }
            Backend::Postgres => {
                let pool = open_pool(&options, backend, POSTGRES_CONNECTIONS).await?;
                (pool.clone(), pool)
            }
        };
        let sole = match backend {
            Backend::Sqlite => Some(Arc::new(tokio::sync::Mutex::new(Some(Sole {
                conn: writer.acquire().await?,
                direct: readers.as_deref().map(Readers::writer).transpose()?,
            })))),
            Backend::Postgres => None,
        };
        Ok(Self {
            pool,
            writer,
            sole,
            backend,
            outbox: Arc::new(tokio::sync::Notify::new()),
            activity: Arc::new(tokio::sync::watch::channel(0).0),
            group: Arc::default(),
            readers,
        })
    }

    /// The writer's connection, once this write's turn comes: on SQLite the one connection
    /// (waiting at most [`WRITER_WAIT`], then busy), on PostgreSQL one from the pool.
    pub(crate) async fn write(&self) -> Result<Writing> {
        let Some(sole) = &self.sole else {
            return Ok(Writing::Pooled(self.writer.acquire().await?));
        };
        let held = tokio::time::timeout(WRITER_WAIT, sole.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let held = tokio::sync::OwnedMutexGuard::try_map(held, Option::as_mut)
            .map_err(|_| sqlx::Error::PoolClosed)?;
        Ok(Writing::Sole(held))
    }

    /// Events were written: the delivery worker wakes, followers see a change.
    pub(crate) fn events_written(&self) {
        self.outbox.notify_one();
        self.activity_changed();
    }

    fn activity_changed(&self) {
        self.activity.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever this process writes an event or records a webhook attempt.
    pub fn activity_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.activity.subscribe()
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
        sqlx::raw_sql(sql)
            .execute(&mut *self.write().await?)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(sole) = &self.sole {
            sole.lock().await.take();
        }
        self.pool.close().await;
        self.writer.close().await;
        if let Some(readers) = &self.readers {
            readers.close();
        }
    }

    /// Applies every migration this binary carries.
    /// Applies the migrations the database lacks; returns them as `0006 payment attempts`.
    pub async fn migrate(&self) -> Result<Vec<String>> {
        let missing = match self.schema_status().await? {
            SchemaStatus::Behind { missing } => missing,
            _ => Vec::new(),
        };
        MIGRATOR.run(&mut *self.write().await?).await?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| missing.contains(&m.version))
            .map(|m| format!("{:04} {}", m.version, m.description.replace('_', " ")))
            .collect())
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
}
