//! Counters of the node's limits at work: upgrades refused by reason, and
//! requests refused by a per-socket or ingest limit. Each has a small fixed
//! set of label values (never one per client or symbol).

use crate::metrics::LabelledCounters;

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node is shutting down.
    Draining,
    /// `--max-connections` reached.
    MaxConnections,
    /// `--max-connections-per-ip` reached for the client's address.
    PerIp,
    /// No token, a bad one, or an expired one.
    Auth,
    /// An `Origin` outside the allow-list (or another site's, without one).
    Origin,
    /// Not a valid WebSocket upgrade request.
    BadHandshake,
}

/// A limit that refused part of a client's traffic without refusing its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A control message over the per-socket rate.
    RateLimited,
    /// A subscribe past the per-socket subscription limit.
    TooManySubscriptions,
    /// A client frame or message over the frame size (socket closed, 1009).
    FrameTooLarge,
    /// An ingest body over its byte or tick limit (413).
    IngestTooLarge,
}

/// The counters behind `marketmux_upgrades_refused_total{reason}` and
/// `marketmux_limit_hits_total{limit}`.
#[derive(Debug)]
pub struct LimitCounters {
    refused: LabelledCounters<6>,
    hits: LabelledCounters<4>,
}

impl Default for LimitCounters {
    fn default() -> Self {
        Self {
            refused: LabelledCounters::new([
                "draining",
                "max_connections",
                "per_ip",
                "auth",
                "origin",
                "bad_handshake",
            ]),
            hits: LabelledCounters::new([
                "rate_limited",
                "too_many_subscriptions",
                "frame_too_large",
                "ingest_too_large",
            ]),
        }
    }
}

impl LimitCounters {
    /// Counts one refused upgrade.
    pub fn refused(&self, why: Refusal) {
        self.refused.add(why as usize);
    }

    /// Counts one request refused by a limit.
    pub fn hit(&self, limit: LimitHit) {
        self.hits.add(limit as usize);
    }

    /// Refused upgrades, all reasons together.
    pub fn refused_total(&self) -> u64 {
        self.refused.by_label().map(|(_, n)| n).sum()
    }

    /// Refused upgrades as `(reason, count)` (for `/debug/vars`).
    pub fn refused_by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.refused.by_label()
    }

    /// Limit hits as `(limit, count)` (for `/debug/vars`).
    pub fn hits_by_limit(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.hits.by_label()
    }

    /// Appends both series in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        self.refused.render(
            out,
            "marketmux_upgrades_refused_total",
            "WebSocket upgrades refused, by reason.",
            "reason",
        );
        self.hits.render(
            out,
            "marketmux_limit_hits_total",
            "Client requests refused by a per-socket or ingest limit.",
            "limit",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_label_and_renders_every_label() {
        let c = LimitCounters::default();
        c.refused(Refusal::PerIp);
        c.refused(Refusal::PerIp);
        c.refused(Refusal::BadHandshake);
        c.hit(LimitHit::IngestTooLarge);
        assert_eq!(c.refused_total(), 3);
        let mut out = String::new();
        c.render(&mut out);
        assert!(
            out.contains("marketmux_upgrades_refused_total{reason=\"per_ip\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("marketmux_upgrades_refused_total{reason=\"draining\"} 0\n"));
        assert!(out.contains("marketmux_limit_hits_total{limit=\"ingest_too_large\"} 1\n"));
        assert_eq!(out.matches("# TYPE").count(), 2);
    }
}
