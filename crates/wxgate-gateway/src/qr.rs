//! QR codes of a payment's `code_url`, as PNG and SVG.

use qrcode::{Color, QrCode};

/// Pixels per module, and modules of quiet zone around the code.
const SCALE: usize = 6;
const QUIET: usize = 4;

/// A grayscale PNG of the code.
pub fn png(data: &str) -> Vec<u8> {
    let code = QrCode::new(data.as_bytes()).expect("a code_url always fits in a QR code");
    let width = code.width();
    let colors = code.to_colors();
    let side = (width + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color == Color::Dark {
            let (mx, my) = (i % width + QUIET, i / width + QUIET);
            for y in my * SCALE..(my + 1) * SCALE {
                pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
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

/// An SVG document of the code.
pub fn svg(data: &str) -> String {
    QrCode::new(data.as_bytes())
        .expect("a code_url always fits in a QR code")
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build()
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
