//! Typed requests and answers. Field names are WeChat's own; optional fields are skipped when
//! absent so that what is sent is what WeChat documents. Each request has a `validate` that
//! applies WeChat's field rules before anything is sent.

pub mod bill;
pub mod certificate;
pub mod global;
pub mod pay;
pub mod refund;

pub use bill::*;
pub use certificate::*;
pub use global::*;
pub use pay::*;
pub use refund::*;

/// Percent-encodes one path segment (an `out_trade_no` may hold `|` and `*`).
pub fn path_segment(value: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'*');
    percent_encoding::utf8_percent_encode(value, SEGMENT).to_string()
}

/// Percent-encodes a query value.
pub fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
