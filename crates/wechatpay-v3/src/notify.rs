//! Callbacks (notifications) from WeChat Pay to a merchant's `notify_url`: a signed JSON
//! envelope whose `resource` is encrypted under the APIv3 key.
//!
//! [`open`] does all of it in order: verify the signature over the raw body (with the clock
//! window), parse the envelope, decrypt the resource. A caller then parses the plaintext as a
//! [`Transaction`](crate::model::Transaction) or a
//! [`RefundNotification`](crate::model::RefundNotification) and cross-checks it.

use serde::{Deserialize, Serialize};

use crate::aead::{self, AeadError, ApiV3Key};
use crate::verify::{SignatureHeaders, Verifier, VerifyError};

pub const EVENT_TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";
pub const EVENT_REFUND_SUCCESS: &str = "REFUND.SUCCESS";
pub const EVENT_REFUND_ABNORMAL: &str = "REFUND.ABNORMAL";
pub const EVENT_REFUND_CLOSED: &str = "REFUND.CLOSED";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub original_type: String,
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: Option<String>,
    pub nonce: String,
}

impl EncryptedResource {
    /// Encrypts `plaintext` the way WeChat does (used by the simulator and by tests).
    pub fn seal(
        key: &ApiV3Key,
        original_type: &str,
        associated_data: &str,
        nonce: &str,
        plaintext: &[u8],
    ) -> Result<Self, AeadError> {
        Ok(Self {
            original_type: original_type.to_string(),
            algorithm: aead::ALGORITHM.to_string(),
            ciphertext: key.seal(nonce, associated_data, plaintext)?,
            associated_data: Some(associated_data.to_string()),
            nonce: nonce.to_string(),
        })
    }

    /// Decrypts with a raw key of 32 (or, for the SDK's test vectors, 16) bytes.
    pub fn open_with(&self, key: &[u8]) -> Result<Vec<u8>, NotifyError> {
        if self.algorithm != aead::ALGORITHM {
            return Err(NotifyError::Algorithm(self.algorithm.clone()));
        }
        let aad = self.associated_data.as_deref().unwrap_or("");
        Ok(aead::open(key, &self.nonce, aad, &self.ciphertext)?)
    }
}

/// The callback envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    #[serde(default)]
    pub resource_type: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub summary: Option<String>,
    pub resource: EncryptedResource,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("signature: {0}")]
    Verify(#[from] VerifyError),
    #[error("the body is not a WeChat Pay notification envelope: {0}")]
    Envelope(String),
    #[error("resource.algorithm {0:?} is not AEAD_AES_256_GCM")]
    Algorithm(String),
    #[error("resource: {0}")]
    Decrypt(#[from] AeadError),
}

/// A verified and decrypted callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNotification {
    pub envelope: Notification,
    pub plaintext: Vec<u8>,
}

impl OpenedNotification {
    pub fn resource<T: serde::de::DeserializeOwned>(&self) -> Result<T, NotifyError> {
        serde_json::from_slice(&self.plaintext).map_err(|e| NotifyError::Envelope(e.to_string()))
    }
}

/// Verifies, parses and decrypts one callback.
pub fn open(
    verifier: &Verifier,
    headers: &SignatureHeaders,
    body: &[u8],
    key: &ApiV3Key,
    now_unix: i64,
) -> Result<OpenedNotification, NotifyError> {
    verifier.verify(headers, body, now_unix)?;
    let envelope: Notification =
        serde_json::from_slice(body).map_err(|e| NotifyError::Envelope(e.to_string()))?;
    let plaintext = envelope.resource.open_with(key.expose().as_bytes())?;
    Ok(OpenedNotification {
        envelope,
        plaintext,
    })
}
