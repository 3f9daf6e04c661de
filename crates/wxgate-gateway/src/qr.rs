//! QR codes of a payment's `code_url`, as PNG and SVG: the rendering, and the image endpoints
//! `GET /v1/payments/{id}/qr.png?scale=` and `GET /v1/payments/{id}/qr.svg?size=`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use qrcode::{Color, QrCode};
use serde::Deserialize;
use utoipa::IntoParams;
use wxgate_domain::PaymentStatus;

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::ErrorEnvelope;
use crate::http::extract::{Authed, Params};

/// Pixels per module in the API answer's PNG, and modules of quiet zone around the code.
const SCALE: usize = 6;
const QUIET: usize = 4;
/// The image endpoints' bounds: pixels per module of a PNG, and the side of an SVG.
const SCALE_MAX: usize = 20;
const SVG_MIN: u32 = 100;
const SVG_MAX: u32 = 1000;
const SVG_DEFAULT: u32 = 200;

/// A grayscale PNG of the code, 6 pixels per module.
pub fn png(data: &str) -> Vec<u8> {
    png_scaled(data, SCALE)
}

/// A grayscale PNG of the code, `scale` pixels per module.
pub fn png_scaled(data: &str, scale: usize) -> Vec<u8> {
    let code = QrCode::new(data.as_bytes()).expect("a code_url always fits in a QR code");
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * scale;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == Color::Dark {
            let (mx, my) = (i % width + QUIET, i / width + QUIET);
            for y in my * scale..(my + 1) * scale {
                pixels[y * side + mx * scale..y * side + (mx + 1) * scale].fill(0);
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    // A QR code is two colours in large blocks: fast compression is nearly as small.
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder
        .write_header()
        .expect("writing to a Vec cannot fail");
    writer
        .write_image_data(&pixels)
        .expect("writing to a Vec cannot fail");
    writer.finish().expect("writing to a Vec cannot fail");
    out
}

/// An SVG document of the code, at least 200 pixels wide.
pub fn svg(data: &str) -> String {
    svg_sized(data, SVG_DEFAULT)
}

/// An SVG document of the code, at least `size` pixels wide.
pub fn svg_sized(data: &str, size: u32) -> String {
    QrCode::new(data.as_bytes())
        .expect("a code_url always fits in a QR code")
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(size, size)
        .quiet_zone(true)
        .build()
}

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

/// The code_url of a pending native payment of the merchant's.
async fn code_url(gw: &Gateway, merchant_id: &str, id: &str) -> ApiResult<String> {
    let p = gw
        .store()
        .payment(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let data = (p.status == PaymentStatus::Pending)
        .then_some(p.wechat_credential.as_deref())
        .flatten()
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .and_then(|c| c["display_qr_code"]["data"].as_str().map(str::to_string));
    data.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoQrCode,
            "only a pending native payment has a QR code",
        )
    })
}

fn image(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        body,
    )
        .into_response()
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
    let data = code_url(&gw, &merchant.id, &id).await?;
    Ok(image("image/png", png_scaled(&data, scale)))
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
    let data = code_url(&gw, &merchant.id, &id).await?;
    Ok(image("image/svg+xml", svg_sized(&data, size)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_png_and_svg() {
        let png = super::png("weixin://wxpay/bizpayurl?pr=p4lpSuKzz");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = super::svg("weixin://wxpay/bizpayurl?pr=p4lpSuKzz");
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }
}
