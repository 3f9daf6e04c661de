//! [`NextAction`]: what the shopper's device does next with a payment's WeChat credential. The
//! merchant API answers it as `next_action`, the store keeps it on the attempt and the payment,
//! and the hosted checkout renders it; one type for all three.

use serde::{Deserialize, Serialize};
use wechatpay_v3::paysign::{AppPayParams, JsapiPayParams, MiniProgramPayParams};

/// `{"type": "display_qr_code", "display_qr_code": {…}}` and so on: the type names the field
/// that carries the details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NextAction {
    /// Native: show the QR code of `data` (a `weixin://` code_url).
    DisplayQrCode { display_qr_code: QrCode },
    /// H5, or a hosted payment's checkout page: send the shopper's browser to `url`.
    RedirectToUrl { redirect_to_url: Redirect },
    /// Inside WeChat: `WeixinJSBridge.invoke('getBrandWCPayRequest', params)`.
    InvokeJsapi {
        invoke_jsapi: JsapiPayParams,
        expires_at: String,
    },
    /// A Mini Program: `wx.requestPayment(params)`.
    InvokeMiniProgram {
        invoke_mini_program: MiniProgramPayParams,
        expires_at: String,
    },
    /// A native app: the WeChat OpenSDK's `PayReq`.
    InvokeApp {
        invoke_app: AppPayParams,
        expires_at: String,
    },
}

/// The code to show. Its images are rendered on request (`image_png_url`, `image_svg_url`, with
/// the merchant's API key), or inline in a create answer that asks for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrCode {
    pub data: String,
    pub image_png_url: String,
    pub image_svg_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_png_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_svg: Option<String>,
    pub expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub url: String,
    pub expires_at: String,
}

impl NextAction {
    /// The stored form (JSON text).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("a next action serialises")
    }

    /// Reads a stored next action; `None` if it is not one (never written by this gateway).
    pub fn from_stored(stored: &str) -> Option<Self> {
        serde_json::from_str(stored).ok()
    }

    /// When the credential stops working (RFC 3339).
    pub fn expires_at(&self) -> &str {
        match self {
            Self::DisplayQrCode { display_qr_code } => &display_qr_code.expires_at,
            Self::RedirectToUrl { redirect_to_url } => &redirect_to_url.expires_at,
            Self::InvokeJsapi { expires_at, .. }
            | Self::InvokeMiniProgram { expires_at, .. }
            | Self::InvokeApp { expires_at, .. } => expires_at,
        }
    }

    /// When the credential stops working, in Unix milliseconds.
    pub fn expires_ms(&self) -> Option<i64> {
        wechatpay_v3::validate::rfc3339("expires_at", self.expires_at())
            .ok()
            .map(|s| s * 1000)
    }

    /// The code_url of a native credential.
    pub fn code_url(&self) -> Option<&str> {
        match self {
            Self::DisplayQrCode { display_qr_code } => Some(&display_qr_code.data),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shape_names_its_details_by_type() {
        let action = NextAction::RedirectToUrl {
            redirect_to_url: Redirect {
                url: "https://wx.tenpay.com/x".into(),
                expires_at: "2026-11-27T12:00:00+08:00".into(),
            },
        };
        let json: serde_json::Value = serde_json::from_str(&action.to_stored()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "redirect_to_url", "redirect_to_url": {"url": "https://wx.tenpay.com/x", "expires_at": "2026-11-27T12:00:00+08:00"}})
        );
        assert_eq!(
            NextAction::from_stored(&action.to_stored()),
            Some(action.clone())
        );
        assert_eq!(action.expires_ms(), Some(1_795_752_000_000));
        assert_eq!(action.code_url(), None);
    }
}
