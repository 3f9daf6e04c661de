//! `GET /v3/certificates`: the platform certificates, each encrypted under the APIv3 key.

use serde::{Deserialize, Serialize};

use crate::aead::{AeadError, ApiV3Key};
use crate::crypto::{Certificate, KeyError};

pub const CERTIFICATES_PATH: &str = "/v3/certificates";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedCertificate {
    pub algorithm: String,
    pub nonce: String,
    pub associated_data: String,
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEntry {
    pub serial_no: String,
    pub effective_time: String,
    pub expire_time: String,
    pub encrypt_certificate: EncryptedCertificate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatesAnswer {
    pub data: Vec<CertificateEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateDecodeError {
    #[error(transparent)]
    Decrypt(#[from] AeadError),
    #[error("the decrypted certificate is not a certificate: {0}")]
    Certificate(#[from] KeyError),
    #[error("the answer says serial {listed} but the certificate's serial is {actual}")]
    SerialMismatch { listed: String, actual: String },
}

impl CertificatesAnswer {
    /// Decrypts every certificate and checks that its serial is the one listed beside it.
    pub fn decrypt(&self, key: &ApiV3Key) -> Result<Vec<Certificate>, CertificateDecodeError> {
        self.data
            .iter()
            .map(|entry| {
                let enc = &entry.encrypt_certificate;
                let pem = key.open(&enc.nonce, &enc.associated_data, &enc.ciphertext)?;
                let cert = Certificate::from_pem(&String::from_utf8_lossy(&pem))?;
                if cert.serial_no != entry.serial_no {
                    return Err(CertificateDecodeError::SerialMismatch {
                        listed: entry.serial_no.clone(),
                        actual: cert.serial_no,
                    });
                }
                Ok(cert)
            })
            .collect()
    }
}
