//! `AEAD_AES_256_GCM` as WeChat Pay uses it for callback resources and `/v3/certificates`:
//! the APIv3 key's bytes as the key, a 12-byte ASCII nonce, the associated data, and the
//! 16-byte tag appended to the ciphertext; all of it base64 on the wire.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

pub const ALGORITHM: &str = "AEAD_AES_256_GCM";

/// The 32-byte APIv3 key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiV3Key([u8; 32]);

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

impl ApiV3Key {
    /// The key as set in the merchant platform: 32 ASCII characters, used as bytes.
    pub fn new(key: &str) -> Result<Self, AeadError> {
        let bytes: [u8; 32] = key
            .as_bytes()
            .try_into()
            .map_err(|_| AeadError::KeyLength(key.len()))?;
        Ok(Self(bytes))
    }

    /// A fresh random key of 32 characters from `[0-9A-Za-z]`.
    pub fn generate() -> Self {
        Self::new(&crate::nonce(32)).expect("32 ASCII characters are 32 bytes")
    }

    /// The key's text. This exposes the secret.
    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.0).expect("built from a str")
    }

    pub fn open(&self, nonce: &str, aad: &str, ciphertext_b64: &str) -> Result<Vec<u8>, AeadError> {
        open(&self.0, nonce, aad, ciphertext_b64)
    }

    pub fn seal(&self, nonce: &str, aad: &str, plaintext: &[u8]) -> Result<String, AeadError> {
        seal(&self.0, nonce, aad, plaintext)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    #[error("the APIv3 key must be 32 bytes, not {0}")]
    KeyLength(usize),
    #[error("the nonce must be 12 bytes, not {0}")]
    NonceLength(usize),
    #[error("the ciphertext is not valid base64")]
    Base64,
    #[error("the ciphertext does not decrypt under this key, nonce and associated data")]
    Decrypt,
}

/// Decrypts with AES-GCM, choosing AES-256 for a 32-byte key and AES-128 for a 16-byte one
/// (the official Go SDK's test vectors use 16-byte keys; real APIv3 keys are 32 bytes).
pub fn open(
    key: &[u8],
    nonce: &str,
    aad: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, AeadError> {
    let key = aead_key(key)?;
    let nonce = aead_nonce(nonce)?;
    let mut in_out = B64
        .decode(ciphertext_b64.as_bytes())
        .map_err(|_| AeadError::Base64)?;
    let plaintext_len = key
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
        .map_err(|_| AeadError::Decrypt)?
        .len();
    in_out.truncate(plaintext_len);
    Ok(in_out)
}

/// Encrypts and appends the tag, returning base64.
pub fn seal(key: &[u8], nonce: &str, aad: &str, plaintext: &[u8]) -> Result<String, AeadError> {
    let key = aead_key(key)?;
    let nonce = aead_nonce(nonce)?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(aad.as_bytes()), &mut in_out)
        .map_err(|_| AeadError::Decrypt)?;
    Ok(B64.encode(in_out))
}

fn aead_key(key: &[u8]) -> Result<LessSafeKey, AeadError> {
    let algorithm = match key.len() {
        32 => &AES_256_GCM,
        16 => &AES_128_GCM,
        n => return Err(AeadError::KeyLength(n)),
    };
    let unbound = UnboundKey::new(algorithm, key).map_err(|_| AeadError::KeyLength(key.len()))?;
    Ok(LessSafeKey::new(unbound))
}

fn aead_nonce(nonce: &str) -> Result<Nonce, AeadError> {
    Nonce::try_assume_unique_for_key(nonce.as_bytes())
        .map_err(|_| AeadError::NonceLength(nonce.len()))
}
