//! RSA-2048 keys and SHA256withRSA (RSASSA-PKCS1-v1_5) signatures, RSAES-OAEP (SHA-1, MGF1
//! SHA-1) for sensitive request fields such as a payee's `user_name`, and the X.509 platform
//! certificates WeChat Pay signs with in certificate mode.
//!
//! Signatures travel as standard base64 with padding.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM document with the label {expected}")]
    Pem { expected: &'static str },
    #[error("the key is not an RSA key of 2048 bits or more")]
    Rejected,
    #[error("not an X.509 certificate")]
    Certificate,
    #[error("RSA key generation failed")]
    Generate,
}

/// A sensitive field could not be encrypted or decrypted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    #[error("the text is too long for RSA-OAEP with this key")]
    TooLong,
    #[error("the ciphertext is not valid base64")]
    Base64,
    #[error("RSA-OAEP failed (wrong key, or not a ciphertext)")]
    Failed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("the signature is not valid base64")]
    Base64,
    #[error("the signature does not match")]
    Mismatch,
}

/// An RSA private key used for signing. Its `Debug` never shows key material.
pub struct PrivateKey {
    pair: KeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PrivateKey {
    /// Parses a PKCS#8 PEM key (`-----BEGIN PRIVATE KEY-----`, as in `apiclient_key.pem`).
    pub fn from_pkcs8_pem(pem_text: &str) -> Result<Self, KeyError> {
        let der = pem_der(pem_text, "PRIVATE KEY")?;
        Self::from_pkcs8_der(&der)
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = KeyPair::from_pkcs8(der).map_err(|_| KeyError::Rejected)?;
        if pair.public_modulus_len() < 256 {
            return Err(KeyError::Rejected);
        }
        Ok(Self { pair })
    }

    /// Decrypts a base64 RSAES-OAEP (SHA-1, MGF1 SHA-1) field encrypted to this key's public
    /// half (WeChat Pay's answers encrypt `user_name` to the merchant's key; the simulator reads
    /// the merchant's with its own).
    pub fn decrypt_oaep(&self, ciphertext_b64: &str) -> Result<Vec<u8>, CipherError> {
        use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, PrivateDecryptingKey};
        let ciphertext = B64
            .decode(ciphertext_b64.as_bytes())
            .map_err(|_| CipherError::Base64)?;
        let key = PrivateDecryptingKey::from_pkcs8(&self.expose_pkcs8_der())
            .map_err(|_| CipherError::Failed)?;
        let key = OaepPrivateDecryptingKey::new(key).map_err(|_| CipherError::Failed)?;
        let mut out = vec![0u8; key.min_output_size()];
        let opened = key
            .decrypt(&OAEP_SHA1_MGF1SHA1, &ciphertext, &mut out, None)
            .map_err(|_| CipherError::Failed)?;
        Ok(opened.to_vec())
    }

    /// A fresh RSA-2048 key.
    pub fn generate() -> Result<Self, KeyError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
        Ok(Self { pair })
    }

    /// The key as PKCS#8 DER. This exposes the secret: callers decide where it may go.
    pub fn expose_pkcs8_der(&self) -> Vec<u8> {
        let der: Pkcs8V1Der<'static> = self.pair.as_der().expect("an RSA key always encodes");
        der.as_ref().to_vec()
    }

    /// The key as PKCS#8 PEM. This exposes the secret: callers decide where it may go.
    pub fn expose_pkcs8_pem(&self) -> String {
        pem_lf(pem::Pem::new("PRIVATE KEY", self.expose_pkcs8_der()))
    }

    pub fn public_key(&self) -> PublicKey {
        use aws_lc_rs::signature::KeyPair as _;
        let der: PublicKeyX509Der<'static> = self
            .pair
            .public_key()
            .as_der()
            .expect("an RSA public key always encodes");
        PublicKey::from_spki_der(der.as_ref())
            .expect("a key pair's own public key parses (its modulus is 2048 bits or more)")
    }

    /// Signs `message` with SHA256withRSA and returns the base64 signature.
    pub fn sign(&self, message: &[u8]) -> String {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
            .expect("RSA signing with a valid key and a correctly sized buffer cannot fail");
        B64.encode(signature)
    }
}

/// An RSA public key (the WeChat Pay public key, or the key inside a platform certificate),
/// parsed once for verifying: a gateway checks every answer WeChat signs with the same key.
#[derive(Clone)]
pub struct PublicKey {
    spki_der: Vec<u8>,
    verifying: ParsedPublicKey,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} bytes SPKI)", self.spki_der.len())
    }
}

impl PublicKey {
    /// Parses an SPKI PEM key (`-----BEGIN PUBLIC KEY-----`), the form WeChat Pay hands out
    /// with a `PUB_KEY_ID_...`.
    pub fn from_spki_pem(pem_text: &str) -> Result<Self, KeyError> {
        Self::from_spki_der(&pem_der(pem_text, "PUBLIC KEY")?)
    }

    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| KeyError::Rejected)?;
        let spki: PublicKeyX509Der<'static> = key.as_der().map_err(|_| KeyError::Rejected)?;
        let verifying = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki.as_ref())
            .map_err(|_| KeyError::Rejected)?;
        Ok(Self {
            spki_der: spki.as_ref().to_vec(),
            verifying,
        })
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub fn to_spki_pem(&self) -> String {
        pem_lf(pem::Pem::new("PUBLIC KEY", self.spki_der.clone()))
    }

    /// Encrypts a sensitive field with RSAES-OAEP (SHA-1, MGF1 SHA-1, no label), base64, as
    /// WeChat Pay wants `user_name` and other personal fields.
    pub fn encrypt_oaep(&self, plaintext: &[u8]) -> Result<String, CipherError> {
        use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, PublicEncryptingKey};
        let key = PublicEncryptingKey::from_der(&self.spki_der).map_err(|_| CipherError::Failed)?;
        let key = OaepPublicEncryptingKey::new(key).map_err(|_| CipherError::Failed)?;
        if plaintext.len() > key.max_plaintext_size(&OAEP_SHA1_MGF1SHA1) {
            return Err(CipherError::TooLong);
        }
        let mut out = vec![0u8; key.ciphertext_size()];
        let sealed = key
            .encrypt(&OAEP_SHA1_MGF1SHA1, plaintext, &mut out, None)
            .map_err(|_| CipherError::Failed)?;
        Ok(B64.encode(sealed))
    }

    /// Checks a base64 SHA256withRSA signature over `message`.
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> Result<(), SignatureError> {
        let signature = B64
            .decode(signature_b64.as_bytes())
            .map_err(|_| SignatureError::Base64)?;
        self.verifying
            .verify_sig(message, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// A platform certificate: its serial as WeChat writes it, its validity and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Upper-case hex without leading zeros, e.g. `5157F09EFDC096DE15EBE81A47057A7232F1B8E1`.
    pub serial_no: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub public_key: PublicKey,
    pub pem: String,
}

impl Certificate {
    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
            .map_err(|_| KeyError::Certificate)?;
        if parsed.label != "CERTIFICATE" {
            return Err(KeyError::Pem {
                expected: "CERTIFICATE",
            });
        }
        let cert = parsed.parse_x509().map_err(|_| KeyError::Certificate)?;
        let public_key = PublicKey::from_spki_der(cert.public_key().raw)?;
        Ok(Self {
            serial_no: serial_hex(cert.raw_serial()),
            not_before_unix: cert.validity().not_before.timestamp(),
            not_after_unix: cert.validity().not_after.timestamp(),
            public_key,
            pem: pem_text.to_string(),
        })
    }

    pub fn is_valid_at(&self, now_unix: i64) -> bool {
        self.not_before_unix <= now_unix && now_unix <= self.not_after_unix
    }
}

/// Formats a certificate serial the way WeChat Pay does: upper-case hex, no leading zeros.
pub fn serial_hex(raw: &[u8]) -> String {
    let hex = hex::encode_upper(raw);
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

fn pem_lf(p: pem::Pem) -> String {
    pem::encode_config(
        &p,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn pem_der(pem_text: &str, expected: &'static str) -> Result<Vec<u8>, KeyError> {
    let parsed = pem::parse(pem_text.trim()).map_err(|_| KeyError::Pem { expected })?;
    if parsed.tag() != expected {
        return Err(KeyError::Pem { expected });
    }
    Ok(parsed.into_contents())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oaep_fields_open_only_with_their_key() {
        let key = PrivateKey::generate().unwrap();
        let sealed = key.public_key().encrypt_oaep("张三".as_bytes()).unwrap();
        assert_eq!(sealed.len(), 344, "256 bytes, base64");
        assert_ne!(
            sealed,
            key.public_key().encrypt_oaep("张三".as_bytes()).unwrap(),
            "randomised"
        );
        assert_eq!(key.decrypt_oaep(&sealed).unwrap(), "张三".as_bytes());
        let other = PrivateKey::generate().unwrap();
        assert_eq!(other.decrypt_oaep(&sealed), Err(CipherError::Failed));
        assert_eq!(key.decrypt_oaep("not base64!"), Err(CipherError::Base64));
        assert_eq!(
            key.public_key().encrypt_oaep(&[0u8; 215]),
            Err(CipherError::TooLong)
        );
    }
}
