//! QR codes of a payment's `code_url`, as PNG and SVG: the rendering, and the image endpoints
//! `GET /v1/payments/{id}/qr.png?scale=` and `GET /v1/payments/{id}/qr.svg?size=`.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use qrcode::{Color, QrCode};
use serde::Deserialize;

use crate::Gateway;
use crate::api::{ApiError, ApiResult, authenticate};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PngQuery {
    /// Pixels per module, 1 to 20 (default 6).
    scale: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SvgQuery {
    /// The side in pixels, 100 to 1000 (default 200).
    size: Option<u32>,
}

/// The code_url of a pending native payment of the merchant behind the request.
async fn code_url(gw: &Gateway, headers: &HeaderMap, id: &str) -> ApiResult<String> {
    let merchant = authenticate(gw, headers).await?;
    let p = gw
        .store()
        .payment(&merchant.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let data = (p.status == "pending")
        .then_some(p.wechat_credential.as_deref())
        .flatten()
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .and_then(|c| c["display_qr_code"]["data"].as_str().map(str::to_string));
    data.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_qr_code",
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

fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
}

async fn png_image(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<PngQuery>, QueryRejection>,
) -> Response {
    let result: ApiResult<Response> = async {
        let Query(q) = query.map_err(bad_query)?;
        let scale = q.scale.unwrap_or(SCALE);
        if !(1..=SCALE_MAX).contains(&scale) {
            return Err(ApiError::invalid(
                "invalid_scale",
                "scale",
                format!("scale must be from 1 to {SCALE_MAX} pixels per module"),
            ));
        }
        let data = code_url(&gw, &headers, &id).await?;
        Ok(image("image/png", png_scaled(&data, scale)))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn svg_image(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<SvgQuery>, QueryRejection>,
) -> Response {
    let result: ApiResult<Response> = async {
        let Query(q) = query.map_err(bad_query)?;
        let size = q.size.unwrap_or(SVG_DEFAULT);
        if !(SVG_MIN..=SVG_MAX).contains(&size) {
            return Err(ApiError::invalid(
                "invalid_size",
                "size",
                format!("size must be from {SVG_MIN} to {SVG_MAX} pixels"),
            ));
        }
        let data = code_url(&gw, &headers, &id).await?;
        Ok(image("image/svg+xml", svg_sized(&data, size)))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
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
