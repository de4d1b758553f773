//! Text that fits: headings and captions laid out within a width.
//!
//! A line is measured with the same font the PNG is drawn with (plotters'
//! `estimate_text_size` on the embedded DejaVu Sans), wrapped at spaces onto
//! at most a few lines, and shrunk step by step until every line fits; a
//! line that still does not fit at the smallest size is cut with an
//! ellipsis. So no title is ever clipped at the canvas edge. The SVG draws
//! the same text at plotters' `size / 1.24` em, narrower than the PNG, so a
//! line that fits the PNG fits the SVG.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{msg, CAPTION_COLOR, FONT};

/// Horizontal room left free on each side of a heading, px.
const SIDE_MARGIN: u32 = 16;
/// The smallest a fitted text shrinks to, as a fraction of its size.
const MIN_SCALE: f64 = 0.55;

fn style(px: f64, bold: bool) -> TextStyle<'static> {
    // `FontDesc::style` keeps the regular face's glyphs; asking for the
    // style up front loads the bold face, so widths match what is drawn.
    TextStyle::from((FONT, px, if bold { FontStyle::Bold } else { FontStyle::Normal }).into_font())
}

/// Text wrapped and sized to fit a width.
#[derive(Debug, Clone)]
pub(super) struct Fitted {
    /// The lines.
    pub lines: Vec<String>,
    /// The font size they fit at.
    pub px: f64,
    /// Bold?
    pub bold: bool,
}

impl Fitted {
    /// Height of the block, px.
    pub fn height(&self) -> u32 {
        (self.lines.len() as f64 * self.px * 1.18).ceil() as u32
    }

    /// Fit `text` into `max_w` px on at most `max_lines` lines, starting at
    /// `px` and shrinking to [`MIN_SCALE`] of it.
    pub fn fit<DB: DrawingBackend>(
        area: &DrawingArea<DB, Shift>,
        text: &str,
        px: f64,
        bold: bool,
        max_w: u32,
        max_lines: usize,
    ) -> Result<Fitted, String> {
        let min_px = (px * MIN_SCALE).max(8.0);
        let mut size = px;
        loop {
            let st = style(size, bold);
            let width = |t: &str| area.estimate_text_size(t, &st).map(|(w, _)| w).map_err(msg);
            let lines = wrap(text, max_w, &width)?;
            let mut fits = lines.len() <= max_lines.max(1);
            for l in &lines {
                fits &= width(l)? <= max_w;
            }
            if fits {
                return Ok(Fitted { lines, px: size, bold });
            }
            if size <= min_px {
                let cut = lines.len() > max_lines.max(1);
                let mut lines: Vec<String> = lines.into_iter().take(max_lines.max(1)).collect();
                let n = lines.len();
                for (i, l) in lines.iter_mut().enumerate() {
                    if width(l)? > max_w || (cut && i + 1 == n) {
                        *l = ellipsize(l, max_w, &width)?;
                    }
                }
                return Ok(Fitted { lines, px: size, bold });
            }
            size = (size * 0.92).max(min_px);
        }
    }

    /// Draw the lines centred on `cx`, the first line's top at `top`.
    pub fn draw_centred<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        cx: i32,
        top: i32,
        color: &RGBColor,
    ) -> Result<(), String> {
        let st = style(self.px, self.bold).color(color).pos(Pos::new(HPos::Center, VPos::Top));
        for (i, l) in self.lines.iter().enumerate() {
            area.draw_text(l, &st, (cx, top + (i as f64 * self.px * 1.18) as i32)).map_err(msg)?;
        }
        Ok(())
    }
}

/// Greedy word wrap at spaces.
fn wrap(text: &str, max_w: u32, width: &dyn Fn(&str) -> Result<u32, String>) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let cand = if cur.is_empty() { word.to_string() } else { format!("{cur} {word}") };
        if cur.is_empty() || width(&cand)? <= max_w {
            cur = cand;
        } else {
            lines.push(std::mem::replace(&mut cur, word.to_string()));
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    Ok(lines)
}

/// `l` cut so that it and a trailing ellipsis fit `max_w`.
fn ellipsize(l: &str, max_w: u32, width: &dyn Fn(&str) -> Result<u32, String>) -> Result<String, String> {
    let mut chars: Vec<char> = l.chars().collect();
    loop {
        let cand: String = chars.iter().collect::<String>().trim_end().to_string() + "…";
        if chars.is_empty() || width(&cand)? <= max_w {
            return Ok(cand);
        }
        chars.pop();
    }
}

/// A chart heading: a bold title and a grey subtitle, each fitted to the
/// area's width (the title on up to 2 lines, the subtitle on up to 2).
pub(super) struct Heading {
    title: Fitted,
    subtitle: Option<Fitted>,
}

impl Heading {
    /// Lay out `title` and `subtitle` for `area`'s width at `px`.
    pub fn fit<DB: DrawingBackend>(
        area: &DrawingArea<DB, Shift>,
        title: &str,
        subtitle: &str,
        px: f64,
    ) -> Result<Heading, String> {
        let max_w = area.dim_in_pixel().0.saturating_sub(2 * SIDE_MARGIN).max(1);
        let title = Fitted::fit(area, title, px, true, max_w, 2)?;
        let subtitle =
            (!subtitle.is_empty()).then(|| Fitted::fit(area, subtitle, px * 0.7, false, max_w, 2)).transpose()?;
        Ok(Heading { title, subtitle })
    }

    /// Height the heading takes, px.
    pub fn height(&self) -> u32 {
        8 + self.title.height() + self.subtitle.as_ref().map_or(0, |s| 4 + s.height()) + 10
    }

    /// Draw the heading at the top of `area`; returns the area below it.
    pub fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<DrawingArea<DB, Shift>, String> {
        let (top, rest) = area.split_vertically(self.height());
        let cx = area.dim_in_pixel().0 as i32 / 2;
        self.title.draw_centred(&top, cx, 8, &BLACK)?;
        if let Some(s) = &self.subtitle {
            s.draw_centred(&top, cx, 8 + self.title.height() as i32 + 4, &CAPTION_COLOR)?;
        }
        Ok(rest)
    }
}

/// Draw `text` as a panel caption (bold, one or two lines) at the top of
/// `area`; returns the area below it.
pub(super) fn caption<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    px: f64,
) -> Result<DrawingArea<DB, Shift>, String> {
    let f = fit_caption(area, text, px)?;
    draw_caption(area, &f, f.height())
}

/// [`caption`]'s layout, for panels side by side that share one caption
/// height.
pub(super) fn fit_caption<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    px: f64,
) -> Result<Fitted, String> {
    let max_w = area.dim_in_pixel().0.saturating_sub(2 * SIDE_MARGIN).max(1);
    Fitted::fit(area, text, px, true, max_w, 2)
}

/// Draw a fitted caption in a strip `height` px high (at least its own) at
/// the top of `area`; returns the area below it.
pub(super) fn draw_caption<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    f: &Fitted,
    height: u32,
) -> Result<DrawingArea<DB, Shift>, String> {
    let (top, rest) = area.split_vertically(height.max(f.height()) + 10);
    f.draw_centred(&top, area.dim_in_pixel().0 as i32 / 2, 6, &BLACK)?;
    Ok(rest)
}
