//! WeChat Pay API v3, done exactly and reusable on its own.
//!
//! The crate is split the way the protocol is:
//!
//! * [`crypto`]: RSA-2048 keys, PKCS#1 v1.5 SHA-256 signatures, X.509 platform certificates.
//! * [`auth`]: the `WECHATPAY2-SHA256-RSA2048` `Authorization` header, built and parsed.
//! * [`verify`]: verification of signed answers and callbacks, by platform certificate or by
//!   WeChat Pay public key, against an injected clock.
//! * [`aead`]: `AEAD_AES_256_GCM` as used for callbacks and `/v3/certificates`.
//! * [`paysign`]: client-side signatures for the JS API, Mini Programs and the APP SDK.
//! * [`model`]: typed requests and answers; [`validate`]: WeChat's field rules.
//! * [`error`]: the `{code, message, detail}` error model with retry classification.
//! * [`bill`]: bill hashes, gzip and the CSV layout.
//! * [`client`] (feature `client`): a thin async HTTP client around all of the above.
//!
//! Everything but [`client`] is pure: functions over bytes and a clock value, no IO.
//! The crate knows nothing of any gateway built on top of it.

pub mod aead;
pub mod auth;
pub mod bill;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod model;
pub mod notify;
pub mod paysign;
pub mod validate;
pub mod verify;

#[cfg(feature = "client")]
pub mod client;

pub use clock::{Clock, FixedClock, SystemClock};
pub use crypto::{PrivateKey, PublicKey};

/// The one signature scheme API v3 uses, as it appears in `Authorization` and
/// `Wechatpay-Signature-Type`.
pub const SIGNATURE_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// How far a signed answer's or callback's timestamp may be from the local clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Generates a random nonce of `len` characters from `[0-9A-Za-z]`, as the official SDKs do.
pub fn nonce(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
