//! Durations and numbers as the spec writes them and as each backend wants them back. Kept apart
//! because every output depends on these exact renderings: a window printed two ways would make
//! a Prometheus rule, its test and a Terraform input silently disagree.

use anyhow::{bail, Context, Result};
use rust_decimal::Decimal;
use std::str::FromStr;

const UNITS: [(&str, u64); 5] = [
    ("w", 604_800),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
];

/// Parses `30s`, `5m`, `1h`, `3d`, `2w` (one number, one unit) into seconds.
pub fn parse_duration(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .with_context(|| format!("duration {text:?} has no unit (s, m, h, d or w)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("duration {text:?} does not start with a whole number"))?;
    let Some((_, factor)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        bail!("duration {text:?}: unit {unit:?} is not one of s, m, h, d, w");
    };
    if number == 0 {
        bail!("duration {text:?} is zero");
    }
    Ok(number * factor)
}

/// The shortest Prometheus duration for `seconds` in one unit (`1d`, `6h`, `72m`, `5s`).
pub fn prom_duration(seconds: u64) -> String {
    for (unit, factor) in &UNITS[1..] {
        if seconds.is_multiple_of(*factor) {
            return format!("{}{unit}", seconds / factor);
        }
    }
    unreachable!("seconds divide by 1")
}

/// A burn-rate monitor's short window, always in minutes (`5m`, `120m`): Datadog's burn-rate
/// alert docs give the long window in hours and the short one in minutes, so `2h` is not a
/// short window it documents. Windows come from the spec in whole minutes.
pub fn datadog_short_window(seconds: u64) -> String {
    format!("{}m", seconds / 60)
}

/// A duration in minutes or hours only, as Datadog's burn-rate windows take it (`5m`, `24h`).
pub fn datadog_window(seconds: u64) -> String {
    if seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else {
        format!("{}m", seconds / 60)
    }
}

/// A duration for people: `2d 2h`, `5d`, `21m 36s`.
pub fn human_duration(seconds: u64) -> String {
    let mut rest = seconds;
    let mut parts = Vec::new();
    for (unit, factor) in &UNITS[1..] {
        if rest >= *factor {
            parts.push(format!("{}{unit}", rest / factor));
            rest %= factor;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// A YAML number (as serde_yaml read it) as an exact decimal. serde_yaml prints floats with
/// the shortest representation that reads back the same, so `0.9995` stays `0.9995`.
pub fn decimal(number: &serde_yaml::Number) -> Result<Decimal> {
    Decimal::from_str(&number.to_string())
        .or_else(|_| Decimal::from_scientific(&number.to_string()))
        .with_context(|| format!("{number} is not a decimal number"))
}

/// A decimal without trailing zeros (`0.25`, `1`, `14.4`).
pub fn plain(d: Decimal) -> String {
    d.normalize().to_string()
}

/// A bucket boundary as Datadog's OTLP ingestion spells it in the `upper_bound` / `lower_bound`
/// tags of `<histogram>.bucket`: Go's shortest `%g`, with `.0` added to whole numbers (`0.25`,
/// `1.0`, `60.0`; `formatFloat` in DataDog/opentelemetry-mapping-go, pkg/otlp/metrics). Only the
/// range where `%g` prints positional digits is supported; anything else is refused rather than
/// guessed.
pub fn datadog_bound(d: Decimal) -> anyhow::Result<String> {
    let d = d.normalize();
    if d.is_zero() {
        return Ok("0".into());
    }
    let magnitude = d.abs();
    anyhow::ensure!(
        magnitude >= Decimal::new(1, 4) && magnitude < Decimal::new(1_000_000, 0),
        "bucket boundary {d}: Datadog prints it in exponent form, which this generator does not \
         reproduce"
    );
    Ok(if d.fract().is_zero() {
        format!("{d}.0")
    } else {
        d.to_string()
    })
}

/// A fraction as a percentage for people: `0.0005` -> `0.05 %`.
pub fn percent(fraction: Decimal) -> String {
    format!("{} %", plain(fraction * Decimal::ONE_HUNDRED))
}

/// A decimal as a JSON number. serde_json prints an f64 with the shortest digits that read back
/// the same, so a decimal with a short expansion (all of these) prints as written.
pub fn json_number(d: Decimal) -> serde_json::Value {
    let f: f64 = plain(d).parse().expect("a decimal is a float");
    serde_json::Value::from(f)
}

/// Go's `%.4g` of `v`, which Prometheus' `humanizePercentage` uses (`100`, `0.2`, `50.36`).
pub fn go_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    let decimals = (3 - exp).max(0) as usize;
    let mut s = format!("{v:.decimals$}");
    // Rounding can carry into a new digit (9.9996 -> 10.000): redo with one decimal less.
    let digits = s.trim_start_matches('-').replace('.', "");
    if digits.trim_start_matches('0').len() > 4 && decimals > 0 {
        let d = decimals - 1;
        s = format!("{v:.d$}");
    }
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_in_their_largest_whole_unit() {
        assert_eq!(parse_duration("5m").unwrap(), 300);
        assert_eq!(parse_duration("3d").unwrap(), 259_200);
        assert_eq!(prom_duration(86_400), "1d");
        assert_eq!(prom_duration(4_320), "72m");
        assert_eq!(prom_duration(5), "5s");
        assert_eq!(datadog_window(86_400), "24h");
        let b = |s: &str| datadog_bound(s.parse().unwrap()).unwrap();
        assert_eq!(
            [
                b("0.005"),
                b("0.25"),
                b("1"),
                b("1.0"),
                b("60"),
                b("2.50"),
                b("0")
            ],
            ["0.005", "0.25", "1.0", "1.0", "60.0", "2.5", "0"]
        );
        assert!(datadog_bound("0.00001".parse().unwrap()).is_err());
        assert!(datadog_bound("1000000".parse().unwrap()).is_err());
        assert_eq!(datadog_window(1_800), "30m");
        assert_eq!(datadog_short_window(7_200), "120m");
        assert_eq!(datadog_short_window(1_800), "30m");
        assert_eq!(datadog_short_window(300), "5m");
        assert_eq!(human_duration(180_000), "2d 2h");
        assert_eq!(human_duration(1_296), "21m 36s");
    }

    #[test]
    fn durations_without_a_unit_or_zero_are_rejected() {
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn go_g4_matches_prometheus_humanize_percentage() {
        assert_eq!(go_g4(100.0), "100");
        assert_eq!(go_g4(0.2 + 1e-15), "0.2");
        assert_eq!(go_g4(50.36), "50.36");
        assert_eq!(go_g4(0.025), "0.025");
        assert_eq!(go_g4(86.00000000001), "86");
    }
}
