//! The regression view: a baseline run and a new run of the same scenario
//! on the same axes. The upper panel shows both whole runs, aligned at the
//! migration start (0 s), with each run's stop-and-copy band; the lower is
//! the zoom panel with both runs aligned at their pause.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::rate::{
    app_gap, draw_zoom_panel, max_rate, rate_points, rate_y_top, scenario_label, window_words, zoom_window, Trace,
};
use super::text::Heading;
use super::*;
use crate::scenario::ScenarioResult;

/// "A → B (+x%)" for two optional ms values.
fn change(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{a:.1} → {b:.1} ms ({:+.0}%)", (b / a - 1.0) * 100.0),
        (a, b) => format!("{} → {}", ms(a), ms(b)),
    }
}

struct OverlayFigure<'a> {
    base: &'a ScenarioResult,
    new: &'a ScenarioResult,
}

impl OverlayFigure<'_> {
    fn traces(&self) -> [Trace<'_>; 2] {
        [
            Trace {
                s: self.base,
                line: BASELINE_COLOR,
                band: BASELINE_COLOR,
                gap: BASELINE_GAP_COLOR,
                name: Some("baseline"),
            },
            Trace { s: self.new, line: RATE_COLOR, band: DOWNTIME_COLOR, gap: APP_GAP_COLOR, name: Some("new") },
        ]
    }
}

/// The upper panel: both runs against time since their migration start.
fn draw_whole_runs<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    traces: &[Trace],
    y_top: f64,
) -> Result<(), String> {
    let font = |px: f64| (FONT, px).into_font();
    // Each run on its own migration-start-relative timeline.
    let shifted: Vec<Vec<(f64, f64)>> = traces
        .iter()
        .map(|t| {
            let m0 = t.s.timeline().migration_start_s;
            rate_points(t.s).into_iter().map(|(x, y)| (x - m0, y)).collect()
        })
        .collect();
    let lo = shifted.iter().filter_map(|v| v.first().map(|p| p.0)).fold(0.0, f64::min);
    let hi = traces
        .iter()
        .zip(&shifted)
        .map(|(t, v)| {
            let tl = t.s.timeline();
            v.last().map_or(0.0, |p| p.0).max(tl.end_s - tl.migration_start_s)
        })
        .fold(lo + 1e-3, f64::max);
    let span = hi - lo;
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(lo..hi, 0.0..y_top)
        .map_err(msg)?;
    chart
        .configure_mesh()
        .x_desc("time since the migration start (s)")
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
    for (t, pts) in traces.iter().zip(shifted) {
        let tl = t.s.timeline();
        let name = t.name.unwrap_or("run");
        if let Some(p) = tl.paused_s {
            let p = p - tl.migration_start_s;
            let r = tl.resumed_s.map_or(tl.end_s - tl.migration_start_s, |r| r - tl.migration_start_s).max(p);
            let r = r.max(p + span * 0.004);
            let c = t.band;
            chart
                .draw_series(std::iter::once(Rectangle::new([(p, 0.0), (r, y_top)], c.mix(0.4).filled())))
                .map_err(msg)?
                .label(format!("{name}: stop-and-copy (VMM downtime {})", ms(t.s.migration.downtime_ms)))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], c.mix(0.4).filled()));
        }
        let c = t.line;
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(1)))
            .map_err(msg)?
            .label(format!(
                "{name}: HTTP transfer rate, {} ({} rounds, total {:.0} ms)",
                t.s.date,
                t.s.migration.rounds.len(),
                t.s.migration.total_ms
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .draw_series(std::iter::once(PathElement::new(vec![(0.0, 0.0), (0.0, y_top)], START_COLOR.stroke_width(2))))
        .map_err(msg)?
        .label("migration start (both runs)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], START_COLOR.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .margin(10)
        .legend_area_size(28)
        .label_font(font(13.5))
        .background_style(WHITE.mix(0.88))
        .border_style(RGBColor(120, 120, 120))
        .draw()
        .map_err(msg)?;
    Ok(())
}

impl Figure for OverlayFigure<'_> {
    fn name(&self) -> String {
        format!("regression overlay ({})", self.new.scenario)
    }
    fn size(&self) -> (u32, u32) {
        (1400, 1100)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let (b, n) = (self.base, self.new);
        let heading = Heading::fit(
            area,
            &format!("{OVERLAY_TITLE}: {} — baseline {} vs new {}", scenario_label(n), b.date, n.date),
            &format!(
                "VMM downtime {} · application-visible downtime {} · total {}",
                change(b.migration.downtime_ms, n.migration.downtime_ms),
                change(b.app_downtime_ms, n.app_downtime_ms),
                change(Some(b.migration.total_ms), Some(n.migration.total_ms)),
            ),
            26.0,
        )?;
        let rest = heading.draw(area)?;
        let y_top = rate_y_top(max_rate(b).max(max_rate(n)));
        let h = rest.dim_in_pixel().1;
        let (upper, lower) = rest.split_vertically(h * 55 / 100);
        let traces = self.traces();
        draw_whole_runs(&upper, &traces, y_top)?;
        draw_zoom_panel(
            &lower,
            &traces,
            y_top,
            1.0,
            &format!(
                "Zoom {} around each run's pause, samples as steps — grey: baseline, blue line, red band, \
                 orange bar: new — application-visible gap {}",
                window_words(&{
                    let (a, b) = (zoom_window(self.base), zoom_window(self.new));
                    a.start.min(b.start)..a.end.max(b.end)
                }),
                change(app_gap(b).map(|g| g.duration_ms()), app_gap(n).map(|g| g.duration_ms()))
            ),
        )
    }
}

/// The regression overlay of `new` against `base` (the same scenario run
/// twice). Both need a probe series ([`ReportError::NoProbe`] otherwise).
pub fn overlay(base: &ScenarioResult, new: &ScenarioResult) -> Result<Chart, ReportError> {
    for s in [base, new] {
        if s.probe.is_none() {
            return Err(ReportError::NoProbe { chart: "regression overlay".into(), scenario: s.scenario.clone() });
        }
    }
    render(&OverlayFigure { base, new })
}
