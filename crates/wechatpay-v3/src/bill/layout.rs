//! The CSV layout every bill shares: UTF-8 with a BOM, CRLF lines, a header line, data lines
//! whose fields carry a backtick prefix, and a summary header and line at the end; and fields
//! looked up by column name.

use std::collections::HashMap;

use super::amount;
use super::error::BillError;

/// A parsed bill: the column names, the data rows, and the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bill {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub summary_columns: Vec<String>,
    pub summary: Vec<String>,
}

impl Bill {
    /// Parses the CSV layout. Fields lose their backtick prefix; amounts stay text in yuan.
    pub fn parse(file: &[u8]) -> Result<Self, BillError> {
        let lines = Lines::read(file)?;
        Ok(Self {
            rows: lines.rows().collect(),
            columns: lines.columns,
            summary_columns: lines.summary_columns,
            summary: lines.summary,
        })
    }
}

/// A bill's lines, read in place: the header and the summary split, the data lines left as
/// text until [`rows`](Self::rows) splits them one at a time (a large bill is never held as
/// fields all at once).
pub struct Lines<'a> {
    pub columns: Vec<String>,
    data: Vec<&'a str>,
    pub summary_columns: Vec<String>,
    pub summary: Vec<String>,
}

/// The file's non-empty lines, without the BOM and line ends.
fn text_lines(file: &[u8]) -> Result<Vec<&str>, BillError> {
    let text = std::str::from_utf8(file).map_err(|_| BillError::Encoding)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Ok(text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect())
}

fn split(line: &str) -> Vec<String> {
    line.split(',')
        .map(|f| f.strip_prefix('`').unwrap_or(f).to_string())
        .collect()
}

impl<'a> Lines<'a> {
    pub fn read(file: &'a [u8]) -> Result<Self, BillError> {
        let mut lines = text_lines(file)?;
        if lines.len() < 3 {
            return Err(BillError::Layout);
        }
        let summary = split(lines.pop().expect("three lines or more"));
        let summary_columns = split(lines.pop().expect("three lines or more"));
        let columns = split(lines[0]);
        lines.remove(0);
        Ok(Self {
            columns,
            data: lines,
            summary_columns,
            summary,
        })
    }

    /// A file whose summary lines may be missing: data lines carry a backtick prefix, so a
    /// last-but-one line without one is the summary's header.
    pub fn read_maybe_summary(file: &'a [u8]) -> Result<Self, BillError> {
        let mut lines = text_lines(file)?;
        if lines.is_empty() {
            return Err(BillError::Layout);
        }
        let columns = split(lines.remove(0));
        let has_summary = lines.len() >= 2 && !lines[lines.len() - 2].starts_with('`');
        let (summary_columns, summary) = if has_summary {
            let summary = split(lines.pop().expect("two lines or more"));
            (split(lines.pop().expect("two lines or more")), summary)
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Self {
            columns,
            data: lines,
            summary_columns,
            summary,
        })
    }

    /// The data lines, each split into its fields.
    pub fn rows(&self) -> impl Iterator<Item = Vec<String>> + '_ {
        self.data.iter().map(|l| split(l))
    }
}

/// Column positions by header name. Full-width parentheses in names (`收支金额（元）`) are read
/// as ASCII ones, since files differ in which they use.
pub(crate) struct Columns {
    index: HashMap<String, usize>,
    width: usize,
}

fn normalise(name: &str) -> String {
    name.trim().replace('（', "(").replace('）', ")")
}

impl Columns {
    pub(crate) fn new(names: &[String]) -> Self {
        Self {
            index: names
                .iter()
                .enumerate()
                .map(|(i, n)| (normalise(n), i))
                .collect(),
            width: names.len(),
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// A view of data line `line` (1-based, for messages), checked against the header's width.
    pub(crate) fn row<'a>(
        &'a self,
        line: usize,
        fields: &'a [String],
    ) -> Result<RowView<'a>, BillError> {
        if fields.len() != self.width {
            return Err(BillError::Width {
                line,
                expected: self.width,
                actual: fields.len(),
            });
        }
        Ok(RowView {
            columns: self,
            fields,
        })
    }
}

/// One line's fields, looked up by column name.
pub(crate) struct RowView<'a> {
    columns: &'a Columns,
    fields: &'a [String],
}

impl RowView<'_> {
    pub(crate) fn has(&self, name: &str) -> bool {
        self.columns.has(name)
    }

    pub(crate) fn optional(&self, name: &str) -> Option<&str> {
        self.columns
            .index
            .get(name)
            .map(|&i| self.fields[i].as_str())
    }

    pub(crate) fn text(&self, name: &str) -> Result<&str, BillError> {
        self.optional(name)
            .ok_or_else(|| BillError::Column(name.to_string()))
    }

    pub(crate) fn string(&self, name: &str) -> Result<String, BillError> {
        self.text(name).map(str::to_string)
    }

    /// The first of a current and an older column name that the file has.
    pub(crate) fn either(&self, (current, older): (&str, &str)) -> Result<&str, BillError> {
        self.optional(current)
            .or_else(|| self.optional(older))
            .ok_or_else(|| BillError::Column(current.to_string()))
    }

    pub(crate) fn optional_fen(&self, name: &str) -> Result<Option<i64>, BillError> {
        self.optional(name)
            .map(|text| amount::fen(name, text))
            .transpose()
    }
}
