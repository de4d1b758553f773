//! The charts, drawn with plotters as SVG and PNG.
//!
//! * [`rate_progress`] (module `rate`): "Live migration – transmission rate
//!   progress", the probe's rate (Mbit/s) against time (s) at the sampling
//!   resolution (10 ms), with the migration start, each pre-copy round
//!   (alternating light shading), the stop-and-copy downtime (red band from
//!   the pause to the resume) and the resume on the destination marked; and
//!   below it a second panel zoomed to ±250 ms around the pause, where the
//!   samples are drawn as steps and the VMM pause and the
//!   application-visible gap carry their values.
//! * [`comparison`]: the same chart for several scenarios side by side, on
//!   one rate scale (the 2006 talk's "minimal load" and "heavily loaded");
//!   [`comparison_grid`]: one such row per system under test (2×2 for
//!   vmm-min and qemu, idle and loaded), each row on its own rate scale.
//! * [`precopy_rounds`] (module `rounds`): per pre-copy round, the MB sent
//!   and the MB dirtied (bars), and below, the achieved rate, the rate limit
//!   and the dirtying rate (Mbit/s).
//! * [`relative::relative_performance`]: the Xen paper's Figure 3, the
//!   stand-in workloads' scores per system normalised to native = 1.0.
//! * [`overlay`] (module `overlay`): the regression view, a baseline run and
//!   a new run of one scenario on the same axes, aligned at the migration
//!   start (whole run) and at the pause (zoom).
//!
//! Text never clips: headings and panel captions are fitted to the canvas
//! by the `text` module (wrapped at spaces, then shrunk).
//!
//! Fonts: the PNGs are rendered with the DejaVu Sans font embedded in this
//! binary (the `dejavu` crate) through plotters' `ab_glyph` feature, so they
//! need no system fonts. The SVGs keep text as `<text>` elements in the
//! `sans-serif` family.

mod overlay;
mod rate;
pub mod relative;
mod rounds;
mod text;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::ReportError;

pub use overlay::overlay;
pub use rate::{comparison, comparison_grid, rate_progress, setup_label, ZOOM_HALF_WIDTH_MS};
pub use rounds::{precopy_rounds, THROTTLE_LEGEND};

/// The font family every chart uses.
const FONT: &str = "sans-serif";

/// Title of the rate chart, as in the 2006 talk.
pub const RATE_TITLE: &str = "Live migration – transmission rate progress";
/// Title of the pre-copy chart.
pub const ROUNDS_TITLE: &str = "Iterative pre-copy rounds";
/// Title of the regression view.
pub const OVERLAY_TITLE: &str = "Regression view";

const RATE_COLOR: RGBColor = RGBColor(20, 70, 160);
const ROUND_A: RGBColor = RGBColor(140, 190, 240);
const ROUND_B: RGBColor = RGBColor(200, 225, 250);
const DOWNTIME_COLOR: RGBColor = RGBColor(215, 30, 30);
const START_COLOR: RGBColor = RGBColor(0, 140, 60);
const RESUME_COLOR: RGBColor = RGBColor(140, 40, 170);
const APP_GAP_COLOR: RGBColor = RGBColor(240, 130, 0);
const SENT_COLOR: RGBColor = RGBColor(40, 100, 190);
const DIRTY_COLOR: RGBColor = RGBColor(235, 120, 20);
const LIMIT_COLOR: RGBColor = RGBColor(110, 110, 110);
const BASELINE_COLOR: RGBColor = RGBColor(125, 125, 125);
const BASELINE_GAP_COLOR: RGBColor = RGBColor(70, 70, 70);
const CAPTION_COLOR: RGBColor = RGBColor(60, 60, 60);

/// A rendered chart: the same picture as SVG text and as PNG bytes.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Human name of the chart (used in error messages and alt texts).
    pub title: String,
    /// Width, px.
    pub width: u32,
    /// Height, px.
    pub height: u32,
    /// The SVG document.
    pub svg: String,
    /// The PNG file's bytes.
    pub png: Vec<u8>,
}

impl Chart {
    /// Write `<dir>/<stem>.svg` and `<dir>/<stem>.png`; returns both paths
    /// (SVG first).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), ReportError> {
        let svg = dir.join(format!("{stem}.svg"));
        let png = dir.join(format!("{stem}.png"));
        for (path, bytes) in [(&svg, self.svg.as_bytes()), (&png, self.png.as_slice())] {
            std::fs::write(path, bytes).map_err(|source| ReportError::Io { path: path.clone(), source })?;
        }
        Ok((svg, png))
    }
}

/// Register the embedded font with plotters (once per process).
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the `dejavu`
        // crate; should registration fail anyway, drawing text reports
        // `FontUnavailable` as a chart error instead of panicking.
        for family in [FONT, "serif", "monospace"] {
            let _ = plotters::style::register_font(family, FontStyle::Normal, dejavu::sans::regular());
            let _ = plotters::style::register_font(family, FontStyle::Bold, dejavu::sans::bold());
        }
    });
}

/// Something that can be drawn on any plotters backend.
trait Figure {
    /// Human name, for errors.
    fn name(&self) -> String;
    /// Size in px.
    fn size(&self) -> (u32, u32);
    /// Draw on `area` (already cleared to white).
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Turn any displayable plotters error into a message.
fn msg<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Render `fig` as SVG and PNG.
fn render<F: Figure>(fig: &F) -> Result<Chart, ReportError> {
    register_fonts();
    let (w, h) = fig.size();
    let chart_err = |message: String| ReportError::Chart { chart: fig.name(), message };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(msg).map_err(chart_err)?;
        fig.draw(&root).map_err(chart_err)?;
        root.present().map_err(msg).map_err(chart_err)?;
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(msg).map_err(chart_err)?;
        fig.draw(&root).map_err(chart_err)?;
        root.present().map_err(msg).map_err(chart_err)?;
    }
    let png = encode_png(&rgb, w, h).map_err(|message| ReportError::Png { chart: fig.name(), message })?;
    Ok(Chart { title: fig.name(), width: w, height: h, svg, png })
}

/// Encode an RGB8 buffer as PNG.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        let mut writer = enc.write_header().map_err(msg)?;
        writer.write_image_data(rgb).map_err(msg)?;
        writer.finish().map_err(msg)?;
    }
    Ok(out)
}

/// A tick label: at most 3 decimals, trailing zeros dropped ("2", "0.25").
fn tidy(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Format an optional ms value.
fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1} ms"))
}
