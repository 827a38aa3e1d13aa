//! The result of a run: one serialisable [`Report`] and its text form.

use std::fmt;

use serde::Serialize;

use crate::client::Protocol;
use crate::stats::Percentiles;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub scenario: Scenario,
    pub connections: Connections,
    pub publish: Publish,
    pub deliveries: Deliveries,
    /// End-to-end latency (tick timestamp to client receive) of live deliveries.
    pub latency: Percentiles,
    /// Length of the windows in `latency_windows`, seconds.
    pub latency_window_s: f64,
    /// The same latency per window of time from the clients' start (the
    /// first window includes connecting).
    pub latency_windows: Vec<Percentiles>,
    /// The server's figures (`--server-pid`); a cluster's nodes added up.
    pub server: Option<Server>,
    /// The shared bus's CPU (`--bus-pid`).
    pub bus: Option<Bus>,
    /// This process's own CPU over the same window (it shares the cores with the server).
    pub generator: Generator,
    /// Sockets the server closed (or that broke) after setup.
    pub closed_by_server: u64,
    /// Sockets reopened after a close (`--reconnect`, `--reconnect-every`).
    pub reconnects: u64,
    /// Resubscribes from a position, with `--reconnect` or `--reconnect-every`.
    pub recovery: Option<Recovery>,
    /// Candle messages, with `--candles`.
    pub candles: Option<Candles>,
    /// `{"type":"error"}` messages, NATS `-ERR`s or `pusher:error`s received.
    pub server_errors: u64,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub protocol: Protocol,
    /// Where ticks are published (the first of `urls`).
    pub url: String,
    pub urls: Vec<String>,
    pub reconnect_every_s: Option<f64>,
    /// Resubscribes carry positions (`since`); false with `--no-recovery`.
    pub recovery: bool,
    /// `max_rate` of every subscribe (`--max-rate`).
    pub max_rate: Option<f64>,
    /// permessage-deflate offered (`--compression`).
    pub compression: bool,
    pub clients: usize,
    pub slow_clients: usize,
    pub symbols: usize,
    pub subs_per_client: usize,
    pub zipf: Option<f64>,
    pub publish_rate: f64,
    /// Time between publish batches, ms: a batch holds rate × interval ticks.
    pub publish_interval_ms: f64,
    pub duration_s: f64,
    /// Threads the clients ran on.
    pub client_threads: usize,
    /// `--wake-interval` in µs; None: each thread woke per message.
    pub wake_interval_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    pub opened: u64,
    pub failed: u64,
    pub subscribed: u64,
    /// Sockets (openings, reconnects included) with permessage-deflate agreed.
    pub compressed: u64,
    /// TCP connect + WebSocket upgrade.
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    pub connect_phase_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Publish {
    pub ticks: u64,
    pub batches: u64,
    pub errors: u64,
    pub achieved_rate: f64,
    /// How long the server took to accept each batch (HTTP 202, or the NATS write).
    pub batch_accept: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deliveries {
    /// Σ over symbols of ticks published × reading subscribers.
    pub expected: u64,
    /// Live ticks received once, replays included.
    pub received: u64,
    /// Of `received`, ticks replayed after a resubscribe with `since`.
    pub recovered: u64,
    /// Ticks skipped per `seq` jumps on a live socket: conflated away by the server.
    pub conflated: u64,
    /// Neither received nor conflated: skipped across a reconnect
    /// (`recovery.seam_gaps`), lost, or still in flight at the end.
    pub missing: u64,
    /// Ticks whose `seq` was at or below one already received for that symbol
    /// in the same epoch (not counted in `received`).
    pub duplicated: u64,
    /// Snapshots after subscribe (not counted as deliveries).
    pub snapshots: u64,
    pub malformed: u64,
    /// Received deliveries per second over the measuring window.
    pub per_sec: f64,
    /// From the first publish to the end of the drain.
    pub window_s: f64,
    /// Bytes read off the sockets, as on the wire (compressed where agreed).
    pub bytes_in: u64,
    /// `bytes_in` over `received`: what one delivery costs on the wire,
    /// framing, acks and snapshots included.
    pub bytes_per_delivery: Option<f64>,
}

/// What the resubscribes after reconnects asked for and got.
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    /// Sockets closed by the clients on schedule (`--reconnect-every`).
    pub forced_reconnects: u64,
    /// Streams (client × symbol) resubscribed with a position (`since`).
    pub resumed: u64,
    /// Of `resumed`, answered `recovered:true`.
    pub recovered: u64,
    /// Of `resumed`, answered `recovered:false` (or not answered at all).
    pub refused: u64,
    /// Streams whose epoch changed across a reconnect (the sequence started again).
    pub new_epochs: u64,
    /// Subscribes (client × symbol) answered without an epoch: that server
    /// numbers ticks per connection, so nothing is matched across reconnects
    /// (a snapshot after one counts as received again, a new node's `seq`
    /// as a jump).
    pub unnumbered: u64,
    /// Ticks skipped where a replay should have covered them: between a
    /// position and the first live tick after the resubscribe (part of `missing`).
    pub seam_gaps: u64,
}

/// Candle messages the clients received (`--candles`). Not matched against
/// an expectation: updates of a candle are conflated for a slow socket, and
/// how many intervals close depends on the clock.
#[derive(Debug, Clone, Serialize)]
pub struct Candles {
    /// The intervals every client followed.
    pub intervals: Vec<String>,
    /// `{"type":"candle"}` messages: live updates, the current candle on
    /// subscribe, and closes.
    pub received: u64,
    /// Of `received`, with `closed:true`.
    pub closed: u64,
    pub per_sec: f64,
    /// Server CPU over ticks and candle messages received, µs.
    pub server_cpu_us_per_message: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    pub cpu_s: f64,
    pub cpu_cores: f64,
    pub cpu_us_per_delivery: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// The first server process.
    pub pid: u32,
    /// Each node's CPU when several were given (empty for one).
    pub nodes: Vec<NodeCpu>,
    /// utime + stime over the measuring window.
    pub cpu_s: f64,
    /// Server CPU over received deliveries, µs.
    pub cpu_us_per_delivery: Option<f64>,
    /// Average cores busy over the window.
    pub cpu_cores: f64,
    pub rss_before_kib: u64,
    /// RSS once every client was connected and subscribed.
    pub rss_connected_kib: u64,
    /// Highest RSS sampled during the run (every 250 ms).
    pub rss_peak_kib: u64,
    /// VmHWM at the end (the process's lifetime peak).
    pub vm_hwm_kib: u64,
    /// (RSS connected − RSS before) / subscribed connections.
    pub rss_per_connection_bytes: Option<f64>,
}

/// One node's CPU over the window, in a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCpu {
    pub pid: u32,
    pub cpu_s: f64,
    pub cpu_cores: f64,
}

/// The bus the nodes share (Redis), over the same window as the servers.
#[derive(Debug, Clone, Serialize)]
pub struct Bus {
    pub pid: u32,
    /// utime + stime over the window.
    pub cpu_s: f64,
    pub cpu_cores: f64,
    /// CPU over published ticks, µs: what one tick costs the bus, whatever its fan-out.
    pub cpu_us_per_tick: Option<f64>,
    /// CPU over received deliveries, µs (to add to the servers' figure).
    pub cpu_us_per_delivery: Option<f64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.scenario;
        let c = &self.connections;
        let d = &self.deliveries;
        let l = &self.latency;
        if !self.label.is_empty() {
            writeln!(f, "== {}", self.label)?;
        }
        writeln!(
            f,
            "scenario     {:?} {} | {} clients ({} slow), {} symbols x {} subs, {} ticks/s in batches every {} ms for {:.1}s",
            s.protocol, s.urls.join(","), s.clients, s.slow_clients, s.symbols, s.subs_per_client, s.publish_rate, s.publish_interval_ms, s.duration_s
        )?;
        if let Some(us) = s.wake_interval_us {
            writeln!(
                f,
                "clients      {} threads, each waking at most every {us:.0} µs",
                s.client_threads
            )?;
        }
        if s.max_rate.is_some() || s.compression {
            writeln!(
                f,
                "options      max_rate {}, compression {} ({} sockets agreed)",
                s.max_rate.map_or("none".to_string(), |r| format!("{r}/s")),
                if s.compression { "offered" } else { "off" },
                c.compressed
            )?;
        }
        writeln!(
            f,
            "connections  {} opened, {} failed, {} subscribed in {:.1}s; connect p50 {:.2} ms, p99 {:.2} ms",
            c.opened, c.failed, c.subscribed, c.connect_phase_s, c.connect_p50_ms, c.connect_p99_ms
        )?;
        writeln!(
            f,
            "published    {} ticks in {} batches ({:.0}/s), {} errors; batch accepted in p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.publish.ticks,
            self.publish.batches,
            self.publish.achieved_rate,
            self.publish.errors,
            self.publish.batch_accept.p50_ms,
            self.publish.batch_accept.p99_ms,
            self.publish.batch_accept.max_ms
        )?;
        writeln!(
            f,
            "deliveries   expected {}, received {} ({:.3}%, {} recovered), conflated {}, missing {}, duplicated {}, snapshots {}",
            d.expected,
            d.received,
            if d.expected > 0 { 100.0 * d.received as f64 / d.expected as f64 } else { 100.0 },
            d.recovered,
            d.conflated,
            d.missing,
            d.duplicated,
            d.snapshots
        )?;
        if let Some(r) = &self.recovery {
            writeln!(
                f,
                "recovery     {} closed on schedule, {} by the server, {} reopened; {} streams resumed: {} recovered, {} refused, {} new epochs; {} ticks skipped at a resubscribe",
                r.forced_reconnects,
                self.closed_by_server,
                self.reconnects,
                r.resumed,
                r.recovered,
                r.refused,
                r.new_epochs,
                r.seam_gaps
            )?;
            if r.unnumbered > 0 {
                writeln!(
                    f,
                    "             {} subscribes named no epoch: that server numbers ticks per connection, counts across reconnects are not exact",
                    r.unnumbered
                )?;
            }
        }
        write!(
            f,
            "throughput   {:.0} deliveries/s over {:.1}s, {} bytes read",
            d.per_sec, d.window_s, d.bytes_in
        )?;
        if let Some(b) = d.bytes_per_delivery {
            write!(f, " ({b:.1} B on the wire per delivery)")?;
        }
        writeln!(f)?;
        if let Some(k) = &self.candles {
            write!(
                f,
                "candles      {} messages ({} closed) of {}, {:.0}/s",
                k.received,
                k.closed,
                k.intervals.join(","),
                k.per_sec
            )?;
            if let Some(us) = k.server_cpu_us_per_message {
                write!(f, "; server {us:.2} µs CPU per message (ticks and candles)")?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "latency      p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
        )?;
        if self.latency_windows.len() > 1 {
            for (i, w) in self.latency_windows.iter().enumerate() {
                writeln!(
                    f,
                    "  {:>6.0}s+   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
                    i as f64 * self.latency_window_s,
                    w.p50_ms,
                    w.p99_ms,
                    w.max_ms,
                    w.samples
                )?;
            }
        }
        if let Some(sv) = &self.server {
            write!(
                f,
                "server       pid {}: {:.2} CPU s ({:.2} cores), RSS {} → {} KiB (peak {}, HWM {})",
                sv.pid,
                sv.cpu_s,
                sv.cpu_cores,
                sv.rss_before_kib,
                sv.rss_connected_kib,
                sv.rss_peak_kib,
                sv.vm_hwm_kib
            )?;
            if let Some(us) = sv.cpu_us_per_delivery {
                write!(f, ", {us:.2} µs CPU/delivery")?;
            }
            if let Some(b) = sv.rss_per_connection_bytes {
                write!(f, ", {b:.0} B RSS/connection")?;
            }
            writeln!(f)?;
            if !sv.nodes.is_empty() {
                let shares: Vec<String> = sv
                    .nodes
                    .iter()
                    .map(|n| format!("pid {} {:.2} cores", n.pid, n.cpu_cores))
                    .collect();
                writeln!(f, "  nodes      {}", shares.join(", "))?;
            }
        }
        if let Some(b) = &self.bus {
            write!(
                f,
                "bus          pid {}: {:.2} CPU s ({:.2} cores)",
                b.pid, b.cpu_s, b.cpu_cores
            )?;
            if let Some(us) = b.cpu_us_per_tick {
                write!(f, ", {us:.2} µs CPU/published tick")?;
            }
            if let Some(us) = b.cpu_us_per_delivery {
                write!(f, ", {us:.3} µs CPU/delivery")?;
            }
            writeln!(f)?;
        }
        let g = &self.generator;
        write!(
            f,
            "generator    {:.2} CPU s ({:.2} cores)",
            g.cpu_s, g.cpu_cores
        )?;
        if let Some(us) = g.cpu_us_per_delivery {
            write!(f, ", {us:.2} µs CPU/delivery")?;
        }
        writeln!(f)?;
        if self.closed_by_server > 0 || self.server_errors > 0 || d.malformed > 0 {
            writeln!(
                f,
                "problems     {} closed by server ({} reconnected), {} server errors, {} malformed",
                self.closed_by_server, self.reconnects, self.server_errors, d.malformed
            )?;
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "first error  {e}")?;
        }
        Ok(())
    }
}
