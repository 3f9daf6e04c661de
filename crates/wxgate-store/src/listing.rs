//! One merchant's rows, newest first, a page at a time: the shape of every list the API
//! offers. Each filter is added with its value, so the statement and its parameters cannot
//! drift apart.

use sqlx::any::AnyRow;

use super::Result;
use crate::batch::{Value, arguments};

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SELECT * FROM <table> WHERE <merchant column> = $1`, conditions added one by one, then
/// ordered by (`sort`, `id`) descending after an optional keyset cursor.
pub(crate) struct List {
    sql: String,
    values: Vec<Value>,
}

impl List {
    /// `from` is what follows `SELECT * FROM` up to the merchant condition, e.g.
    /// `events e WHERE e.merchant_id = ?`.
    pub(crate) fn new(from: &str, merchant_id: &str) -> Self {
        let mut list = Self {
            sql: String::from("SELECT * FROM "),
            values: Vec::new(),
        };
        list.push(from, [Value::from(merchant_id)]);
        list
    }

    /// Appends `fragment`, numbering each `?` in it in turn, with its values.
    fn push(&mut self, fragment: &str, values: impl IntoIterator<Item = Value>) {
        for (i, part) in fragment.split('?').enumerate() {
            if i > 0 {
                self.sql.push_str(&format!("${}", self.values.len() + i));
            }
            self.sql.push_str(part);
        }
        self.values.extend(values);
    }

    /// `AND <condition>` (one `?`), when there is a value for it.
    pub(crate) fn and(&mut self, condition: &str, value: Option<impl Into<Value>>) {
        if let Some(v) = value {
            self.push(&format!(" AND {condition}"), [v.into()]);
        }
    }

    /// The page after `cursor` (its sort value and id), newest first, `limit` rows.
    pub(crate) async fn fetch<T>(
        mut self,
        pool: &sqlx::AnyPool,
        (sort, id): (&str, &str),
        cursor: Option<(impl Into<Value>, String)>,
        limit: i64,
    ) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
    {
        if let Some((at, after)) = cursor {
            self.push(
                &format!(" AND ({sort}, {id}) < (?, ?)"),
                [at.into(), after.into()],
            );
        }
        self.push(
            &format!(" ORDER BY {sort} DESC, {id} DESC LIMIT ?"),
            [limit.into()],
        );
        let args = arguments(self.values)?;
        Ok(sqlx::query_as_with::<_, T, _>(&self.sql, args)
            .fetch_all(pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_with_their_values() {
        let mut list = List::new("events e WHERE e.merchant_id = ?", "mch_1");
        list.and("e.event_type = ?", Some("payment.succeeded"));
        list.and("e.object_id = ?", None::<String>);
        list.and("e.created_at >= ?", Some(5_i64));
        list.push(" AND (a, b) < (?, ?)", [Value::from(1), Value::from("x")]);
        assert_eq!(
            list.sql,
            "SELECT * FROM events e WHERE e.merchant_id = $1 AND e.event_type = $2 \
             AND e.created_at >= $3 AND (a, b) < ($4, $5)"
        );
        assert_eq!(list.values.len(), 5);
    }
}
