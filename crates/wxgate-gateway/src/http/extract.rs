//! Extractors: the edge where a request becomes typed values, or a 4xx that names the field.
//!
//! - [`Authed`]: the merchant behind `Authorization: Bearer <key>` (the scheme in any case);
//! - [`JsonBody`]: an `application/json` body, exactly one JSON value, no control characters
//!   in any string, decoded into `T` with field-precise errors;
//! - [`Params`]: a query string decoded into `T`, with `invalid_query` when it does not fit.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wxgate_store::MerchantRow;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::Json;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// An API key longer than this is not one of ours.
const API_KEY_MAX_CHARS: usize = 256;
/// List pages: the default size and the largest.
pub const PAGE_LIMIT_DEFAULT: i64 = 20;
pub const PAGE_LIMIT_MAX: i64 = 100;

/// The merchant behind the request's API key.
#[derive(Debug, Clone)]
pub struct Authed(pub MerchantRow);

/// The Idempotency-Key a request runs under, when it has one (the idempotency layer puts it in
/// the request's extensions): `Option<Extension<IdempotencyKey>>` in a handler.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl FromRequestParts<Gateway> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> ApiResult<Self> {
        // The idempotency layer authenticates first and leaves the merchant here.
        if let Some(merchant) = parts.extensions.get::<Authed>() {
            return Ok(merchant.clone());
        }
        authenticate(gw, &parts.headers).await.map(Authed)
    }
}

/// Names the payment a request is about on its log lines (the request's span, opened with
/// its request id; [`authenticate`] names the merchant there).
pub(crate) fn log_payment(id: &str) {
    tracing::Span::current().record("payment_id", id);
}

/// The merchant behind `Authorization: Bearer <key>`, from the cache or the database.
pub async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> ApiResult<MerchantRow> {
    let key = api_key(headers)?;
    let hash = crate::secrets::hash_api_key(key);
    if let Some(merchant) = gw.cached_key(&hash) {
        tracing::Span::current().record("merchant_id", merchant.id.as_str());
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
    tracing::Span::current().record("merchant_id", merchant.id.as_str());
    Ok(merchant)
}

fn api_key(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let (scheme, key) = value
        .trim()
        .split_once(' ')
        .ok_or_else(ApiError::unauthorized)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() || key.len() > API_KEY_MAX_CHARS {
        return Err(ApiError::unauthorized());
    }
    Ok(key)
}

/// A JSON body decoded into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(e.status()))?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

/// A body that could not be read: too large, or broken off.
pub fn body_error(status: axum::http::StatusCode) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the body must be at most {BODY_LIMIT_BYTES} bytes"),
        )
    } else {
        ApiError::new(ErrorCode::InvalidBody, "the body could not be read")
    }
}

/// Decodes exactly one JSON value into `T`, naming the field and the reason when it does not
/// fit. Strings (keys included) with control characters are refused before any rule runs.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not one JSON value: {e}"),
        )
    })?;
    refuse_control_characters(&value, "")?;
    serde_path_to_error::deserialize::<_, T>(value).map_err(decode_error)
}

fn decode_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    let field = |name: &str| match path.as_str() {
        "." => name.to_string(),
        parent => format!("{parent}.{name}"),
    };
    if let Some(name) = named("missing field `") {
        let f = field(&name);
        ApiError::invalid(ErrorCode::ParameterMissing, &f, format!("{f} is required"))
    } else if let Some(name) = named("unknown field `") {
        // The path already ends at the unknown field.
        let f = if path == "." { name } else { path };
        ApiError::invalid(
            ErrorCode::ParameterUnknown,
            &f,
            format!("{f} is not a parameter of this request"),
        )
    } else if path == "." {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body must be a JSON object: {message}"),
        )
    } else {
        ApiError::invalid(
            ErrorCode::InvalidType,
            &path,
            format!("{path} {}", in_words(&message)),
        )
    }
}

/// What a JSON decoding error expected, in a merchant's words ("must be a whole number"), not
/// the parser's ("invalid type: string \"1\", expected i64").
fn in_words(message: &str) -> String {
    let expected = message
        .rsplit_once("expected ")
        .map(|(_, e)| e.trim())
        .unwrap_or("");
    let integer = ["i64", "i32", "u64", "u32", "usize", "u16", "u8"];
    let wanted = if integer.iter().any(|t| expected.starts_with(t)) {
        "a whole number"
    } else if expected.contains("string") {
        "text"
    } else if expected.contains("boolean") {
        "true or false"
    } else if expected.contains("sequence") {
        "a list"
    } else if expected.contains("map") || expected.starts_with("struct") {
        "an object"
    } else {
        return format!("is not valid: {message}");
    };
    format!("must be {wanted}")
}

/// Refuses NUL and every other control character in a JSON value's strings and keys (`path`
/// names the value, `""` for a whole body).
pub fn refuse_control_characters(value: &Value, path: &str) -> ApiResult<()> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) => check_text(if path.is_empty() { "body" } else { path }, s),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| refuse_control_characters(v, &join(&i.to_string()))),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_text(&join(k), k)?;
            refuse_control_characters(v, &join(k))
        }),
        _ => Ok(()),
    }
}

/// A text parameter must not hold control characters (NUL above all: PostgreSQL refuses it).
pub fn check_text(param: &str, text: &str) -> ApiResult<()> {
    if text.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidCharacters,
            param,
            format!("{param} must not contain control characters"),
        ));
    }
    Ok(())
}

/// A query string decoded into `T`.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(Params(q)),
            Err(e) => Err(ApiError::new(ErrorCode::InvalidQuery, e.body_text())),
        }
    }
}

/// A list's page size: 20 by default, 1 to 100.
pub fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    let limit = limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidLimit,
            "limit",
            format!("limit must be from 1 to {PAGE_LIMIT_MAX}"),
        ));
    }
    Ok(limit)
}

/// An RFC 3339 time parameter, as Unix milliseconds.
pub fn parse_time(param: &str, value: &str) -> ApiResult<i64> {
    wechatpay_v3::validate::rfc3339(param, value)
        .map(|s| s * 1000)
        .map_err(|_| {
            ApiError::invalid(
                ErrorCode::InvalidTime,
                param,
                format!("{param} must be an RFC 3339 time"),
            )
        })
}

/// A page of a list: its size and where it starts.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPage {
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// An id from the previous page: the page after it.
    pub starting_after: Option<String>,
}

/// A page of rows as `{object: list, data, has_more}`: `rows` holds at most one more than
/// `limit`, which only says that more follow.
pub fn page<T>(mut rows: Vec<T>, limit: i64, view: impl Fn(&T) -> Value) -> Json {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data: Vec<Value> = rows.iter().map(view).collect();
    Json(
        StatusCode::OK,
        json!({"object": "list", "data": data, "has_more": has_more}),
    )
}

/// A page of a short list held whole (a payment's refunds, a merchant's endpoints): the rows
/// after `starting_after` (by `id`), at most `limit` of them.
pub fn page_in_memory<T>(
    rows: Vec<T>,
    q: &ListPage,
    id: impl Fn(&T) -> &str,
    view: impl Fn(&T) -> Value,
) -> ApiResult<Json> {
    let limit = page_limit(q.limit)?;
    let start = match &q.starting_after {
        None => 0,
        Some(after) => {
            rows.iter().position(|r| id(r) == after).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidCursor,
                    "starting_after",
                    "not in this list",
                )
            })? + 1
        }
    };
    let rest: Vec<T> = rows
        .into_iter()
        .skip(start)
        .take(limit as usize + 1)
        .collect();
    Ok(page(rest, limit, view))
}

/// An id from the path: one of another kind's shape names nothing here (404, like an unknown
/// one).
pub fn path_id<T>(parsed: Option<T>, what: &str) -> ApiResult<T> {
    parsed.ok_or_else(|| ApiError::not_found(what))
}

/// The authenticated merchant's id, typed.
pub fn merchant_id(merchant: &MerchantRow) -> wxgate_domain::id::MerchantId {
    wxgate_domain::id::MerchantId::stored(merchant.id.as_str())
}

/// The most metadata a payment or payout carries.
const METADATA_KEYS_MAX: usize = 20;
const METADATA_KEY_CHARS_MAX: usize = 40;
const METADATA_VALUE_CHARS_MAX: usize = 500;

/// `metadata`: at most 20 keys of 1 to 40 characters, values of at most 500.
pub fn check_metadata(metadata: &std::collections::BTreeMap<String, String>) -> ApiResult<()> {
    let fits = metadata.len() <= METADATA_KEYS_MAX
        && metadata.iter().all(|(k, v)| {
            !k.is_empty()
                && k.chars().count() <= METADATA_KEY_CHARS_MAX
                && v.chars().count() <= METADATA_VALUE_CHARS_MAX
        });
    if !fits {
        return Err(ApiError::invalid(
            ErrorCode::InvalidMetadata,
            "metadata",
            format!(
                "metadata holds at most {METADATA_KEYS_MAX} keys of 1 to {METADATA_KEY_CHARS_MAX} characters, values of at most {METADATA_VALUE_CHARS_MAX}"
            ),
        ));
    }
    Ok(())
}
