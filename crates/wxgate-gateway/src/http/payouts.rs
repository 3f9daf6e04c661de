//! `/v1/payouts`: the wire format in and out; the work is [`app::payouts`](crate::app::payouts)'.

use std::collections::BTreeMap;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use wxgate_domain::id::PayoutId;
use wxgate_domain::payout::PayoutStatus;
use wxgate_store::PayoutFilter;

use crate::app::payouts::{self, NewPayout, Scene};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::{ErrorEnvelope, Json, ok};
use crate::http::extract::{
    Authed, IdempotencyKey, JsonBody, Params, check_metadata, merchant_id, page, page_limit,
    parse_time, path_id,
};
use crate::views::{self, payouts::PayoutView};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/payouts", post(create_payout).get(list_payouts))
        .route("/v1/payouts/{id}", get(get_payout))
        .route("/v1/payouts/{id}/cancel", post(cancel_payout))
}

/// A payout to a WeChat user's balance. (No `Debug`: it holds the payee's name.)
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    /// Fen, above 0.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    amount: i64,
    #[schema(example = "CNY", pattern = "^CNY$")]
    currency: String,
    /// The payee's openid under the merchant's AppID.
    #[schema(min_length = 1, max_length = 64)]
    openid: String,
    /// Shown to the payee.
    #[schema(min_length = 1, max_length = 32)]
    remark: String,
    /// The payee's real name, which WeChat checks; required from 2,000 yuan. Sealed at rest,
    /// never shown again.
    #[schema(min_length = 1, max_length = 64)]
    user_name: Option<String>,
    /// The transfer scene and its report items; by default the merchant's.
    scene: Option<Scene>,
    /// Where this payout's events are also sent (signed with the notify secret).
    notify_url: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
    /// Your own id of the payout, unique per merchant: posting it again with the same payout
    /// answers that payout (200), with another one is refused.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[0-9A-Za-z_\-|*@]{1,64}$"
    )]
    merchant_payout_id: Option<String>,
}

/// Send money to a WeChat user's balance; the payee confirms it inside WeChat.
#[utoipa::path(post, path = "/v1/payouts", request_body = CreatePayout,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 201, description = "Reserved and sent to WeChat Pay: awaiting_confirmation (or pending, sent again automatically, or failed with the reason)", body = PayoutView),
        (status = 400, description = "A parameter is missing or invalid", body = ErrorEnvelope),
        (status = 409, description = "notify_secret_missing", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub(crate) async fn create_payout(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    key: Option<Extension<IdempotencyKey>>,
    JsonBody(req): JsonBody<CreatePayout>,
) -> ApiResult<Json> {
    let metadata = req.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    if let Some(id) = &req.merchant_payout_id {
        wechatpay_v3::validate::out_refund_no("merchant_payout_id", id).map_err(|e| {
            ApiError::invalid(
                ErrorCode::InvalidMerchantPayoutId,
                "merchant_payout_id",
                format!("merchant_payout_id {}", e.issue),
            )
        })?;
    }
    let new = NewPayout {
        amount: req.amount,
        currency: req.currency,
        openid: req.openid,
        remark: req.remark,
        user_name: req.user_name,
        scene: req.scene,
        notify_url: req.notify_url,
        metadata,
        merchant_payout_id: req.merchant_payout_id,
        door: None,
        idempotency_key: key.map(|Extension(IdempotencyKey(k))| k),
    };
    let (p, made) = payouts::create(&gw, &merchant, new).await?;
    let status = if made {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Json(status, view(&gw, &p)))
}

fn view(gw: &Gateway, p: &wxgate_store::PayoutRow) -> serde_json::Value {
    views::payouts::payout(p, &gw.config().public_base_url)
}

/// A payout.
#[utoipa::path(get, path = "/v1/payouts/{id}", params(("id" = String, Path, description = "po_...")),
    responses((status = 200, body = PayoutView), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn get_payout(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let id = path_id(PayoutId::parse(&id), "payout")?;
    let p = payouts::get(&gw, &merchant_id(&merchant), &id).await?;
    Ok(ok(view(&gw, &p)))
}

/// Cancel a payout the payee has not confirmed; the reserved amount is released.
#[utoipa::path(post, path = "/v1/payouts/{id}/cancel", params(("id" = String, Path, description = "po_..."),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 200, description = "cancelled (or still awaiting_confirmation while WeChat cancels it)", body = PayoutView),
        (status = 409, description = "payout_not_cancellable or payout_busy", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub(crate) async fn cancel_payout(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let id = path_id(PayoutId::parse(&id), "payout")?;
    let p = payouts::cancel(&gw, &merchant_id(&merchant), &id).await?;
    Ok(ok(view(&gw, &p)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PayoutListQuery {
    #[param(pattern = "^(pending|awaiting_confirmation|processing|succeeded|failed|cancelled)$")]
    status: Option<String>,
    #[param(format = DateTime)]
    created_gte: Option<String>,
    #[param(format = DateTime)]
    created_lt: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A payout id: the page after it.
    starting_after: Option<String>,
}

/// Payouts, newest first.
#[utoipa::path(get, path = "/v1/payouts", params(PayoutListQuery),
    responses((status = 200, description = "`{object: list, data: [Payout], has_more}`"), (status = 400, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn list_payouts(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Params(q): Params<PayoutListQuery>,
) -> ApiResult<Json> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            PayoutStatus::parse(s).ok_or_else(|| {
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
    let filter = PayoutFilter {
        status,
        created_gte: time("created_gte", &q.created_gte)?,
        created_lt: time("created_lt", &q.created_lt)?,
    };
    let limit = page_limit(q.limit)?;
    let after = match &q.starting_after {
        Some(a) => Some(PayoutId::parse(a).ok_or_else(|| {
            ApiError::invalid(ErrorCode::InvalidCursor, "starting_after", "no such payout")
        })?),
        None => None,
    };
    let rows = payouts::list(&gw, &merchant_id(&merchant), &filter, after.as_ref(), limit).await?;
    Ok(page(rows, limit, |p| view(&gw, p)))
}
