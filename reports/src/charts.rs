//! The charts, drawn with plotters as SVG and PNG.
//!
//! * [`rate_progress`]: "Live migration – transmission rate progress", the
//!   probe's rate (Mbit/s) against time (s) at the sampling resolution
//!   (10 ms), with the migration start, each pre-copy round (alternating
//!   light shading), the stop-and-copy downtime (red band from the pause to
//!   the resume) and the resume on the destination marked.
//! * [`comparison`]: the same chart for several scenarios side by side, on
//!   one rate scale (the 2006 talk's "minimal load" and "heavily loaded").
//! * [`precopy_rounds`]: per pre-copy round, the MB sent and the MB dirtied
//!   (bars), and below, the achieved rate, the rate limit and the dirtying
//!   rate (Mbit/s).
//!
//! Text: the PNGs are rendered with the DejaVu Sans font embedded in this
//! binary (the `dejavu` crate) through plotters' `ab_glyph` feature, so they
//! need no system fonts. The SVGs keep text as `<text>` elements in the
//! `sans-serif` family.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::ReportError;
use crate::scenario::{finite, ScenarioResult, PAGE_SIZE};

/// The font family every chart uses.
const FONT: &str = "sans-serif";

/// Title of the rate chart, as in the 2006 talk.
pub const RATE_TITLE: &str = "Live migration – transmission rate progress";
/// Title of the pre-copy chart.
pub const ROUNDS_TITLE: &str = "Iterative pre-copy rounds";

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

/// Draw a title (bold) and a subtitle centred in `area`.
fn draw_heading<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
    size: f64,
) -> Result<(), String> {
    let (w, _) = area.dim_in_pixel();
    let centre = Pos::new(HPos::Center, VPos::Top);
    let t = TextStyle::from((FONT, size).into_font().style(FontStyle::Bold)).pos(centre);
    area.draw_text(title, &t, (w as i32 / 2, 8)).map_err(msg)?;
    if !subtitle.is_empty() {
        let s = TextStyle::from((FONT, size * 0.7).into_font()).color(&RGBColor(60, 60, 60)).pos(centre);
        area.draw_text(subtitle, &s, (w as i32 / 2, 14 + size as i32)).map_err(msg)?;
    }
    Ok(())
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

/// "VMM downtime … · application-visible downtime … · N pre-copy rounds".
fn key_numbers(s: &ScenarioResult) -> String {
    format!(
        "VMM downtime {} · application-visible downtime {} · {} pre-copy rounds · total {:.0} ms · {}",
        ms(s.migration.downtime_ms),
        ms(s.app_downtime_ms),
        s.migration.rounds.len(),
        s.migration.total_ms,
        crate::scenario::outcome_str(s.migration.outcome),
    )
}

/// Scenario name with its load label, e.g. "idle (minimal load)".
fn scenario_label(s: &ScenarioResult) -> String {
    match s.load_label() {
        Some(l) => format!("{} ({l})", s.scenario),
        None => s.scenario.clone(),
    }
}

/// The probe's series as (s, Mbit/s).
fn rate_points(s: &ScenarioResult) -> Vec<(f64, f64)> {
    s.probe
        .as_ref()
        .map(|p| p.samples.iter().map(|x| (x.t_ns as f64 / 1e9, finite(x.rate_mbps).max(0.0))).collect())
        .unwrap_or_default()
}

/// The x range of a rate panel: probe start (or the migration start, if
/// earlier) to the last sample (or the migration end, if later).
fn rate_x_range(s: &ScenarioResult) -> Range<f64> {
    let tl = s.timeline();
    let pts = rate_points(s);
    let lo = tl.migration_start_s.min(0.0);
    let hi = pts.last().map_or(tl.end_s, |p| p.0.max(tl.end_s)).max(lo + 1e-3);
    lo..hi
}

/// The y top of a rate panel whose highest sample is `max_rate`: headroom
/// for the legend and the round labels.
fn rate_y_top(max_rate: f64) -> f64 {
    if max_rate > 0.0 {
        max_rate * 1.45
    } else {
        1.0
    }
}

fn max_rate(s: &ScenarioResult) -> f64 {
    rate_points(s).iter().map(|p| p.1).fold(0.0, f64::max)
}

/// Draw one rate-progress panel (chart with caption) on `area`.
fn draw_rate_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &ScenarioResult,
    caption: Option<&str>,
    y_top: f64,
    scale: f64,
) -> Result<(), String> {
    let tl = s.timeline();
    let pts = rate_points(s);
    let xr = rate_x_range(s);
    let span = xr.end - xr.start;
    let font = |px: f64| (FONT, px * scale).into_font();

    let mut builder = ChartBuilder::on(area);
    builder
        .margin((12.0 * scale) as u32)
        .x_label_area_size((55.0 * scale) as u32)
        .y_label_area_size((80.0 * scale) as u32);
    if let Some(c) = caption {
        builder.caption(c, font(20.0).style(FontStyle::Bold));
    }
    let mut chart = builder.build_cartesian_2d(xr.clone(), 0.0..y_top).map_err(msg)?;
    chart
        .configure_mesh()
        .x_desc("time since probe start (s)")
        .y_desc("transfer rate (Mbit/s)")
        .axis_desc_style(font(17.0))
        .label_style(font(14.0))
        .x_labels(12)
        .y_labels(8)
        .x_label_formatter(&|v| tidy(*v))
        .y_label_formatter(&|v| tidy(*v))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(msg)?;

    // Pre-copy rounds: alternating light shading, labelled when wide enough.
    let round_fill = |i: usize| {
        if i.is_multiple_of(2) {
            ROUND_A.mix(0.45).filled()
        } else {
            ROUND_B.mix(0.6).filled()
        }
    };
    if !tl.rounds.is_empty() {
        chart
            .draw_series(
                tl.rounds
                    .iter()
                    .enumerate()
                    .map(|(i, &(_, a, b))| Rectangle::new([(a, 0.0), (b, y_top)], round_fill(i))),
            )
            .map_err(msg)?
            .label("pre-copy rounds (alternating shading)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], ROUND_A.mix(0.6).filled()));
        let label_style = font(13.0).color(&RGBColor(30, 60, 120));
        for &(n, a, b) in &tl.rounds {
            if b - a > span / 45.0 {
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("R{n}"),
                        (a + span * 0.002, y_top * 0.985),
                        label_style.clone(),
                    )))
                    .map_err(msg)?;
            }
        }
    }

    // Stop-and-copy: the VMM downtime, paused to resumed (at least a few px wide).
    if let Some(p) = tl.paused_s {
        let r = tl.resumed_s.unwrap_or(tl.end_s).max(p);
        let r = r.max(p + span * 0.004);
        let label = format!("stop-and-copy (VMM downtime {})", ms(s.migration.downtime_ms));
        chart
            .draw_series(std::iter::once(Rectangle::new([(p, 0.0), (r, y_top)], DOWNTIME_COLOR.mix(0.45).filled())))
            .map_err(msg)?
            .label(label)
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], DOWNTIME_COLOR.mix(0.45).filled()));
    }

    // The rate itself.
    let interval_ms = s.probe.as_ref().map_or(10.0, |p| p.interval_ns as f64 / 1e6);
    chart
        .draw_series(LineSeries::new(pts, RATE_COLOR.stroke_width(1)))
        .map_err(msg)?
        .label(format!("HTTP transfer rate ({interval_ms:.0} ms samples)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RATE_COLOR.stroke_width(2)));

    // The application-visible gap: a thick orange bar just above the axis.
    if let Some(g) = s.app_switchover_gap.filter(|g| g.zero_samples > 0).or(s.app_longest_gap) {
        let a = g.last_byte_before_ns as f64 / 1e9;
        let b = g.first_byte_after_ns.map_or(xr.end, |t| t as f64 / 1e9);
        let y = y_top * 0.03;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(a, y), (b.max(a + span * 0.002), y)],
                APP_GAP_COLOR.stroke_width((5.0 * scale).max(3.0) as u32),
            )))
            .map_err(msg)?
            .label(format!("application-visible gap ({:.1} ms)", g.duration_ms()))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], APP_GAP_COLOR.stroke_width(5)));
    }

    // Migration start and resume on the destination: vertical lines.
    let vline = |x: f64, c: RGBColor| PathElement::new(vec![(x, 0.0), (x, y_top)], c.stroke_width(2));
    chart
        .draw_series(std::iter::once(vline(tl.migration_start_s, START_COLOR)))
        .map_err(msg)?
        .label("migration start")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], START_COLOR.stroke_width(2)));
    if let Some(r) = tl.resumed_s {
        chart
            .draw_series(std::iter::once(vline(r, RESUME_COLOR)))
            .map_err(msg)?
            .label("resumed on destination")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RESUME_COLOR.stroke_width(2)));
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .margin((10.0 * scale) as u32)
        .legend_area_size((28.0 * scale) as u32)
        .label_font(font(13.5))
        .background_style(WHITE.mix(0.88))
        .border_style(RGBColor(120, 120, 120))
        .draw()
        .map_err(msg)?;
    Ok(())
}

struct RateFigure<'a> {
    s: &'a ScenarioResult,
}

impl Figure for RateFigure<'_> {
    fn name(&self) -> String {
        format!("transmission rate progress ({})", self.s.scenario)
    }
    fn size(&self) -> (u32, u32) {
        (1400, 700)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (top, rest) = area.split_vertically(80);
        draw_heading(
            &top,
            &format!("{RATE_TITLE}: {} — {}", scenario_label(self.s), self.s.date),
            &key_numbers(self.s),
            26.0,
        )?;
        draw_rate_panel(&rest, self.s, None, rate_y_top(max_rate(self.s)), 1.0)
    }
}

/// "Live migration – transmission rate progress" for one scenario. Fails
/// with [`ReportError::NoProbe`] when the scenario has no probe series.
pub fn rate_progress(s: &ScenarioResult) -> Result<Chart, ReportError> {
    if s.probe.is_none() {
        return Err(ReportError::NoProbe { chart: "transmission rate progress".into(), scenario: s.scenario.clone() });
    }
    render(&RateFigure { s })
}

struct ComparisonFigure<'a> {
    panels: &'a [&'a ScenarioResult],
}

impl Figure for ComparisonFigure<'_> {
    fn name(&self) -> String {
        let names: Vec<&str> = self.panels.iter().map(|s| s.scenario.as_str()).collect();
        format!("transmission rate comparison ({})", names.join(" vs "))
    }
    fn size(&self) -> (u32, u32) {
        (1000 * self.panels.len().max(1) as u32, 680)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (top, rest) = area.split_vertically(80);
        let dates: Vec<&str> = self.panels.iter().map(|s| s.date.as_str()).collect();
        let mut uniq = dates.clone();
        uniq.dedup();
        draw_heading(
            &top,
            RATE_TITLE,
            &format!(
                "{} — same rate scale in every panel — {}",
                self.panels.iter().map(|s| scenario_label(s)).collect::<Vec<_>>().join(" vs "),
                uniq.join(", ")
            ),
            28.0,
        )?;
        let y_top = rate_y_top(self.panels.iter().map(|s| max_rate(s)).fold(0.0, f64::max));
        let cells = rest.split_evenly((1, self.panels.len().max(1)));
        for (cell, s) in cells.iter().zip(self.panels.iter()) {
            let caption = format!(
                "{} — VMM downtime {}, app-visible {}",
                scenario_label(s),
                ms(s.migration.downtime_ms),
                ms(s.app_downtime_ms)
            );
            draw_rate_panel(cell, s, Some(&caption), y_top, 0.95)?;
        }
        Ok(())
    }
}

/// Several scenarios' rate-progress panels side by side on one rate scale
/// (the idle-vs-loaded figure). Every scenario needs a probe series.
pub fn comparison(panels: &[&ScenarioResult]) -> Result<Chart, ReportError> {
    if let Some(s) = panels.iter().find(|s| s.probe.is_none()) {
        return Err(ReportError::NoProbe {
            chart: "transmission rate comparison".into(),
            scenario: s.scenario.clone(),
        });
    }
    if panels.is_empty() {
        return Err(ReportError::Chart {
            chart: "transmission rate comparison".into(),
            message: "no scenarios given".into(),
        });
    }
    render(&ComparisonFigure { panels })
}

struct RoundsFigure<'a> {
    s: &'a ScenarioResult,
}

/// A bar's value label, MB: three significant digits or so.
fn mb_label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Mbit/s of a page rate in pages/s.
fn pages_to_mbps(pages_s: f64) -> f64 {
    finite(pages_s) * PAGE_SIZE as f64 * 8.0 / 1e6
}

impl Figure for RoundsFigure<'_> {
    fn name(&self) -> String {
        format!("pre-copy rounds ({})", self.s.scenario)
    }
    fn size(&self) -> (u32, u32) {
        (1400, 900)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let s = self.s;
        let m = &s.migration;
        let (top, rest) = area.split_vertically(80);
        draw_heading(
            &top,
            &format!("{ROUNDS_TITLE}: {} — {}", scenario_label(s), s.date),
            &format!(
                "{} rounds · stop reason: {} · final stop-and-copy pass: {} pages · {:.1} MB on the wire in total",
                m.rounds.len(),
                m.stop_reason.as_deref().unwrap_or("n/a"),
                m.final_pages,
                m.transferred_bytes as f64 / 1e6
            ),
            26.0,
        )?;
        let (upper, lower) = rest.split_vertically(rest.dim_in_pixel().1 * 55 / 100);
        let n = m.rounds.len();
        // The final stop-and-copy pass gets its own slot after the rounds.
        let has_final = m.paused_at_ms.is_some() || m.final_pages > 0;
        let slots = n + usize::from(has_final);
        if slots == 0 {
            let style = TextStyle::from((FONT, 24.0).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
            let (w, h) = rest.dim_in_pixel();
            return rest.draw_text("no pre-copy rounds recorded", &style, (w as i32 / 2, h as i32 / 2)).map_err(msg);
        }
        let xr = -0.6..(slots as f64 - 0.4);
        let label_for = move |x: &f64| {
            let r = x.round();
            if (x - r).abs() > 1e-6 || r < 0.0 || r as usize >= slots {
                String::new()
            } else if r as usize == n {
                "stop&copy".to_string()
            } else {
                format!("{r:.0}")
            }
        };
        let sent_mb: Vec<f64> = m.rounds.iter().map(|r| r.bytes as f64 / 1e6).collect();
        let dirty_mb: Vec<f64> = m.rounds.iter().map(|r| (r.dirty_pages * PAGE_SIZE) as f64 / 1e6).collect();
        let final_mb = (m.final_pages * PAGE_SIZE) as f64 / 1e6;
        let mb_top = sent_mb
            .iter()
            .chain(dirty_mb.iter())
            .copied()
            .chain(std::iter::once(final_mb))
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.3;
        let font = |px: f64| (FONT, px).into_font();

        // Upper panel: MB sent and MB dirtied per round.
        let mut c = ChartBuilder::on(&upper)
            .margin(12)
            .caption("memory per round", font(20.0).style(FontStyle::Bold))
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(xr.clone(), 0.0..mb_top)
            .map_err(msg)?;
        c.configure_mesh()
            .x_desc("pre-copy round")
            .y_desc("MB (10^6 bytes)")
            .axis_desc_style(font(17.0))
            .label_style(font(14.0))
            .x_labels(slots + 2)
            .x_label_formatter(&label_for)
            .y_label_formatter(&|v| tidy(*v))
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(msg)?;
        let bar = |i: usize, left: bool, v: f64, color: ShapeStyle| {
            let x = i as f64;
            let (a, b) = if left { (x - 0.38, x) } else { (x, x + 0.38) };
            Rectangle::new([(a, 0.0), (b, v)], color)
        };
        c.draw_series(sent_mb.iter().enumerate().map(|(i, &v)| bar(i, true, v, SENT_COLOR.filled())))
            .map_err(msg)?
            .label("MB sent in the round (page data)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], SENT_COLOR.filled()));
        c.draw_series(dirty_mb.iter().enumerate().map(|(i, &v)| bar(i, false, v, DIRTY_COLOR.filled())))
            .map_err(msg)?
            .label("MB dirtied during the round (dirty pages × 4 KiB)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], DIRTY_COLOR.filled()));
        if has_final {
            c.draw_series(std::iter::once(Rectangle::new(
                [(n as f64 - 0.38, 0.0), (n as f64 + 0.38, final_mb)],
                DOWNTIME_COLOR.mix(0.75).filled(),
            )))
            .map_err(msg)?
            .label("stop-and-copy pass (pages × 4 KiB)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], DOWNTIME_COLOR.mix(0.75).filled()));
        }
        // Value labels over the bars, so small rounds stay readable.
        if slots <= 16 {
            let style = TextStyle::from(font(12.0)).pos(Pos::new(HPos::Center, VPos::Bottom));
            let mut labels: Vec<(f64, f64)> = Vec::new();
            for (i, (&s_mb, &d_mb)) in sent_mb.iter().zip(&dirty_mb).enumerate() {
                labels.push((i as f64 - 0.19, s_mb));
                labels.push((i as f64 + 0.19, d_mb));
            }
            if has_final {
                labels.push((n as f64, final_mb));
            }
            c.draw_series(
                labels.into_iter().map(|(x, v)| Text::new(mb_label(v), (x, v + mb_top * 0.01), style.clone())),
            )
            .map_err(msg)?;
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .label_font(font(14.0))
            .background_style(WHITE.mix(0.88))
            .border_style(RGBColor(120, 120, 120))
            .draw()
            .map_err(msg)?;

        // Lower panel: rates per round.
        let rate: Vec<(f64, f64)> =
            m.rounds.iter().enumerate().map(|(i, r)| (i as f64, finite(r.rate_mbps).max(0.0))).collect();
        let dirty_rate: Vec<(f64, f64)> = m
            .rounds
            .iter()
            .enumerate()
            .map(|(i, r)| (i as f64, pages_to_mbps(r.dirty_rate_pages_s).max(0.0)))
            .collect();
        let limit: Vec<(f64, f64)> = m
            .rounds
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.rate_limit_mbps.map(|l| (i as f64, finite(l).max(0.0))))
            .collect();
        let r_top =
            rate.iter().chain(dirty_rate.iter()).chain(limit.iter()).map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.35;
        let mut c = ChartBuilder::on(&lower)
            .margin(12)
            .caption("rate per round", font(20.0).style(FontStyle::Bold))
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(xr, 0.0..r_top)
            .map_err(msg)?;
        c.configure_mesh()
            .x_desc("pre-copy round")
            .y_desc("rate (Mbit/s)")
            .axis_desc_style(font(17.0))
            .label_style(font(14.0))
            .x_labels(slots + 2)
            .x_label_formatter(&label_for)
            .y_label_formatter(&|v| tidy(*v))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(msg)?;
        c.draw_series(LineSeries::new(rate.clone(), SENT_COLOR.stroke_width(3)))
            .map_err(msg)?
            .label("achieved transfer rate")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SENT_COLOR.stroke_width(3)));
        c.draw_series(rate.iter().map(|&p| Circle::new(p, 5, SENT_COLOR.filled()))).map_err(msg)?;
        c.draw_series(LineSeries::new(dirty_rate.clone(), DIRTY_COLOR.stroke_width(3)))
            .map_err(msg)?
            .label("dirtying rate (dirty pages/s × 4 KiB)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], DIRTY_COLOR.stroke_width(3)));
        c.draw_series(dirty_rate.iter().map(|&p| Circle::new(p, 5, DIRTY_COLOR.filled()))).map_err(msg)?;
        if !limit.is_empty() {
            c.draw_series(LineSeries::new(limit, LIMIT_COLOR.stroke_width(2)))
                .map_err(msg)?
                .label("rate limit in force")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LIMIT_COLOR.stroke_width(2)));
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .label_font(font(14.0))
            .background_style(WHITE.mix(0.88))
            .border_style(RGBColor(120, 120, 120))
            .draw()
            .map_err(msg)?;
        Ok(())
    }
}

/// "Iterative pre-copy rounds" for one scenario: MB sent and MB dirtied
/// per round, and the rates per round. Needs no probe.
pub fn precopy_rounds(s: &ScenarioResult) -> Result<Chart, ReportError> {
    render(&RoundsFigure { s })
}
