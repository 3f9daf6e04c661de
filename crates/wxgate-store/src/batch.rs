//! Statements that answer nothing, sent together inside a transaction. sqlx runs each SQLite
//! statement on the connection's worker thread and wakes the waiting task with its answer, so a
//! transaction of ten statements is ten hand-offs between threads; a batch is one: on SQLite
//! it runs as one multi-statement query. On PostgreSQL its statements run one after another,
//! as they would without it. Either way they run in the caller's transaction and in order, so
//! a later statement may rely on an earlier one (an entry inserted only if its posting was).

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments};

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

/// Statements, each with its own `$1`, `$2`, … and their values.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    statements: Vec<(String, Vec<Value>)>,
}

impl Batch {
    /// Adds a statement; its placeholders number its own `values` from `$1`.
    pub(crate) fn push(&mut self, sql: impl Into<String>, values: Vec<Value>) {
        self.statements.push((sql.into(), values));
    }

    /// Runs every statement in `tx`, in order.
    pub(crate) async fn run(self, tx: &mut sqlx::Transaction<'_, Any>) -> Result<()> {
        if self.statements.is_empty() {
            return Ok(());
        }
        if tx.backend_name() != SQLITE {
            for (sql, values) in self.statements {
                sqlx::query_with(&sql, arguments(values)?)
                    .execute(&mut **tx)
                    .await?;
            }
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
