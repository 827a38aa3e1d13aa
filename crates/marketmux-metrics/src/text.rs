//! Series in Prometheus text exposition format (version 0.0.4), appended to
//! a `String` that one `/metrics` answer is built in.

use std::fmt::{Display, Write as _};

/// The `Content-Type` of Prometheus text exposition.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends the `# HELP` and `# TYPE` lines of a family; `kind` is
/// `counter`, `gauge` or `histogram`.
pub fn header(out: &mut String, kind: &str, name: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends one unlabelled counter.
pub fn counter(out: &mut String, name: &str, help: &str, value: impl Display) {
    unlabelled(out, "counter", name, help, value);
}

/// Appends one unlabelled gauge.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl Display) {
    unlabelled(out, "gauge", name, help, value);
}

fn unlabelled(out: &mut String, kind: &str, name: &str, help: &str, value: impl Display) {
    header(out, kind, name, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Appends unlabelled counters: `(name, help, value)` each.
pub fn counters(out: &mut String, series: &[(&str, &str, u64)]) {
    for (name, help, value) in series {
        counter(out, name, help, value);
    }
}

/// Appends `marketmux_component_up{component}`: 1 for each `(name, up)`
/// whose component answers, else 0.
pub fn component_up<'a>(out: &mut String, components: impl IntoIterator<Item = (&'a str, bool)>) {
    let name = "marketmux_component_up";
    header(out, "gauge", name, "1 when the component answers.");
    for (component, up) in components {
        let _ = writeln!(out, "{name}{{component=\"{component}\"}} {}", up as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_parse_back() {
        let mut out = String::new();
        counter(&mut out, "a_total", "As.", 3);
        gauge(&mut out, "b", "B now.", 1.5);
        counters(&mut out, &[("c_total", "Cs.", 7), ("d_total", "Ds.", 0)]);
        component_up(&mut out, [("redis", true), ("kafka", false)]);
        let s = marketmux_test_support::exposition::parse(&out).unwrap();
        assert_eq!(s["a_total"], 3.0);
        assert_eq!(s["b"], 1.5);
        assert_eq!(s["c_total"], 7.0);
        assert_eq!(s["d_total"], 0.0);
        assert_eq!(s["marketmux_component_up{component=\"redis\"}"], 1.0);
        assert_eq!(s["marketmux_component_up{component=\"kafka\"}"], 0.0);
        assert!(out.starts_with("# HELP a_total As.\n# TYPE a_total counter\na_total 3\n"));
        assert!(out.contains("# TYPE b gauge\n"));
    }
}
