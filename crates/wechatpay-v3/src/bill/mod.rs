//! Bill files: the SHA-1 check over the uncompressed file, gzip, and the CSV layout
//! (UTF-8 BOM, CRLF, a header line, backtick-prefixed fields, amounts in yuan, and a summary
//! header and row at the end), and typed views of each bill kind ([`TradeBill`],
//! [`FundFlowBill`]) read by header name.

pub mod amount;
pub mod error;
pub mod fund_flow;
pub mod layout;
pub mod statement;
pub mod trade;

use std::io::{Read, Write};

pub use amount::{Fee, yuan};
pub use error::BillError;
pub use fund_flow::{FlowDirection, FundFlowBill, FundFlowRow, FundFlowSummary};
pub use layout::Bill;
pub use trade::{
    BillRefundStatus, RefundPart, TradeBill, TradeBillHead, TradeLayout, TradeRow, TradeRowState,
    TradeSummary,
};

use sha1::{Digest, Sha1};

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
