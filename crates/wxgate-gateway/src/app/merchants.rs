//! Merchants: creation (live from their credentials, or sandbox from a simulator), their
//! region and paid-after-close policy, and API keys. The CLI and the demo call these.

use anyhow::Context;
use wechatpay_v3::aead::ApiV3Key;
use wechatpay_v3::crypto::{Certificate, PrivateKey, PublicKey};
use wxgate_domain::{Currency, MerchantMode, PaidAfterClosePolicy};
use wxgate_store::{MerchantRow, Store};

use crate::secrets::{MasterKey, hash_api_key, new_api_key};
use crate::upstream::SealedSecrets;

/// A merchant to create.
#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub name: String,
    pub mode: MerchantMode,
    pub mchid: String,
    pub appid: String,
    pub mini_program_appid: Option<String>,
    pub api_base_url: String,
    pub merchant_serial_no: String,
    pub merchant_private_key_pem: String,
    pub apiv3_key: String,
    /// The Official Account's AppSecret: lets the hosted checkout learn a payer's openid inside
    /// WeChat (webpage authorization).
    pub app_secret: Option<String>,
    pub platform_public_key_id: Option<String>,
    pub platform_public_key: Option<String>,
    pub platform_certificate: Option<String>,
    pub currencies: Vec<Currency>,
    pub paid_after_close_policy: PaidAfterClosePolicy,
    /// For a cross-border merchant: its merchant category code (4 digits).
    pub merchant_category_code: Option<String>,
    /// WeChat's fee rate for the merchant, basis points (60 = 0.60 %).
    pub fee_rate_bp: u32,
    /// For a cross-border merchant WeChat settles in another currency than it prices in: that
    /// currency. `None`: each payment settles in its own.
    pub settlement_currency: Option<Currency>,
}

/// WeChat's usual fee rate: 0.60 %.
pub const DEFAULT_FEE_RATE_BP: u32 = 60;
/// The highest fee rate accepted: 10 %.
pub const MAX_FEE_RATE_BP: u32 = 1_000;

/// A domestic merchant prices in CNY only; a cross-border one names its merchant category
/// code (4 digits) and may price in any currencies.
pub fn check_region(
    currencies: &[Currency],
    merchant_category_code: Option<&str>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!currencies.is_empty(), "at least one currency");
    match merchant_category_code {
        Some(mcc) => anyhow::ensure!(
            mcc.len() == 4 && mcc.bytes().all(|b| b.is_ascii_digit()),
            "the merchant category code is 4 digits"
        ),
        None => anyhow::ensure!(
            currencies == [Currency::CNY],
            "a domestic merchant prices in CNY only; a cross-border one needs --merchant-category-code"
        ),
    }
    Ok(())
}

/// Checks the credentials, seals the secrets and stores the merchant.
pub async fn create_merchant(
    store: &Store,
    master: &MasterKey,
    new: NewMerchant,
    now: i64,
) -> anyhow::Result<MerchantRow> {
    PrivateKey::from_pkcs8_pem(&new.merchant_private_key_pem).context("merchant private key")?;
    ApiV3Key::new(&new.apiv3_key).context("APIv3 key")?;
    anyhow::ensure!(
        new.platform_public_key.is_some() || new.platform_certificate.is_some(),
        "a platform public key (with its id) or a platform certificate is required"
    );
    if let Some(pem) = &new.platform_public_key {
        PublicKey::from_spki_pem(pem).context("platform public key")?;
        anyhow::ensure!(
            new.platform_public_key_id.is_some(),
            "the platform public key needs its PUB_KEY_ID_..."
        );
    }
    if let Some(pem) = &new.platform_certificate {
        Certificate::from_pem(pem).context("platform certificate")?;
    }
    check_region(&new.currencies, new.merchant_category_code.as_deref())?;
    check_settlement(
        new.merchant_category_code.as_deref(),
        new.settlement_currency,
    )?;
    anyhow::ensure!(
        new.fee_rate_bp <= MAX_FEE_RATE_BP,
        "the fee rate is at most {MAX_FEE_RATE_BP} basis points (10 %)"
    );
    url::Url::parse(&new.api_base_url).context("API base URL")?;
    let sealed = master.seal(&serde_json::to_vec(&SealedSecrets {
        merchant_private_key: new.merchant_private_key_pem,
        apiv3_key: new.apiv3_key,
        app_secret: new.app_secret,
    })?);
    let row = MerchantRow {
        id: wxgate_domain::id::generate("mch"),
        name: new.name,
        mode: new.mode,
        mchid: new.mchid,
        appid: new.appid,
        mini_program_appid: new.mini_program_appid,
        api_base_url: new.api_base_url,
        merchant_serial_no: new.merchant_serial_no,
        secrets_sealed: sealed,
        platform_public_key_id: new.platform_public_key_id,
        platform_public_key: new.platform_public_key,
        platform_certificate: new.platform_certificate,
        currencies: new
            .currencies
            .iter()
            .map(|c| c.code())
            .collect::<Vec<_>>()
            .join(","),
        paid_after_close_policy: new.paid_after_close_policy,
        created_at: now,
        merchant_category_code: new.merchant_category_code,
        fee_rate_bp: i64::from(new.fee_rate_bp),
        payout_scene: None,
        settlement_currency: new.settlement_currency.map(|c| c.code().to_string()),
    };
    store.insert_merchant(&row).await?;
    Ok(row)
}

/// Mints a sandbox merchant at a simulator and stores it.
pub async fn create_sandbox_merchant(
    store: &Store,
    master: &MasterKey,
    simulator_base: &str,
    name: &str,
) -> anyhow::Result<MerchantRow> {
    let base = simulator_base.trim_end_matches('/');
    let bundle: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/sim/merchants"))
        .json(&serde_json::json!({"signing": "public_key"}))
        .send()
        .await
        .context("the simulator did not answer")?
        .error_for_status()?
        .json()
        .await?;
    let s = |k: &str| -> anyhow::Result<String> {
        Ok(bundle[k]
            .as_str()
            .with_context(|| format!("the simulator's bundle lacks {k}"))?
            .to_string())
    };
    // The simulated Official Account's AppSecret, for webpage authorization.
    let details: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/sim/merchants/{}", s("mchid")?))
        .send()
        .await
        .context("the simulator did not answer")?
        .error_for_status()?
        .json()
        .await?;
    let app_secret = details["app_secret"]
        .as_str()
        .context("the simulator did not give the AppSecret")?
        .to_string();
    let new = NewMerchant {
        name: name.to_string(),
        mode: MerchantMode::Sandbox,
        mchid: s("mchid")?,
        appid: s("appid")?,
        mini_program_appid: None,
        api_base_url: format!("{base}/"),
        merchant_serial_no: s("merchant_serial_no")?,
        merchant_private_key_pem: s("merchant_private_key")?,
        apiv3_key: s("apiv3_key")?,
        app_secret: Some(app_secret),
        platform_public_key_id: Some(s("platform_public_key_id")?),
        platform_public_key: Some(s("platform_public_key")?),
        platform_certificate: Some(s("platform_certificate")?),
        currencies: vec![Currency::CNY],
        paid_after_close_policy: PaidAfterClosePolicy::Accept,
        merchant_category_code: None,
        fee_rate_bp: DEFAULT_FEE_RATE_BP,
        settlement_currency: None,
    };
    create_merchant(store, master, new, crate::clock::now_ms()).await
}

/// Issues an API key for a merchant. Returns (key id, key); the key is never shown again.
pub async fn create_api_key(store: &Store, merchant_id: &str) -> anyhow::Result<(String, String)> {
    anyhow::ensure!(
        store.merchant(merchant_id).await?.is_some(),
        "no merchant {merchant_id}"
    );
    let id = wxgate_domain::id::generate("key");
    let key = new_api_key();
    store
        .insert_api_key(
            &id,
            merchant_id,
            &hash_api_key(&key),
            crate::clock::now_ms(),
        )
        .await?;
    Ok((id, key))
}

/// Sets a merchant's pricing currencies and merchant category code (cross-border when set),
/// after the same check as at creation.
pub async fn set_region(
    store: &Store,
    merchant_id: &str,
    currencies: &[Currency],
    merchant_category_code: Option<&str>,
) -> anyhow::Result<()> {
    check_region(currencies, merchant_category_code)?;
    let codes: Vec<&str> = currencies.iter().map(|c| c.code()).collect();
    store
        .set_merchant_region(merchant_id, &codes.join(","), merchant_category_code)
        .await?;
    Ok(())
}

/// Only a cross-border merchant may settle in a currency of its own choosing: a domestic one
/// settles in CNY.
fn check_settlement(
    merchant_category_code: Option<&str>,
    settlement_currency: Option<Currency>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        settlement_currency.is_none() || merchant_category_code.is_some(),
        "a domestic merchant settles in CNY; a settlement currency is for a cross-border merchant"
    );
    Ok(())
}

/// Sets (or clears) the currency WeChat settles a cross-border merchant in.
pub async fn set_settlement_currency(
    store: &Store,
    merchant_id: &str,
    currency: Option<Currency>,
) -> anyhow::Result<()> {
    let merchant = store
        .merchant(merchant_id)
        .await?
        .with_context(|| format!("no merchant {merchant_id}"))?;
    check_settlement(merchant.merchant_category_code.as_deref(), currency)?;
    store
        .set_settlement_currency(merchant_id, currency.map(Currency::code))
        .await?;
    Ok(())
}

/// Sets what happens to the merchant's payments paid after their order was closed.
pub async fn set_paid_after_close_policy(
    store: &Store,
    merchant_id: &str,
    policy: PaidAfterClosePolicy,
) -> anyhow::Result<()> {
    store
        .set_paid_after_close_policy(merchant_id, policy)
        .await?;
    Ok(())
}

/// Every merchant, oldest first.
pub async fn list(store: &Store) -> anyhow::Result<Vec<MerchantRow>> {
    Ok(store.merchants().await?)
}

/// A merchant's API keys: ids and times only.
pub async fn api_keys(
    store: &Store,
    merchant_id: &str,
) -> anyhow::Result<Vec<wxgate_store::ApiKeyRow>> {
    anyhow::ensure!(
        store.merchant(merchant_id).await?.is_some(),
        "no merchant {merchant_id}"
    );
    Ok(store.api_keys(merchant_id).await?)
}

/// Sets (or clears) the merchant's default transfer scene, checked against WeChat's table.
pub async fn set_payout_scene(
    store: &Store,
    merchant_id: &str,
    scene: Option<&crate::app::payouts::Scene>,
) -> anyhow::Result<()> {
    if let Some(s) = scene {
        wechatpay_v3::model::validate_scene(&s.id, &s.report_infos)
            .map_err(|e| anyhow::anyhow!("scene {}: {} {}", s.id, e.field, e.issue))?;
    }
    let json = scene.map(|s| serde_json::to_string(s).expect("a scene serialises"));
    anyhow::ensure!(
        store.set_payout_scene(merchant_id, json.as_deref()).await?,
        "no merchant {merchant_id}"
    );
    Ok(())
}
