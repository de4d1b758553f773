//! Chart text stays inside the canvas: every chart is rendered for a real
//! result (the committed sample run) carrying the longest description of the
//! built-in and shipped scenarios, and one far longer, and every horizontal
//! `<text>` of the SVG, measured with the charts' own font (DejaVu Sans, the
//! PNG's font) at the SVG's font size, must lie within the canvas.

use std::path::Path;

use ab_glyph::{Font, FontRef};
use reports::{charts, ScenarioResult};

/// The longest description among the built-in scenarios and the files in
/// `scenarios/files`.
fn longest_description() -> String {
    let mut descs = Vec::new();
    for name in ["idle", "loaded"] {
        descs.push(scenarios::scenario::Scenario::load(name).expect("built-in scenario").description);
    }
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/files");
    for e in std::fs::read_dir(&files).expect("scenarios/files") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            let s = scenarios::scenario::Scenario::load(p.to_str().expect("utf-8 path")).expect("scenario file");
            descs.push(s.description);
        }
    }
    descs.into_iter().max_by_key(|d| d.chars().count()).expect("at least one scenario")
}

fn sample(name: &str) -> ScenarioResult {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/sample-report/{name}.result.json"));
    ScenarioResult::load_json(&p).expect("sample result")
}

/// Width of `text` in px at SVG font size `px`.
fn width(font: &FontRef, text: &str, px: f64) -> f64 {
    let em = font.units_per_em().expect("units per em") as f64;
    let units: f64 = text.chars().map(|c| font.h_advance_unscaled(font.glyph_id(c)) as f64).sum();
    units / em * px
}

/// Every horizontal text of `svg` lies within its canvas; returns how many
/// texts were checked.
fn assert_text_inside(svg: &str, what: &str) -> usize {
    let regular = FontRef::try_from_slice(dejavu::sans::regular()).expect("font");
    let bold = FontRef::try_from_slice(dejavu::sans::bold()).expect("font");
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{what}: not XML: {e}"));
    let root = doc.root_element();
    let num = |n: roxmltree::Node, a: &str| -> f64 {
        n.attribute(a).unwrap_or_else(|| panic!("{what}: <{}> lacks {a}", n.tag_name().name())).parse().expect("number")
    };
    let (w, h) = (num(root, "width"), num(root, "height"));
    let mut checked = 0;
    for t in doc.descendants().filter(|n| n.has_tag_name("text")) {
        if t.attribute("transform").is_some() {
            continue; // the rotated y-axis descriptions
        }
        let text = t.text().unwrap_or_default().trim().to_string();
        if text.is_empty() {
            continue;
        }
        let (x, y, px) = (num(t, "x"), num(t, "y"), num(t, "font-size"));
        let font = if t.attribute("font-weight") == Some("bold") { &bold } else { &regular };
        let tw = width(font, &text, px);
        let (x0, x1) = match t.attribute("text-anchor") {
            Some("middle") => (x - tw / 2.0, x + tw / 2.0),
            Some("end") => (x - tw, x),
            _ => (x, x + tw),
        };
        let dy = match t.attribute("dy") {
            Some("0.76em") => 0.76 * px,
            Some("0.5ex") => 0.27 * px,
            Some("-0.5ex") => -0.27 * px,
            _ => 0.0,
        };
        let (y0, y1) = (y + dy - 0.76 * px, y + dy + 0.24 * px);
        assert!(
            x0 >= -0.5 && x1 <= w + 0.5 && y0 >= -0.5 && y1 <= h + 0.5,
            "{what}: text `{text}` spans x {x0:.0}..{x1:.0}, y {y0:.0}..{y1:.0}, outside the {w}x{h} canvas"
        );
        checked += 1;
    }
    checked
}

#[test]
fn chart_text_lies_within_the_canvas_for_the_longest_description() {
    let longest = longest_description();
    let absurd = format!("{longest}, {}", "with a description far longer than any title should be ".repeat(6));
    for desc in [longest.clone(), absurd] {
        let idle = sample("idle").with_description(desc.clone());
        let loaded = sample("loaded").with_description(desc.clone());
        let charts = [
            ("rate", charts::rate_progress(&loaded).expect("rate chart")),
            ("comparison", charts::comparison(&[&idle, &loaded]).expect("comparison")),
            ("rounds", charts::precopy_rounds(&loaded).expect("rounds chart")),
            ("overlay", charts::overlay(&loaded, &loaded).expect("overlay")),
        ];
        for (name, c) in &charts {
            let what = format!("{name} chart with a {}-character description", desc.chars().count());
            let n = assert_text_inside(&c.svg, &what);
            assert!(n > 20, "{what}: only {n} texts");
            // The title is among them, whole or wrapped (a word of it on
            // some line), so the check covered it.
            let first_word = charts::RATE_TITLE.split(' ').next().expect("word");
            if *name != "rounds" && *name != "overlay" {
                assert!(c.svg.contains(first_word), "{what}: no title");
            }
        }
    }
    // The old layout clipped the loaded title: the check catches that.
    let clipped = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1400\" height=\"700\"><text x=\"700\" y=\"8\" dy=\"0.76em\" \
         text-anchor=\"middle\" font-size=\"20.967741935483872\" font-weight=\"bold\">{}: loaded ({longest}) — \
         2026-11-26T08:10:56Z</text></svg>",
        charts::RATE_TITLE
    );
    let r = std::panic::catch_unwind(|| assert_text_inside(&clipped, "old layout"));
    assert!(r.is_err(), "a title wider than the canvas passed the check");
}
