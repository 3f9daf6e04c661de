//! Client-side payment signatures: what a merchant's server hands to the shopper's device so
//! that WeChat can start the payment, signed with the merchant's API key.
//!
//! * JS API (`WeixinJSBridge.invoke('getBrandWCPayRequest', …)`) and Mini Programs
//!   (`wx.requestPayment`): `paySign` over `appId\ntimeStamp\nnonceStr\npackage\n`.
//! * APP SDK (`PayReq`): `sign` over `appid\ntimestamp\nnoncestr\nprepayid\n` (the bare prepay id;
//!   `package` is the fixed `Sign=WXPay` and is not signed).

use serde::{Deserialize, Serialize};

use crate::crypto::{PrivateKey, PublicKey, SignatureError};

/// The only `signType` of API v3 client-side signatures.
pub const SIGN_TYPE_RSA: &str = "RSA";
/// The fixed `package` of an APP payment.
pub const APP_PACKAGE: &str = "Sign=WXPay";

fn lines(parts: [&str; 4]) -> Vec<u8> {
    let mut message = Vec::new();
    for part in parts {
        message.extend_from_slice(part.as_bytes());
        message.push(b'\n');
    }
    message
}

/// The parameters of `getBrandWCPayRequest`, field names exactly as the JS API takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsapiPayParams {
    #[serde(rename = "appId")]
    pub app_id: String,
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    pub package: String,
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

impl JsapiPayParams {
    pub fn sign(
        key: &PrivateKey,
        app_id: &str,
        prepay_id: &str,
        timestamp: i64,
        nonce: &str,
    ) -> Self {
        let time_stamp = timestamp.to_string();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = key.sign(&lines([app_id, &time_stamp, nonce, &package]));
        Self {
            app_id: app_id.to_string(),
            time_stamp,
            nonce_str: nonce.to_string(),
            package,
            sign_type: SIGN_TYPE_RSA.to_string(),
            pay_sign,
        }
    }

    /// The signed message: `appId\ntimeStamp\nnonceStr\npackage\n`.
    pub fn message(&self) -> Vec<u8> {
        lines([
            &self.app_id,
            &self.time_stamp,
            &self.nonce_str,
            &self.package,
        ])
    }

    /// The prepay id inside `package`, if it has the `prepay_id=` form.
    pub fn prepay_id(&self) -> Option<&str> {
        self.package.strip_prefix("prepay_id=")
    }

    /// Checks `paySign` with the merchant's public key, as the WeChat app does.
    pub fn verify(&self, merchant_key: &PublicKey) -> Result<(), SignatureError> {
        if self.sign_type != SIGN_TYPE_RSA {
            return Err(SignatureError::Mismatch);
        }
        merchant_key.verify(&self.message(), &self.pay_sign)
    }

    /// The parameter set of `wx.requestPayment`, which omits `appId` (it is still signed).
    pub fn for_mini_program(&self) -> MiniProgramPayParams {
        MiniProgramPayParams {
            time_stamp: self.time_stamp.clone(),
            nonce_str: self.nonce_str.clone(),
            package: self.package.clone(),
            sign_type: self.sign_type.clone(),
            pay_sign: self.pay_sign.clone(),
        }
    }
}

/// The parameters of `wx.requestPayment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiniProgramPayParams {
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    pub package: String,
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

impl MiniProgramPayParams {
    /// The JS API parameter set of the same signature, given the Mini Program's appid.
    pub fn with_app_id(&self, app_id: &str) -> JsapiPayParams {
        JsapiPayParams {
            app_id: app_id.to_string(),
            time_stamp: self.time_stamp.clone(),
            nonce_str: self.nonce_str.clone(),
            package: self.package.clone(),
            sign_type: self.sign_type.clone(),
            pay_sign: self.pay_sign.clone(),
        }
    }
}

/// The APP SDK's `PayReq`, field names exactly as the SDK takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppPayParams {
    pub appid: String,
    pub partnerid: String,
    pub prepayid: String,
    pub package: String,
    pub noncestr: String,
    pub timestamp: String,
    pub sign: String,
}

impl AppPayParams {
    pub fn sign(
        key: &PrivateKey,
        appid: &str,
        mchid: &str,
        prepay_id: &str,
        timestamp: i64,
        nonce: &str,
    ) -> Self {
        let timestamp = timestamp.to_string();
        let sign = key.sign(&lines([appid, &timestamp, nonce, prepay_id]));
        Self {
            appid: appid.to_string(),
            partnerid: mchid.to_string(),
            prepayid: prepay_id.to_string(),
            package: APP_PACKAGE.to_string(),
            noncestr: nonce.to_string(),
            timestamp,
            sign,
        }
    }

    /// The signed message: `appid\ntimestamp\nnoncestr\nprepayid\n`.
    pub fn message(&self) -> Vec<u8> {
        lines([&self.appid, &self.timestamp, &self.noncestr, &self.prepayid])
    }

    /// Checks `sign` with the merchant's public key, as the WeChat app does.
    pub fn verify(&self, merchant_key: &PublicKey) -> Result<(), SignatureError> {
        if self.package != APP_PACKAGE {
            return Err(SignatureError::Mismatch);
        }
        merchant_key.verify(&self.message(), &self.sign)
    }
}
