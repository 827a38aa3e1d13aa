//! [`parse`]: Prometheus text exposition read back, its shape checked, for
//! tests that scrape `/metrics`; [`series`]: what a scrape offers, without
//! the values, for tests that pin the set of series down.

use std::collections::{HashMap, HashSet};

const KINDS: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];

/// Every sample of `text`, keyed by its series as written (`name{labels}`).
///
/// Fails, naming the line, unless every sample line is `name{labels} value`
/// with a valid name and number, and its family was announced by `# TYPE`
/// before it.
pub fn parse(text: &str) -> Result<HashMap<String, f64>, String> {
    let mut typed = HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                return Err(format!("TYPE without a name and kind: {line}"));
            };
            if !KINDS.contains(&kind) {
                return Err(format!("unknown kind: {line}"));
            }
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            if !line.starts_with("# HELP ") {
                return Err(format!("unknown comment: {line}"));
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line}"))?;
        let value: f64 = value.parse().map_err(|_| format!("bad value: {line}"))?;
        let name = series.split('{').next().unwrap_or_default();
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let labels = &series[name.len()..];
        let valid_labels = labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}'));
        if !valid_name || !valid_labels {
            return Err(format!("bad series: {line}"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        if !typed.contains(family) {
            return Err(format!("sample before its TYPE: {line}"));
        }
        samples.insert(series.to_string(), value);
    }
    Ok(samples)
}

/// The `# HELP` and `# TYPE` lines and the series (`name{labels}`) of
/// `text`, in order, without the sample values: one per line. Two scrapes
/// have the same series, help and types when their `series` are equal.
pub fn series(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let kept = match line.starts_with('#') {
            true => line,
            false => line.rsplit_once(' ').map_or(line, |(series, _)| series),
        };
        out.push_str(kept);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labelled_and_histogram_samples() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
        let s = parse(text).unwrap();
        assert_eq!(s["a_total{x=\"1\"}"], 3.0);
        assert_eq!(s["h_count"], 2.0);
    }

    #[test]
    fn series_drop_the_values_only() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1 2\"} 3\nb 0.5\n";
        assert_eq!(
            series(text),
            "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1 2\"}\nb\n"
        );
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in [
            "a 1\n",
            "# TYPE a counter\na one\n",
            "# TYPE a counter\na{x=\"1\" 1\n",
            "# TYPE a thing\na 1\n",
            "# note\n",
            "# TYPE a counter\na\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
