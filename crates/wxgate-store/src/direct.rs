//! Reads and transactions on the calling thread. sqlx hands every SQLite statement to its
//! connection's worker thread and waits for the answer; for a read of a few indexed rows, that
//! hand-off and the wake-ups on both sides cost more than the read. The hottest reads (a
//! payment with its history and orders, for `GET /v1/payments/{id}` and a repeated create;
//! a payment by id, order id or out_trade_no and a payment's orders, for callbacks and sync)
//! run instead on connections of their own to the same file, barred from writing, where they
//! are called: an indexed read of a few rows from pages SQLite has cached, microseconds on the
//! async thread. WAL lets these connections read beside the writer, and each read sees every
//! commit that finished before it began, as a read on sqlx's connections does. Reads that scan
//! (lists, reports) stay on sqlx's pool, off the async threads.
//!
//! The same goes for the transactions whose statements are known in advance (a create's
//! insert and its credential, a sync's reschedule: `Writing::atomically`): the SQLite writer
//! holds a direct connection beside sqlx's, and such a transaction runs on it where it is
//! called. A commit in WAL with `synchronous = NORMAL` appends to the log without waiting for
//! the disk.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use sqlx::sqlite::SqliteConnectOptions;

use crate::batch::{Batch, Statement, Value, in_one_statement, one_by_one};
use crate::column_index::ColumnIndex;
use crate::columns::{Gather, IndexedRow};
use crate::{Checkpoint, LOG_START_OVER_PAGES, Readers, Result, Store, StoreError, Writing};

/// How many idle direct readers are kept open; more are opened while more read at once.
const READERS_IDLE_MAX: usize = 4;

/// Statements the direct writer keeps prepared.
const WRITER_STATEMENTS: usize = 64;

/// How long a read waits for a lock, as sqlx's connections do (in WAL a reader is not blocked
/// but while SQLite recovers the log after a crash).
const READER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Readers {
    /// Readers of the database file `url` names; `None` for an in-memory database, which
    /// other connections cannot see.
    pub(crate) fn of(url: &str) -> Result<Option<Self>> {
        let options = SqliteConnectOptions::from_str(url)?;
        let path = options.get_filename();
        let name = path.to_string_lossy();
        if name.is_empty() || name.starts_with(":memory:") {
            return Ok(None);
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
            idle: std::sync::Mutex::default(),
            columns: std::sync::Mutex::default(),
            checkpointer: std::sync::Mutex::default(),
        }))
    }

    /// Runs `read` on an idle reader, or on a new one when none is idle.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = self.idle.lock().expect("readers lock").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let answer = read(&conn);
        let mut idle = self.idle.lock().expect("readers lock");
        if idle.len() < READERS_IDLE_MAX {
            idle.push(conn);
        }
        answer
    }

    /// The column positions of `statement`, prepared from `sql`: found the first time that
    /// text is read, the same on every reader (one schema).
    fn columns(&self, sql: &str, statement: &rusqlite::Statement<'_>) -> Arc<ColumnIndex> {
        let mut known = self.columns.lock().expect("column index lock");
        if let Some(index) = known.get(sql) {
            return index.clone();
        }
        let index = Arc::new(ColumnIndex::of(statement));
        known.insert(sql.to_string(), index.clone());
        index
    }

    /// Closes the idle readers and the checkpointer.
    pub(crate) fn close(&self) {
        self.idle.lock().expect("readers lock").clear();
        self.checkpointer.lock().expect("checkpointer lock").take();
    }

    /// Copies what the log holds into the database file, without waiting for the writer or
    /// any reader (SQLite's passive checkpoint), on a connection of its own. Blocks while the
    /// disk syncs: call it off the async threads.
    pub(crate) fn checkpoint(&self) -> Result<Checkpoint> {
        let mut held = self.checkpointer.lock().expect("checkpointer lock");
        let conn = match held.as_mut() {
            Some(conn) => conn,
            None => held.insert(self.writer()?),
        };
        let (log, copied) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })?;
        Ok(Checkpoint { log, copied })
    }

    /// A connection that writes, for the SQLite writer (`Sole`): the pragmas every store
    /// connection runs, and room to keep every statement of the store's transactions prepared.
    pub(crate) fn writer(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch(&crate::SQLITE_PRAGMAS.map(|p| format!("{p};")).concat())?;
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
        Ok(conn)
    }

    fn connect(&self) -> Result<Connection> {
        // Opened for writing, then barred from it: a read-only connection could not open the
        // WAL files should the store's own connections have closed them meanwhile.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(READER_BUSY_TIMEOUT)?;
        Ok(conn)
    }
}

impl Store {
    /// Copies the SQLite log into the database file (see [`Readers::checkpoint`]). A serving
    /// node does this every 250 ms, so that commits never wait for it, and a machine that
    /// stops loses at most the commits of that moment: `synchronous = NORMAL` syncs the log
    /// at a checkpoint, not at a commit. `None` on PostgreSQL and on an in-memory database.
    ///
    /// The log starts over at the first commit after a checkpoint has copied all of it; under
    /// a steady stream of commits one always lands while the copy runs, so it never does, and
    /// it would grow to the backstop (`wal_autocheckpoint`), where each commit runs a
    /// checkpoint itself and waits for the disk on the thread that called it. So once the log
    /// holds [`LOG_START_OVER_PAGES`], the checkpoint copies what came in meanwhile, and syncs
    /// the log and the database file, with the writer's turn held (on its own thread: writes
    /// wait for their turn meanwhile without holding one).
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let Some(readers) = self.readers.clone() else {
            return Ok(None);
        };
        let turn = self.sole.clone();
        tokio::task::spawn_blocking(move || {
            let copied = readers.checkpoint()?;
            let held = match &turn {
                Some(turn) if copied.log >= LOG_START_OVER_PAGES => turn.blocking_lock(),
                _ => return Ok(Some(copied)),
            };
            // A closed store (`None` inside) writes no more.
            match *held {
                Some(_) => readers.checkpoint().map(Some),
                None => Ok(Some(copied)),
            }
        })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)?
    }

    /// What `G` gathers from the rows `sql` answers for `params`: read on a direct reader when
    /// the store has them, else on sqlx's pool.
    pub(crate) async fn read_rows<G: Gather, const N: usize>(
        &self,
        sql: &str,
        params: [&str; N],
    ) -> Result<G> {
        let mut gathered = G::default();
        if let Some(readers) = &self.readers {
            return readers.read(|conn| {
                let mut statement = conn.prepare_cached(sql)?;
                let index = readers.columns(sql, &statement);
                let mut rows = statement.query(rusqlite::params_from_iter(params))?;
                while let Some(row) = rows.next()? {
                    gathered.add(&IndexedRow::new(row, &index))?;
                }
                Ok(gathered)
            });
        }
        let mut query = sqlx::query(sql);
        for param in params {
            query = query.bind(param);
        }
        for row in &query.fetch_all(&self.pool).await? {
            gathered.add(row)?;
        }
        Ok(gathered)
    }
}

impl Writing {
    /// Runs `batch` as a transaction of its own and answers each statement's rows affected. On
    /// the SQLite writer it runs on the calling thread, on the writer's direct connection
    /// (`direct.rs`): no hand-off to sqlx's worker thread at all, and nothing a caller that goes
    /// away can leave half done, since it runs to its end within one poll. On PostgreSQL it
    /// runs as one statement (`Batch::one_statement`): one round trip, atomic as any statement.
    /// On an SQLite database in memory the statements run one after another in a transaction.
    pub(crate) async fn atomically(&mut self, batch: Batch) -> Result<Vec<u64>> {
        if let Writing::Sole(held) = self
            && let Some(direct) = &mut held.direct
        {
            return atomically(direct, &batch.into_statements());
        }
        if let Writing::Pooled(conn) = self {
            return in_one_statement(conn, batch).await;
        }
        let mut tx = self.begin().await?;
        let counts = one_by_one(&mut tx, batch.into_statements()).await?;
        tx.commit().await?;
        Ok(counts)
    }
}

/// Runs `statements` in a transaction of their own on `conn`, the SQLite writer's direct
/// connection, on the calling thread: the rows each affected. A failing statement rolls the
/// whole back. (Should sqlx's writer connection still hold a transaction its caller dropped,
/// its worker is rolling it back: `BEGIN IMMEDIATE` waits for that as for any lock.)
fn atomically(conn: &mut Connection, statements: &[Statement]) -> Result<Vec<u64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut counts = Vec::with_capacity(statements.len());
    for (sql, values) in statements {
        let mut statement = tx.prepare_cached(sql)?;
        bind_numbered(&mut statement, values)?;
        counts.push(statement.raw_execute()? as u64);
    }
    tx.commit()?;
    Ok(counts)
}

/// Binds `$n` to `values[n - 1]` wherever it stands. (SQLite takes `$1` for a name, numbering
/// parameters in the order they first appear, so binding in order would misplace a statement
/// whose placeholders come out of order or repeat.)
fn bind_numbered(statement: &mut rusqlite::Statement<'_>, values: &[Value]) -> Result<()> {
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index).unwrap_or_default();
        let value = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| values.get(n.checked_sub(1)?))
            .ok_or_else(|| {
                StoreError::Corrupt(format!("statement parameter {name:?} has no value"))
            })?;
        statement.raw_bind_parameter(index, value)?;
    }
    Ok(())
}
