//! Percent-encoding of what goes into a request's path and query.

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
