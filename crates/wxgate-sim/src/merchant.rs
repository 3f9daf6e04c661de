//! Sandbox merchants: the credentials the simulator mints, and the keys it signs with.
//!
//! Each merchant gets its own API key pair (the simulator keeps only the public half), an
//! APIv3 key, an app secret for webpage authorization, and two platform keys: one inside a
//! self-signed platform certificate (certificate mode) and one published as a bare public key
//! with a `PUB_KEY_ID_...` (public-key mode).

use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use wechatpay_v3::aead::ApiV3Key;
use wechatpay_v3::crypto::{Certificate, PrivateKey, PublicKey};
use wechatpay_v3::verify::{SIGNATURE_PROBE_PREFIX, SignatureHeaders, response_message};

/// Which key signs a merchant's answers and callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SigningMode {
    #[default]
    PublicKey,
    Certificate,
}

pub struct Merchant {
    pub mchid: String,
    pub appid: String,
    pub app_secret: String,
    pub merchant_serial_no: String,
    pub merchant_public_key: PublicKey,
    pub apiv3_key: ApiV3Key,
    pub signing: SigningMode,
    pub platform_cert_key: PrivateKey,
    pub platform_certificate: Certificate,
    pub platform_public_key_id: String,
    pub platform_public_key: PrivateKey,
    /// The fee WeChat takes on each payment, in basis points (60 = 0.60 %).
    pub fee_rate_bp: u32,
    /// The currency a cross-border merchant's payments settle in, when not their own.
    pub settlement_currency: Option<String>,
}

/// WeChat's usual rate for most merchant categories: 0.60 %.
pub const DEFAULT_FEE_RATE_BP: u32 = 60;

fn default_fee_rate() -> u32 {
    DEFAULT_FEE_RATE_BP
}

/// The answer of `POST /sim/merchants`: everything a client needs, exactly these keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialBundle {
    pub mchid: String,
    pub appid: String,
    pub merchant_private_key: String,
    pub merchant_serial_no: String,
    pub apiv3_key: String,
    pub platform_serial_no: String,
    pub platform_certificate: String,
    pub platform_public_key_id: String,
    pub platform_public_key: String,
}

/// A merchant as persisted in the simulator's data folder (it holds the platform keys, which
/// are the simulator's own secrets, never the merchant's private key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MerchantRecord {
    pub mchid: String,
    pub appid: String,
    pub app_secret: String,
    pub merchant_serial_no: String,
    pub merchant_public_key: String,
    pub apiv3_key: String,
    pub signing: SigningMode,
    pub platform_cert_key: String,
    pub platform_certificate: String,
    pub platform_public_key_id: String,
    pub platform_public_key: String,
    #[serde(default = "default_fee_rate")]
    pub fee_rate_bp: u32,
    #[serde(default)]
    pub settlement_currency: Option<String>,
}

impl Merchant {
    /// Mints a merchant with fresh keys. Returns it and the bundle, which is the only place the
    /// merchant's private key ever appears.
    pub fn mint(
        mchid: String,
        signing: SigningMode,
        now: OffsetDateTime,
    ) -> anyhow::Result<(Self, CredentialBundle)> {
        let merchant_key = PrivateKey::generate()?;
        let platform_cert_key = PrivateKey::generate()?;
        let platform_public_key = PrivateKey::generate()?;
        let mut rng = rand::rng();
        let appid = format!("wx{:016x}", rng.random::<u64>());
        let merchant_serial_no = serial_40(&mut rng);
        let platform_certificate = mint_certificate(&platform_cert_key, &mut rng, now)?;
        let platform_public_key_id = format!(
            "PUB_KEY_ID_01{mchid:0>10}{}{:014}",
            now.date().to_string().replace('-', ""),
            rng.random_range(0..100_000_000_000_000u64)
        );
        let merchant = Self {
            appid,
            app_secret: hex::encode(rng.random::<[u8; 16]>()),
            merchant_serial_no,
            merchant_public_key: merchant_key.public_key(),
            apiv3_key: ApiV3Key::generate(),
            signing,
            platform_cert_key,
            platform_certificate,
            platform_public_key_id,
            platform_public_key,
            mchid,
            fee_rate_bp: DEFAULT_FEE_RATE_BP,
            settlement_currency: None,
        };
        let bundle = CredentialBundle {
            mchid: merchant.mchid.clone(),
            appid: merchant.appid.clone(),
            merchant_private_key: merchant_key.expose_pkcs8_pem(),
            merchant_serial_no: merchant.merchant_serial_no.clone(),
            apiv3_key: merchant.apiv3_key.expose().to_string(),
            platform_serial_no: merchant.platform_certificate.serial_no.clone(),
            platform_certificate: merchant.platform_certificate.pem.clone(),
            platform_public_key_id: merchant.platform_public_key_id.clone(),
            platform_public_key: merchant.platform_public_key.public_key().to_spki_pem(),
        };
        Ok((merchant, bundle))
    }

    /// The key and serial that sign an answer. In public-key mode always the public key; in
    /// certificate mode the certificate, unless the request's `Wechatpay-Serial` asks for the
    /// public key (as WeChat does for merchants switching over).
    pub fn answer_key(&self, request_serial: Option<&str>) -> (&PrivateKey, &str) {
        let wants_public_key = request_serial == Some(self.platform_public_key_id.as_str());
        match self.signing {
            SigningMode::PublicKey => (&self.platform_public_key, &self.platform_public_key_id),
            SigningMode::Certificate if wants_public_key => {
                (&self.platform_public_key, &self.platform_public_key_id)
            }
            SigningMode::Certificate => (
                &self.platform_cert_key,
                &self.platform_certificate.serial_no,
            ),
        }
    }

    /// Signs `body` as an answer or callback, now. A probe carries a deliberately wrong
    /// `WECHATPAY/SIGNTEST/` signature.
    pub fn sign_body(
        &self,
        body: &[u8],
        request_serial: Option<&str>,
        nonce: String,
        probe: bool,
    ) -> SignatureHeaders {
        let (key, serial) = self.answer_key(request_serial);
        let timestamp = crate::formats::real_now().to_string();
        let signature = if probe {
            format!("{SIGNATURE_PROBE_PREFIX}{}", key.sign(b"probe"))
        } else {
            key.sign(&response_message(&timestamp, &nonce, body))
        };
        SignatureHeaders {
            timestamp,
            nonce,
            serial: serial.to_string(),
            signature,
            signature_type: Some(wechatpay_v3::SIGNATURE_SCHEME.to_string()),
        }
    }

    pub fn record(&self) -> MerchantRecord {
        MerchantRecord {
            mchid: self.mchid.clone(),
            appid: self.appid.clone(),
            app_secret: self.app_secret.clone(),
            merchant_serial_no: self.merchant_serial_no.clone(),
            merchant_public_key: self.merchant_public_key.to_spki_pem(),
            apiv3_key: self.apiv3_key.expose().to_string(),
            signing: self.signing,
            platform_cert_key: self.platform_cert_key.expose_pkcs8_pem(),
            platform_certificate: self.platform_certificate.pem.clone(),
            platform_public_key_id: self.platform_public_key_id.clone(),
            platform_public_key: self.platform_public_key.expose_pkcs8_pem(),
            fee_rate_bp: self.fee_rate_bp,
            settlement_currency: self.settlement_currency.clone(),
        }
    }

    pub fn from_record(r: &MerchantRecord) -> anyhow::Result<Self> {
        Ok(Self {
            mchid: r.mchid.clone(),
            appid: r.appid.clone(),
            app_secret: r.app_secret.clone(),
            merchant_serial_no: r.merchant_serial_no.clone(),
            merchant_public_key: PublicKey::from_spki_pem(&r.merchant_public_key)?,
            apiv3_key: ApiV3Key::new(&r.apiv3_key)?,
            signing: r.signing,
            platform_cert_key: PrivateKey::from_pkcs8_pem(&r.platform_cert_key)?,
            platform_certificate: Certificate::from_pem(&r.platform_certificate)?,
            platform_public_key_id: r.platform_public_key_id.clone(),
            platform_public_key: PrivateKey::from_pkcs8_pem(&r.platform_public_key)?,
            fee_rate_bp: r.fee_rate_bp,
            settlement_currency: r.settlement_currency.clone(),
        })
    }
}

/// A 40-hex-digit upper-case serial with no leading zero.
fn serial_40(rng: &mut impl Rng) -> String {
    let mut bytes: [u8; 20] = rng.random();
    bytes[0] |= 0x10;
    bytes[0] &= 0x7f;
    hex::encode_upper(bytes)
}

/// A self-signed platform certificate, valid from a day ago for five years, with WeChat's
/// subject and a 20-byte serial.
fn mint_certificate(
    key: &PrivateKey,
    rng: &mut impl Rng,
    now: OffsetDateTime,
) -> anyhow::Result<Certificate> {
    let key_pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(
        &key.expose_pkcs8_pem(),
        &rcgen::PKCS_RSA_SHA256,
    )?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CountryName, "CN");
    dn.push(rcgen::DnType::LocalityName, "ShenZhen");
    dn.push(rcgen::DnType::OrganizationName, "Tenpay.com");
    dn.push(
        rcgen::DnType::OrganizationalUnitName,
        "Tenpay.com CA Center",
    );
    dn.push(rcgen::DnType::CommonName, "Tenpay.com sign");
    params.distinguished_name = dn;
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(5 * 365);
    let serial = serial_40(rng);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&hex::decode(&serial)?));
    let cert = params.self_signed(&key_pair)?;
    let parsed = Certificate::from_pem(&cert.pem())?;
    anyhow::ensure!(
        parsed.serial_no == serial,
        "minted serial {} reads back as {}",
        serial,
        parsed.serial_no
    );
    Ok(parsed)
}
