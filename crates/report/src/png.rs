//! PNG output of `explain`: the chart's SVG rasterized by resvg, its text set in the DejaVu Sans
//! font shipped with this crate (`fonts/`, Bitstream Vera licence), so that the image does not
//! depend on the fonts of the machine (the container image has none).

use std::sync::{Arc, OnceLock};

use crate::ReportError;

/// DejaVu Sans, the only font the PNG uses (every family the chart names maps to it).
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// The font database, built once.
fn fonts() -> Arc<resvg::usvg::fontdb::Database> {
    static DB: OnceLock<Arc<resvg::usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = resvg::usvg::fontdb::Database::new();
        db.load_font_data(FONT.to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        db.set_serif_family("DejaVu Sans");
        db.set_monospace_family("DejaVu Sans");
        Arc::new(db)
    })
    .clone()
}

/// `svg` rasterized at its own size on a white background, as PNG bytes.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, ReportError> {
    let opts = resvg::usvg::Options {
        font_family: "DejaVu Sans".to_string(),
        fontdb: fonts(),
        ..resvg::usvg::Options::default()
    };
    let tree = resvg::usvg::Tree::from_str(svg, &opts)
        .map_err(|e| ReportError::Chart(format!("SVG not readable for PNG: {e}")))?;
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| ReportError::Chart(format!("empty chart size {size:?}")))?;
    pixmap.fill(resvg::tiny_skia::Color::WHITE);
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| ReportError::Chart(format!("PNG encoding: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_lines_are_drawn() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40">
            <text x="4" y="28" font-family="sans-serif" font-size="24" fill="black">10.0.0.1</text></svg>"#;
        let png = svg_to_png(svg).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let img = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
        assert_eq!((img.width(), img.height()), (120, 40));
        // The text was set in the shipped font: some pixels are dark.
        let dark = img.pixels().iter().filter(|p| p.red() < 128).count();
        assert!(dark > 50, "{dark} dark pixels");
        let blank =
            svg_to_png(r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"></svg>"#);
        let img = resvg::tiny_skia::Pixmap::decode_png(&blank.unwrap()).unwrap();
        assert_eq!(img.pixels().iter().filter(|p| p.red() < 128).count(), 0);
    }
}
