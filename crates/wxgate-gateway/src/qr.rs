//! QR codes of a payment's `code_url` (or a link's URL), as PNG and SVG.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qrcode::{Color, QrCode};

/// Pixels per module in the API answer's PNG, and modules of quiet zone around the code.
pub const SCALE: usize = 6;
const QUIET: usize = 4;
/// The image endpoints' bounds: pixels per module of a PNG, and the side of an SVG.
pub const SCALE_MAX: usize = 20;
pub const SVG_MIN: u32 = 100;
pub const SVG_MAX: u32 = 1000;
pub const SVG_DEFAULT: u32 = 200;

/// Rendered images kept at most, for all codes and sizes; the cache is cleared when full.
const CACHE_ENTRIES_MAX: usize = 4096;

/// One image of a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Image {
    /// A PNG, with this many pixels per module.
    Png(usize),
    /// An SVG at least this many pixels wide.
    Svg(u32),
}

/// Rendered QR images by code and size: a code's images never change, and rendering (mask
/// scoring, PNG compression) costs far more than a lookup.
#[derive(Default)]
pub struct Cache {
    images: Mutex<HashMap<ImageKey, Arc<[u8]>>>,
}

/// A code's content and which image of it.
type ImageKey = (String, Image);

impl Cache {
    /// The image of `data`, rendered once.
    pub fn get(&self, data: &str, image: Image) -> Arc<[u8]> {
        let key = (data.to_string(), image);
        if let Some(hit) = self.images.lock().expect("qr cache lock").get(&key) {
            return hit.clone();
        }
        let rendered: Arc<[u8]> = match image {
            Image::Png(scale) => png_scaled(data, scale).into(),
            Image::Svg(size) => svg_sized(data, size).into_bytes().into(),
        };
        let mut images = self.images.lock().expect("qr cache lock");
        crate::capped::insert_capped(&mut images, CACHE_ENTRIES_MAX, key, rendered.clone());
        rendered
    }
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn the_cache_renders_each_code_and_size_once() {
        let cache = super::Cache::default();
        let code = "weixin://wxpay/bizpayurl?pr=p4lpSuKzz";
        let first = cache.get(code, super::Image::Png(6));
        assert!(std::sync::Arc::ptr_eq(
            &first,
            &cache.get(code, super::Image::Png(6))
        ));
        assert_eq!(&*first, super::png(code).as_slice());
        let larger = cache.get(code, super::Image::Png(8));
        assert!(larger.len() > first.len());
        let svg = cache.get(code, super::Image::Svg(200));
        assert_eq!(&*svg, super::svg(code).as_bytes());
    }

    #[test]
    fn renders_png_and_svg() {
        let png = super::png("weixin://wxpay/bizpayurl?pr=p4lpSuKzz");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = super::svg("weixin://wxpay/bizpayurl?pr=p4lpSuKzz");
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }
}
