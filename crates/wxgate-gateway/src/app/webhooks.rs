//! Webhook endpoints, the merchant's notify secret, and the event feed with redelivery: the
//! work behind `/v1/webhook_endpoints`, `/v1/notify_secret` and `/v1/events`.

use wxgate_domain::id::{EndpointId, EventId, MerchantId};
use wxgate_store::{
    AttemptRow, DeliveryRow, EventFilter, EventRow, NotifySecretRow, Redeliver, WebhookEndpointRow,
};

use crate::delivery;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;

/// Endpoints one merchant may have at once.
pub const ENDPOINTS_MAX: i64 = 16;
/// Batches of old events one call of `forget_old_events` forgets per merchant at most.
const EVENT_PURGE_BATCHES: usize = 20;
/// Events one redelivery by time range may cover (it runs as one transaction).
pub const REDELIVER_RANGE_MAX: i64 = 10_000;

/// A row with a signing secret shown this once.
pub struct WithSecret<T> {
    pub row: T,
    pub secret: String,
}

/// A new endpoint for `url` (already checked) receiving `events` (`*` or a sorted list).
pub async fn create_endpoint(
    gw: &Gateway,
    merchant_id: &MerchantId,
    url: &str,
    events: String,
) -> ApiResult<WithSecret<WebhookEndpointRow>> {
    let too_many = || {
        ApiError::new(
            ErrorCode::TooManyWebhookEndpoints,
            format!("a merchant may have at most {ENDPOINTS_MAX} webhook endpoints"),
        )
    };
    let secret = delivery::new_secret();
    let row = WebhookEndpointRow {
        id: wxgate_domain::id::generate("we"),
        merchant_id: merchant_id.to_string(),
        url: url.to_string(),
        events,
        secret_id: wxgate_domain::id::generate("whs"),
        secret_sealed: gw.config().master_key.seal(secret.as_bytes()),
        created_at: gw.now_ms(),
        deleted_at: None,
    };
    if !gw
        .store()
        .insert_webhook_endpoint(&row, ENDPOINTS_MAX)
        .await?
    {
        return Err(too_many());
    }
    Ok(WithSecret { row, secret })
}

/// The merchant's endpoints (at most [`ENDPOINTS_MAX`]).
pub async fn endpoints(
    gw: &Gateway,
    merchant_id: &MerchantId,
) -> ApiResult<Vec<WebhookEndpointRow>> {
    Ok(gw.store().webhook_endpoints(merchant_id).await?)
}

/// One of the merchant's live endpoints.
pub async fn endpoint(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &EndpointId,
) -> ApiResult<WebhookEndpointRow> {
    gw.store()
        .webhook_endpoint(id)
        .await?
        .filter(|e| e.merchant_id == merchant_id.as_str() && e.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// Deletes an endpoint; its pending deliveries are cancelled.
pub async fn delete_endpoint(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &EndpointId,
) -> ApiResult<()> {
    endpoint(gw, merchant_id, id).await?;
    if !gw
        .store()
        .delete_webhook_endpoint(merchant_id, id, gw.now_ms())
        .await?
    {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    gw.forget_endpoint(id);
    Ok(())
}

/// Gives an endpoint a new signing secret; it signs from now on.
pub async fn rotate_endpoint_secret(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &EndpointId,
) -> ApiResult<WithSecret<WebhookEndpointRow>> {
    let mut row = endpoint(gw, merchant_id, id).await?;
    let secret = delivery::new_secret();
    row.secret_id = wxgate_domain::id::generate("whs");
    row.secret_sealed = gw.config().master_key.seal(secret.as_bytes());
    let rotated = gw
        .store()
        .rotate_webhook_secret(merchant_id, id, &row.secret_id, &row.secret_sealed)
        .await?;
    if !rotated {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    gw.forget_endpoint(id);
    Ok(WithSecret { row, secret })
}

/// Creates or replaces the secret that signs deliveries to payments' own `notify_url`s.
pub async fn rotate_notify_secret(
    gw: &Gateway,
    merchant_id: &MerchantId,
) -> ApiResult<WithSecret<NotifySecretRow>> {
    let secret = delivery::new_secret();
    let row = NotifySecretRow {
        merchant_id: merchant_id.to_string(),
        secret_id: wxgate_domain::id::generate("whs"),
        secret_sealed: gw.config().master_key.seal(secret.as_bytes()),
        created_at: gw.now_ms(),
    };
    gw.store().set_notify_secret(&row).await?;
    Ok(WithSecret { row, secret })
}

/// A page of the merchant's events, newest first, after the event `starting_after`; `has_more`
/// when more follow.
pub async fn events(
    gw: &Gateway,
    merchant_id: &MerchantId,
    mut filter: EventFilter,
    starting_after: Option<&str>,
) -> ApiResult<(Vec<EventRow>, bool)> {
    if let Some(id) = starting_after {
        let e = gw.store().event(merchant_id, id).await?.ok_or_else(|| {
            ApiError::invalid(ErrorCode::InvalidCursor, "starting_after", "no such event")
        })?;
        filter.before = Some((e.created_at, e.id));
    }
    let limit = filter.limit;
    filter.limit = limit + 1;
    let mut rows = gw.store().list_events(merchant_id, &filter).await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, has_more))
}

/// An event with its deliveries and every attempt made.
pub struct EventDetail {
    pub event: EventRow,
    pub deliveries: Vec<DeliveryRow>,
    pub attempts: Vec<AttemptRow>,
}

/// How many of an event's attempts its detail shows at most: the latest (each delivery still
/// counts all of its own in `attempts`).
pub const EVENT_ATTEMPTS_SHOWN: i64 = 100;

pub async fn event(gw: &Gateway, merchant_id: &MerchantId, id: &EventId) -> ApiResult<EventDetail> {
    let event = gw
        .store()
        .event(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let deliveries = gw.store().deliveries(&event.id).await?;
    let attempts = gw.store().attempts(&event.id, EVENT_ATTEMPTS_SHOWN).await?;
    Ok(EventDetail {
        event,
        deliveries,
        attempts,
    })
}

/// Sends an event again, now, to every endpoint subscribed to it: how many deliveries were
/// scheduled, and the event after.
pub async fn redeliver(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &EventId,
) -> ApiResult<(u64, EventDetail)> {
    event(gw, merchant_id, id).await?;
    let scheduled = gw
        .store()
        .redeliver(merchant_id, &Redeliver::Event(id.to_string()), gw.now_ms())
        .await?;
    if scheduled == 0 {
        return Err(ApiError::new(
            ErrorCode::NoWebhookEndpoints,
            "no webhook endpoint is subscribed to this event",
        ));
    }
    Ok((scheduled, event(gw, merchant_id, id).await?))
}

/// Sends again, now, every event created in `[created_gte, created_lt)` (optionally only those
/// with a delivery in `delivery_status`): how many deliveries were scheduled.
pub async fn redeliver_range(
    gw: &Gateway,
    merchant_id: &MerchantId,
    created_gte: i64,
    created_lt: i64,
    delivery_status: Option<String>,
) -> ApiResult<u64> {
    let in_range = gw
        .store()
        .count_events(merchant_id, created_gte, created_lt)
        .await?;
    if in_range > REDELIVER_RANGE_MAX {
        return Err(ApiError::invalid(
            ErrorCode::RedeliverRangeTooLarge,
            "created_gte",
            format!(
                "{in_range} events in that range; redeliver at most {REDELIVER_RANGE_MAX} at a time (narrow it with created_lt)"
            ),
        ));
    }
    let scope = Redeliver::Range {
        created_gte,
        created_lt,
        delivery_status,
    };
    Ok(gw
        .store()
        .redeliver(merchant_id, &scope, gw.now_ms())
        .await?)
}

/// Forgets every merchant's events older than the configured retention, with their delivery
/// logs, a batch at a time and at most `EVENT_PURGE_BATCHES` batches per merchant per call (the
/// background round calls it every few minutes, so a large backlog goes over several rounds
/// without holding up the others' work); an event with a pending delivery stays until it ends.
/// How many events.
pub async fn forget_old_events(gw: &Gateway) -> anyhow::Result<u64> {
    let kept_ms = i64::try_from(gw.config().event_retention.as_millis()).unwrap_or(i64::MAX);
    let before = gw.now_ms().saturating_sub(kept_ms);
    let mut forgotten = 0;
    for m in gw.store().merchants().await? {
        for _ in 0..EVENT_PURGE_BATCHES {
            let n = gw.store().forget_events(&m.id, before).await?;
            forgotten += n;
            if n < wxgate_store::EVENT_PURGE_BATCH as u64 {
                break;
            }
        }
    }
    Ok(forgotten)
}
