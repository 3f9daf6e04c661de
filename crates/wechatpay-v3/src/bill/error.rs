//! What can be wrong with a bill file.

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
