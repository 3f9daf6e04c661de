//! Statements that answer nothing, sent together inside a transaction. sqlx runs each SQLite
//! statement on the connection's worker thread and wakes the waiting task with its answer, so a
//! transaction of ten statements is ten hand-offs between threads; a batch is one: on SQLite
//! it runs as one multi-statement query. On PostgreSQL its statements run one after another,
//! as they would without it. Either way they run in the caller's transaction and in order, so
//! a later statement may rely on an earlier one (an entry inserted only if its posting was).

use sqlx::any::AnyArguments;
use sqlx::{Any, AnyConnection, Arguments};

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

/// Statements, each with its own `$1`, `$2`, … and their values.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    statements: Vec<Statement>,
}

impl Batch {
    /// Adds a statement; its placeholders number its own `values` from `$1`.
    pub(crate) fn push(&mut self, sql: impl Into<String>, values: Vec<Value>) {
        self.statements.push((sql.into(), values));
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

    /// Adds the insert of `row` that inserts only while `condition` holds, its `$0` standing
    /// for `value`.
    pub(crate) fn insert_when(&mut self, row: Insert, condition: &str, value: Value) {
        let mut values = row.values;
        let selected = placeholders(values.len());
        values.push(value);
        let condition = condition.replace("$0", &format!("${}", values.len()));
        let sql = format!(
            "INSERT INTO {} SELECT {selected} WHERE {condition}",
            row.into
        );
        self.push(sql, values);
    }

    /// The statements, in order.
    pub(crate) fn into_statements(self) -> Vec<Statement> {
        self.statements
    }

    /// Runs every statement in `tx`, in order.
    pub(crate) async fn run(self, tx: &mut sqlx::Transaction<'_, Any>) -> Result<()> {
        if self.statements.is_empty() {
            return Ok(());
        }
        if tx.backend_name() != SQLITE {
            one_by_one(tx, self.statements).await?;
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
        for (statement, own) in self.statements {
            sql.push_str(&shift_placeholders(&statement, values.len()));
            sql.push_str(";\n");
            values.extend(own);
        }
        (sql, values)
    }
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
}
