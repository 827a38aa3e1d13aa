//! [`LabelledCounters`]: one atomic counter per value of a small fixed label
//! set, read only when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::text::header;

/// One counter per value of a small fixed label set (`N` values, known at
/// compile time), each a plain atomic: counting is one `fetch_add`.
#[derive(Debug)]
pub struct LabelledCounters<const N: usize> {
    labels: [&'static str; N],
    counts: [AtomicU64; N],
}

impl<const N: usize> LabelledCounters<N> {
    /// Counters at zero for `labels`; [`add`](Self::add) takes an index into them.
    pub fn new(labels: [&'static str; N]) -> Self {
        Self {
            labels,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one event for `labels[i]`. Panics if `i >= N`: indexes come
    /// from the code (an enum's discriminant), never from input.
    pub fn add(&self, i: usize) {
        self.counts[i].fetch_add(1, Relaxed);
    }

    /// Each label with its count, in the fixed order.
    pub fn by_label(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.labels
            .iter()
            .zip(&self.counts)
            .map(|(l, c)| (*l, c.load(Relaxed)))
    }

    /// Appends the counter family `name{label="…"}`, one series per label value.
    pub fn render(&self, out: &mut String, name: &str, help: &str, label: &str) {
        header(out, "counter", name, help);
        for (value, n) in self.by_label() {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_label_in_order() {
        let c = LabelledCounters::new(["a", "b", "c"]);
        c.add(2);
        c.add(2);
        c.add(0);
        assert_eq!(
            c.by_label().collect::<Vec<_>>(),
            [("a", 1), ("b", 0), ("c", 2)]
        );
        let mut out = String::new();
        c.render(&mut out, "x_total", "Xs.", "kind");
        assert_eq!(
            out,
            "# HELP x_total Xs.\n# TYPE x_total counter\n\
             x_total{kind=\"a\"} 1\nx_total{kind=\"b\"} 0\nx_total{kind=\"c\"} 2\n"
        );
    }
}
