//! The `Authorization` header of a merchant's request:
//!
//! ```text
//! WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",signature="…",timestamp="…",serial_no="…"
//! ```
//!
//! The signature covers five LF-terminated lines: method, canonical URL (path and raw query as
//! sent), timestamp, nonce and the raw body (empty for GET).

use crate::SIGNATURE_SCHEME;
use crate::crypto::PrivateKey;

/// The message a merchant signs for one request.
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(
        method.len() + canonical_url.len() + timestamp.len() + nonce.len() + body.len() + 5,
    );
    for part in [
        method.as_bytes(),
        canonical_url.as_bytes(),
        timestamp.as_bytes(),
        nonce.as_bytes(),
        body,
    ] {
        message.extend_from_slice(part);
        message.push(b'\n');
    }
    message
}

/// A merchant's request signer: its mchid, the serial of its API certificate and its key.
#[derive(Debug)]
pub struct MerchantSigner {
    pub mchid: String,
    pub serial_no: String,
    pub key: PrivateKey,
}

impl MerchantSigner {
    /// Signs one request and returns the header fields.
    pub fn authorize(
        &self,
        method: &str,
        canonical_url: &str,
        body: &[u8],
        timestamp: i64,
        nonce: &str,
    ) -> Authorization {
        let timestamp = timestamp.to_string();
        let message = request_message(method, canonical_url, &timestamp, nonce, body);
        Authorization {
            mchid: self.mchid.clone(),
            serial_no: self.serial_no.clone(),
            nonce_str: nonce.to_string(),
            timestamp,
            signature: self.key.sign(&message),
        }
    }
}

/// The parsed `Authorization` header. Values are kept exactly as sent, because the signature
/// covers the timestamp and nonce strings as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub serial_no: String,
    pub nonce_str: String,
    pub timestamp: String,
    pub signature: String,
}

impl Authorization {
    /// The header value, pairs in the order the Go and Java SDKs use.
    pub fn header_value(&self) -> String {
        format!(
            "{SIGNATURE_SCHEME} mchid=\"{}\",nonce_str=\"{}\",timestamp=\"{}\",serial_no=\"{}\",signature=\"{}\"",
            self.mchid, self.nonce_str, self.timestamp, self.serial_no, self.signature
        )
    }

    /// The message this header claims to have signed, for a given request.
    pub fn message(&self, method: &str, canonical_url: &str, body: &[u8]) -> Vec<u8> {
        request_message(
            method,
            canonical_url,
            &self.timestamp,
            &self.nonce_str,
            body,
        )
    }

    /// Parses a header value. Pairs may come in any order; unknown pairs are ignored; every one
    /// of the five known pairs must appear exactly once with a non-empty value.
    pub fn parse(header: &str) -> Result<Self, AuthorizationError> {
        let rest = header
            .strip_prefix(SIGNATURE_SCHEME)
            .ok_or(AuthorizationError::Scheme)?;
        let rest = rest.strip_prefix(' ').ok_or(AuthorizationError::Malformed(
            "a space must follow the scheme",
        ))?;
        let mut fields: [Option<&str>; 5] = [None; 5];
        for (key, value) in Pairs(rest.trim_start()) {
            let (key, value) = (key?, value);
            let slot = match key {
                "mchid" => 0,
                "serial_no" => 1,
                "nonce_str" => 2,
                "timestamp" => 3,
                "signature" => 4,
                _ => continue,
            };
            if fields[slot].replace(value).is_some() {
                return Err(AuthorizationError::Duplicate(FIELD_NAMES[slot]));
            }
        }
        let take = |slot: usize| -> Result<String, AuthorizationError> {
            match fields[slot] {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(AuthorizationError::Missing(FIELD_NAMES[slot])),
            }
        };
        let parsed = Self {
            mchid: take(0)?,
            serial_no: take(1)?,
            nonce_str: take(2)?,
            timestamp: take(3)?,
            signature: take(4)?,
        };
        if parsed.timestamp.parse::<i64>().is_err() {
            return Err(AuthorizationError::Timestamp);
        }
        Ok(parsed)
    }

    pub fn timestamp_unix(&self) -> i64 {
        self.timestamp.parse().unwrap_or(i64::MIN)
    }
}

const FIELD_NAMES: [&str; 5] = ["mchid", "serial_no", "nonce_str", "timestamp", "signature"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("the Authorization header must start with {SIGNATURE_SCHEME}")]
    Scheme,
    #[error("the Authorization header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the Authorization header lacks {0}")]
    Missing(&'static str),
    #[error("the Authorization header names {0} twice")]
    Duplicate(&'static str),
    #[error("the Authorization timestamp is not a whole number of seconds")]
    Timestamp,
}

/// Iterates `key="value"` pairs separated by commas.
struct Pairs<'a>(&'a str);

impl<'a> Iterator for Pairs<'a> {
    type Item = (Result<&'a str, AuthorizationError>, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.0.trim_start_matches([' ', ',']);
        if s.is_empty() {
            return None;
        }
        let Some((key, after)) = s.split_once('=') else {
            self.0 = "";
            return Some((Err(AuthorizationError::Malformed("a pair lacks '='")), ""));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            self.0 = "";
            return Some((
                Err(AuthorizationError::Malformed("a pair has a bad name")),
                "",
            ));
        }
        let Some(quoted) = after.strip_prefix('"') else {
            self.0 = "";
            return Some((
                Err(AuthorizationError::Malformed("a value is not quoted")),
                "",
            ));
        };
        let Some((value, tail)) = quoted.split_once('"') else {
            self.0 = "";
            return Some((
                Err(AuthorizationError::Malformed("a value is not closed")),
                "",
            ));
        };
        let tail = tail.trim_start();
        if !(tail.is_empty() || tail.starts_with(',')) {
            self.0 = "";
            return Some((
                Err(AuthorizationError::Malformed(
                    "pairs must be separated by commas",
                )),
                "",
            ));
        }
        self.0 = tail;
        Some((Ok(key), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "c2lnbmF0dXJl";

    fn check(header: &str, expected: Result<(&str, &str, &str, &str), AuthorizationError>) {
        let got = Authorization::parse(header).map(|a| {
            (
                a.mchid.clone(),
                a.serial_no.clone(),
                a.nonce_str.clone(),
                a.timestamp.clone(),
            )
        });
        let expected = expected
            .map(|(m, s, n, t)| (m.to_string(), s.to_string(), n.to_string(), t.to_string()));
        assert_eq!(got, expected, "{header}");
    }

    #[test]
    fn parses_every_sdk_order() {
        let ok = Ok(("1900009191", "ABC", "N1", "1554208460"));
        // Go and Java.
        check(
            &format!(
                "WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\",nonce_str=\"N1\",timestamp=\"1554208460\",serial_no=\"ABC\",signature=\"{SIG}\""
            ),
            ok.clone(),
        );
        // Python wechatpayv3.
        check(
            &format!(
                "WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\",nonce_str=\"N1\",signature=\"{SIG}\",timestamp=\"1554208460\",serial_no=\"ABC\""
            ),
            ok.clone(),
        );
        // The axios plugin.
        check(
            &format!(
                "WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\",serial_no=\"ABC\",timestamp=\"1554208460\",nonce_str=\"N1\",signature=\"{SIG}\""
            ),
            ok.clone(),
        );
        // Spaces after commas are tolerated; unknown pairs are ignored.
        check(
            &format!(
                "WECHATPAY2-SHA256-RSA2048 mchid=\"1900009191\", serial_no=\"ABC\", x=\"y\", timestamp=\"1554208460\", nonce_str=\"N1\", signature=\"{SIG}\""
            ),
            ok,
        );
    }

    #[test]
    fn rejects_malformed_headers() {
        use AuthorizationError::*;
        let full = |s: &str| format!("WECHATPAY2-SHA256-RSA2048 {s}");
        check("", Err(Scheme));
        check("Bearer abc", Err(Scheme));
        check(
            "WECHATPAY2-SHA256-RSA2048",
            Err(Malformed("a space must follow the scheme")),
        );
        check(&full("mchid=\"1\""), Err(Missing("serial_no")));
        check(
            &full("mchid=1,serial_no=\"a\""),
            Err(Malformed("a value is not quoted")),
        );
        check(&full("mchid=\"1"), Err(Malformed("a value is not closed")));
        check(
            &full("mchid=\"1\" serial_no=\"2\""),
            Err(Malformed("pairs must be separated by commas")),
        );
        check(&full("mchid=\"1\",mchid=\"2\""), Err(Duplicate("mchid")));
        check(
            &full(&format!(
                "mchid=\"1\",serial_no=\"S\",nonce_str=\"n\",timestamp=\"soon\",signature=\"{SIG}\""
            )),
            Err(Timestamp),
        );
        check(
            &full(&format!(
                "mchid=\"\",serial_no=\"S\",nonce_str=\"n\",timestamp=\"1\",signature=\"{SIG}\""
            )),
            Err(Missing("mchid")),
        );
    }
}
