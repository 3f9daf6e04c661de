//! Front doors' credentials and tokens: what each door's caller presents is checked here, and
//! the door then calls the same application functions as the `/v1` API.

use wxgate_domain::door::Door;
use wxgate_store::{DoorCredentialRow, MerchantRow, Store};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::secrets::{MasterKey, random_digits, random_hex, secrets_equal, sha256_hex};

/// How long an access token of the payment-intents door lives (that system's own default).
pub const TOKEN_LIFETIME_MS: i64 = 3600 * 1000;
/// Random bytes in a door secret and in an access token (hex: twice as many characters).
const SECRET_BYTES: usize = 32;
const TOKEN_BYTES: usize = 48;

/// Issues a credential of `door` for a merchant: (key id, secret). The secret is shown once
/// and kept sealed (the door signs notifications with it).
pub async fn create_credential(
    store: &Store,
    master: &MasterKey,
    merchant_id: &str,
    door: Door,
    now: i64,
) -> anyhow::Result<(String, String)> {
    let key_id = match door {
        // A merchant number: digits, like the system's own uids.
        Door::PaymentIntents => format!("8{}", random_digits(11)),
        // A merchant code: letters and digits, like the system's own.
        Door::TwoCheckout => format!("WXG{}", random_digits(7)),
        // An API key id: 16 hex characters, like the system's own.
        Door::Connect => random_hex(8),
        // Two key pairs rather than a shared secret.
        Door::OpenApi => return open_api_credential(store, master, merchant_id, now).await,
    };
    let secret = random_hex(SECRET_BYTES);
    store
        .insert_door_credential(&DoorCredentialRow {
            door: door.as_str().into(),
            key_id: key_id.clone(),
            merchant_id: merchant_id.into(),
            secret_sealed: master.seal(secret.as_bytes()),
            created_at: now,
            revoked_at: None,
        })
        .await?;
    Ok((key_id, secret))
}

/// The open API door's credential: an appId, and two RSA key pairs, the merchant's (it signs
/// requests; the gateway keeps the public half) and the platform's (it signs notifications;
/// the merchant gets the public half). Answers (appId, JSON of the merchant's private key and
/// the platform's public key); keeps (JSON of the merchant's public key and the platform's
/// private key) sealed.
async fn open_api_credential(
    store: &Store,
    master: &MasterKey,
    merchant_id: &str,
    now: i64,
) -> anyhow::Result<(String, String)> {
    use base64::Engine;
    let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
    let merchant_key = wechatpay_v3::crypto::PrivateKey::generate()?;
    let platform_key = wechatpay_v3::crypto::PrivateKey::generate()?;
    let app_id = random_hex(16);
    let kept = serde_json::json!({
        "merchant_public_key": b64(merchant_key.public_key().spki_der()),
        "platform_private_key": platform_key.expose_pkcs8_pem(),
    });
    store
        .insert_door_credential(&DoorCredentialRow {
            door: Door::OpenApi.as_str().into(),
            key_id: app_id.clone(),
            merchant_id: merchant_id.into(),
            secret_sealed: master.seal(kept.to_string().as_bytes()),
            created_at: now,
            revoked_at: None,
        })
        .await?;
    let given = serde_json::json!({
        "merchant_private_key": merchant_key.expose_pkcs8_pem(),
        "platform_public_key": b64(platform_key.public_key().spki_der()),
    });
    Ok((app_id, given.to_string()))
}

/// The merchant behind `door` credential `key_id`, and its secret (for a door whose callers
/// prove they hold it by a signature rather than by sending it).
pub async fn credential(
    gw: &Gateway,
    door: Door,
    key_id: &str,
) -> ApiResult<(MerchantRow, String)> {
    let c = gw
        .store()
        .door_credential(door.as_str(), key_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown credentials"))?;
    let secret = gw
        .signing_secret(&format!("door:{}", c.key_id), &c.secret_sealed)
        .map_err(|e| ApiError::internal("opening a door secret", e))?;
    Ok((merchant(gw, &c.merchant_id).await?, secret))
}

/// The merchant whose `door` credential `key_id` has the secret `given`.
pub async fn check_secret(
    gw: &Gateway,
    door: Door,
    key_id: &str,
    given: &str,
) -> ApiResult<MerchantRow> {
    let refused = || ApiError::new(ErrorCode::Unauthorized, "unknown credentials");
    let c = gw
        .store()
        .door_credential(door.as_str(), key_id)
        .await?
        .ok_or_else(refused)?;
    let secret = gw
        .config()
        .master_key
        .open(&c.secret_sealed)
        .map_err(|e| ApiError::internal("opening a door secret", e))?;
    if !secrets_equal(&secret, given.as_bytes()) {
        return Err(refused());
    }
    merchant(gw, &c.merchant_id).await
}

/// A new access token of `door` for the merchant, valid for `lifetime_ms`: (token, seconds).
pub async fn issue_token(
    gw: &Gateway,
    door: Door,
    merchant_id: &str,
    lifetime_ms: i64,
) -> ApiResult<(String, i64)> {
    let token = random_hex(TOKEN_BYTES);
    let now = gw.now_ms();
    gw.store()
        .insert_door_token(
            &sha256_hex(token.as_bytes()),
            door.as_str(),
            merchant_id,
            (now, now + lifetime_ms),
        )
        .await?;
    Ok((token, lifetime_ms / 1000))
}

/// The merchant behind a live access token of `door`.
pub async fn token_merchant(gw: &Gateway, door: Door, token: &str) -> ApiResult<MerchantRow> {
    let id = gw
        .store()
        .door_token_merchant(door.as_str(), &sha256_hex(token.as_bytes()), gw.now_ms())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "invalid or expired access token"))?;
    merchant(gw, &id).await
}

async fn merchant(gw: &Gateway, id: &str) -> ApiResult<MerchantRow> {
    gw.store()
        .merchant(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the merchant is gone"))
}

/// Revokes a door's credential (a leaked secret or key): it authenticates nothing from now on,
/// and the merchant's tokens and sessions of that door end with it. False when no active
/// credential of the door has the id.
pub async fn revoke_credential(
    store: &Store,
    door: Door,
    key_id: &str,
    now: i64,
) -> anyhow::Result<bool> {
    Ok(store
        .revoke_door_credential(door.as_str(), key_id, now)
        .await?)
}

/// Forgets the doors' expired tokens and sessions (the background round does, every few
/// minutes).
pub async fn forget_expired_tokens(gw: &Gateway) -> anyhow::Result<u64> {
    Ok(gw.store().purge_expired_door_tokens(gw.now_ms()).await?)
}
