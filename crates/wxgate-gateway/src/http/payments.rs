//! `/v1/payments`: create, read, list, cancel. The wire format is parsed here into an
//! [`app::payments::NewPayment`]; the work is the application layer's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use wxgate_domain::{Integration, Money, MoneyError, PaymentIntegration, PaymentStatus};
use wxgate_store::{MerchantRow, PaymentFilter};

use crate::app::check_notify_url;
use crate::app::payments::{
    self as pay, NewPayment, PAYMENT_LIFETIME_MAX_MS, PAYMENT_LIFETIME_MIN_MS, PaymentState,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::{ErrorEnvelope, Json, ok};
use crate::http::extract::{
    Authed, JsonBody, Params, check_metadata, check_text, log_payment, merchant_id, page_limit,
    parse_time, path_id,
};
use crate::qr::{Image, SCALE, SVG_DEFAULT};
use crate::views::{self, ListView, PaymentView};
use base64::Engine;
use wxgate_domain::id::PaymentId;

/// The longest URL a payment keeps.
const URL_CHARS_MAX: usize = 2048;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/payments", post(create_payment).get(list_payments))
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/payments/{id}/cancel", post(cancel_payment))
        .route("/v1/payments/{id}/attempts", post(new_attempt))
}

/// A new payment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    /// In the currency's minor unit (fen for CNY), above 0.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub(crate) amount: i64,
    /// ISO 4217, among the merchant's currencies.
    #[schema(example = "CNY", pattern = "^[A-Z]{3}$")]
    pub(crate) currency: String,
    /// Unique per merchant: 6–32 characters of `0-9 A-Z a-z _ - | *`.
    #[schema(min_length = 6, max_length = 32, pattern = r"^[0-9A-Za-z_\-|*]{6,32}$")]
    pub(crate) merchant_order_id: String,
    /// 1–127 characters, shown to the payer.
    #[schema(min_length = 1, max_length = 127)]
    pub(crate) description: String,
    /// `native`, `h5`, `jsapi`, `mini_program`, `app`, or `hosted` (the checkout page at the
    /// payment's `hosted_url` picks by the shopper's device).
    #[schema(
        example = "native",
        pattern = "^(native|h5|jsapi|mini_program|app|hosted)$"
    )]
    pub(crate) integration: String,
    /// Required for jsapi and mini_program.
    pub(crate) payer: Option<PayerIn>,
    /// The shopper's IP address; required for h5.
    pub(crate) client_ip: Option<String>,
    /// RFC 3339; at least a minute ahead, at most two hours (the default).
    #[schema(format = DateTime)]
    pub(crate) expires_at: Option<String>,
    #[schema(max_length = 2048)]
    pub(crate) return_url: Option<String>,
    #[schema(max_length = 2048)]
    pub(crate) cancel_url: Option<String>,
    /// Where this payment's events (and its refunds') are also POSTed, signed with the
    /// merchant's notify secret (`POST /v1/notify_secret`).
    #[schema(max_length = 2048)]
    pub(crate) notify_url: Option<String>,
    /// At most 20 string keys (1–40 characters) and values (at most 500).
    pub(crate) metadata: Option<BTreeMap<String, String>>,
    /// Up to 128 characters, returned by WeChat once paid.
    #[schema(max_length = 128)]
    pub(crate) attach: Option<String>,
    /// A native payment's QR images inline in this answer (`image_png_base64`, `image_svg`),
    /// besides their URLs. Off by default: most callers render `data` or fetch an image.
    #[serde(default)]
    pub(crate) inline_qr_images: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayerIn {
    #[schema(min_length = 1, max_length = 128)]
    pub(crate) openid: String,
}

/// Create a payment and get what the shopper's device needs next.
#[utoipa::path(post, path = "/v1/payments", request_body = CreatePayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 201, description = "Created", body = PaymentView),
        (status = 200, description = "The existing payment for this merchant_order_id", body = PaymentView),
        (status = 400, description = "A parameter is missing or invalid", body = ErrorEnvelope),
        (status = 401, description = "No valid API key", body = ErrorEnvelope),
        (status = 409, description = "merchant_order_id_taken, notify_secret_missing or idempotency_key_in_use", body = ErrorEnvelope),
        (status = 413, description = "body_too_large", body = ErrorEnvelope),
        (status = 415, description = "unsupported_media_type", body = ErrorEnvelope),
        (status = 422, description = "idempotency_key_reused", body = ErrorEnvelope),
        (status = 502, description = "WeChat Pay refused the payment", body = ErrorEnvelope),
        (status = 503, description = "WeChat Pay or the database is unavailable; retry", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn create_payment(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    JsonBody(req): JsonBody<CreatePayment>,
) -> ApiResult<Response> {
    let inline = req.inline_qr_images;
    let new = parse(
        req,
        &merchant,
        gw.now_ms(),
        gw.config().webhooks_allow_private,
    )?;
    let created = pay::create(&gw, &merchant, new).await?;
    log_payment(&created.state.payment.id);
    let status = if created.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    if inline {
        let mut value = payment_value(&created.state);
        inline_qr_images(&gw, &mut value);
        return Ok(Json(status, value).into_response());
    }
    Ok(json_text(status, payment_text(&created.state)))
}

/// Puts a native payment's QR images into its answer, from the gateway's cache of rendered
/// codes.
fn inline_qr_images(gw: &Gateway, value: &mut serde_json::Value) {
    let qr = &mut value["next_action"]["display_qr_code"];
    let Some(data) = qr["data"].as_str().map(str::to_string) else {
        return;
    };
    let png = gw.qr_image(&data, Image::Png(SCALE));
    let svg = gw.qr_image(&data, Image::Svg(SVG_DEFAULT));
    qr["image_png_base64"] = base64::engine::general_purpose::STANDARD
        .encode(&png)
        .into();
    qr["image_svg"] = String::from_utf8_lossy(&svg).into_owned().into();
}

fn payment_value(state: &PaymentState) -> serde_json::Value {
    views::payment_detail(&state.payment, &state.history, &state.attempts)
}

/// The create request as a [`NewPayment`], or the first rule it breaks. Front doors build the
/// same request from their own shapes, so every rule is checked here once.
pub(crate) fn parse(
    req: CreatePayment,
    merchant: &MerchantRow,
    now: i64,
    allow_private: bool,
) -> ApiResult<NewPayment> {
    check_texts(&req)?;
    let currency = pay::merchant_currency(merchant, &req.currency)?;
    let money = Money::new(req.amount, currency).map_err(|e| match e {
        MoneyError::NotPositive(_) | MoneyError::TooLarge(_) => {
            ApiError::invalid(ErrorCode::InvalidAmount, "amount", e.to_string())
        }
        MoneyError::UnknownCurrency(_) => {
            ApiError::invalid(ErrorCode::InvalidCurrency, "currency", e.to_string())
        }
    })?;
    wechatpay_v3::validate::out_trade_no("merchant_order_id", &req.merchant_order_id).map_err(
        |e| {
            ApiError::invalid(
                ErrorCode::InvalidMerchantOrderId,
                "merchant_order_id",
                format!("merchant_order_id {}", e.issue),
            )
        },
    )?;
    pay::check_description(&req.description)?;
    let integration = parse_integration(&req.integration)?;
    let openid = req.payer.map(|p| p.openid);
    check_payer(
        integration.product(),
        openid.as_deref(),
        req.client_ip.as_deref(),
    )?;
    check_url(ErrorCode::InvalidReturnUrl, "return_url", &req.return_url)?;
    check_url(ErrorCode::InvalidCancelUrl, "cancel_url", &req.cancel_url)?;
    check_notify_url(req.notify_url.as_deref(), allow_private)?;
    let metadata = req.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    if let Some(a) = &req.attach {
        wechatpay_v3::validate::attach("attach", a, 128).map_err(|e| {
            ApiError::invalid(
                ErrorCode::InvalidAttach,
                "attach",
                format!("attach {}", e.issue),
            )
        })?;
    }
    Ok(NewPayment {
        money,
        merchant_order_id: req.merchant_order_id,
        description: req.description,
        integration,
        openid,
        client_ip: req.client_ip,
        expires_at: parse_expiry(req.expires_at.as_deref(), now)?,
        return_url: req.return_url,
        cancel_url: req.cancel_url,
        notify_url: req.notify_url,
        metadata,
        attach: req.attach,
        payment_link_id: None,
        door: None,
    })
}

/// No text of the request holds a control character (a front door's body is not read through
/// the `/v1` extractor, which refuses them for the whole body).
fn check_texts(req: &CreatePayment) -> ApiResult<()> {
    let texts = [
        ("merchant_order_id", Some(req.merchant_order_id.as_str())),
        ("description", Some(req.description.as_str())),
        ("currency", Some(req.currency.as_str())),
        ("client_ip", req.client_ip.as_deref()),
        ("return_url", req.return_url.as_deref()),
        ("cancel_url", req.cancel_url.as_deref()),
        ("notify_url", req.notify_url.as_deref()),
        ("attach", req.attach.as_deref()),
        (
            "payer.openid",
            req.payer.as_ref().map(|p| p.openid.as_str()),
        ),
    ];
    for (param, text) in texts {
        if let Some(t) = text {
            check_text(param, t)?;
        }
    }
    for (k, v) in req.metadata.iter().flatten() {
        check_text("metadata", k)?;
        check_text("metadata", v)?;
    }
    Ok(())
}

/// A WeChat product, or `hosted`: the checkout page picks the product by the shopper's device.
fn parse_integration(name: &str) -> ApiResult<PaymentIntegration> {
    PaymentIntegration::parse(name).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidIntegration,
            "integration",
            "integration must be one of native, h5, jsapi, mini_program, app, hosted",
        )
    })
}

/// The payer's openid and address, required where the product needs them.
fn check_payer(
    integration: Option<Integration>,
    openid: Option<&str>,
    client_ip: Option<&str>,
) -> ApiResult<()> {
    match (openid, integration.is_some_and(Integration::needs_openid)) {
        (None, true) => {
            return Err(ApiError::invalid(
                ErrorCode::OpenidRequired,
                "payer.openid",
                "payer.openid is required for jsapi and mini_program",
            ));
        }
        (Some(o), _) => wechatpay_v3::validate::openid("payer.openid", o).map_err(|e| {
            ApiError::invalid(
                ErrorCode::InvalidOpenid,
                "payer.openid",
                format!("payer.openid {}", e.issue),
            )
        })?,
        _ => {}
    }
    match (
        client_ip,
        integration.is_some_and(Integration::needs_client_ip),
    ) {
        (None, true) => Err(ApiError::invalid(
            ErrorCode::ClientIpRequired,
            "client_ip",
            "client_ip (the shopper's IP address) is required for h5",
        )),
        (Some(ip), _) if ip.parse::<IpAddr>().is_err() => Err(ApiError::invalid(
            ErrorCode::InvalidClientIp,
            "client_ip",
            "client_ip must be an IPv4 or IPv6 address",
        )),
        _ => Ok(()),
    }
}

/// When the payment ends: two hours by default, at least a minute away, at most two hours.
fn parse_expiry(expires_at: Option<&str>, now: i64) -> ApiResult<i64> {
    let Some(t) = expires_at else {
        return Ok(now + PAYMENT_LIFETIME_MAX_MS);
    };
    let invalid =
        |message: &str| ApiError::invalid(ErrorCode::InvalidExpiresAt, "expires_at", message);
    let secs = wechatpay_v3::validate::rfc3339("expires_at", t)
        .map_err(|_| invalid("expires_at must be an RFC 3339 time"))?;
    let ms = secs.saturating_mul(1000);
    if ms < now + PAYMENT_LIFETIME_MIN_MS {
        return Err(invalid("expires_at must be at least one minute from now"));
    }
    Ok(ms.min(now + PAYMENT_LIFETIME_MAX_MS))
}

fn check_url(code: ErrorCode, param: &str, value: &Option<String>) -> ApiResult<()> {
    if let Some(v) = value {
        let ok = v.len() <= URL_CHARS_MAX
            && url::Url::parse(v)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            return Err(ApiError::invalid(
                code,
                param,
                format!(
                    "{param} must be an absolute http(s) URL of at most {URL_CHARS_MAX} characters"
                ),
            ));
        }
    }
    Ok(())
}

/// A payment with its status history.
#[utoipa::path(get, path = "/v1/payments/{id}", params(("id" = String, Path, description = "pay_...")),
    responses((status = 200, body = PaymentView), (status = 400, description = "invalid_characters", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn get_payment(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    log_payment(&id);
    let state = pay::get(
        &gw,
        &merchant_id(&merchant),
        &path_id(PaymentId::parse(&id), "payment")?,
    )
    .await?;
    Ok(json_text(StatusCode::OK, payment_text(&state)))
}

/// A payment's answer serialised straight to text, without an intermediate JSON value (the
/// hot paths: a read, a create).
fn payment_text(state: &PaymentState) -> String {
    views::payment_json(&state.payment, &state.history, &state.attempts)
}

fn json_text(status: StatusCode, json: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The payment with this merchant_order_id (other filters are then ignored).
    merchant_order_id: Option<String>,
    #[param(pattern = "^(pending|succeeded|failed|cancelled|expired|refunded)$")]
    status: Option<String>,
    #[param(format = DateTime)]
    created_gte: Option<String>,
    #[param(format = DateTime)]
    created_lt: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A payment id: the page after it.
    starting_after: Option<String>,
}

/// Payments, newest first, or the one with a merchant_order_id.
#[utoipa::path(get, path = "/v1/payments", params(ListQuery),
    responses((status = 200, body = ListView), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 503, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn list_payments(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Params(q): Params<ListQuery>,
) -> ApiResult<Json> {
    if let Some(order) = &q.merchant_order_id {
        let found = gw.store().payment_by_order_id(&merchant.id, order).await?;
        return Ok(ok(list_json(found.as_slice(), false)));
    }
    let status = q
        .status
        .as_deref()
        .map(|s| {
            PaymentStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidStatus,
                    "status",
                    format!("unknown status {s:?}"),
                )
            })
        })
        .transpose()?;
    let time =
        |param: &str, v: &Option<String>| v.as_deref().map(|t| parse_time(param, t)).transpose();
    let before = match &q.starting_after {
        Some(id) => {
            let p = gw.store().payment(&merchant.id, id).await?.ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidCursor,
                    "starting_after",
                    "no such payment",
                )
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
        limit: page_limit(q.limit)?,
    };
    let (rows, has_more) = pay::list(&gw, &merchant.id, filter).await?;
    Ok(ok(list_json(&rows, has_more)))
}

fn list_json(rows: &[wxgate_store::PaymentRow], has_more: bool) -> serde_json::Value {
    let list = ListView {
        object: "list",
        data: rows.iter().map(|p| PaymentView::new(p, None)).collect(),
        has_more,
    };
    serde_json::to_value(list).expect("a list serialises")
}

/// Cancel a pending payment: closed at WeChat first, then confirmed by a query.
#[utoipa::path(post, path = "/v1/payments/{id}/cancel", params(("id" = String, Path, description = "pay_..."),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 200, body = PaymentView),
        (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "payment_not_cancellable", body = ErrorEnvelope),
        (status = 503, description = "WeChat Pay did not confirm the close", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn cancel_payment(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    log_payment(&id);
    let state = pay::cancel(
        &gw,
        &merchant_id(&merchant),
        &path_id(PaymentId::parse(&id), "payment")?,
    )
    .await?;
    Ok(ok(payment_value(&state)))
}

/// A new WeChat order for a pending payment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAttempt {
    /// The product: by default the payment's (or, for a hosted payment, its current one).
    #[schema(pattern = "^(native|h5|jsapi|mini_program|app)$")]
    integration: Option<String>,
}

/// Make a new WeChat order for a pending payment, with a fresh credential (say, after an
/// `h5_url` expired, or to offer another product). Whichever order is paid first pays the
/// payment; the others are then closed, and one paid anyway is refunded in full.
#[utoipa::path(post, path = "/v1/payments/{id}/attempts", request_body = NewAttempt,
    params(("id" = String, Path, description = "pay_..."),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 201, description = "The payment with its new next_action and attempts", body = PaymentView),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "payment_not_pending or too_many_attempts", body = ErrorEnvelope),
        (status = 502, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub async fn new_attempt(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<NewAttempt>,
) -> ApiResult<Json> {
    log_payment(&id);
    let id = path_id(PaymentId::parse(&id), "payment")?;
    let p = pay::get(&gw, &merchant_id(&merchant), &id).await?.payment;
    let name = match (&req.integration, p.checkout_kind.as_deref()) {
        (Some(name), _) => name.as_str(),
        (None, Some(current)) => current,
        (None, None) => p.integration.as_str(),
    };
    let integration = Integration::parse(name).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidIntegration,
            "integration",
            "integration must be one of native, h5, jsapi, mini_program, app",
        )
    })?;
    check_payer(
        Some(integration),
        p.payer_openid.as_deref(),
        p.client_ip.as_deref(),
    )?;
    pay::start_attempt(&gw, &merchant, &p, integration, |order| order).await?;
    let state = pay::get(&gw, &merchant_id(&merchant), &id).await?;
    Ok(Json(StatusCode::CREATED, payment_value(&state)))
}
