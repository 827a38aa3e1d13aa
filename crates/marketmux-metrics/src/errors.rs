//! Failures of the outside components a node depends on, for
//! `marketmux_errors_total{component, op}` on `/metrics`.
//!
//! Recorded through the `metrics` facade: a no-op until the binary installs a
//! recorder, and only touched on a failure, never per tick. Every label value
//! is a `&'static str` from the code, never from input, so the series set is
//! small and fixed.

/// The series name of every component error.
pub const ERRORS: &str = "marketmux_errors_total";

/// An outside component a role talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Redis: the edge bus and the latest prices.
    Redis,
    /// Kafka: the tick topic.
    Kafka,
    /// The alert store's database.
    Database,
    /// An upstream market-data source (Finnhub).
    Feed,
}

impl Component {
    /// The `component` label.
    pub fn label(self) -> &'static str {
        match self {
            Component::Redis => "redis",
            Component::Kafka => "kafka",
            Component::Database => "database",
            Component::Feed => "feed",
        }
    }
}

/// Counts one failed `op` (a short verb: "publish", "read", "commit", …).
pub fn error(component: Component, op: &'static str) {
    errors(component, op, 1);
}

/// Counts `n` failures at once (messages dropped together).
pub fn errors(component: Component, op: &'static str, n: u64) {
    metrics::counter!(ERRORS, "component" => component.label(), "op" => op).increment(n);
}

/// Makes the series of `ops` show at 0 before any failure, so a dashboard's
/// `rate()` has a series to start from.
pub fn register(component: Component, ops: &[&'static str]) {
    metrics::describe_counter!(
        ERRORS,
        "Failed operations against an outside component (Redis, Kafka, the database, the feed)."
    );
    for &op in ops {
        errors(component, op, 0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    /// Every `marketmux_errors_total` series recorded, by (component, op).
    fn error_counts(recorder: &DebuggingRecorder) -> HashMap<(String, String), u64> {
        let label = |key: &metrics::Key, name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == ERRORS)
            .filter_map(|(k, _, _, v)| match v {
                DebugValue::Counter(n) => {
                    Some(((label(k.key(), "component"), label(k.key(), "op")), n))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn failures_are_counted_by_component_and_operation() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            register(Component::Redis, &["publish", "read"]);
            error(Component::Redis, "publish");
            error(Component::Redis, "publish");
            errors(Component::Kafka, "lagged", 3);
        });
        let counts = error_counts(&recorder);
        let at = |c: &str, op: &str| counts.get(&(c.to_owned(), op.to_owned())).copied();
        assert_eq!(at("redis", "publish"), Some(2));
        assert_eq!(at("redis", "read"), Some(0), "registered series start at 0");
        assert_eq!(at("kafka", "lagged"), Some(3));
        assert_eq!(at("database", "query"), None);
    }
}
