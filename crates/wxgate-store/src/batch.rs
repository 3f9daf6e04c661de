//! Statements that answer nothing, sent together inside a transaction. sqlx runs each SQLite
//! statement on the connection's worker thread and wakes the waiting task with its answer, so a
//! transaction of ten statements is ten hand-offs between threads; a batch is one: on SQLite
//! it runs as one multi-statement query. On PostgreSQL its statements run one after another,
//! as they would without it. Either way they run in the caller's transaction and in order, so
//! a later statement may rely on an earlier one (an entry inserted only if its posting was).

use sqlx::any::AnyArguments;
use sqlx::{Any, AnyConnection, Arguments, Row};

use super::Result;

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_string()))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_string))
    }
}

impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        Self::Text(v.clone())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<Option<f64>> for Value {
    fn from(v: Option<f64>) -> Self {
        Self::Real(v)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Self::Text(t) => t.to_sql(),
            Self::Int(n) => n.to_sql(),
            Self::Real(r) => r.to_sql(),
        }
    }
}

/// `values` as a statement's arguments, in order.
pub(crate) fn arguments<'q>(values: Vec<Value>) -> Result<AnyArguments<'q>> {
    let mut args = AnyArguments::default();
    for v in values {
        match v {
            Value::Text(t) => args.add(t),
            Value::Int(n) => args.add(n),
            Value::Real(r) => args.add(r),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// What sqlx's `Any` driver calls SQLite (`backend_name`).
const SQLITE: &str = "SQLite";

/// The insert of one row: the table with its columns (`t (a, b)`), and the row's values in
/// their order.
pub(crate) struct Insert {
    pub(crate) into: &'static str,
    pub(crate) values: Vec<Value>,
}

/// `$1, $2, …, $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement with its own `$1`, `$2`, … and their values.
pub(crate) type Statement = (String, Vec<Value>);

/// Statements, each with its own `$1`, `$2`, … and their values. `run` runs them in order in
/// the caller's transaction. A batch given to `Writing::atomically` runs on PostgreSQL as one
/// statement (`one_statement`), whose clauses do not see each other's rows: none of its
/// statements may read what an earlier one wrote, but through `insert_when`'s guard.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    entries: Vec<Entry>,
}

/// One statement of a batch, and for a guarded insert the condition (with its value) under
/// which it runs after the first statement, and what follows the condition (an upsert's
/// `ON CONFLICT` clause).
#[derive(Debug)]
struct Entry {
    sql: String,
    values: Vec<Value>,
    guard: Option<(String, Value)>,
    tail: &'static str,
}

impl Entry {
    /// The statement as it runs after the ones before it.
    fn after(self) -> Statement {
        let Some((condition, value)) = self.guard else {
            return (self.sql, self.values);
        };
        let mut values = self.values;
        values.push(value);
        (
            format!("{} WHERE {condition}{}", self.sql, self.tail),
            values,
        )
    }
}

impl Batch {
    /// Adds a statement; its placeholders number its own `values` from `$1`.
    pub(crate) fn push(&mut self, sql: impl Into<String>, values: Vec<Value>) {
        self.entries.push(Entry {
            sql: sql.into(),
            values,
            guard: None,
            tail: "",
        });
    }

    /// Adds the insert of `row`.
    pub(crate) fn insert(&mut self, row: Insert) {
        let sql = format!(
            "INSERT INTO {} VALUES ({})",
            row.into,
            placeholders(row.values.len())
        );
        self.push(sql, row.values);
    }

    /// Adds the insert of `row` that inserts only if the batch's first statement wrote its
    /// row. Run after it, `condition` tells (its `$0` standing for `value`); in one statement
    /// the first statement's own answer does.
    pub(crate) fn insert_when(&mut self, row: Insert, condition: &str, value: Value) {
        self.upsert_when(row, "", condition, value);
    }

    /// `insert_when` with `tail` after the condition: an upsert's `ON CONFLICT` clause.
    pub(crate) fn upsert_when(
        &mut self,
        row: Insert,
        tail: &'static str,
        condition: &str,
        value: Value,
    ) {
        assert!(
            !self.entries.is_empty(),
            "a guarded insert follows the first statement"
        );
        let selected = placeholders(row.values.len());
        let condition = condition.replace("$0", &format!("${}", row.values.len() + 1));
        self.entries.push(Entry {
            sql: format!("INSERT INTO {} SELECT {selected}", row.into),
            values: row.values,
            guard: Some((condition, value)),
            tail,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The statements, in order.
    pub(crate) fn into_statements(self) -> Vec<Statement> {
        self.entries.into_iter().map(Entry::after).collect()
    }

    /// The batch as one PostgreSQL statement, one round trip and atomic as any statement:
    /// each statement a data-modifying `WITH` clause, answering one row with each one's rows
    /// affected in turn. A guarded insert asks whether the first clause wrote its row, since
    /// the clauses do not see each other's rows.
    pub(crate) fn one_statement(self) -> (String, Vec<Value>) {
        let (mut clauses, mut counts, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (i, entry) in self.entries.into_iter().enumerate() {
            let guard = if entry.guard.is_some() {
                " WHERE EXISTS (SELECT 1 FROM s0)"
            } else {
                ""
            };
            let sql = shift_placeholders(&entry.sql, values.len());
            clauses.push(format!("s{i} AS ({sql}{guard}{} RETURNING 1)", entry.tail));
            counts.push(format!("(SELECT count(*) FROM s{i})"));
            values.extend(entry.values);
        }
        let sql = format!("WITH {} SELECT {}", clauses.join(", "), counts.join(", "));
        (sql, values)
    }

    /// Runs every statement in `tx`, in order.
    pub(crate) async fn run(self, tx: &mut sqlx::Transaction<'_, Any>) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if tx.backend_name() != SQLITE {
            one_by_one(tx, self.into_statements()).await?;
            return Ok(());
        }
        let (sql, values) = self.joined();
        sqlx::query_with(&sql, arguments(values)?)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// One multi-statement text whose placeholders number all the values in turn.
    fn joined(self) -> (String, Vec<Value>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        for (statement, own) in self.into_statements() {
            sql.push_str(&shift_placeholders(&statement, values.len()));
            sql.push_str(";\n");
            values.extend(own);
        }
        (sql, values)
    }
}

/// Runs `batch` on PostgreSQL as one statement (`Batch::one_statement`): one round trip instead
/// of one per statement and two for the transaction around them.
pub(crate) async fn in_one_statement(conn: &mut AnyConnection, batch: Batch) -> Result<Vec<u64>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let (sql, values) = batch.one_statement();
    let row = sqlx::query_with(&sql, arguments(values)?)
        .fetch_one(conn)
        .await?;
    (0..row.len())
        .map(|i| Ok(u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or_default()))
        .collect()
}

/// Runs `statements` one after another on `conn`: the rows each affected.
pub(crate) async fn one_by_one(
    conn: &mut AnyConnection,
    statements: Vec<Statement>,
) -> Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(statements.len());
    for (sql, values) in statements {
        let done = sqlx::query_with(&sql, arguments(values)?)
            .execute(&mut *conn)
            .await?;
        counts.push(done.rows_affected());
    }
    Ok(counts)
}

/// `sql` with every `$n` turned into `$(n + by)`. The store's statements carry no `$` inside
/// string literals, which this does not look into.
fn shift_placeholders(sql: &str, by: usize) -> String {
    if by == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_shifted_past_the_earlier_statements_values() {
        assert_eq!(
            shift_placeholders("INSERT INTO t VALUES ($1, $2, $2, $10)", 3),
            "INSERT INTO t VALUES ($4, $5, $5, $13)"
        );
        assert_eq!(shift_placeholders("SELECT $1", 0), "SELECT $1");
        let mut batch = Batch::default();
        batch.push(
            "UPDATE a SET x = $1 WHERE id = $2",
            vec![1.into(), "a".into()],
        );
        batch.push("INSERT INTO b VALUES ($1, $1)", vec![Value::Int(None)]);
        let (sql, values) = batch.joined();
        assert_eq!(
            sql,
            "UPDATE a SET x = $1 WHERE id = $2;\nINSERT INTO b VALUES ($3, $3);\n"
        );
        assert_eq!(values.len(), 3);
    }

    #[test]
    fn a_guarded_insert_follows_the_first_statement_in_turn_or_in_one() {
        let batch = || {
            let mut batch = Batch::default();
            batch.push(
                "INSERT INTO a VALUES ($1) ON CONFLICT DO NOTHING",
                vec!["x".into()],
            );
            let row = Insert {
                into: "b (a, n)",
                values: vec!["x".into(), 2.into()],
            };
            batch.insert_when(row, "EXISTS (SELECT 1 FROM a WHERE id = $0)", "x".into());
            batch
        };
        let statements = batch().into_statements();
        assert_eq!(
            statements[1].0,
            "INSERT INTO b (a, n) SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM a WHERE id = $3)"
        );
        assert_eq!(statements[1].1.len(), 3);
        let (sql, values) = batch().one_statement();
        assert_eq!(
            sql,
            "WITH s0 AS (INSERT INTO a VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1), \
             s1 AS (INSERT INTO b (a, n) SELECT $2, $3 WHERE EXISTS (SELECT 1 FROM s0) RETURNING 1) \
             SELECT (SELECT count(*) FROM s0), (SELECT count(*) FROM s1)"
        );
        assert_eq!(values.len(), 3);
    }
}
