//! `GET /v1/payments/{id}/qr.png?scale=` and `GET /v1/payments/{id}/qr.svg?size=`: a pending
//! native payment's QR code as an image.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::app::payments as pay;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::ErrorEnvelope;
use crate::http::extract::{Authed, Params, merchant_id, path_id};
use crate::qr::{Image, SCALE, SCALE_MAX, SVG_DEFAULT, SVG_MAX, SVG_MIN};
use wxgate_domain::id::PaymentId;
use wxgate_store::MerchantRow;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/payments/{id}/qr.png", get(png_image))
        .route("/v1/payments/{id}/qr.svg", get(svg_image))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PngQuery {
    /// Pixels per module, 1 to 20 (default 6).
    #[param(minimum = 1, maximum = 20)]
    scale: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SvgQuery {
    /// The side in pixels, 100 to 1000 (default 200).
    #[param(minimum = 100, maximum = 1000)]
    size: Option<u32>,
}

/// The image of a pending native payment's code, from the gateway's cache of rendered codes.
async fn code_image(
    gw: &Gateway,
    merchant: &MerchantRow,
    id: &str,
    image: Image,
) -> ApiResult<Response> {
    let id = path_id(PaymentId::parse(id), "payment")?;
    let data = pay::qr_code_url(gw, &merchant_id(merchant), &id).await?;
    let content_type = match image {
        Image::Png(_) => "image/png",
        Image::Svg(_) => "image/svg+xml",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        gw.qr_image(&data, image).to_vec(),
    )
        .into_response())
}

/// The QR code of a pending native payment, as a PNG.
#[utoipa::path(get, path = "/v1/payments/{id}/qr.png",
    params(("id" = String, Path, description = "pay_..."), PngQuery),
    responses((status = 200, description = "The QR code", content_type = "image/png"),
        (status = 400, description = "invalid_scale", body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, description = "no_qr_code", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn png_image(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
    Params(q): Params<PngQuery>,
) -> ApiResult<Response> {
    let scale = q.scale.unwrap_or(SCALE);
    if !(1..=SCALE_MAX).contains(&scale) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidScale,
            "scale",
            format!("scale must be from 1 to {SCALE_MAX} pixels per module"),
        ));
    }
    code_image(&gw, &merchant, &id, Image::Png(scale)).await
}

/// The QR code of a pending native payment, as an SVG document.
#[utoipa::path(get, path = "/v1/payments/{id}/qr.svg",
    params(("id" = String, Path, description = "pay_..."), SvgQuery),
    responses((status = 200, description = "The QR code", content_type = "image/svg+xml"),
        (status = 400, description = "invalid_size", body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, description = "no_qr_code", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn svg_image(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
    Params(q): Params<SvgQuery>,
) -> ApiResult<Response> {
    let size = q.size.unwrap_or(SVG_DEFAULT);
    if !(SVG_MIN..=SVG_MAX).contains(&size) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidSize,
            "size",
            format!("size must be from {SVG_MIN} to {SVG_MAX} pixels"),
        ));
    }
    code_image(&gw, &merchant, &id, Image::Svg(size)).await
}
