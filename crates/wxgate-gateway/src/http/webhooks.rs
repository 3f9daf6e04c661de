//! `/v1/webhook_endpoints`, `/v1/notify_secret`, `/v1/events`: the wire format in and out; the
//! work is [`app::webhooks`](crate::app::webhooks)'.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use wxgate_domain::webhook::EVENT_TYPES;
use wxgate_store::{EventFilter, EventRow, WebhookEndpointRow};

use crate::app::webhooks::{self as hooks, EventDetail, WithSecret};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::{ErrorEnvelope, Json};
use crate::http::extract::{
    Authed, JsonBody, ListPage, Params, merchant_id, page_in_memory, page_limit, parse_time,
    path_id,
};
use crate::{delivery, views};
use wxgate_domain::id::{EndpointId, EventId};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route(
            "/v1/webhook_endpoints",
            post(create_endpoint).get(list_endpoints),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(get_endpoint).delete(delete_endpoint),
        )
        .route(
            "/v1/webhook_endpoints/{id}/rotate_secret",
            post(rotate_endpoint_secret),
        )
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/events/{id}/redeliver", post(redeliver))
        .route("/v1/events/redeliver", post(redeliver_range))
        .route("/v1/notify_secret", post(rotate_notify_secret))
}

/// A webhook endpoint to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEndpoint {
    /// http(s); loopback and private addresses only when the operator allows them.
    #[schema(max_length = 2048)]
    url: String,
    /// Event types to receive; left out: all.
    events: Option<Vec<String>>,
}

fn endpoint_json(e: &WebhookEndpointRow) -> Value {
    let events: Vec<&str> = e.events.split(',').collect();
    json!({
        "id": e.id,
        "object": "webhook_endpoint",
        "url": e.url,
        "events": events,
        "secret_id": e.secret_id,
        "created_at": views::rfc3339(e.created_at),
    })
}

/// The subscription as stored: `*`, or the listed types, each known, in a stable order.
fn subscription(events: Option<Vec<String>>) -> ApiResult<String> {
    let Some(events) = events else {
        return Ok("*".into());
    };
    if events.is_empty() {
        return Err(ApiError::invalid(
            ErrorCode::InvalidEvents,
            "events",
            "events must list at least one event type, or be left out for all",
        ));
    }
    if events.iter().any(|e| e == "*") {
        return Ok("*".into());
    }
    let mut known = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::invalid(
                ErrorCode::InvalidEvents,
                &format!("events[{i}]"),
                format!(
                    "unknown event type {e:?}; known: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        known.push(e.as_str());
    }
    known.sort_unstable();
    known.dedup();
    Ok(known.join(","))
}

/// Creates an endpoint. The answer carries the signing secret; it is never shown again (a retry
/// with the same `Idempotency-Key` replays it from the sealed idempotency record).
#[utoipa::path(post, path = "/v1/webhook_endpoints", request_body = CreateEndpoint,
    responses((status = 201, description = "The endpoint, with its signing `secret` (shown only here) and `secret_id`"),
        (status = 400, body = ErrorEnvelope), (status = 409, description = "too_many_webhook_endpoints", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn create_endpoint(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    JsonBody(req): JsonBody<CreateEndpoint>,
) -> ApiResult<Json> {
    let url = delivery::check_url(&req.url, gw.config().webhooks_allow_private)
        .map_err(|m| ApiError::invalid(ErrorCode::InvalidUrl, "url", m))?;
    let events = subscription(req.events)?;
    let made = hooks::create_endpoint(&gw, &merchant_id(&merchant), url.as_str(), events).await?;
    let mut view = endpoint_json(&made.row);
    view["secret"] = Value::String(made.secret);
    Ok(Json(StatusCode::CREATED, view))
}

/// The merchant's webhook endpoints (never their secrets).
#[utoipa::path(get, path = "/v1/webhook_endpoints", params(ListPage), responses((status = 200, description = "`{object: list, data, has_more}`")),
    security(("api_key" = [])))]
pub(crate) async fn list_endpoints(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Params(q): Params<ListPage>,
) -> ApiResult<Json> {
    // At most ENDPOINTS_MAX: the list is read whole and paged here.
    let rows = hooks::endpoints(&gw, &merchant_id(&merchant)).await?;
    page_in_memory(rows, &q, |e| &e.id, endpoint_json)
}

/// A webhook endpoint.
#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", params(("id" = String, Path, description = "we_...")),
    responses((status = 200, description = "The endpoint"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn get_endpoint(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let e = hooks::endpoint(
        &gw,
        &merchant_id(&merchant),
        &path_id(EndpointId::parse(&id), "webhook endpoint")?,
    )
    .await?;
    Ok(Json(StatusCode::OK, endpoint_json(&e)))
}

/// Delete a webhook endpoint; its pending deliveries are cancelled.
#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", params(("id" = String, Path, description = "we_...")),
    responses((status = 200, description = "`{id, object, deleted: true}`"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn delete_endpoint(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    hooks::delete_endpoint(
        &gw,
        &merchant_id(&merchant),
        &path_id(EndpointId::parse(&id), "webhook endpoint")?,
    )
    .await?;
    Ok(Json(
        StatusCode::OK,
        json!({"id": id, "object": "webhook_endpoint", "deleted": true}),
    ))
}

// ---- events ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    object_id: Option<String>,
    delivery_status: Option<String>,
    limit: Option<i64>,
    starting_after: Option<String>,
}

fn event_value(e: &EventRow) -> Value {
    serde_json::from_str(&delivery::event_json(e)).expect("an event is JSON")
}

/// Events, newest first: what a merchant reads to catch up after an outage.
#[utoipa::path(get, path = "/v1/events",
    params(("type" = Option<String>, Query, description = "An event type"), ("object_id" = Option<String>, Query, description = "pay_... or re_..."),
        ("delivery_status" = Option<String>, Query, description = "pending, delivered, dead or cancelled"),
        ("limit" = Option<i64>, Query, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query, description = "An event id: the page after it")),
    responses((status = 200, description = "`{object: list, data: [event], has_more}`"), (status = 400, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn list_events(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Params(q): Params<EventQuery>,
) -> ApiResult<Json> {
    let limit = page_limit(q.limit)?;
    if let Some(t) = &q.event_type
        && !EVENT_TYPES.contains(&t.as_str())
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidType,
            "type",
            format!("unknown event type {t:?}"),
        ));
    }
    check_delivery_status(q.delivery_status.as_deref())?;
    let filter = EventFilter {
        event_type: q.event_type,
        object_id: q.object_id,
        delivery_status: q.delivery_status,
        before: None,
        limit,
    };
    let (rows, has_more) = hooks::events(
        &gw,
        &merchant_id(&merchant),
        filter,
        q.starting_after.as_deref(),
    )
    .await?;
    let data: Vec<Value> = rows.iter().map(event_value).collect();
    Ok(Json(
        StatusCode::OK,
        json!({"object": "list", "data": data, "has_more": has_more}),
    ))
}

/// An event with its deliveries and every attempt made, as JSON.
fn event_detail(detail: &EventDetail) -> Value {
    let (e, deliveries, attempts) = (&detail.event, &detail.deliveries, &detail.attempts);
    let time = |t: Option<i64>| t.map(views::rfc3339);
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            let log: Vec<Value> = attempts
                .iter()
                .filter(|a| a.endpoint_id == d.endpoint_id)
                .map(|a| {
                    json!({
                        "attempt": a.attempt,
                        "at": views::rfc3339(a.at),
                        "status_code": a.status_code,
                        "latency_ms": a.latency_ms,
                        "error": a.error,
                    })
                })
                .collect();
            json!({
                "endpoint_id": d.endpoint_id,
                "url": d.url,
                "status": d.status,
                "attempts": d.attempts,
                "next_attempt_at": time(d.next_attempt_at),
                "last_attempt_at": time(d.last_attempt_at),
                "last_status_code": d.last_status_code,
                "last_error": d.last_error,
                "delivered_at": time(d.delivered_at),
                "attempt_log": log,
            })
        })
        .collect();
    let mut view = event_value(e);
    view["deliveries"] = Value::Array(deliveries);
    view
}

/// An event, with each delivery and every attempt made.
#[utoipa::path(get, path = "/v1/events/{id}", params(("id" = String, Path, description = "evt_...")),
    responses((status = 200, description = "The event with `deliveries`"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn get_event(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let detail = hooks::event(
        &gw,
        &merchant_id(&merchant),
        &path_id(EventId::parse(&id), "event")?,
    )
    .await?;
    Ok(Json(StatusCode::OK, event_detail(&detail)))
}

/// Sends an event again, now, to every endpoint subscribed to it.
#[utoipa::path(post, path = "/v1/events/{id}/redeliver", params(("id" = String, Path, description = "evt_...")),
    responses((status = 202, description = "Scheduled; the event with its deliveries"), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "no_webhook_endpoints", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn redeliver(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let (_, detail) = hooks::redeliver(
        &gw,
        &merchant_id(&merchant),
        &path_id(EventId::parse(&id), "event")?,
    )
    .await?;
    Ok(Json(StatusCode::ACCEPTED, event_detail(&detail)))
}

/// Which events to send again.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedeliverRange {
    /// RFC 3339: events created at or after this time.
    #[schema(format = DateTime)]
    created_gte: String,
    /// RFC 3339: events created before this time (default: now).
    #[schema(format = DateTime)]
    created_lt: Option<String>,
    /// Only events with a delivery in this status, for example `dead`.
    #[schema(pattern = "^(pending|delivered|dead|cancelled)$")]
    delivery_status: Option<String>,
}

/// Sends again, now, every event created in a time range (optionally only the dead-lettered
/// ones) to every endpoint subscribed to it: how a merchant recovers after an outage.
#[utoipa::path(post, path = "/v1/events/redeliver", request_body = RedeliverRange,
    responses((status = 202, description = "`{scheduled}`"), (status = 400, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn redeliver_range(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    JsonBody(req): JsonBody<RedeliverRange>,
) -> ApiResult<Json> {
    let now = gw.now_ms();
    let created_gte = parse_time("created_gte", &req.created_gte)?;
    let created_lt = match &req.created_lt {
        Some(t) => parse_time("created_lt", t)?,
        None => now + 1,
    };
    check_delivery_status(req.delivery_status.as_deref())?;
    let scheduled = hooks::redeliver_range(
        &gw,
        &merchant_id(&merchant),
        created_gte,
        created_lt,
        req.delivery_status,
    )
    .await?;
    Ok(Json(StatusCode::ACCEPTED, json!({"scheduled": scheduled})))
}

fn check_delivery_status(status: Option<&str>) -> ApiResult<()> {
    match status {
        Some(s) if !["pending", "delivered", "dead", "cancelled"].contains(&s) => {
            Err(ApiError::invalid(
                ErrorCode::InvalidDeliveryStatus,
                "delivery_status",
                "delivery_status must be pending, delivered, dead or cancelled",
            ))
        }
        _ => Ok(()),
    }
}

/// Creates the merchant's notify secret, or replaces it: the secret that signs deliveries to
/// payments' own `notify_url`s. Shown only in this answer; the new one signs from now on (the
/// `kid` in each signature says which one was used).
#[utoipa::path(post, path = "/v1/notify_secret",
    responses((status = 201, description = "`{object: notify_secret, secret_id, secret}`")),
    security(("api_key" = [])))]
pub(crate) async fn rotate_notify_secret(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
) -> ApiResult<Json> {
    let WithSecret { row, secret } =
        hooks::rotate_notify_secret(&gw, &merchant_id(&merchant)).await?;
    Ok(Json(
        StatusCode::CREATED,
        json!({"object": "notify_secret", "secret_id": row.secret_id, "secret": secret, "created_at": views::rfc3339(row.created_at)}),
    ))
}

/// Gives an endpoint a new signing secret, shown only in this answer. It signs from now on; the
/// `kid` in each signature names the secret used, so a receiver can hold both while it switches.
#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}/rotate_secret", params(("id" = String, Path, description = "we_...")),
    responses((status = 200, description = "The endpoint with its new `secret` and `secret_id`"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn rotate_endpoint_secret(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let WithSecret { row, secret } = hooks::rotate_endpoint_secret(
        &gw,
        &merchant_id(&merchant),
        &path_id(EndpointId::parse(&id), "webhook endpoint")?,
    )
    .await?;
    let mut view = endpoint_json(&row);
    view["secret"] = Value::String(secret);
    Ok(Json(StatusCode::OK, view))
}
