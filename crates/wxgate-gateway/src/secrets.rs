//! Secrets at rest and API keys.
//!
//! Merchant credentials (private key, APIv3 key) are sealed with AES-256-GCM under the
//! operator's 32-byte master key, a random 12-byte nonce each time. API keys are shown once and
//! stored as SHA-256 hashes: they are long random strings, so a fast hash is enough.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// The operator's master key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the master key must be 64 hex characters (32 bytes)")]
    MasterKeyFormat,
    #[error("sealed data does not open under this master key")]
    Open,
}

impl MasterKey {
    /// Parses 64 hex characters.
    pub fn from_hex(hex_key: &str) -> Result<Self, SecretError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| SecretError::MasterKeyFormat)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::MasterKeyFormat)?;
        Ok(Self(key))
    }

    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system RNG works");
        Self(key)
    }

    pub fn expose_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn key(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("32-byte key"))
    }

    /// `base64(nonce || ciphertext || tag)`.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system RNG works");
        let mut in_out = plaintext.to_vec();
        self.key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut in_out,
            )
            .expect("sealing in memory cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&in_out);
        B64.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let bytes = B64.decode(sealed).map_err(|_| SecretError::Open)?;
        if bytes.len() < 12 + 16 {
            return Err(SecretError::Open);
        }
        let (nonce, rest) = bytes.split_at(12);
        let mut in_out = rest.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let plain = self
            .key()
            .open_in_place(nonce, Aad::empty(), &mut in_out)
            .map_err(|_| SecretError::Open)?;
        Ok(plain.to_vec())
    }
}

/// A new API key: `wxk_` and 40 random characters. Shown once.
pub fn new_api_key() -> String {
    format!("wxk_{}", wechatpay_v3::nonce(40))
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system RNG works");
    hex::encode(buf)
}

/// `n` random decimal digits.
pub fn random_digits(n: usize) -> String {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system RNG works");
    buf.iter().map(|b| char::from(b'0' + b % 10)).collect()
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// SHA-256, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

pub fn hash_api_key(key: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        key.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"apiv3 key");
        assert_ne!(key.seal(b"apiv3 key"), sealed, "a fresh nonce each time");
        assert_eq!(key.open(&sealed).unwrap(), b"apiv3 key");
        assert_eq!(MasterKey::generate().open(&sealed), Err(SecretError::Open));
        assert_eq!(key.open("AAAA"), Err(SecretError::Open));
        let again = MasterKey::from_hex(&key.expose_hex()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"apiv3 key");
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(format!("{key:?}").contains("redacted"));
    }

    #[test]
    fn api_keys_hash_stably() {
        let k = new_api_key();
        assert!(k.starts_with("wxk_") && k.len() == 44);
        assert_eq!(hash_api_key(&k), hash_api_key(&k));
        assert_ne!(hash_api_key(&k), hash_api_key(&new_api_key()));
    }
}
