//! "Iterative pre-copy rounds": per round, the MB sent and the MB dirtied
//! (bars, with the final stop-and-copy pass in its own slot), and below, the
//! achieved rate, the rate limit in force and the dirtying rate.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::rate::scenario_label;
use super::text::Heading;
use super::*;
use crate::scenario::{finite, ScenarioResult, PAGE_SIZE};

struct RoundsFigure<'a> {
    s: &'a ScenarioResult,
}

/// The colour of the auto-converge labels.
const THROTTLE_COLOR: RGBColor = RGBColor(150, 60, 20);

/// The legend entry of the auto-converge labels.
pub const THROTTLE_LEGEND: &str = "auto-converge: share of time the worker vCPUs were held off";

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
        let heading = Heading::fit(
            area,
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
        let rest = heading.draw(area)?;
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
        // Auto-converge: each round's held-off share of the worker vCPUs.
        let throttle: Vec<Option<f64>> =
            m.rounds.iter().map(|r| r.throttle_pct.filter(|p| p.is_finite()).map(|p| p.max(0.0))).collect();
        let throttled = throttle.iter().any(Option::is_some);
        let label_throttle = throttle.clone();
        let label_for = move |x: &f64| {
            let r = x.round();
            if (x - r).abs() > 1e-6 || r < 0.0 || r as usize >= slots {
                String::new()
            } else if r as usize == n {
                "stop&copy".to_string()
            } else if let Some(Some(p)) = label_throttle.get(r as usize) {
                format!("{r:.0} (throttle {p:.0}%)")
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
            .caption("memory per round", (FONT, 20.0, FontStyle::Bold).into_font())
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
            .caption("rate per round", (FONT, 20.0, FontStyle::Bold).into_font())
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
        if throttled {
            let style = TextStyle::from(font(13.0)).color(&THROTTLE_COLOR).pos(Pos::new(HPos::Center, VPos::Bottom));
            c.draw_series(throttle.iter().enumerate().filter_map(|(i, p)| {
                p.map(|p| Text::new(format!("throttle {p:.0}%"), (i as f64, r_top * 0.04), style.clone()))
            }))
            .map_err(msg)?
            .label(THROTTLE_LEGEND)
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], THROTTLE_COLOR.filled()));
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
