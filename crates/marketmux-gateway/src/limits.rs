//! Counters of the node's limits at work: connections and upgrades refused
//! by reason, and requests refused by a per-socket, request or ingest limit.
//! Each has a small fixed set of label values (never one per client or
//! symbol). [`ConnectionSlot`]: a connection's place under the per-address
//! and per-node limits. [`SubscriptionsPerIp`]: subscriptions held by all
//! sockets of one address. [`check_per_socket`] and [`reserve_per_ip`]: the
//! two subscription bounds, as tick and candle subscribes both apply them (a
//! tick subscription and a candle series, symbol × interval, count one each).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::state::GatewayState;
use marketmux_metrics::LabelledCounters;

/// Why a connection or an upgrade was refused.
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
    /// A request head or body not received in time (408, connection closed).
    RequestTimeout,
    /// A request head over its byte limit (431 or 414, connection closed).
    HeadTooLarge,
    /// A subscribe past `--max-subscriptions-per-ip` (all sockets of one address).
    SubscriptionsPerIp,
    /// A subscribe that would create a topic past `--max-topics`.
    MaxTopics,
}

/// The counters behind `marketmux_upgrades_refused_total{reason}` and
/// `marketmux_limit_hits_total{limit}`.
#[derive(Debug)]
pub struct LimitCounters {
    refused: LabelledCounters<6>,
    hits: LabelledCounters<8>,
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
                "request_timeout",
                "head_too_large",
                "subscriptions_per_ip",
                "max_topics",
            ]),
        }
    }
}

impl LimitCounters {
    /// Counts one refused connection or upgrade.
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
            "Connections and WebSocket upgrades refused, by reason.",
            "reason",
        );
        self.hits.render(
            out,
            "marketmux_limit_hits_total",
            "Client requests refused by a per-socket, request or ingest limit.",
            "limit",
        );
    }
}

/// One open connection's place under `--max-connections-per-ip` and
/// `--max-connections`, from accept until the connection (or the WebSocket it
/// became) is gone: released on drop. Shared (`Arc`) by the HTTP connection
/// and the socket it upgrades to.
pub struct ConnectionSlot {
    state: Arc<GatewayState>,
    ip: IpAddr,
}

impl ConnectionSlot {
    /// Takes a slot for `ip` if both limits allow; `total` is the node's cap.
    pub fn take(state: &Arc<GatewayState>, ip: IpAddr, total: usize) -> Result<Self, Refusal> {
        state
            .registry
            .reserve_ip(ip, state.config.max_connections_per_ip, total)?;
        Ok(Self {
            state: state.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.registry.release_ip(self.ip);
    }
}

/// Checks `--max-subscriptions` for a socket that holds `held`
/// subscriptions (tick subscriptions and candle series together) and asks
/// for `fresh` more `what` ("symbols", "candle series"). `Err` is the
/// refusal's message (the hit is counted); the caller refuses the subscribe
/// whole with `too_many_subscriptions`.
pub fn check_per_socket(
    state: &GatewayState,
    held: usize,
    fresh: usize,
    what: &str,
) -> Result<(), String> {
    let limit = state.config.max_subscriptions;
    if held + fresh <= limit {
        return Ok(());
    }
    state.stats.limits.hit(LimitHit::TooManySubscriptions);
    Err(format!(
        "subscribing to {fresh} more {what} would exceed the limit of {limit} per connection ({held} in use)"
    ))
}

/// Takes `fresh` places for `peer` under `--max-subscriptions-per-ip`, for
/// `fresh` more `what` ("symbols", "candle series"); the caller gives them
/// back with [`SubscriptionsPerIp::release`]. `Err` is the refusal's message
/// (the hit is counted, nothing taken).
pub fn reserve_per_ip(
    state: &GatewayState,
    peer: IpAddr,
    fresh: usize,
    what: &str,
) -> Result<(), String> {
    let per_ip = state.config.max_subscriptions_per_ip;
    state
        .subscriptions_per_ip
        .reserve(peer, fresh, per_ip)
        .map_err(|held| {
            state.stats.limits.hit(LimitHit::SubscriptionsPerIp);
            format!(
                "subscribing to {fresh} more {what} would exceed the limit of {per_ip} per client address ({held} in use over all its connections)"
            )
        })
}

/// Subscriptions held by all sockets of each client address, under
/// `--max-subscriptions-per-ip`: a subscribe that would take an address past
/// it is refused whole (`too_many_subscriptions`), the socket stays open.
#[derive(Debug, Default)]
pub struct SubscriptionsPerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl SubscriptionsPerIp {
    /// Takes `n` more for `ip` if that keeps it within `max` (0: no limit);
    /// `Err` holds how many the address already has.
    pub fn reserve(&self, ip: IpAddr, n: usize, max: usize) -> Result<(), usize> {
        if n == 0 {
            return Ok(());
        }
        let mut counts = self.counts.lock();
        let held = counts.get(&ip).copied().unwrap_or(0);
        if max > 0 && held + n > max {
            return Err(held);
        }
        counts.insert(ip, held + n);
        Ok(())
    }

    /// Gives back `n` taken by [`SubscriptionsPerIp::reserve`].
    pub fn release(&self, ip: IpAddr, n: usize) {
        let mut counts = self.counts.lock();
        if let Some(held) = counts.get_mut(&ip) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Addresses holding subscriptions (for leak checks).
    pub fn ips(&self) -> usize {
        self.counts.lock().len()
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

    #[test]
    fn subscriptions_per_ip_are_counted_over_sockets() {
        let s = SubscriptionsPerIp::default();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(s.reserve(a, 3, 4), Ok(()));
        assert_eq!(s.reserve(a, 2, 4), Err(3));
        assert_eq!(s.reserve(b, 4, 4), Ok(()));
        s.release(a, 3);
        assert_eq!(s.reserve(a, 4, 4), Ok(()));
        assert_eq!(s.reserve(a, 1_000, 0), Ok(()), "0: no limit");
        s.release(a, 1_004);
        s.release(b, 4);
        assert_eq!(s.ips(), 0);
    }
}
