//! Merchant API v1: JSON over HTTP, `Authorization: Bearer <api key>`.
//!
//! Errors answer `{"error": {"code", "message", "param"}}` with a stable code. Expected
//! failures (validation, conflicts) are built here with their code; unexpected ones (database,
//! bugs) are logged with their cause and answered with a generic 500 or, when the database is
//! unavailable, 503.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, OpenApi, ToSchema};
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode;
use wechatpay_v3::model::{Amount, H5Info, Payer, PrepayRequest, SceneInfo};
use wxgate_domain::payment::PaymentEvent;
use wxgate_domain::{Currency, Integration, Money, MoneyError, PaymentStatus};
use wxgate_store::{
    IdempotencyStart, InsertOutcome, MerchantRow, PaymentFilter, PaymentRow, StoreError,
    TransitionFacts,
};

use crate::views::{self, ListView, PaymentView, Prepaid};
use crate::{Gateway, now_ms};

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// A payment's WeChat credentials (code_url, prepay_id) work for two hours; so does a payment.
pub const PAYMENT_LIFETIME_MAX_MS: i64 = 2 * 3600 * 1000;
/// The shortest lifetime WeChat honours.
pub const PAYMENT_LIFETIME_MIN_MS: i64 = 60 * 1000;
/// The `integration` whose WeChat product the hosted checkout page picks by device.
pub const HOSTED: &str = "hosted";
/// An h5_url works for five minutes.
pub const H5_URL_LIFETIME_MS: i64 = 5 * 60 * 1000;

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/payments", post(create_payment).get(list_payments))
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/payments/{id}/cancel", post(cancel_payment))
        .route(
            "/wechatpay/notify/{merchant_id}",
            post(crate::notify::handle),
        )
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/openapi.json", get(|| async { axum::Json(openapi()) }))
        .merge(crate::webhooks::routes())
        .merge(crate::refunds::routes())
        .merge(crate::qr::routes())
        .merge(crate::checkout::routes())
        .merge(crate::links::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(gateway)
}

/// Every error answer: a stable `code`, a `message` for people, and the `param` at fault.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorEnvelope<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail<'a> {
    #[schema(example = "invalid_amount")]
    code: &'static str,
    message: &'a str,
    #[schema(example = "amount")]
    param: Option<&'a str>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer <key>",
        )
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "resource_missing",
            format!("no such {what}"),
        )
    }

    /// An unexpected failure: the cause goes to the log, the client gets a generic answer.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }

    fn body(&self) -> Value {
        serde_json::to_value(ErrorEnvelope {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
            },
        })
        .expect("an error serialises")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is unavailable; retry later",
            );
        }
        Self::internal("store error", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
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

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The merchant behind the request's API key.
pub(crate) async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> ApiResult<MerchantRow> {
    let key = api_key(headers)?;
    let hash = crate::secrets::hash_api_key(key);
    if let Some(merchant) = gw.cached_key(&hash) {
        return Ok(merchant);
    }
    let merchant_id = gw
        .store()
        .merchant_for_key_hash(&hash)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let merchant = gw
        .store()
        .merchant(&merchant_id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    gw.cache_key(hash, merchant.clone());
    Ok(merchant)
}

fn api_key(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(ApiError::unauthorized)
}

/// Parses a JSON body, naming the field and the reason when it does not fit.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(T, Bytes)> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body must be at most {BODY_LIMIT_BYTES} bytes"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok((v, bytes)),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.to_string();
            let named = |prefix: &str| {
                message
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_string)
            };
            Err(if let Some(field) = named("missing field `") {
                ApiError::invalid("parameter_missing", &field, format!("{field} is required"))
            } else if let Some(field) = named("unknown field `") {
                ApiError::invalid(
                    "parameter_unknown",
                    &field,
                    format!("{field} is not a parameter of this request"),
                )
            } else if inner.classify() == serde_json::error::Category::Data && path != "." {
                ApiError::invalid("invalid_type", &path, format!("{path}: {message}"))
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the body is not valid JSON: {message}"),
                )
            })
        }
    }
}

// ---- create ----

/// A new payment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePayment {
    /// In the currency's minor unit (fen for CNY), above 0.
    amount: i64,
    /// ISO 4217, among the merchant's currencies.
    #[schema(example = "CNY")]
    currency: String,
    /// Unique per merchant: 6–32 characters of `0-9 A-Z a-z _ - | *`.
    merchant_order_id: String,
    /// 1–127 characters, shown to the payer.
    description: String,
    /// `native`, `h5`, `jsapi`, `mini_program`, `app`, or `hosted` (the checkout page at the
    /// payment's `hosted_url` picks by the shopper's device).
    #[schema(example = "native")]
    integration: String,
    /// Required for jsapi and mini_program.
    payer: Option<PayerIn>,
    /// The shopper's IP address; required for h5.
    client_ip: Option<String>,
    /// RFC 3339; at least a minute ahead, at most two hours (the default).
    expires_at: Option<String>,
    return_url: Option<String>,
    cancel_url: Option<String>,
    /// Where this payment's events (and its refunds') are also POSTed, signed with the
    /// merchant's notify secret (`POST /v1/notify_secret`).
    notify_url: Option<String>,
    /// At most 20 string keys and values.
    metadata: Option<BTreeMap<String, String>>,
    /// Up to 128 characters, returned by WeChat once paid.
    attach: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PayerIn {
    openid: String,
}

/// A create request that passed every rule.
#[derive(Debug, serde::Serialize)]
struct ValidPayment {
    money_minor: i64,
    currency: &'static str,
    merchant_order_id: String,
    description: String,
    integration: &'static str,
    openid: Option<String>,
    client_ip: Option<String>,
    expires_at: i64,
    return_url: Option<String>,
    cancel_url: Option<String>,
    notify_url: Option<String>,
    metadata: BTreeMap<String, String>,
    attach: Option<String>,
}

fn check_url(code: &'static str, param: &str, value: &Option<String>) -> ApiResult<()> {
    if let Some(v) = value {
        let ok = v.len() <= 2048
            && url::Url::parse(v)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err(ApiError::invalid(
                code,
                param,
                format!("{param} must be an absolute http(s) URL of at most 2048 characters"),
            ));
        }
    }
    Ok(())
}

/// An ISO 4217 code among the merchant's pricing currencies.
pub(crate) fn merchant_currency(merchant: &MerchantRow, code: &str) -> ApiResult<Currency> {
    let currency = Currency::parse(code)
        .map_err(|e| ApiError::invalid("invalid_currency", "currency", e.to_string()))?;
    if !merchant.currencies.split(',').any(|c| c == currency.code()) {
        return Err(ApiError::invalid(
            "currency_not_allowed",
            "currency",
            format!(
                "this merchant accepts {}, not {}",
                merchant.currencies,
                currency.code()
            ),
        ));
    }
    Ok(currency)
}

/// WeChat's rule for a description: 1 to 127 characters.
pub(crate) fn check_description(description: &str) -> ApiResult<()> {
    wechatpay_v3::validate::description("description", description).map_err(|e| {
        ApiError::invalid(
            "invalid_description",
            "description",
            format!("description {}", e.issue),
        )
    })
}

fn validate(
    req: CreatePayment,
    merchant: &MerchantRow,
    now: i64,
    allow_private: bool,
) -> ApiResult<ValidPayment> {
    let currency = merchant_currency(merchant, &req.currency)?;
    let money = Money::new(req.amount, currency).map_err(|e| match e {
        MoneyError::NotPositive(_) | MoneyError::TooLarge(_) => {
            ApiError::invalid("invalid_amount", "amount", e.to_string())
        }
        MoneyError::UnknownCurrency(_) => {
            ApiError::invalid("invalid_currency", "currency", e.to_string())
        }
    })?;
    wechatpay_v3::validate::out_trade_no("merchant_order_id", &req.merchant_order_id).map_err(
        |e| {
            ApiError::invalid(
                "invalid_merchant_order_id",
                "merchant_order_id",
                format!("merchant_order_id {}", e.issue),
            )
        },
    )?;
    check_description(&req.description)?;
    // `hosted`: the checkout page picks the WeChat product from the shopper's device.
    let integration = match req.integration.as_str() {
        HOSTED => None,
        other => Some(Integration::parse(other).ok_or_else(|| {
            ApiError::invalid(
                "invalid_integration",
                "integration",
                "integration must be one of native, h5, jsapi, mini_program, app, hosted",
            )
        })?),
    };
    let openid = req.payer.map(|p| p.openid);
    match (&openid, integration.is_some_and(Integration::needs_openid)) {
        (None, true) => {
            return Err(ApiError::invalid(
                "openid_required",
                "payer.openid",
                format!("payer.openid is required for {}", req.integration),
            ));
        }
        (Some(o), _) => wechatpay_v3::validate::openid("payer.openid", o).map_err(|e| {
            ApiError::invalid(
                "invalid_openid",
                "payer.openid",
                format!("payer.openid {}", e.issue),
            )
        })?,
        _ => {}
    }
    match (
        &req.client_ip,
        integration.is_some_and(Integration::needs_client_ip),
    ) {
        (None, true) => {
            return Err(ApiError::invalid(
                "client_ip_required",
                "client_ip",
                "client_ip (the shopper's IP address) is required for h5",
            ));
        }
        (Some(ip), _) if ip.parse::<IpAddr>().is_err() => {
            return Err(ApiError::invalid(
                "invalid_client_ip",
                "client_ip",
                "client_ip must be an IPv4 or IPv6 address",
            ));
        }
        _ => {}
    }
    let expires_at = match &req.expires_at {
        None => now + PAYMENT_LIFETIME_MAX_MS,
        Some(t) => {
            let secs = wechatpay_v3::validate::rfc3339("expires_at", t).map_err(|_| {
                ApiError::invalid(
                    "invalid_expires_at",
                    "expires_at",
                    "expires_at must be an RFC 3339 time",
                )
            })?;
            let ms = secs * 1000;
            if ms < now + PAYMENT_LIFETIME_MIN_MS {
                return Err(ApiError::invalid(
                    "invalid_expires_at",
                    "expires_at",
                    "expires_at must be at least one minute from now",
                ));
            }
            ms.min(now + PAYMENT_LIFETIME_MAX_MS)
        }
    };
    check_url("invalid_return_url", "return_url", &req.return_url)?;
    check_url("invalid_cancel_url", "cancel_url", &req.cancel_url)?;
    if let Some(url) = &req.notify_url {
        crate::delivery::check_url(url, allow_private).map_err(|m| {
            ApiError::invalid(
                "invalid_notify_url",
                "notify_url",
                m.replacen("url", "notify_url", 1),
            )
        })?;
    }
    let metadata = req.metadata.unwrap_or_default();
    if metadata.len() > 20
        || metadata
            .iter()
            .any(|(k, v)| k.is_empty() || k.chars().count() > 40 || v.chars().count() > 500)
    {
        return Err(ApiError::invalid(
            "invalid_metadata",
            "metadata",
            "metadata holds at most 20 keys of 1 to 40 characters, values of at most 500",
        ));
    }
    if let Some(a) = &req.attach {
        wechatpay_v3::validate::attach("attach", a, 128).map_err(|e| {
            ApiError::invalid("invalid_attach", "attach", format!("attach {}", e.issue))
        })?;
    }
    Ok(ValidPayment {
        money_minor: money.minor(),
        currency: currency.code(),
        merchant_order_id: req.merchant_order_id,
        description: req.description,
        integration: integration.map_or(HOSTED, Integration::as_str),
        openid,
        client_ip: req.client_ip,
        expires_at,
        return_url: req.return_url,
        cancel_url: req.cancel_url,
        notify_url: req.notify_url,
        metadata,
        attach: req.attach,
    })
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// The parameters that must match for a re-post of the same merchant_order_id to be the same
/// payment (expiry is left out: a retry computes it afresh).
fn fingerprint(v: &ValidPayment) -> String {
    let canonical = json!([
        v.money_minor,
        v.currency,
        v.merchant_order_id,
        v.description,
        v.integration,
        v.openid,
        v.client_ip,
        v.return_url,
        v.cancel_url,
        v.notify_url,
        v.metadata,
        v.attach
    ]);
    sha256_hex(canonical.to_string().as_bytes())
}

/// Create a payment and get what the shopper's device needs next.
#[utoipa::path(post, path = "/v1/payments", request_body = CreatePayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 201, description = "Created", body = PaymentView),
        (status = 200, description = "The existing payment for this merchant_order_id", body = PaymentView),
        (status = 400, description = "A parameter is missing or invalid", body = ErrorEnvelope),
        (status = 401, description = "No valid API key", body = ErrorEnvelope),
        (status = 409, description = "merchant_order_id_taken or idempotency_key_in_use", body = ErrorEnvelope),
        (status = 422, description = "idempotency_key_reused", body = ErrorEnvelope),
        (status = 502, description = "WeChat Pay refused the payment", body = ErrorEnvelope),
        (status = 503, description = "WeChat Pay or the database is unavailable; retry", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
async fn create_payment(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let merchant = match authenticate(&gw, &headers).await {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    idempotent(
        &gw,
        &merchant,
        &headers,
        "POST /v1/payments",
        body,
        |body| create(gw.clone(), merchant.clone(), body),
    )
    .await
}

/// Runs a POST under its `Idempotency-Key`, if it has one: the first answer is stored and
/// replayed; the same key with another body is refused; a key still in flight says so.
pub(crate) async fn idempotent<F, Fut>(
    gw: &Gateway,
    merchant: &MerchantRow,
    headers: &HeaderMap,
    route: &str,
    body: Result<Bytes, BytesRejection>,
    run: F,
) -> Response
where
    F: FnOnce(Result<Bytes, BytesRejection>) -> Fut,
    Fut: std::future::Future<Output = ApiResult<(StatusCode, Value)>>,
{
    let key = match headers.get("Idempotency-Key").map(|v| v.to_str()) {
        None => return respond(run(body).await),
        Some(Ok(k)) if !k.is_empty() && k.len() <= 255 => k.to_string(),
        Some(_) => {
            return ApiError::invalid(
                "invalid_idempotency_key",
                "Idempotency-Key",
                "Idempotency-Key must be 1 to 255 visible characters",
            )
            .into_response();
        }
    };
    let bytes = match body {
        Ok(b) => b,
        Err(e) => return respond(run(Err(e)).await),
    };
    let request_hash = sha256_hex(&[route.as_bytes(), b"\n", &bytes].concat());
    match gw
        .store()
        .begin_idempotent(&merchant.id, &key, &request_hash, now_ms())
        .await
    {
        Err(e) => ApiError::from(e).into_response(),
        Ok(IdempotencyStart::Replay { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response =
                (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
            response
                .headers_mut()
                .insert("Idempotent-Replayed", "true".parse().expect("ASCII"));
            response
        }
        Ok(IdempotencyStart::Mismatch) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
        .into_response(),
        Ok(IdempotencyStart::InProgress) => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )
        .into_response(),
        Ok(IdempotencyStart::Started) => {
            let result = run(Ok(bytes)).await;
            let (status, value) = match &result {
                Ok((s, v)) => (*s, v.clone()),
                Err(e) => (e.status, e.body()),
            };
            let stored = if status.is_server_error() {
                gw.store().abandon_idempotent(&merchant.id, &key).await
            } else {
                gw.store()
                    .finish_idempotent(&merchant.id, &key, status.as_u16(), &value.to_string())
                    .await
            };
            if let Err(e) = stored {
                tracing::error!(error = %e, "could not record an idempotent answer");
            }
            respond(result)
        }
    }
}

/// A list's page size: 20 by default, 1 to 100.
pub(crate) fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "invalid_limit",
            "limit",
            "limit must be from 1 to 100",
        ));
    }
    Ok(limit)
}

/// An RFC 3339 time parameter, as Unix milliseconds.
pub(crate) fn parse_time(param: &str, value: &str) -> ApiResult<i64> {
    wechatpay_v3::validate::rfc3339(param, value)
        .map(|s| s * 1000)
        .map_err(|_| {
            ApiError::invalid(
                "invalid_time",
                param,
                format!("{param} must be an RFC 3339 time"),
            )
        })
}

pub(crate) fn respond(result: ApiResult<(StatusCode, Value)>) -> Response {
    match result {
        Ok((status, value)) => (status, axum::Json(value)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create(
    gw: Gateway,
    merchant: MerchantRow,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Value)> {
    let (req, _) = parse_body::<CreatePayment>(body)?;
    create_valid(&gw, &merchant, req, None).await
}

/// Creates (or finds, by merchant_order_id) a payment and prepays it; `link_id` when it is made
/// through a payment link.
pub(crate) async fn create_valid(
    gw: &Gateway,
    merchant: &MerchantRow,
    req: CreatePayment,
    link_id: Option<&str>,
) -> ApiResult<(StatusCode, Value)> {
    let (gw, merchant) = (gw.clone(), merchant.clone());
    let now = now_ms();
    let valid = validate(req, &merchant, now, gw.config().webhooks_allow_private)?;
    if valid.notify_url.is_some() && gw.store().notify_secret(&merchant.id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "notify_secret_missing",
            "create the merchant's notify secret (POST /v1/notify_secret) before using notify_url",
        )
        .with_param("notify_url"));
    }
    let fingerprint = fingerprint(&valid);
    let id = wxgate_domain::id::generate("pay");
    let checkout_token = wxgate_domain::id::generate("cs");
    let hosted_url = format!(
        "{}/checkout/{checkout_token}",
        gw.config().public_base_url.trim_end_matches('/')
    );
    let row = PaymentRow {
        out_trade_no: id.clone(),
        id,
        merchant_id: merchant.id.clone(),
        merchant_order_id: valid.merchant_order_id.clone(),
        amount: valid.money_minor,
        currency: valid.currency.to_string(),
        description: valid.description.clone(),
        integration: valid.integration.to_string(),
        status: PaymentStatus::Pending.as_str().to_string(),
        version: 1,
        fingerprint: fingerprint.clone(),
        payer_openid: valid.openid.clone(),
        client_ip: valid.client_ip.clone(),
        return_url: valid.return_url.clone(),
        cancel_url: valid.cancel_url.clone(),
        attach: valid.attach.clone(),
        metadata: serde_json::to_string(&valid.metadata).expect("a string map serialises"),
        wechat_credential: None,
        transaction_id: None,
        paid_at: None,
        expires_at: valid.expires_at,
        created_at: now,
        updated_at: now,
        sync_due_at: Some(
            (now + gw
                .config()
                .sync_schedule_ms
                .first()
                .copied()
                .unwrap_or(5_000))
            .min(valid.expires_at),
        ),
        sync_attempts: 0,
        claimed_until: None,
        notify_url: valid.notify_url.clone(),
        amount_refunded: 0,
        amount_reserved: 0,
        refund_count: 0,
        checkout_token: Some(checkout_token),
        hosted_url: Some(hosted_url),
        checkout_kind: None,
        payment_link_id: link_id.map(str::to_string),
    };
    let (row, status) = match gw.store().insert_payment(&row).await? {
        InsertOutcome::Inserted => (row, StatusCode::CREATED),
        InsertOutcome::Existing(existing) => {
            if existing.fingerprint != fingerprint {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "merchant_order_id_taken",
                    format!(
                        "merchant_order_id {} is already used by payment {} with other parameters",
                        existing.merchant_order_id, existing.id
                    ),
                )
                .with_param("merchant_order_id"));
            }
            // Finished, already prepaid, or too close to its expiry for WeChat to take it (status
            // sync will close and expire it): the payment as it is.
            if existing.status != "pending"
                || existing.wechat_credential.is_some()
                || existing.integration == HOSTED
                || existing.expires_at <= now + PAYMENT_LIFETIME_MIN_MS
            {
                return Ok((StatusCode::OK, render(&gw, &existing).await?));
            }
            // A pending payment whose prepay never completed: ask WeChat again (same out_trade_no).
            (*existing, StatusCode::OK)
        }
    };
    // A hosted payment is prepaid when its page first opens, as the device needs.
    if row.integration != HOSTED {
        let integration = Integration::parse(&row.integration)
            .ok_or_else(|| ApiError::internal("stored integration", &row.integration))?;
        prepay(&gw, &merchant, &row, integration, now).await?;
    }
    Ok((status, render(&gw, &row).await?))
}

/// The payment as stored now, with its history, in one query.
async fn render(gw: &Gateway, p: &PaymentRow) -> ApiResult<Value> {
    let (current, history) = gw
        .store()
        .payment_with_history(&p.merchant_id, &p.id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    Ok(views::payment(&current, Some(&history)))
}

/// Asks WeChat for the payment credential as `integration` and stores the `next_action` built
/// from it (for a hosted payment, what its checkout page shows).
pub(crate) async fn prepay(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    integration: Integration,
    now: i64,
) -> ApiResult<()> {
    let up = gw
        .upstream(&merchant.id)
        .await
        .map_err(|e| ApiError::internal("cannot open the merchant's WeChat connection", e))?;
    let appid = match integration {
        Integration::MiniProgram => merchant
            .mini_program_appid
            .clone()
            .unwrap_or_else(|| merchant.appid.clone()),
        _ => merchant.appid.clone(),
    };
    let req = PrepayRequest {
        appid,
        mchid: merchant.mchid.clone(),
        description: p.description.clone(),
        out_trade_no: p.out_trade_no.clone(),
        time_expire: Some(wechat_time(p.expires_at)),
        attach: p.attach.clone(),
        notify_url: gw.notify_url(&merchant.id),
        amount: Amount {
            total: p.amount,
            currency: Some(p.currency.clone()),
        },
        payer: p.payer_openid.clone().map(|openid| Payer { openid }),
        scene_info: p.client_ip.clone().map(|ip| SceneInfo {
            payer_client_ip: Some(ip),
            h5_info: (integration == Integration::H5).then(|| H5Info {
                kind: "Wap".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let client = &up.client;
    let answer = if let Some(mcc) = &merchant.merchant_category_code {
        global_prepay(client, integration, mcc, req).await
    } else {
        match integration {
            Integration::Native => client.prepay_native(&req).await.map(|a| Prepaid::Native {
                code_url: a.code_url,
            }),
            Integration::H5 => client
                .prepay_h5(&req)
                .await
                .map(|a| Prepaid::H5 { h5_url: a.h5_url }),
            Integration::Jsapi => client.prepay_jsapi(&req).await.map(|a| Prepaid::Jsapi {
                prepay_id: a.prepay_id,
            }),
            Integration::MiniProgram => {
                client
                    .prepay_jsapi(&req)
                    .await
                    .map(|a| Prepaid::MiniProgram {
                        prepay_id: a.prepay_id,
                    })
            }
            Integration::App => client.prepay_app(&req).await.map(|a| Prepaid::App {
                prepay_id: a.prepay_id,
            }),
        }
    };
    let prepaid = match answer {
        Ok(prepaid) => prepaid,
        Err(e) => return Err(upstream_failure(gw, merchant, p, e, now).await),
    };
    let credential_expires = match integration {
        Integration::H5 => (now + H5_URL_LIFETIME_MS).min(p.expires_at),
        _ => p.expires_at,
    };
    let action = views::next_action(&up, prepaid, p, now, credential_expires);
    gw.store()
        .set_wechat_credential(&p.id, &action.to_string(), now_ms())
        .await?;
    Ok(())
}

/// A cross-border merchant's prepay: the same order at `/v3/global/transactions/…`, with its
/// merchant category code.
async fn global_prepay(
    client: &wechatpay_v3::client::Client,
    integration: Integration,
    mcc: &str,
    req: PrepayRequest,
) -> Result<Prepaid, wechatpay_v3::client::ClientError> {
    use wechatpay_v3::model::{GlobalKind, GlobalPrepayRequest};
    let kind = match integration {
        Integration::Native => GlobalKind::Native,
        Integration::H5 => GlobalKind::Mweb,
        Integration::Jsapi | Integration::MiniProgram => GlobalKind::Jsapi,
        Integration::App => GlobalKind::App,
    };
    let global = GlobalPrepayRequest {
        appid: req.appid,
        mchid: req.mchid,
        description: req.description,
        out_trade_no: req.out_trade_no,
        trade_type: kind.trade_type().into(),
        merchant_category_code: mcc.to_string(),
        time_expire: req.time_expire,
        attach: req.attach,
        notify_url: req.notify_url,
        amount: req.amount,
        payer: req.payer,
        scene_info: req.scene_info,
        ..Default::default()
    };
    let answer = client.global_prepay(kind, &global).await?;
    let field = |name: &str| {
        answer[name].as_str().map(str::to_string).ok_or_else(|| {
            wechatpay_v3::client::ClientError::Decode(format!("the prepay answer has no {name}"))
        })
    };
    Ok(match integration {
        Integration::Native => Prepaid::Native {
            code_url: field("code_url")?,
        },
        Integration::H5 => Prepaid::H5 {
            h5_url: field("h5_url")?,
        },
        Integration::Jsapi => Prepaid::Jsapi {
            prepay_id: field("prepay_id")?,
        },
        Integration::MiniProgram => Prepaid::MiniProgram {
            prepay_id: field("prepay_id")?,
        },
        Integration::App => Prepaid::App {
            prepay_id: field("prepay_id")?,
        },
    })
}

fn wechat_time(ms: i64) -> String {
    // WeChat wants an offset; +08:00 is what it writes itself.
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a valid time formats")
}

/// WeChat did not give a credential. A refusal fails the payment; anything that may succeed
/// later leaves it pending (status sync will find out what WeChat has) and says so.
async fn upstream_failure(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    e: ClientError,
    now: i64,
) -> ApiError {
    if let ClientError::Api(api) = &e
        && !api.is_retryable()
        && !matches!(api.code, ErrorCode::OrderPaid | ErrorCode::OrderClosed)
    {
        tracing::warn!(payment = %p.id, code = %api.code, message = %api.message, "WeChat refused a prepay");
        let facts = TransitionFacts {
            now,
            source: "prepay_refused".into(),
            ..Default::default()
        };
        let failed = gw
            .store()
            .transition(
                &merchant.id,
                &p.id,
                PaymentEvent::Failed,
                &facts,
                crate::sync::event_payload,
            )
            .await;
        // A payment that moved on meanwhile keeps its state; anything else is a storage failure.
        if let Err(store_error) = failed
            && !matches!(store_error, StoreError::Transition(_))
        {
            return ApiError::from(store_error);
        }
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_rejected",
            format!(
                "WeChat Pay refused the payment: {} {}",
                api.code, api.message
            ),
        );
    }
    tracing::warn!(payment = %p.id, error = %e, "WeChat prepay did not complete; status sync will follow up");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_unavailable",
        format!(
            "WeChat Pay did not answer in time; payment {} stays pending; retry the same request",
            p.id
        ),
    )
}

// ---- read ----

/// A payment with its status history.
#[utoipa::path(get, path = "/v1/payments/{id}", params(("id" = String, Path, description = "pay_...")),
    responses((status = 200, body = PaymentView), (status = 404, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn get_payment(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let result: ApiResult<String> = async {
        let merchant = authenticate(&gw, &headers).await?;
        let (p, history) = gw
            .store()
            .payment_with_history(&merchant.id, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("payment"))?;
        Ok(views::payment_json(&p, Some(&history)))
    }
    .await;
    match result {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    merchant_order_id: Option<String>,
    status: Option<String>,
    created_gte: Option<String>,
    created_lt: Option<String>,
    limit: Option<i64>,
    starting_after: Option<String>,
}

/// Payments, newest first, or the one with a merchant_order_id.
#[utoipa::path(get, path = "/v1/payments", params(ListQuery),
    responses((status = 200, body = ListView), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn list_payments(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            let merchant = authenticate(&gw, &headers).await?;
            let Query(q) = query.map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
            })?;
            if let Some(order) = &q.merchant_order_id {
                let found = gw.store().payment_by_order_id(&merchant.id, order).await?;
                return Ok((StatusCode::OK, list_json(found.as_slice(), false)));
            }
            let limit = page_limit(q.limit)?;
            let status = q
                .status
                .as_deref()
                .map(|s| {
                    PaymentStatus::parse(s).ok_or_else(|| {
                        ApiError::invalid(
                            "invalid_status",
                            "status",
                            format!("unknown status {s:?}"),
                        )
                    })
                })
                .transpose()?;
            let time = |param: &str, v: &Option<String>| {
                v.as_deref().map(|t| parse_time(param, t)).transpose()
            };
            let before = match &q.starting_after {
                Some(id) => {
                    let p = gw.store().payment(&merchant.id, id).await?.ok_or_else(|| {
                        ApiError::invalid("invalid_cursor", "starting_after", "no such payment")
                    })?;
                    Some((p.created_at, p.id))
                }
                None => None,
            };
            let filter = PaymentFilter {
                status,
                created_gte: time("created_gte", &q.created_gte)?,
                created_lt: time("created_lt", &q.created_lt)?,
                before,
                limit: limit + 1,
            };
            let mut rows = gw.store().list_payments(&merchant.id, &filter).await?;
            let has_more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            Ok((StatusCode::OK, list_json(&rows, has_more)))
        }
        .await,
    )
}

fn list_json(rows: &[PaymentRow], has_more: bool) -> Value {
    let list = views::ListView {
        object: "list",
        data: rows
            .iter()
            .map(|p| views::PaymentView::new(p, None))
            .collect(),
        has_more,
    };
    serde_json::to_value(list).expect("a list serialises")
}

// ---- OpenAPI ----

#[derive(OpenApi)]
#[openapi(
    info(title = "wxgate merchant API", description = "Payments over WeChat Pay, for every integration type; refunds; webhooks and the event feed."),
    paths(create_payment, get_payment, list_payments, cancel_payment,
        crate::refunds::create_refund, crate::refunds::list_refunds, crate::refunds::get_refund,
        crate::webhooks::create_endpoint, crate::webhooks::list_endpoints, crate::webhooks::get_endpoint,
        crate::webhooks::delete_endpoint, crate::webhooks::list_events, crate::webhooks::get_event,
        crate::webhooks::redeliver, crate::webhooks::redeliver_range, crate::webhooks::rotate_notify_secret,
        crate::webhooks::rotate_endpoint_secret, crate::links::create_link, crate::links::list_links,
        crate::links::get_link, crate::links::deactivate, crate::links::link_payments),
    modifiers(&ApiKeyAuth)
)]
struct ApiDoc;

struct ApiKeyAuth;

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers and types above.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

// ---- cancel ----

/// Cancel a pending payment: closed at WeChat first, then confirmed by a query.
#[utoipa::path(post, path = "/v1/payments/{id}/cancel", params(("id" = String, Path, description = "pay_...")),
    responses(
        (status = 200, body = PaymentView),
        (status = 409, description = "payment_not_cancellable", body = ErrorEnvelope),
        (status = 503, description = "WeChat Pay did not confirm the close", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
async fn cancel_payment(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let merchant = match authenticate(&gw, &headers).await {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let route = format!("POST /v1/payments/{id}/cancel");
    idempotent(&gw, &merchant, &headers, &route, body, |_| async {
        let p = gw
            .store()
            .payment(&merchant.id, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("payment"))?;
        if p.status != "pending" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "payment_not_cancellable",
                format!("a {} payment cannot be cancelled", p.status),
            ));
        }
        let p = match crate::sync::close_and_settle(&gw, &merchant.id, &p, PaymentEvent::Cancelled)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                // The payment may have changed meanwhile (paid, expired): that is the answer.
                let now = gw
                    .store()
                    .payment(&merchant.id, &id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("payment"))?;
                if now.status != "pending" {
                    now
                } else {
                    tracing::warn!(payment = %p.id, error = %e, "cancel could not reach WeChat");
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream_unavailable",
                        "WeChat Pay did not confirm the close; retry",
                    ));
                }
            }
        };
        if p.status != "cancelled" {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "payment_not_cancellable",
                format!("the payment was {} before it could be cancelled", p.status),
            ));
        }
        Ok((StatusCode::OK, render(&gw, &p).await?))
    })
    .await
}
