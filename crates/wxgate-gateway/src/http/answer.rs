//! How answers leave the gateway: an [`ApiError`] becomes the JSON envelope
//! `{"error": {"code", "message", "param"}}` with its code's status; a success is JSON.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};

/// Every error answer: a stable `code`, a `message` for people, and the `param` at fault.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorEnvelope<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail<'a> {
    /// One of the stable codes in docs/GATEWAY.md.
    #[schema(example = "invalid_amount")]
    code: &'static str,
    message: &'a str,
    #[schema(example = "amount")]
    param: Option<&'a str>,
}

/// The HTTP status of a code.
pub fn status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The envelope of an error, as JSON.
pub fn envelope(e: &ApiError) -> Value {
    serde_json::to_value(ErrorEnvelope {
        error: ErrorDetail {
            code: e.code.as_str(),
            message: &e.message,
            param: e.param.as_deref(),
        },
    })
    .expect("an error serialises")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (status(self.code), axum::Json(envelope(&self))).into_response();
        if self.code == ErrorCode::BodyTooLarge {
            // The rest of the body was never read, so the connection cannot be
            // reused; saying so keeps clients from sending the next request on it.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// A JSON answer with a status.
pub struct Json(pub StatusCode, pub Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

/// 200 with a JSON body.
pub fn ok(value: Value) -> Json {
    Json(StatusCode::OK, value)
}
