//! `/v1/payments/{id}/refunds` and `/v1/refunds/{id}`: the wire format in and out; the work
//! is [`app::refunds`](crate::app::refunds)'.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::app::refunds::{Made, NewRefund, create};
use crate::error::{ApiError, ApiResult};
use crate::gateway::Gateway;
use crate::http::answer::{ErrorEnvelope, Json, ok};
use crate::http::extract::{
    Authed, JsonBody, ListPage, Params, merchant_id, page_in_memory, path_id,
};
use crate::views;
use wxgate_domain::id::PaymentId;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route(
            "/v1/payments/{id}/refunds",
            post(create_refund).get(list_refunds),
        )
        .route("/v1/refunds/{id}", get(get_refund))
}

/// A refund to make.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// In the payment's minor unit; by default all that is not refunded yet.
    #[schema(minimum = 1)]
    amount: Option<i64>,
    /// Unique per merchant: posting it again with the same parameters returns the same refund.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[0-9A-Za-z_\-|*@]{1,64}$"
    )]
    merchant_refund_id: String,
    /// Shown to the payer; at most 80 characters.
    #[schema(min_length = 1, max_length = 80)]
    reason: Option<String>,
}

/// Refund a succeeded payment, in full (by default) or in part.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", request_body = CreateRefund,
    params(("id" = String, Path, description = "pay_..."),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 201, description = "Reserved and sent to WeChat Pay", body = views::RefundView),
        (status = 200, description = "The existing refund for this merchant_refund_id", body = views::RefundView),
        (status = 400, description = "A parameter is missing or invalid", body = ErrorEnvelope),
        (status = 404, description = "No such payment", body = ErrorEnvelope),
        (status = 409, description = "payment_not_refundable, refund_window_closed, too_many_refunds, refund_exceeds_payment or merchant_refund_id_taken", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub(crate) async fn create_refund(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(payment_id): Path<String>,
    JsonBody(req): JsonBody<CreateRefund>,
) -> ApiResult<Json> {
    let new = NewRefund {
        amount: req.amount,
        merchant_refund_id: req.merchant_refund_id,
        reason: req.reason,
    };
    let payment_id = path_id(PaymentId::parse(&payment_id), "payment")?;
    let (made, r) = create(&gw, &merchant_id(&merchant), &payment_id, new).await?;
    let status = match made {
        Made::New => StatusCode::CREATED,
        Made::Existing => StatusCode::OK,
    };
    Ok(Json(status, views::refund(&r)))
}

/// A refund.
#[utoipa::path(get, path = "/v1/refunds/{id}", params(("id" = String, Path, description = "re_...")),
    responses((status = 200, body = views::RefundView), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn get_refund(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let r = gw
        .store()
        .refund(&merchant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("refund"))?;
    Ok(ok(views::refund(&r)))
}

/// A payment's refunds, oldest first.
#[utoipa::path(get, path = "/v1/payments/{id}/refunds", params(("id" = String, Path, description = "pay_..."), ListPage),
    responses((status = 200, description = "`{object: list, data: [Refund], has_more}`"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn list_refunds(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(payment_id): Path<String>,
    Params(q): Params<ListPage>,
) -> ApiResult<Json> {
    gw.store()
        .payment(&merchant.id, &payment_id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let rows = crate::app::refunds::of_payment(&gw, &merchant.id, &payment_id).await?;
    // A payment has at most 50 refunds (WeChat's limit): read whole, paged here.
    page_in_memory(rows, &q, |r| &r.id, views::refund)
}
