//! Verification of what WeChat Pay signs: API answers (2xx, 204 included) and callbacks.
//!
//! The signed message is `timestamp\nnonce\nbody\n` over the raw body bytes. The key is picked by
//! `Wechatpay-Serial`: a platform certificate serial (upper-case hex) or a `PUB_KEY_ID_...`.
//! A merchant switching from certificates to the public key registers both and accepts both.

use std::collections::HashMap;

use crate::crypto::{Certificate, PublicKey, SignatureError};
use crate::{MAX_CLOCK_SKEW_SECS, SIGNATURE_SCHEME};

pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";

/// The prefix WeChat Pay puts on deliberately wrong signatures it sends to check that merchants
/// verify.
pub const SIGNATURE_PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The five `Wechatpay-*` headers of a signed answer or callback.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignatureHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub serial: String,
    pub signature: String,
    /// `Wechatpay-Signature-Type`; absent is read as the one scheme there is.
    pub signature_type: Option<String>,
}

impl SignatureHeaders {
    /// Reads the headers through a case-insensitive lookup (for example over `http::HeaderMap`).
    /// A missing required header is an error naming it.
    pub fn from_lookup<'a>(lookup: impl Fn(&str) -> Option<&'a str>) -> Result<Self, VerifyError> {
        let required = |name: &'static str| -> Result<String, VerifyError> {
            lookup(name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or(VerifyError::MissingHeader(name))
        };
        Ok(Self {
            timestamp: required(HEADER_TIMESTAMP)?,
            nonce: required(HEADER_NONCE)?,
            serial: required(HEADER_SERIAL)?,
            signature: required(HEADER_SIGNATURE)?,
            signature_type: lookup(HEADER_SIGNATURE_TYPE).map(str::to_string),
        })
    }

    /// The message these headers claim to sign over `body`.
    pub fn message(&self, body: &[u8]) -> Vec<u8> {
        response_message(&self.timestamp, &self.nonce, body)
    }
}

/// `timestamp\nnonce\nbody\n`.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("Wechatpay-Signature-Type {0:?} is not {SIGNATURE_SCHEME}")]
    SignatureType(String),
    #[error("Wechatpay-Timestamp is not a whole number of seconds")]
    Timestamp,
    #[error(
        "Wechatpay-Timestamp is {skew_secs} s away from now; at most {MAX_CLOCK_SKEW_SECS} s is accepted"
    )]
    ClockSkew { skew_secs: i64 },
    #[error("no platform certificate or public key is known for serial {0:?}")]
    UnknownSerial(String),
    #[error("the platform certificate {0} is not valid at this time")]
    CertificateNotValid(String),
    #[error("the signature is a WeChat Pay signature probe and is not valid")]
    SignatureProbe,
    #[error("the signature is not valid base64")]
    SignatureEncoding,
    #[error("the signature does not match the message")]
    SignatureMismatch,
}

#[derive(Debug, Clone)]
enum TrustedKey {
    Certificate(Certificate),
    PublicKey(PublicKey),
}

/// The keys a merchant trusts, by serial or key id.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, TrustedKey>,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts a platform certificate under its own serial. Returns that serial.
    pub fn add_certificate(&mut self, certificate: Certificate) -> String {
        let serial = certificate.serial_no.clone();
        self.keys
            .insert(serial.clone(), TrustedKey::Certificate(certificate));
        serial
    }

    /// Trusts a WeChat Pay public key under its id (`PUB_KEY_ID_...`).
    pub fn add_public_key(&mut self, key_id: impl Into<String>, key: PublicKey) {
        self.keys.insert(key_id.into(), TrustedKey::PublicKey(key));
    }

    pub fn knows(&self, serial: &str) -> bool {
        self.keys.contains_key(serial)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Serials and ids of everything trusted.
    pub fn serials(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies a signed answer or callback at `now_unix`.
    pub fn verify(
        &self,
        headers: &SignatureHeaders,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        if let Some(kind) = &headers.signature_type
            && kind != SIGNATURE_SCHEME
        {
            return Err(VerifyError::SignatureType(kind.clone()));
        }
        let timestamp: i64 = headers
            .timestamp
            .trim()
            .parse()
            .map_err(|_| VerifyError::Timestamp)?;
        let skew_secs = now_unix.saturating_sub(timestamp);
        if skew_secs.abs() > MAX_CLOCK_SKEW_SECS {
            return Err(VerifyError::ClockSkew { skew_secs });
        }
        if headers.signature.starts_with(SIGNATURE_PROBE_PREFIX) {
            return Err(VerifyError::SignatureProbe);
        }
        let key = match self.keys.get(&headers.serial) {
            None => return Err(VerifyError::UnknownSerial(headers.serial.clone())),
            Some(TrustedKey::PublicKey(key)) => key,
            Some(TrustedKey::Certificate(cert)) => {
                if !cert.is_valid_at(now_unix) {
                    return Err(VerifyError::CertificateNotValid(cert.serial_no.clone()));
                }
                &cert.public_key
            }
        };
        key.verify(&headers.message(body), &headers.signature)
            .map_err(|e| match e {
                SignatureError::Base64 => VerifyError::SignatureEncoding,
                SignatureError::Mismatch => VerifyError::SignatureMismatch,
            })
    }
}
