//! "Live migration – transmission rate progress": the whole run, and a
//! second panel zoomed to ±250 ms around the pause (the switchover), for
//! one scenario ([`rate_progress`]) or several side by side
//! ([`comparison`]). The zoom panel ([`draw_zoom_panel`]) is shared with the
//! regression overlay.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use results::Gap;

use super::text::{caption, draw_caption, fit_caption, Heading};
use super::*;
use crate::scenario::{finite, ScenarioResult};

/// "±250 ms", or "−250 ms to +384 ms" for a window widened to the resume.
pub(super) fn window_words(w: &Range<f64>) -> String {
    if w.end > ZOOM_HALF_WIDTH_MS {
        format!("−{ZOOM_HALF_WIDTH_MS:.0} ms to +{:.0} ms", w.end)
    } else {
        format!("±{ZOOM_HALF_WIDTH_MS:.0} ms")
    }
}

/// Half the width of the zoom panel's window around the pause, ms. The
/// window reaches further right when the resume is later than that.
pub const ZOOM_HALF_WIDTH_MS: f64 = 250.0;

/// The setup band: from the migration start to the first page sent.
pub const SETUP_COLOR: RGBColor = RGBColor(150, 90, 200);

/// The legend text of the setup band.
pub fn setup_label(setup_ms: f64) -> String {
    format!("setup ({setup_ms:.1} ms: start to the first page sent)")
}

/// Share of a rate cell's height given to the zoom panel.
const ZOOM_SHARE: u32 = 42;

/// "VMM downtime … · application-visible downtime … · N pre-copy rounds".
fn key_numbers(s: &ScenarioResult) -> String {
    format!(
        "setup {} · VMM downtime {} · application-visible downtime {} · {} pre-copy rounds · total {:.0} ms · {}",
        ms(s.migration.setup_ms),
        ms(s.migration.downtime_ms),
        ms(s.app_downtime_ms),
        s.migration.rounds.len(),
        s.migration.total_ms,
        crate::scenario::outcome_str(s.migration.outcome),
    )
}

/// Scenario name with its load label, e.g. "idle (minimal load)".
pub(super) fn scenario_label(s: &ScenarioResult) -> String {
    match s.load_label() {
        Some(l) => format!("{} ({l})", s.scenario),
        None => s.scenario.clone(),
    }
}

/// The probe's series as (s, Mbit/s).
pub(super) fn rate_points(s: &ScenarioResult) -> Vec<(f64, f64)> {
    s.probe
        .as_ref()
        .map(|p| p.samples.iter().map(|x| (x.t_ns as f64 / 1e9, finite(x.rate_mbps).max(0.0))).collect())
        .unwrap_or_default()
}

/// The probe's samples as steps, each sample's rate held over the interval
/// it measured (from the previous sample's timestamp to its own), in ms
/// relative to `t0_s` (on the probe's timeline), limited to `window_ms`.
pub(super) fn step_points(s: &ScenarioResult, t0_s: f64, window_ms: &Range<f64>) -> Vec<(f64, f64)> {
    let Some(p) = &s.probe else { return Vec::new() };
    let mut out = Vec::new();
    let mut prev = -t0_s * 1e3;
    for x in &p.samples {
        let t = x.t_ns as f64 / 1e6 - t0_s * 1e3;
        let a = std::mem::replace(&mut prev, t);
        if t < window_ms.start || a > window_ms.end {
            continue;
        }
        let r = finite(x.rate_mbps).max(0.0);
        out.push((a.max(window_ms.start), r));
        out.push((t.min(window_ms.end), r));
    }
    out
}

/// The application-visible gap the charts mark: the longer of the probe's
/// longest zero-byte run and the gap around the pause (the one
/// `app_downtime_ms` reports).
pub(super) fn app_gap(s: &ScenarioResult) -> Option<Gap> {
    [s.app_longest_gap, s.app_switchover_gap].into_iter().flatten().max_by_key(|g| g.duration_ns)
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
pub(super) fn rate_y_top(max_rate: f64) -> f64 {
    if max_rate > 0.0 {
        max_rate * 1.45
    } else {
        1.0
    }
}

pub(super) fn max_rate(s: &ScenarioResult) -> f64 {
    rate_points(s).iter().map(|p| p.1).fold(0.0, f64::max)
}

/// The zoom window of one run, ms relative to its pause.
pub(super) fn zoom_window(s: &ScenarioResult) -> Range<f64> {
    let tl = s.timeline();
    let hi = match (tl.paused_s, tl.resumed_s) {
        (Some(p), Some(r)) => ((r - p) * 1e3 + 50.0).max(ZOOM_HALF_WIDTH_MS),
        _ => ZOOM_HALF_WIDTH_MS,
    };
    -ZOOM_HALF_WIDTH_MS..hi
}

/// One run drawn in a zoom panel: its result, colours and the name its
/// annotations carry (`None` for a chart of one run).
pub(super) struct Trace<'a> {
    pub s: &'a ScenarioResult,
    pub line: RGBColor,
    pub band: RGBColor,
    pub gap: RGBColor,
    pub name: Option<&'a str>,
}

impl<'a> Trace<'a> {
    /// The colours of a chart of one run.
    pub fn single(s: &'a ScenarioResult) -> Self {
        Trace { s, line: RATE_COLOR, band: DOWNTIME_COLOR, gap: APP_GAP_COLOR, name: None }
    }

    fn prefix(&self) -> String {
        self.name.map(|n| format!("{n}: ")).unwrap_or_default()
    }
}

/// The zoom panel: the rate of each trace as 10 ms steps over ±250 ms
/// around its own pause (0 on the x axis), the VMM pause band (pause to
/// resume) and the application-visible gap, each annotated with its value
/// on the chart (so the panel needs no legend; `title` says what the
/// colours are).
pub(super) fn draw_zoom_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    traces: &[Trace],
    y_top: f64,
    scale: f64,
    title: &str,
) -> Result<(), String> {
    let font = |px: f64| (FONT, px * scale).into_font();
    let rest = caption(area, title, 17.0 * scale)?;
    let win = traces
        .iter()
        .map(|t| zoom_window(t.s))
        .fold(-ZOOM_HALF_WIDTH_MS..ZOOM_HALF_WIDTH_MS, |a, b| a.start.min(b.start)..a.end.max(b.end));
    let span = win.end - win.start;
    let mut chart = ChartBuilder::on(&rest)
        .margin_left((12.0 * scale) as u32)
        .margin_right((12.0 * scale) as u32)
        .margin_bottom((6.0 * scale) as u32)
        .x_label_area_size((50.0 * scale) as u32)
        .y_label_area_size((80.0 * scale) as u32)
        .build_cartesian_2d(win.clone(), 0.0..y_top)
        .map_err(msg)?;
    chart
        .configure_mesh()
        .x_desc("time relative to the pause on the source (ms)")
        .y_desc("Mbit/s")
        .axis_desc_style(font(16.0))
        .label_style(font(13.0))
        .x_labels(11)
        .y_labels(5)
        .x_label_formatter(&|v| tidy(*v))
        .y_label_formatter(&|v| tidy(*v))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(msg)?;

    let text = |px: f64, c: &RGBColor, h: HPos| TextStyle {
        font: font(px),
        color: c.to_backend_color(),
        pos: Pos::new(h, VPos::Center),
    };
    for (k, tr) in traces.iter().enumerate() {
        let tl = tr.s.timeline();
        let Some(p) = tl.paused_s else {
            let y = y_top * (0.9 - 0.1 * k as f64);
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{}no pause recorded (the migration did not reach stop-and-copy)", tr.prefix()),
                    (win.start + span * 0.02, y),
                    text(14.0, &tr.line, HPos::Left),
                )))
                .map_err(msg)?;
            continue;
        };
        // The VMM pause band.
        if let Some(r) = tl.resumed_s {
            let b = ((r - p) * 1e3).max(span * 0.003);
            chart
                .draw_series(std::iter::once(Rectangle::new([(0.0, 0.0), (b, y_top)], tr.band.mix(0.3).filled())))
                .map_err(msg)?;
            let value = format!("{}VMM pause {}", tr.prefix(), ms(tr.s.migration.downtime_ms.or(Some((r - p) * 1e3))));
            let y = y_top * (0.93 - 0.09 * k as f64);
            let (x, h) =
                if (b - win.start) / span < 0.72 { (b + span * 0.01, HPos::Left) } else { (-span * 0.01, HPos::Right) };
            chart
                .draw_series([
                    PathElement::new(vec![(0.0, y), (b, y)], tr.band.stroke_width(2)),
                    PathElement::new(vec![(0.0, y * 0.97), (0.0, y * 1.03)], tr.band.stroke_width(2)),
                    PathElement::new(vec![(b, y * 0.97), (b, y * 1.03)], tr.band.stroke_width(2)),
                ])
                .map_err(msg)?;
            chart.draw_series(std::iter::once(Text::new(value, (x, y), text(14.0, &tr.band, h)))).map_err(msg)?;
        }
        // The samples as steps.
        chart.draw_series(LineSeries::new(step_points(tr.s, p, &win), tr.line.stroke_width(2))).map_err(msg)?;
        // The application-visible gap: a thick bar just above the axis.
        if let Some(g) = app_gap(tr.s) {
            let a = g.last_byte_before_ns as f64 / 1e6 - p * 1e3;
            let b = g.first_byte_after_ns.map_or(win.end, |t| t as f64 / 1e6 - p * 1e3);
            let (a, b) = (a.max(win.start), b.min(win.end).max(a + span * 0.003));
            let y = y_top * (0.05 + 0.09 * k as f64);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(a, y), (b, y)],
                    tr.gap.stroke_width((6.0 * scale).max(3.0) as u32),
                )))
                .map_err(msg)?;
            let value = format!("{}application-visible gap {:.1} ms", tr.prefix(), g.duration_ms());
            let (x, h) = if (b - win.start) / span < 0.72 {
                (b + span * 0.01, HPos::Left)
            } else {
                (a - span * 0.01, HPos::Right)
            };
            chart
                .draw_series(std::iter::once(Text::new(value, (x, y + y_top * 0.045), text(14.0, &tr.gap, h))))
                .map_err(msg)?;
        }
    }
    Ok(())
}

/// Draw one whole-run rate panel on `area`.
fn draw_rate_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &ScenarioResult,
    y_top: f64,
    scale: f64,
) -> Result<(), String> {
    let tl = s.timeline();
    let pts = rate_points(s);
    let xr = rate_x_range(s);
    let span = xr.end - xr.start;
    let font = |px: f64| (FONT, px * scale).into_font();

    let mut chart = ChartBuilder::on(area)
        .margin((12.0 * scale) as u32)
        .x_label_area_size((55.0 * scale) as u32)
        .y_label_area_size((80.0 * scale) as u32)
        .build_cartesian_2d(xr.clone(), 0.0..y_top)
        .map_err(msg)?;
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

    // Setup: from the migration start to the first page sent, at least a
    // few px wide so it stays visible.
    if let Some(setup) = s.migration.setup_ms.filter(|v| v.is_finite() && *v >= 0.0) {
        let a = tl.migration_start_s;
        let b = (a + setup / 1e3).max(a + span * 0.004);
        chart
            .draw_series(std::iter::once(Rectangle::new([(a, 0.0), (b, y_top)], SETUP_COLOR.mix(0.5).filled())))
            .map_err(msg)?
            .label(setup_label(setup))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], SETUP_COLOR.mix(0.5).filled()));
    }

    // Stop-and-copy: from the pause to the resume, at least a few px wide
    // so it stays visible at this scale (the zoom panel shows its width).
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
    if let Some(g) = app_gap(s) {
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

    // The zoom panel's window, outlined.
    if let Some(p) = tl.paused_s {
        let w = zoom_window(s);
        let (a, b) = (p + w.start / 1e3, p + w.end / 1e3);
        let y = y_top * 0.9;
        chart
            .draw_series(std::iter::once(DashedPathElement::new(
                vec![(a, 0.0), (a, y), (b, y), (b, 0.0)],
                4,
                3,
                BLACK.mix(0.7).stroke_width(1),
            )))
            .map_err(msg)?
            .label("window of the zoom panel below")
            .legend(|(x, y)| {
                DashedPathElement::new(vec![(x, y + 5), (x, y - 5), (x + 20, y - 5), (x + 20, y + 5)], 3, 2, BLACK)
            });
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

/// A whole-run panel above a zoom panel, in `area`.
fn draw_rate_cell<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &ScenarioResult,
    y_top: f64,
    scale: f64,
) -> Result<(), String> {
    let h = area.dim_in_pixel().1;
    let (upper, lower) = area.split_vertically(h * (100 - ZOOM_SHARE) / 100);
    draw_rate_panel(&upper, s, y_top, scale)?;
    draw_zoom_panel(
        &lower,
        &[Trace::single(s)],
        y_top,
        scale,
        &format!(
            "Zoom {} around the pause, {:.0} ms steps — red: VMM pause {} · orange: application-visible gap {}",
            window_words(&zoom_window(s)),
            s.probe.as_ref().map_or(10.0, |p| p.interval_ns as f64 / 1e6),
            ms(s.migration.downtime_ms),
            ms(app_gap(s).map(|g| g.duration_ms()))
        ),
    )
}

struct RateFigure<'a> {
    s: &'a ScenarioResult,
}

impl Figure for RateFigure<'_> {
    fn name(&self) -> String {
        format!("transmission rate progress ({})", self.s.scenario)
    }
    fn size(&self) -> (u32, u32) {
        (1400, 1100)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let heading = Heading::fit(
            area,
            &format!("{RATE_TITLE}: {} — {}", scenario_label(self.s), self.s.date),
            &key_numbers(self.s),
            26.0,
        )?;
        let rest = heading.draw(area)?;
        draw_rate_cell(&rest, self.s, rate_y_top(max_rate(self.s)), 1.0)
    }
}

/// "Live migration – transmission rate progress" for one scenario, with
/// the zoom panel around the pause. Fails with [`ReportError::NoProbe`]
/// when the scenario has no probe series.
pub fn rate_progress(s: &ScenarioResult) -> Result<Chart, ReportError> {
    if s.probe.is_none() {
        return Err(ReportError::NoProbe { chart: "transmission rate progress".into(), scenario: s.scenario.clone() });
    }
    render(&RateFigure { s })
}

struct ComparisonFigure<'a> {
    /// One row per system; the panels of a row share one rate scale.
    rows: &'a [Vec<&'a ScenarioResult>],
}

impl ComparisonFigure<'_> {
    fn panels(&self) -> impl Iterator<Item = &&ScenarioResult> {
        self.rows.iter().flatten()
    }

    /// Several systems: every panel names its system.
    fn multi_system(&self) -> bool {
        self.rows.len() > 1
    }

    fn label(&self, s: &ScenarioResult) -> String {
        if self.multi_system() {
            format!("{} · {}", s.system_name(), scenario_label(s))
        } else {
            scenario_label(s)
        }
    }
}

impl Figure for ComparisonFigure<'_> {
    fn name(&self) -> String {
        let names: Vec<String> = self.panels().map(|s| self.label(s)).collect();
        format!("transmission rate comparison ({})", names.join(" vs "))
    }
    fn size(&self) -> (u32, u32) {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
        let rows = self.rows.len().max(1) as u32;
        (1000 * cols, if rows == 1 { 1080 } else { 960 * rows + 80 })
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let mut uniq: Vec<&str> = self.panels().map(|s| s.date.as_str()).collect();
        uniq.dedup();
        let what = if self.multi_system() {
            let systems: Vec<&str> = self.rows.iter().filter_map(|r| r.first()).map(|s| s.system_name()).collect();
            format!(
                "{} (rows) × {} — one rate scale per row",
                systems.join(", "),
                self.rows[0].iter().map(|s| s.scenario.as_str()).collect::<Vec<_>>().join(" vs ")
            )
        } else {
            format!(
                "{} — same rate scale in every panel",
                self.panels().map(|s| scenario_label(s)).collect::<Vec<_>>().join(" vs ")
            )
        };
        let heading = Heading::fit(area, RATE_TITLE, &format!("{what} — {}", uniq.join(", ")), 28.0)?;
        let rest = heading.draw(area)?;
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let row_areas = rest.split_evenly((self.rows.len().max(1), 1));
        for (row_area, row) in row_areas.iter().zip(self.rows) {
            let y_top = rate_y_top(row.iter().map(|s| max_rate(s)).fold(0.0, f64::max));
            let cells = row_area.split_evenly((1, cols));
            let mut captions = Vec::new();
            for (cell, s) in cells.iter().zip(row.iter()) {
                let text = format!(
                    "{} — VMM downtime {}, app-visible {}",
                    self.label(s),
                    ms(s.migration.downtime_ms),
                    ms(s.app_downtime_ms)
                );
                captions.push(fit_caption(cell, &text, 19.0)?);
            }
            // One caption height for all, so the panels line up.
            let height = captions.iter().map(|c| c.height()).max().unwrap_or(0);
            for ((cell, s), c) in cells.iter().zip(row.iter()).zip(&captions) {
                let below = draw_caption(cell, c, height)?;
                draw_rate_cell(&below, s, y_top, 0.95)?;
            }
        }
        Ok(())
    }
}

/// Several scenarios' rate-progress panels side by side on one rate scale
/// (the idle-vs-loaded figure), each with its zoom panel. Every scenario
/// needs a probe series.
pub fn comparison(panels: &[&ScenarioResult]) -> Result<Chart, ReportError> {
    comparison_grid(&[panels.to_vec()])
}

/// The comparison as a grid: one row per system (idle and loaded, say),
/// each row on its own rate scale, since systems' rates differ by orders of
/// magnitude. Every scenario needs a probe series.
pub fn comparison_grid(rows: &[Vec<&ScenarioResult>]) -> Result<Chart, ReportError> {
    if let Some(s) = rows.iter().flatten().find(|s| s.probe.is_none()) {
        return Err(ReportError::NoProbe {
            chart: "transmission rate comparison".into(),
            scenario: s.scenario.clone(),
        });
    }
    if rows.iter().all(Vec::is_empty) {
        return Err(ReportError::Chart {
            chart: "transmission rate comparison".into(),
            message: "no scenarios given".into(),
        });
    }
    render(&ComparisonFigure { rows })
}
