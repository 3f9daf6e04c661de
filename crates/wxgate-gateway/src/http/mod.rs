//! The HTTP layer: the router at the top, and what every route shares (extractors, the error
//! envelope, idempotency, guards). Handlers only translate: they take typed values from the
//! extractors, call the application layer, and turn its answer or its [`ApiError`] into a
//! response.

pub mod answer;
pub mod checkout;
pub mod doors;
pub mod extract;
pub mod idempotency;
pub mod links;
pub mod money;
pub mod notify;
pub mod openapi;
pub mod payments;
pub mod payout_page;
pub mod payouts;
pub mod qr;
pub mod refunds;
pub mod reports;
pub mod webhooks;

use axum::Router;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{DefaultBodyLimit, RawPathParams, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;

pub use extract::BODY_LIMIT_BYTES;

/// Every route the gateway serves.
pub fn router(gateway: Gateway) -> Router {
    let api = Router::new()
        .merge(payments::routes())
        .merge(refunds::routes())
        .merge(payouts::routes())
        .merge(webhooks::routes())
        .merge(qr::routes())
        .merge(links::api_routes())
        .merge(money::routes())
        .merge(reports::routes())
        .route_layer(middleware::from_fn_with_state(
            gateway.clone(),
            idempotency::layer,
        ));
    let pages = Router::new()
        .merge(checkout::routes())
        .merge(links::page_routes())
        .merge(payout_page::routes())
        .layer(middleware::map_response(page_headers));
    let routes = Router::new()
        .merge(api)
        .merge(pages)
        .merge(doors::payment_intents::routes())
        .merge(doors::two_checkout::routes())
        .merge(doors::open_api::routes())
        .route("/wechatpay/notify/{merchant_id}", post(notify::handle))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi::served(),
                )
            }),
        );
    let routes = guarded::<ApiError>(routes, &gateway);
    framed(
        routes
            .fallback(|| async {
                ApiError::new(ErrorCode::RouteNotFound, "no such route; see /openapi.json")
            })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    "this route does not take this method; see /openapi.json",
                )
            }),
    )
    .with_state(gateway)
}

/// What every listener's routes go through, its refusals in its own envelope `E`: control
/// characters refused before any lookup, then the request metrics.
pub(crate) fn guarded<E: From<ApiError> + IntoResponse + 'static>(
    routes: Router<Gateway>,
    gw: &Gateway,
) -> Router<Gateway> {
    routes
        .route_layer(middleware::from_fn(refuse_control_characters::<E>))
        .route_layer(middleware::from_fn_with_state(gw.clone(), record))
}

/// What every listener puts around all it answers, its fallbacks included: the body limit
/// (read before authentication) and the request id.
pub(crate) fn framed(router: Router<Gateway>) -> Router<Gateway> {
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(request_id))
}

/// The header that names a request, echoed on every answer.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest caller-given request id kept (a longer or unprintable one is replaced).
const REQUEST_ID_MAX: usize = 128;

/// Every answer carries `X-Request-Id`: the caller's (when it is short, printable ASCII) or a
/// new one; the request's log lines carry it too.
pub(crate) async fn request_id(request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= REQUEST_ID_MAX)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string);
    let id = given.unwrap_or_else(|| wxgate_domain::id::generate("req"));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        merchant_id = tracing::field::Empty,
        payment_id = tracing::field::Empty
    );
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Routes nobody waits on (health checks and metrics scrapes): they do not make background
/// work yield (see [`crate::pressure`]).
const UNWAITED_ROUTES: [&str; 4] = ["/health", "/healthz", "/readyz", "/metrics"];

/// Counts every routed request by its route pattern (never its ids), method and status.
async fn record(
    axum::extract::State(gw): axum::extract::State<Gateway>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    if !UNWAITED_ROUTES.contains(&route.as_str()) {
        gw.pressure().request_arrived();
    }
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    gw.metrics().request(&route, &method, status, seconds);
    // The access log, inside the request's span (its ids ride along); off unless this
    // module's debug level is on (`RUST_LOG=info,wxgate_gateway::http=debug`).
    tracing::debug!(%method, route, status, ms = seconds * 1000.0, "request");
    response
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
async fn metrics(axum::extract::State(gw): axum::extract::State<Gateway>) -> Response {
    match crate::app::operations::metrics(&gw).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /readyz`: 200 when the database answers and its schema is this binary's; 503 saying
/// why otherwise (a load balancer sends no traffic to a node that is not ready).
async fn ready(axum::extract::State(gw): axum::extract::State<Gateway>) -> Response {
    use axum::http::StatusCode;
    let (status, why) = match gw.store().schema_status().await {
        Ok(wxgate_store::SchemaStatus::UpToDate) => (StatusCode::OK, None),
        Ok(wxgate_store::SchemaStatus::Behind { .. }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("the database lacks migrations this binary needs: run wxgate migrate"),
        ),
        Ok(wxgate_store::SchemaStatus::Ahead { .. }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("the database was migrated by a newer wxgate"),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Some("the database does not answer"),
            )
        }
    };
    let body = match why {
        None => json!({"status": "ready"}),
        Some(reason) => json!({"status": "not_ready", "reason": reason}),
    };
    (status, axum::Json(body)).into_response()
}

/// The demo's activity: one line per answered request, as a person reads it.
pub async fn print_activity(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(line) = activity_line(
        method.as_str(),
        &path,
        response.status().as_u16(),
        started.elapsed().as_millis(),
    ) {
        println!("{line}");
    }
    response
}

/// `POST /v1/payments → 201 (14 ms)`, or nothing for a checkout page's status poll (every 3 s
/// per open page) and the health check.
pub fn activity_line(method: &str, path: &str, status: u16, ms: u128) -> Option<String> {
    let what = if path.starts_with("/wechatpay/notify/") {
        "  (WeChat's callback)"
    } else if path.starts_with("/sim/payer") {
        "  (the simulated payer)"
    } else if path.starts_with("/v3/") {
        "  (at the simulated WeChat Pay)"
    } else {
        ""
    };
    let quiet = path == "/health" || (path.starts_with("/checkout/") && path.ends_with("/status"));
    (!quiet).then(|| format!("{method} {path} → {status} ({ms} ms){what}"))
}

/// Path ids and query parameters are text: NUL and other control characters are refused with
/// the parameter's name before any handler (or the database) sees them, in the listener's
/// envelope `E` (the gateway's own, or a front door's).
pub(crate) async fn refuse_control_characters<E: From<ApiError> + IntoResponse>(
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(e) = check_characters(&params, request.uri()) {
        return E::from(e).into_response();
    }
    next.run(request).await
}

/// The refusal of the first path id or query parameter (name or value) that holds a control
/// character, or of a path that is not UTF-8.
fn check_characters(
    params: &Result<RawPathParams, RawPathParamsRejection>,
    uri: &axum::http::Uri,
) -> Result<(), ApiError> {
    let Ok(params) = params else {
        return Err(ApiError::new(
            ErrorCode::InvalidCharacters,
            "the path is not valid UTF-8",
        ));
    };
    for (name, value) in params {
        extract::check_text(name, value)?;
    }
    let query = uri.query().unwrap_or("");
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        extract::check_text("query", &name)?;
        extract::check_text(&name, &value)?;
    }
    Ok(())
}

/// Headers every hosted page answers with (the CSP itself is set by the page, which knows
/// its nonce; a page without one gets the strictest policy).
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("X-Frame-Options", HeaderValue::from_static("DENY"));
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn activity_lines_read_like_a_log_for_people() {
        assert_eq!(
            super::activity_line("POST", "/v1/payments", 201, 14).as_deref(),
            Some("POST /v1/payments → 201 (14 ms)")
        );
        assert_eq!(
            super::activity_line("POST", "/wechatpay/notify/mch_1", 204, 3).as_deref(),
            Some("POST /wechatpay/notify/mch_1 → 204 (3 ms)  (WeChat's callback)")
        );
        assert_eq!(
            super::activity_line("GET", "/checkout/cs_1/status", 200, 1),
            None
        );
        assert_eq!(super::activity_line("GET", "/health", 200, 1), None);
    }
}
