//! What every `/v3/...` handler shares: the request as it arrived, what it answers, WeChat's
//! error body, and the validity windows of credentials.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wechatpay_v3::validate::FieldError;

use crate::faults::Faults;
use crate::formats::{digits, lower_hex};
use crate::merchant::Merchant;
use crate::sim::Sim;

/// How long a `code_url` or `prepay_id` can be paid with.
pub const PREPAY_VALID_SECS: i64 = 2 * 3600;
/// How long an `h5_url` can be opened.
pub const H5_URL_VALID_SECS: i64 = 5 * 60;
/// Without `time_expire`, an order can be paid for seven days.
pub const DEFAULT_ORDER_LIFETIME_SECS: i64 = 7 * 24 * 3600;
/// Refunds are possible for a year after payment.
pub const REFUND_WINDOW_SECS: i64 = 365 * 24 * 3600;
/// At most this many refunds per order.
pub const REFUNDS_PER_ORDER_MAX: usize = 50;

/// An error answer: `{code, message, detail}`, unsigned.
#[derive(Debug)]
pub struct WxError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<Value>,
}

impl WxError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// 400 PARAM_ERROR naming the field, like WeChat's `detail`.
    pub fn param(e: FieldError, location: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            format!("参数错误: {}", e),
        )
        .with_detail(json!({"field": e.field, "issue": e.issue, "location": location}))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub(crate) fn order_not_exist() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在")
    }

    pub(crate) fn sign_error(message: &str, issue: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "SIGN_ERROR", message)
            .with_detail(json!({"field": "signature", "location": "authorization", "detail": {"issue": issue.into()}}))
    }
}

impl IntoResponse for WxError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(detail) = self.detail {
            body["detail"] = detail;
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert("Request-ID", request_id());
        response
    }
}

pub(crate) fn request_id() -> HeaderValue {
    HeaderValue::from_str(&format!("08{}-{}", lower_hex(40).to_uppercase(), digits(9)))
        .expect("ASCII")
}

/// What an endpoint answers before signing.
pub enum Answer {
    Json(Value),
    NoContent,
    /// A cross-border statement: the CSV, signed over its SHA-1 (`{"sha1":"…"}`).
    Statement(Vec<u8>),
    /// A raw file: unsigned, as WeChat serves bill downloads, with its content type.
    File {
        bytes: Vec<u8>,
        content_type: &'static str,
    },
}

/// Everything a handler needs about the request.
pub struct Request<'a> {
    pub sim: &'a Sim,
    pub merchant: &'a Arc<Merchant>,
    pub query: HashMap<String, String>,
    pub body: &'a [u8],
    pub faults: &'a Faults,
    /// `scheme://host[:port]` the client used, for URLs handed back (h5_url, download_url).
    pub base: String,
    /// The request's `Wechatpay-Serial`: which platform key encrypted its sensitive fields.
    pub serial: Option<String>,
}

pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, WxError> {
    serde_json::from_slice(body).map_err(|e| {
        WxError::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", "请求体格式错误")
            .with_detail(json!({"field": "/", "issue": e.to_string(), "location": "body"}))
    })
}
