//! Command-line flags, turned into a [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::client::Protocol;
use crate::plan::generated_symbols;
use crate::pusher_api::Credentials;

/// Opens many WebSocket clients against a MarketMux gateway (or NATS, or a
/// Pusher server such as Sockudo), drives
/// the publishing side, and reports delivery, latency and server cost.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Cli {
    /// Number of clients.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub clients: usize,
    /// One symbol every client follows (the simplest form).
    #[arg(long, conflicts_with_all = ["symbols", "symbol_list"])]
    pub symbol: Option<String>,
    /// Use N generated symbols (S0001, S0002, ...).
    #[arg(long, conflicts_with = "symbol_list")]
    pub symbols: Option<usize>,
    /// Comma-separated symbols.
    #[arg(long, value_delimiter = ',')]
    pub symbol_list: Option<Vec<String>>,
    /// Symbols each client subscribes to.
    #[arg(long, default_value_t = 1)]
    pub subs_per_client: usize,
    /// Zipf exponent of symbol popularity (default: uniform, round-robin).
    #[arg(long)]
    pub zipf: Option<f64>,
    /// New connections per second.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// How long to publish (or, without --publish-rate, to hold the sockets): `30`, `30s`, `500ms`, `2m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Ticks per second to publish (0: publish nothing, just hold the sockets).
    #[arg(long, default_value_t = 0.0)]
    pub publish_rate: f64,
    /// Time between publish batches.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub publish_interval: Duration,
    /// After publishing, how long to wait for the last deliveries.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Latency is also reported per window of this length (a long run shows
    /// how it drifts): `60s`, `10s`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub latency_window: Duration,
    /// Fraction of clients that stop reading once subscribed.
    #[arg(long, default_value_t = 0.0)]
    pub slow_fraction: f64,
    /// Every client also follows the candles of its symbols for these
    /// intervals (`1m`, or `1s,1m`; MarketMux only): one more subscribe per
    /// connection, candle messages counted apart from ticks.
    #[arg(long, value_delimiter = ',')]
    pub candles: Vec<String>,
    /// Reconnect after the server closes a socket (or it breaks), to the next
    /// --url, with jittered exponential backoff (a random wait in [d/2, d], d
    /// from 300 ms doubling to 8 s), and resubscribe from each symbol's last
    /// position (`since`) where the server named an epoch.
    #[arg(long)]
    pub reconnect: bool,
    /// Also close every socket this often and reconnect at once to the next
    /// --url (each client at its own random phase): `5`, `5s`, `500ms`.
    /// Implies --reconnect.
    #[arg(long, value_parser = parse_duration, value_name = "SECS")]
    pub reconnect_every: Option<Duration>,
    /// Resubscribe without `since` after a reconnect: what recovery saves
    /// then shows as missing ticks.
    #[arg(long)]
    pub no_recovery: bool,
    /// Subscribe with `max_rate` (ticks per second per symbol, 0.1 to 1000):
    /// the ticks the server skips for the cap count as conflated.
    #[arg(long, value_name = "TICKS_PER_SEC")]
    pub max_rate: Option<f64>,
    /// Offer permessage-deflate on every socket and inflate what comes back
    /// compressed (the report counts the sockets where it was agreed).
    #[arg(long)]
    pub compression: bool,
    /// WebSocket URL of the gateway (or of NATS's WebSocket listener with
    /// --protocol nats; with --protocol pusher a URL whose path is `/` gets
    /// `/app/KEY?protocol=7&client=load-test&version=1`). Several (repeated, or comma-separated): clients start
    /// spread over them round-robin and reconnect to the next one; ticks are
    /// published to the first.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub url: Vec<String>,
    /// Which server speaks at --url.
    #[arg(long, value_enum, default_value_t = Protocol::Marketmux)]
    pub protocol: Protocol,
    /// NATS client port (plain TCP) for publishing with --protocol nats.
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub nats_addr: SocketAddr,
    /// Pusher app id (the HTTP API path `/apps/ID/batch_events`).
    #[arg(long, default_value = "marketmux-bench")]
    pub pusher_app_id: String,
    /// Pusher app key (the socket path `/app/KEY`, and `auth_key`).
    #[arg(long, default_value = "marketmux-bench-key")]
    pub pusher_key: String,
    /// Pusher app secret, which signs HTTP API requests.
    #[arg(long, default_value = "marketmux-bench-secret")]
    pub pusher_secret: String,
    /// Most events per `batch_events` request (Pusher's own service takes 10;
    /// Sockudo has no limit unless the app sets `max_event_batch_size`).
    #[arg(long, default_value_t = 100)]
    pub pusher_batch: usize,
    /// Print one JSON object on stdout (the text report goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// The server's PID: report its CPU seconds and memory over the run.
    /// Several (repeated or comma-separated), the nodes of a cluster: their
    /// CPU and memory are added up, and each node's CPU is listed.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// The PID of the bus the nodes share (Redis): its CPU over the same
    /// window, reported apart from the nodes', per published tick and per
    /// delivery.
    #[arg(long)]
    pub bus_pid: Option<u32>,
    /// Source addresses to bind clients to, round-robin (more than ~28k sockets).
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Allow a non-loopback --url.
    #[arg(long)]
    pub allow_remote: bool,
    /// Threads the client sockets run on, one single-threaded runtime each
    /// (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Each client thread wakes at most this often and then reads every
    /// socket with data (`200us`, `1ms`; 0: wake for every message, as a
    /// thread blocked in epoll does). Fewer wake-ups cost this process and,
    /// on loopback, the server less; latency grows by up to the interval.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub wake_interval: Duration,
    /// Seed of the Zipf draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A name for this run, copied into the report.
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Config {
    pub label: String,
    /// The first of `urls`: where ticks are published.
    pub url: reqwest::Url,
    /// Every target, at least one.
    pub urls: Vec<reqwest::Url>,
    pub protocol: Protocol,
    pub clients: usize,
    pub symbols: Vec<String>,
    pub subs_per_client: usize,
    pub zipf: Option<f64>,
    pub connect_rate: f64,
    pub duration: Duration,
    pub publish_rate: f64,
    pub publish_interval: Duration,
    pub drain: Duration,
    pub latency_window: Duration,
    pub slow_fraction: f64,
    /// Candle intervals every client follows besides its ticks.
    pub candles: Vec<String>,
    pub reconnect: bool,
    pub reconnect_every: Option<Duration>,
    /// Resubscribe with `since` (not `--no-recovery`).
    pub recovery: bool,
    /// `max_rate` of every subscribe (`--max-rate`).
    pub max_rate: Option<f64>,
    /// Offer permessage-deflate (`--compression`).
    pub compression: bool,
    pub nats_addr: SocketAddr,
    /// The app published to and subscribed at with `--protocol pusher`.
    pub pusher: Credentials,
    /// Events per `batch_events` request.
    pub pusher_batch: usize,
    /// The server's processes (`--server-pid`): empty, one, or a cluster's nodes.
    pub server_pids: Vec<u32>,
    /// The shared bus's process (`--bus-pid`).
    pub bus_pid: Option<u32>,
    pub source_ips: Vec<IpAddr>,
    pub allow_remote: bool,
    pub seed: u64,
    pub progress: bool,
    pub client_threads: usize,
    /// How often a client thread wakes (`--wake-interval`); None: per message.
    pub wake_interval: Option<Duration>,
}

impl Cli {
    /// Checks the flags and builds the scenario.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut urls = Vec::with_capacity(self.url.len());
        for u in self.url.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            let url = reqwest::Url::parse(u).with_context(|| format!("bad --url {u}"))?;
            if url.scheme() != "ws" {
                anyhow::bail!("--url must start with ws:// (TLS is not supported): {url}");
            }
            urls.push(url);
        }
        let Some(url) = urls.first().cloned() else {
            anyhow::bail!("--url is empty");
        };
        if self.reconnect_every.is_some_and(|d| d.is_zero()) {
            anyhow::bail!("--reconnect-every must be positive");
        }
        let symbols = match (self.symbol, self.symbols, self.symbol_list) {
            (Some(s), _, _) => vec![s],
            (_, Some(n), _) if n > 0 => generated_symbols(n),
            (_, _, Some(list)) if !list.is_empty() => list,
            (None, None, None) => vec!["AAPL".to_string()],
            _ => anyhow::bail!("no symbols: give --symbol, --symbols N (N > 0) or --symbol-list"),
        };
        if let Some(bad) = symbols.iter().find(|s| !valid_symbol(s)) {
            anyhow::bail!("invalid symbol {bad:?}: use 1-32 of A-Z a-z 0-9 . : - _ /");
        }
        if self.protocol == Protocol::Nats {
            if let Some(bad) = symbols.iter().find(|s| s.contains(['.', '*', '>'])) {
                anyhow::bail!("symbol {bad:?} is not a single NATS subject token");
            }
        }
        if self.protocol == Protocol::Pusher {
            if let Some(bad) = symbols.iter().find(|s| s.contains([':', '/'])) {
                anyhow::bail!("symbol {bad:?} is not a valid Pusher channel name");
            }
            if self.pusher_batch == 0 {
                anyhow::bail!("--pusher-batch must be at least 1");
            }
            for (flag, v) in [
                ("--pusher-app-id", &self.pusher_app_id),
                ("--pusher-key", &self.pusher_key),
            ] {
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    anyhow::bail!("{flag} must be non-empty, of A-Z a-z 0-9 - _ .");
                }
            }
        }
        if self.clients == 0 {
            anyhow::bail!("--clients must be at least 1");
        }
        if self.connect_rate.is_nan() || self.connect_rate <= 0.0 {
            anyhow::bail!("--connect-rate must be positive");
        }
        if !(0.0..=1.0).contains(&self.slow_fraction) {
            anyhow::bail!("--slow-fraction must be within 0..1");
        }
        if !(self.publish_rate >= 0.0 && self.publish_rate.is_finite()) {
            anyhow::bail!("--publish-rate must be a finite number >= 0");
        }
        if self.zipf.is_some_and(|s| !(s >= 0.0 && s.is_finite())) {
            anyhow::bail!("--zipf must be a finite number >= 0");
        }
        if self.latency_window.is_zero() {
            anyhow::bail!("--latency-window must be positive");
        }
        if self.publish_interval.is_zero() {
            anyhow::bail!("--publish-interval must be positive");
        }
        if let Some(r) = self.max_rate {
            if !(0.1..=1000.0).contains(&r) {
                anyhow::bail!("--max-rate must be within 0.1..=1000 ticks per second");
            }
        }
        if (self.max_rate.is_some() || self.compression) && self.protocol != Protocol::Marketmux {
            anyhow::bail!("--max-rate and --compression are for --protocol marketmux");
        }
        if !self.candles.is_empty() && self.protocol != Protocol::Marketmux {
            anyhow::bail!("--candles needs --protocol marketmux");
        }
        if let Some(bad) = self
            .candles
            .iter()
            .find(|i| !["1s", "1m", "5m", "1h", "1d"].contains(&i.as_str()))
        {
            anyhow::bail!("--candles: unknown interval {bad:?}; known are 1s, 1m, 5m, 1h, 1d");
        }
        Ok(Config {
            label: self.label,
            url,
            urls,
            protocol: self.protocol,
            clients: self.clients,
            subs_per_client: self.subs_per_client.clamp(1, symbols.len()),
            symbols,
            zipf: self.zipf,
            connect_rate: self.connect_rate,
            duration: self.duration,
            publish_rate: self.publish_rate,
            publish_interval: self.publish_interval,
            latency_window: self.latency_window,
            drain: self.drain,
            slow_fraction: self.slow_fraction,
            candles: self.candles,
            reconnect: self.reconnect || self.reconnect_every.is_some(),
            reconnect_every: self.reconnect_every,
            recovery: !self.no_recovery,
            max_rate: self.max_rate,
            compression: self.compression,
            nats_addr: self.nats_addr,
            pusher: Credentials {
                app_id: self.pusher_app_id,
                key: self.pusher_key,
                secret: self.pusher_secret,
            },
            pusher_batch: self.pusher_batch,
            server_pids: self.server_pid,
            bus_pid: self.bus_pid,
            source_ips: self.source_ips,
            allow_remote: self.allow_remote,
            seed: self.seed,
            client_threads: self
                .threads
                .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
                .unwrap_or(1),
            progress: !self.quiet,
            wake_interval: (!self.wake_interval.is_zero()).then_some(self.wake_interval),
        })
    }
}

fn valid_symbol(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | '/'))
}

/// `30`, `30s`, `1.5s`, `500ms`, `200us`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 0.000_001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 30s or 500ms)"))?;
    Duration::try_from_secs_f64(v * scale).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: &[&str]) -> anyhow::Result<Config> {
        let mut v = vec!["load-test"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)?.into_config()
    }

    #[test]
    fn seed_form() {
        let c = cfg(&["-c", "5000", "--symbol", "AAPL"]).unwrap();
        assert_eq!(
            (c.clients, c.symbols.as_slice()),
            (5000, &["AAPL".to_string()][..])
        );
        assert_eq!(c.url.as_str(), "ws://127.0.0.1:8080/ws");
        assert_eq!(c.urls.as_slice(), std::slice::from_ref(&c.url));
        assert!(!c.reconnect && c.reconnect_every.is_none());
    }

    #[test]
    fn several_urls_and_forced_reconnects() {
        let a = "ws://127.0.0.1:8081/ws";
        let b = "ws://127.0.0.1:8082/ws";
        let c = cfg(&["--url", &format!("{a},{b}"), "--reconnect-every", "5"]).unwrap();
        assert_eq!(c.url.as_str(), a, "ticks go to the first");
        assert_eq!(c.urls.len(), 2);
        assert_eq!(c.reconnect_every, Some(Duration::from_secs(5)));
        assert!(c.reconnect, "--reconnect-every implies --reconnect");
        let c = cfg(&["--url", a, "--url", b, "--reconnect"]).unwrap();
        assert_eq!(c.urls[1].as_str(), b);
        assert!(c.reconnect && c.reconnect_every.is_none() && c.recovery);
        assert!(!cfg(&["--reconnect", "--no-recovery"]).unwrap().recovery);
        assert!(cfg(&["--url", &format!("{a},http://x/ws")]).is_err());
        assert!(cfg(&["--reconnect-every", "0s"]).is_err());
    }

    #[test]
    fn a_cluster_of_server_pids_and_a_bus() {
        let c = cfg(&[
            "--server-pid",
            "10,11",
            "--server-pid",
            "12",
            "--bus-pid",
            "9",
        ])
        .unwrap();
        assert_eq!(
            (c.server_pids.as_slice(), c.bus_pid),
            (&[10, 11, 12][..], Some(9))
        );
        let c = cfg(&[]).unwrap();
        assert!(c.server_pids.is_empty() && c.bus_pid.is_none());
        assert!(cfg(&["--server-pid", "x"]).is_err());
    }

    #[test]
    fn market_form() {
        let c = cfg(&[
            "-c",
            "5000",
            "--symbols",
            "200",
            "--subs-per-client",
            "5",
            "--publish-rate",
            "500",
            "--duration",
            "30s",
            "--slow-fraction",
            "0.1",
            "--source-ips",
            "127.0.0.1,127.0.0.2",
        ])
        .unwrap();
        assert_eq!((c.symbols.len(), c.subs_per_client), (200, 5));
        assert_eq!(c.duration, Duration::from_secs(30));
        assert_eq!(c.source_ips.len(), 2);
        let c = cfg(&["--symbol-list", "A,B", "--subs-per-client", "9"]).unwrap();
        assert_eq!((c.symbols.len(), c.subs_per_client), (2, 2));
    }

    #[test]
    fn refuses_bad_input() {
        assert!(cfg(&["--symbol", "A", "--symbols", "3"]).is_err());
        assert!(cfg(&["--symbol", "bad symbol"]).is_err());
        assert!(cfg(&["--url", "http://x/ws"]).is_err());
        assert!(cfg(&["--slow-fraction", "2"]).is_err());
        assert!(cfg(&["-c", "0"]).is_err());
        assert!(cfg(&["--protocol", "nats", "--symbol", "A.B"]).is_err());
        assert!(cfg(&["--protocol", "pusher", "--symbol", "A:B"]).is_err());
        assert!(cfg(&["--protocol", "pusher", "--pusher-batch", "0"]).is_err());
        assert!(cfg(&["--protocol", "pusher", "--pusher-key", "a/b"]).is_err());
        assert!(cfg(&["--candles", "2m"]).is_err());
        assert!(cfg(&["--protocol", "nats", "--candles", "1m"]).is_err());
        assert_eq!(cfg(&["--candles", "1s,1m"]).unwrap().candles, ["1s", "1m"]);
        let c = cfg(&[
            "--protocol",
            "pusher",
            "--symbol",
            "A.B",
            "--pusher-key",
            "k",
        ])
        .unwrap();
        assert_eq!((c.pusher.key.as_str(), c.pusher_batch), ("k", 100));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("200us"), Ok(Duration::from_micros(200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
    }
}
