//! The network link of a run: what the migration stream (and optionally the
//! guest's network) crosses between the simulated hosts, as the scenario
//! asked for it. Pure data and its parsing; `scenarios::link` applies it with
//! `tc`, the reports print it and divide by it.

use serde::{Deserialize, Serialize};

/// A shaped link between the source and the destination host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Rate limit in bit/s (tc's tbf), e.g. 1 Gbit/s = 1e9.
    #[serde(default)]
    pub bandwidth_bps: Option<u64>,
    /// One-way delay added (tc's netem), ms.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Delay variation (netem), ms.
    #[serde(default)]
    pub jitter_ms: Option<f64>,
    /// Packets dropped (netem), percent.
    #[serde(default)]
    pub loss_pct: Option<f64>,
    /// Shape the guest's network between the hosts too, not only the
    /// migration link.
    #[serde(default)]
    pub guest: bool,
}

impl Link {
    /// Whether any of latency, jitter or loss is asked for (they need netem).
    pub fn needs_netem(&self) -> bool {
        self.latency_ms.is_some() || self.jitter_ms.is_some() || self.loss_pct.is_some()
    }

    /// Time for `bytes` at the link's rate, ms (`None` without a rate).
    pub fn time_ms(&self, bytes: u64) -> Option<f64> {
        self.bandwidth_bps.map(|bps| bytes as f64 * 8.0 / bps as f64 * 1e3)
    }

    /// The link in words: "1 Gbit/s, 10 ms ± 2 ms delay, 0.1 % loss".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.bandwidth_bps {
            parts.push(format!("{} (tbf)", format_rate(b)));
        }
        match (self.latency_ms, self.jitter_ms) {
            (Some(l), Some(j)) => parts.push(format!("{l} ms ± {j} ms delay (netem)")),
            (Some(l), None) => parts.push(format!("{l} ms delay (netem)")),
            (None, Some(j)) => parts.push(format!("± {j} ms jitter (netem)")),
            (None, None) => {}
        }
        if let Some(p) = self.loss_pct {
            parts.push(format!("{p} % loss (netem)"));
        }
        if parts.is_empty() {
            parts.push("unshaped".into());
        }
        let mut s = parts.join(", ");
        s.push_str(if self.guest {
            "; on the migration link and the guest's network"
        } else {
            "; on the migration link"
        });
        s
    }
}

/// "1 Gbit/s", "500 Mbit/s", "64 kbit/s".
pub fn format_rate(bps: u64) -> String {
    let b = bps as f64;
    if bps >= 1_000_000_000 {
        format!("{} Gbit/s", b / 1e9)
    } else if bps >= 1_000_000 {
        format!("{} Mbit/s", b / 1e6)
    } else {
        format!("{} kbit/s", b / 1e3)
    }
}

/// Parses a rate as tc spells it, in bits per second: `1gbit`, `100mbit`,
/// `500kbit`, `800bit`; also `1G`, `500M`, `64K` (bits, SI multiples).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").unwrap_or(&t);
    let t = t.strip_suffix("bit").or_else(|| t.strip_suffix("bps")).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('g') => (&t[..t.len() - 1], 1e9),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('k') => (&t[..t.len() - 1], 1e3),
        _ => (t, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| {
        format!("malformed rate '{s}': expected e.g. \"1gbit\", \"100mbit\" or \"500M\" (bits per second)")
    })?;
    let bps = v * mult;
    // tc's tbf takes a 32-bit byte rate unless rate64 is used; 100 Gbit/s is far beyond a veth here.
    if !bps.is_finite() || !(8_000.0..=100e9).contains(&bps) {
        return Err(format!("rate '{s}' must be between 8kbit and 100gbit"));
    }
    Ok(bps.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_tc_spells_them() {
        assert_eq!(parse_rate("1gbit"), Ok(1_000_000_000));
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("500M"), Ok(500_000_000));
        assert_eq!(parse_rate("64kbit"), Ok(64_000));
        assert_eq!(parse_rate("2.5Gbit/s"), Ok(2_500_000_000));
        for bad in ["", "fast", "0", "-1gbit", "1tbit", "1e400", "nangbit"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn link_time_and_words() {
        let l = Link { bandwidth_bps: Some(1_000_000_000), ..Default::default() };
        assert_eq!(l.time_ms(125_000_000), Some(1000.0));
        assert!(!l.needs_netem());
        assert_eq!(l.describe(), "1 Gbit/s (tbf); on the migration link");
        let n = Link { latency_ms: Some(10.0), loss_pct: Some(0.5), guest: true, ..Default::default() };
        assert!(n.needs_netem() && n.time_ms(1).is_none());
        assert!(n.describe().contains("10 ms delay (netem)") && n.describe().contains("guest"));
    }
}
