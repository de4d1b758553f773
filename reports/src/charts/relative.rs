//! "Relative performance", the Xen paper's Figure 3: one group of bars per
//! workload (its stand-in, labelled with what it replaces), one bar per
//! system, each normalised to native = 1.0, with its value over the bar.
//! A bar that could not run is an "n/a" mark in its slot.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::text::Heading;
use super::*;
use results::bench::MacroReport;

/// Title of the chart.
pub const RELATIVE_TITLE: &str = "Relative performance (native = 1.0), after Barham et al. 2003, Figure 3";

const SYSTEM_COLORS: [RGBColor; 4] =
    [RGBColor(90, 90, 90), RGBColor(20, 70, 160), RGBColor(235, 120, 20), RGBColor(0, 140, 60)];

struct RelativeFigure<'a> {
    m: &'a MacroReport,
}

impl Figure for RelativeFigure<'_> {
    fn name(&self) -> String {
        "relative performance".into()
    }
    fn size(&self) -> (u32, u32) {
        (1400, 760)
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let m = self.m;
        let heading = Heading::fit(
            area,
            RELATIVE_TITLE,
            "stand-ins run here, each labelled with the paper's workload it replaces; higher is better; n/a: could not run (reason in the JSON and the table)",
            26.0,
        )?;
        let rest = heading.draw(area)?;
        let groups = m.workloads.len().max(1);
        let per = m.systems.len().max(1);
        let top =
            m.workloads.iter().flat_map(|w| w.bars.iter().filter_map(|b| b.relative)).fold(1.0f64, f64::max) * 1.35;
        let font = |px: f64| (FONT, px).into_font();
        // The paper's workload names under the axis; the stand-ins above each group.
        let labels: Vec<String> = m.workloads.iter().map(|w| w.stands_for.clone()).collect();
        let mut c = ChartBuilder::on(&rest)
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5..(groups as f64 - 0.5), 0.0..top)
            .map_err(msg)?;
        c.configure_mesh()
            .y_desc("relative to native (score / native score)")
            .axis_desc_style(font(17.0))
            .label_style(font(15.0))
            .x_labels(groups)
            .x_label_formatter(&|x| {
                let r = x.round();
                if (x - r).abs() > 1e-6 || r < 0.0 || r as usize >= labels.len() {
                    String::new()
                } else {
                    labels[r as usize].clone()
                }
            })
            .y_label_formatter(&|v| tidy(*v))
            .disable_x_mesh()
            .draw()
            .map_err(msg)?;
        let width = 0.8 / per as f64;
        let value_style = TextStyle::from(font(13.0)).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (si, (system, label)) in m.systems.iter().enumerate() {
            let color = SYSTEM_COLORS[si % SYSTEM_COLORS.len()];
            let mut rects = Vec::new();
            let mut texts = Vec::new();
            for (gi, w) in m.workloads.iter().enumerate() {
                let x0 = gi as f64 - 0.4 + si as f64 * width;
                let bar = w.bars.iter().find(|b| &b.system == system);
                match bar.and_then(|b| b.relative) {
                    Some(v) => {
                        rects.push(Rectangle::new([(x0 + 0.01, 0.0), (x0 + width - 0.01, v)], color.filled()));
                        texts.push(Text::new(
                            format!("{v:.2}"),
                            (x0 + width / 2.0, v + top * 0.01),
                            value_style.clone(),
                        ));
                    }
                    None => {
                        texts.push(Text::new("n/a".to_string(), (x0 + width / 2.0, top * 0.01), value_style.clone()))
                    }
                }
            }
            c.draw_series(rects)
                .map_err(msg)?
                .label(label.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], color.filled()));
            c.draw_series(texts).map_err(msg)?;
        }
        let stand_in = TextStyle::from(font(13.0)).pos(Pos::new(HPos::Center, VPos::Top)).color(&CAPTION_COLOR);
        c.draw_series(
            m.workloads
                .iter()
                .enumerate()
                .map(|(gi, w)| Text::new(format!("stand-in: {}", w.label), (gi as f64, top * 0.985), stand_in.clone())),
        )
        .map_err(msg)?;
        c.draw_series(std::iter::once(PathElement::new(
            vec![(-0.5, 1.0), (groups as f64 - 0.5, 1.0)],
            BASELINE_COLOR.stroke_width(1),
        )))
        .map_err(msg)?;
        c.configure_series_labels()
            .position(SeriesLabelPosition::Coordinate(20, 40))
            .margin(10)
            .label_font(font(14.0))
            .background_style(WHITE.mix(0.88))
            .border_style(RGBColor(120, 120, 120))
            .draw()
            .map_err(msg)?;
        Ok(())
    }
}

/// The relative-performance chart of `m`.
pub fn relative_performance(m: &MacroReport) -> Result<Chart, ReportError> {
    render(&RelativeFigure { m })
}

/// Draws the chart into `dir` as `relative.svg` and `relative.png`.
pub fn write(m: &MacroReport, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let (svg, png) = relative_performance(m)?.write(dir, "relative")?;
    Ok(vec![svg, png])
}

#[cfg(test)]
mod tests {
    use super::*;
    use results::bench::{MacroBar, MacroWorkload};

    #[test]
    fn every_bar_value_and_na_is_drawn() {
        let bar = |system: &str, rel: Option<f64>| MacroBar {
            system: system.into(),
            score: rel.map(|r| r * 100.0),
            unit: "ops/s".into(),
            relative: rel,
            na_reason: rel.is_none().then(|| "cannot run".into()),
            method: "m".into(),
        };
        let m = MacroReport {
            systems: vec![("native".into(), "native".into()), ("vmm-min".into(), "vmm-min guest".into())],
            workloads: vec![
                MacroWorkload {
                    id: "cpu".into(),
                    label: "CPU".into(),
                    stands_for: "SPEC INT2000".into(),
                    bars: vec![bar("native", Some(1.0)), bar("vmm-min", None)],
                },
                MacroWorkload {
                    id: "web".into(),
                    label: "HTTP".into(),
                    stands_for: "SPEC WEB99".into(),
                    bars: vec![bar("native", Some(1.0)), bar("vmm-min", Some(0.85))],
                },
            ],
        };
        let c = relative_performance(&m).expect("chart");
        for want in ["SPEC INT2000", "SPEC WEB99", "1.00", "0.85", "n/a", "vmm-min guest"] {
            assert!(c.svg.contains(want), "{want} missing");
        }
        assert!(c.png.starts_with(b"\x89PNG"));
    }
}
