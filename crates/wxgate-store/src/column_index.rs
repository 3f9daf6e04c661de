//! A statement's column names, read once, for the direct readers (`columns.rs`'s
//! `IndexedRow`). A leaf: it knows rusqlite's statements and nothing of the store.

/// A statement's column names, read once per statement text (`Readers` keeps them): rusqlite
/// finds a column by name by asking SQLite for each column's name in turn, which for a
/// payment's 40 columns was a third of a `GET /v1/payments/{id}`'s instructions.
pub(crate) struct ColumnIndex {
    /// Each column's name, in lower case.
    names: Vec<Box<str>>,
    /// For each column, the first column of its name: a name given twice means its first
    /// column, as in rusqlite.
    first: Vec<usize>,
}

impl ColumnIndex {
    pub(crate) fn of(statement: &rusqlite::Statement<'_>) -> Self {
        let names: Vec<Box<str>> = (statement.column_names().into_iter())
            .map(|name| name.to_ascii_lowercase().into())
            .collect();
        let first = (names.iter())
            .map(|name| names.iter().position(|n| n == name).unwrap_or_default())
            .collect();
        Self { names, first }
    }

    /// The position of `name`, looked for from `from` on (decoders read columns mostly in
    /// their order, so the next one is usually the one asked for), then from the start.
    pub(crate) fn find(&self, name: &str, from: usize) -> Option<usize> {
        let after = self.names.iter().skip(from).position(|n| &**n == name);
        let found = after.map(|i| from + i).or_else(|| {
            let before = &self.names[..from.min(self.names.len())];
            before.iter().position(|n| &**n == name)
        })?;
        Some(self.first[found])
    }
}
