//! `Idempotency-Key` for every POST of the merchant API, as one layer so no route can forget
//! it: the first answer (any status below 500) is stored and replayed for the same key and the
//! same request; the same key with another request is `idempotency_key_reused`; a key whose
//! first request is still running is `idempotency_key_in_use`. A 5xx is not stored, so the
//! merchant's retry runs again. Stored answers are sealed under the master key: some carry a
//! secret shown once (a webhook endpoint's signing secret), and secrets are never at rest in
//! the clear.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wxgate_store::IdempotencyStart;

use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::http::extract::{Authed, BODY_LIMIT_BYTES, IdempotencyKey, authenticate, body_error};

/// The longest key kept.
const KEY_MAX_CHARS: usize = 255;
/// The most of an answer stored for replay; merchant API answers are far smaller.
const STORED_ANSWER_MAX_BYTES: usize = 4 * 1024 * 1024;

pub async fn layer(State(gw): State<Gateway>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let key = match request.headers().get("Idempotency-Key").map(|v| v.to_str()) {
        None => return next.run(request).await,
        Some(Ok(k)) if !k.is_empty() && k.len() <= KEY_MAX_CHARS => k.to_string(),
        Some(_) => {
            return ApiError::invalid(
                ErrorCode::InvalidIdempotencyKey,
                "Idempotency-Key",
                format!("Idempotency-Key must be 1 to {KEY_MAX_CHARS} visible characters"),
            )
            .into_response();
        }
    };
    match run_once(&gw, &key, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run_once(
    gw: &Gateway,
    key: &str,
    request: Request,
    next: Next,
) -> Result<Response, Response> {
    let merchant = authenticate(gw, request.headers())
        .await
        .map_err(IntoResponse::into_response)?;
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT_BYTES)
        .await
        .map_err(|_| body_error(StatusCode::PAYLOAD_TOO_LARGE).into_response())?;
    let route = format!("{} {}", parts.method, parts.uri.path());
    let request_hash = crate::secrets::sha256_hex(&[route.as_bytes(), b"\n", &bytes].concat());
    let started = gw
        .store()
        .begin_idempotent(&merchant.id, key, &request_hash, gw.now_ms())
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    match started {
        IdempotencyStart::Replay { status, body } => Ok(replay(gw, status, &body)),
        IdempotencyStart::Mismatch => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        )
        .into_response()),
        IdempotencyStart::InProgress => Err(ApiError::new(
            ErrorCode::IdempotencyKeyInUse,
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )
        .into_response()),
        IdempotencyStart::Started => {
            let merchant_id = merchant.id.clone();
            parts.extensions.insert(Authed(merchant));
            parts.extensions.insert(IdempotencyKey(key.to_string()));
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            Ok(record(gw, &merchant_id, key, response).await)
        }
    }
}

/// Stores the first answer (or gives the key up after a 5xx) and passes the answer on.
async fn record(gw: &Gateway, merchant_id: &str, key: &str, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, STORED_ANSWER_MAX_BYTES).await else {
        // An answer that cannot be kept is not given half: the key is freed for a retry.
        if let Err(e) = gw.store().abandon_idempotent(merchant_id, key).await {
            tracing::error!(error = %e, "could not free an idempotency key");
        }
        return ApiError::internal("an answer too large to keep", STORED_ANSWER_MAX_BYTES)
            .into_response();
    };
    let stored = if parts.status.is_server_error() {
        gw.store().abandon_idempotent(merchant_id, key).await
    } else {
        let sealed = format!("{SEALED}{}", gw.config().master_key.seal(&bytes));
        gw.store()
            .finish_idempotent(merchant_id, key, parts.status.as_u16(), &sealed)
            .await
    };
    if let Err(e) = stored {
        tracing::error!(error = %e, "could not record an idempotent answer");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// How a sealed stored answer begins (answers stored before sealing are plain JSON).
const SEALED: &str = "sealed:";

fn replay(gw: &Gateway, status: u16, stored: &str) -> Response {
    let body = match stored.strip_prefix(SEALED) {
        None => stored.as_bytes().to_vec(),
        Some(sealed) => match gw.config().master_key.open(sealed) {
            Ok(body) => body,
            Err(e) => {
                return ApiError::internal("cannot open a stored idempotent answer", e)
                    .into_response();
            }
        },
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    response
        .headers_mut()
        .insert("Idempotent-Replayed", HeaderValue::from_static("true"));
    response
}
