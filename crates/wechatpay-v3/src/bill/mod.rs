//! Bill files: the SHA-1 check over the uncompressed file, gzip, and the CSV layout
//! (UTF-8 BOM, CRLF, a header line, backtick-prefixed fields, amounts in yuan, and a summary
//! header and row at the end), and typed views of each bill kind ([`TradeBill`],
//! [`FundFlowBill`]) read by header name.

pub mod amount;
pub mod fund_flow;
pub mod trade;

use std::collections::HashMap;
use std::io::{Read, Write};

pub use amount::{Fee, yuan};
pub use fund_flow::{FlowDirection, FundFlowBill, FundFlowRow, FundFlowSummary};
pub use trade::{
    BillRefundStatus, RefundPart, TradeBill, TradeLayout, TradeRow, TradeRowState, TradeSummary,
};

use sha1::{Digest, Sha1};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    #[error("hash_type {0:?} is not SHA1")]
    HashType(String),
    #[error("the bill's SHA-1 is {actual}, the answer promised {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("the bill is not valid gzip: {0}")]
    Gzip(String),
    #[error("the bill is not UTF-8")]
    Encoding,
    #[error("the bill has no summary lines")]
    Layout,
    #[error("the bill has no column {0}")]
    Column(String),
    #[error("line {line} has {actual} fields, the header has {expected}")]
    Width {
        line: usize,
        expected: usize,
        actual: usize,
    },
    #[error("{field} {value:?} is not an amount")]
    Amount { field: String, value: String },
}

/// Lower-case hex SHA-1, as `hash_value` carries it.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(bytes)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Decompresses at most `limit` bytes.
pub fn gunzip(bytes: &[u8], limit: u64) -> Result<Vec<u8>, BillError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| BillError::Gzip(e.to_string()))?;
    Ok(out)
}

/// Checks the downloaded file (gunzipped first when `gzipped`) against the apply answer's hash
/// and returns the uncompressed file.
pub fn check_download(
    downloaded: &[u8],
    gzipped: bool,
    hash_type: &str,
    hash_value: &str,
) -> Result<Vec<u8>, BillError> {
    if !hash_type.eq_ignore_ascii_case("SHA1") {
        return Err(BillError::HashType(hash_type.to_string()));
    }
    let plain = if gzipped {
        gunzip(downloaded, 1 << 30)?
    } else {
        downloaded.to_vec()
    };
    let actual = sha1_hex(&plain);
    if !actual.eq_ignore_ascii_case(hash_value) {
        return Err(BillError::HashMismatch {
            expected: hash_value.to_string(),
            actual,
        });
    }
    Ok(plain)
}

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
        let text = std::str::from_utf8(file).map_err(|_| BillError::Encoding)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.is_empty())
            .collect();
        if lines.len() < 3 {
            return Err(BillError::Layout);
        }
        let split = |line: &str| -> Vec<String> {
            line.split(',')
                .map(|f| f.strip_prefix('`').unwrap_or(f).to_string())
                .collect()
        };
        let n = lines.len();
        Ok(Self {
            columns: split(lines[0]),
            rows: lines[1..n - 2].iter().map(|l| split(l)).collect(),
            summary_columns: split(lines[n - 2]),
            summary: split(lines[n - 1]),
        })
    }
}

/// Writes rows in the bill layout: BOM, CRLF, header, backtick-prefixed data and summary.
pub fn write(
    columns: &[&str],
    rows: &[Vec<String>],
    summary_columns: &[&str],
    summary: &[String],
) -> Vec<u8> {
    let mut out = String::from("\u{feff}");
    out.push_str(&columns.join(","));
    out.push_str("\r\n");
    let ticked = |fields: &[String]| -> String {
        fields
            .iter()
            .map(|f| format!("`{f}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for row in rows {
        out.push_str(&ticked(row));
        out.push_str("\r\n");
    }
    out.push_str(&summary_columns.join(","));
    out.push_str("\r\n");
    out.push_str(&ticked(summary));
    out.push_str("\r\n");
    out.into_bytes()
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
