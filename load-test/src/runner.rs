//! Runs one scenario: connect every client, publish, drain, measure, report.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::Config;
use crate::client::{self, Context, Protocol, Target};
use crate::plan;
use crate::pool::ClientPool;
use crate::proc::{self, ProcSample};
use crate::publisher::{self, Job, PublisherThread, SinkSpec};
use crate::report::{
    Bus, Candles, Connections, Deliveries, Generator, NodeCpu, Publish, Recovery, Report, Scenario,
    Server,
};
use crate::rfc3339::now_ns;
use crate::stats::Percentiles;

/// Extra descriptors beyond one per client (publisher, runtime, stdio).
const SPARE_FDS: u64 = 64;
/// How often server memory is sampled.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Runs `cfg` to completion. Fails only when the run cannot start (server
/// down, bad target, too few descriptors); client failures are in the report.
pub async fn run(cfg: Config) -> anyhow::Result<Report> {
    proc::raise_nofile(cfg.clients as u64 + SPARE_FDS)?;
    let mut targets = Vec::with_capacity(cfg.urls.len());
    for url in &cfg.urls {
        let target = resolve_target(&cfg, url).await?;
        probe(target.addr, url).await?;
        targets.push(target);
    }
    warn_about_ports(&cfg);

    let stop = CancellationToken::new();
    let plans = plan::plan(
        cfg.clients,
        cfg.symbols.len(),
        cfg.subs_per_client,
        cfg.zipf,
        cfg.slow_fraction,
        cfg.seed,
    );
    let slow = plans.iter().filter(|p| p.slow).count();
    let mut ctx = Context::new(targets, cfg.symbols.clone(), stop.clone());
    ctx.latencies = crate::stats::Latencies::with_window(cfg.latency_window);
    ctx.reconnect = cfg.reconnect;
    ctx.reconnect_every = cfg.reconnect_every;
    ctx.recovery = cfg.recovery;
    ctx.max_rate = cfg.max_rate;
    ctx.compression = cfg.compression;
    ctx.candles = cfg.candles.clone();
    let ctx = Arc::new(ctx);
    let publisher = if cfg.publish_rate > 0.0 {
        Some(
            PublisherThread::spawn(match cfg.protocol {
                Protocol::Marketmux => SinkSpec::Http(ingest_url(&cfg.url)?),
                Protocol::Nats => SinkSpec::Nats(cfg.nats_addr),
                Protocol::Pusher => SinkSpec::Pusher {
                    base: cfg.url.clone(),
                    creds: cfg.pusher.clone(),
                    batch: cfg.pusher_batch,
                },
            })
            .await?,
        )
    } else {
        None
    };
    let servers = &cfg.server_pids;
    let sampler = (!servers.is_empty()).then(|| Sampler::start(servers.clone(), stop.clone()));
    let before = sample_servers(servers)?;

    // Connect phase.
    let bar = progress(
        cfg.progress,
        cfg.clients as u64,
        "{spinner} connecting {pos}/{len} [{elapsed}] {msg}",
    );
    let connect_start = Instant::now();
    let mut pool = ClientPool::new(cfg.client_threads, cfg.wake_interval)?;
    let pool_threads = pool.threads();
    let mut tasks = JoinSet::new();
    for (i, p) in plans.into_iter().enumerate() {
        let due = connect_start + Duration::from_secs_f64(i as f64 / cfg.connect_rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let source = (!cfg.source_ips.is_empty()).then(|| cfg.source_ips[i % cfg.source_ips.len()]);
        pool.spawn(&mut tasks, client::run(ctx.clone(), p, source));
        if i % 64 == 0 {
            bar.set_position(ctx.counters.settled.load(Relaxed));
            bar.set_message(format!("{} failed", ctx.counters.failed.load(Relaxed)));
        }
    }
    let settle_deadline = Instant::now() + Duration::from_secs(40);
    while ctx.counters.settled.load(Relaxed) < cfg.clients as u64
        && Instant::now() < settle_deadline
    {
        bar.set_position(ctx.counters.settled.load(Relaxed));
        bar.set_message(format!("{} failed", ctx.counters.failed.load(Relaxed)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    let connect_phase = connect_start.elapsed();
    if ctx.counters.subscribed.load(Relaxed) == 0 {
        let why = ctx
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        stop.cancel();
        anyhow::bail!("no client could subscribe at {}: {why}", cfg.url);
    }
    let connected = sample_servers(servers)?;
    let bus_start = cfg.bus_pid.map(proc::sample).transpose()?;

    // Publish (or hold) phase.
    let window_start = Instant::now();
    let own_start = proc::sample(std::process::id()).ok();
    ctx.publish_start_ns.store(now_ns(), Relaxed);
    let published_count = Arc::new(AtomicU64::new(0));
    let bar = progress(
        cfg.progress,
        cfg.duration.as_secs().max(1),
        "{bar:30} {pos}/{len}s {msg}",
    );
    let ticker = {
        let bar = bar.clone();
        let ctx = ctx.clone();
        let published = published_count.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = Instant::now();
                let rx = ctx.counters.received.load(Relaxed);
                let rate = (rx - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, rx);
                bar.set_position(now.duration_since(window_start).as_secs());
                bar.set_message(format!(
                    "{} published, {} delivered, {rate:.0}/s",
                    published.load(Relaxed),
                    rx
                ));
            }
        })
    };
    let published = match publisher {
        Some(p) => {
            p.run(Job {
                symbols: cfg.symbols.clone(),
                rate: cfg.publish_rate,
                duration: cfg.duration,
                interval: cfg.publish_interval,
                progress: published_count.clone(),
                stop: stop.clone(),
            })
            .await
        }
        None => {
            tokio::time::sleep(cfg.duration).await;
            publisher::Published::default()
        }
    };
    let expected: u64 = published
        .per_symbol
        .iter()
        .zip(&ctx.readers)
        .map(|(n, r)| n * r.load(Relaxed))
        .sum();
    // Drain: until everything is accounted for, or the drain time is up.
    let drain_deadline = Instant::now() + cfg.drain;
    let mut last_progress = (Instant::now(), accounted(&ctx));
    while accounted(&ctx) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let a = accounted(&ctx);
        if a != last_progress.1 {
            last_progress = (Instant::now(), a);
        }
    }
    // The window ends at the last delivery, not at the drain deadline.
    let window = if accounted(&ctx) >= expected || published.ticks == 0 {
        window_start.elapsed()
    } else {
        last_progress.0.duration_since(window_start)
    };
    let own_end = proc::sample(std::process::id()).ok();
    let after = sample_servers(servers)?;
    let bus_end = cfg.bus_pid.map(proc::sample).transpose()?;
    bar.finish_and_clear();
    stop.cancel();
    let _ = ticker.await;
    let peak = match sampler {
        Some(s) => s.task.await.unwrap_or(0),
        None => 0,
    };
    let join_all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), join_all)
        .await
        .is_err()
    {
        tasks.abort_all();
    }

    let c = &ctx.counters;
    let received = c.received.load(Relaxed);
    let conflated = c.seq_gaps.load(Relaxed);
    let seam_gaps = c.seam_gaps.load(Relaxed);
    let connect = ctx
        .connect_latency
        .lock()
        .map(|h| Percentiles::of(&h))
        .unwrap_or_default();
    let server = match (before, connected, after) {
        (Some(b), Some(m), Some(a)) => Some(server_figures(
            servers,
            &b,
            &m,
            &a,
            peak,
            received,
            window,
            c.subscribed.load(Relaxed),
        )),
        _ => None,
    };
    let bus = match (cfg.bus_pid, bus_start, bus_end) {
        (Some(pid), Some(a), Some(b)) => Some(bus_figures(
            pid,
            b.cpu.saturating_sub(a.cpu),
            published.ticks,
            received,
            window,
        )),
        _ => None,
    };
    let own_cpu = match (own_start, own_end) {
        (Some(a), Some(b)) => b.cpu.saturating_sub(a.cpu).as_secs_f64(),
        _ => 0.0,
    };
    let generator = Generator {
        cpu_s: own_cpu,
        cpu_cores: own_cpu / window.as_secs_f64().max(1e-9),
        cpu_us_per_delivery: (received > 0).then(|| own_cpu * 1e6 / received as f64),
    };
    let first_error = published
        .first_error
        .clone()
        .map(|e| format!("publisher: {e}"))
        .or_else(|| ctx.first_error.lock().ok().and_then(|e| e.clone()));
    let candles = (!cfg.candles.is_empty()).then(|| {
        let received_candles = c.candles.load(Relaxed);
        let messages = received + received_candles;
        Candles {
            intervals: cfg.candles.clone(),
            received: received_candles,
            closed: c.candles_closed.load(Relaxed),
            per_sec: received_candles as f64 / window.as_secs_f64().max(1e-9),
            server_cpu_us_per_message: server
                .as_ref()
                .filter(|_| messages > 0)
                .map(|s| s.cpu_s * 1e6 / messages as f64),
        }
    });
    Ok(Report {
        label: cfg.label.clone(),
        scenario: Scenario {
            protocol: cfg.protocol,
            url: cfg.url.to_string(),
            urls: cfg.urls.iter().map(|u| u.to_string()).collect(),
            reconnect_every_s: cfg.reconnect_every.map(|d| d.as_secs_f64()),
            recovery: cfg.recovery,
            max_rate: cfg.max_rate,
            compression: cfg.compression,
            clients: cfg.clients,
            slow_clients: slow,
            symbols: cfg.symbols.len(),
            subs_per_client: cfg.subs_per_client,
            zipf: cfg.zipf,
            publish_rate: cfg.publish_rate,
            publish_interval_ms: cfg.publish_interval.as_secs_f64() * 1e3,
            duration_s: cfg.duration.as_secs_f64(),
            client_threads: pool_threads,
            wake_interval_us: cfg.wake_interval.map(|d| d.as_secs_f64() * 1e6),
        },
        connections: Connections {
            opened: c.connected.load(Relaxed),
            failed: c.failed.load(Relaxed),
            subscribed: c.subscribed.load(Relaxed),
            compressed: c.compressed.load(Relaxed),
            connect_p50_ms: connect.p50_ms,
            connect_p99_ms: connect.p99_ms,
            connect_phase_s: connect_phase.as_secs_f64(),
        },
        publish: Publish {
            ticks: published.ticks,
            batches: published.batches,
            errors: published.errors,
            achieved_rate: published.ticks as f64 / published.elapsed.as_secs_f64().max(1e-9),
            batch_accept: published
                .send_micros
                .as_ref()
                .map(Percentiles::of)
                .unwrap_or_default(),
        },
        deliveries: Deliveries {
            expected,
            received,
            recovered: c.recovered.load(Relaxed),
            conflated,
            missing: expected.saturating_sub(received + conflated),
            duplicated: c.duplicated.load(Relaxed),
            snapshots: c.snapshots.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
            per_sec: received as f64 / window.as_secs_f64().max(1e-9),
            window_s: window.as_secs_f64(),
            bytes_in: c.bytes_in.load(Relaxed),
            bytes_per_delivery: (received > 0)
                .then(|| c.bytes_in.load(Relaxed) as f64 / received as f64),
        },
        latency: Percentiles::of(&ctx.latencies.merged()),
        latency_window_s: ctx.latencies.window().as_secs_f64(),
        latency_windows: ctx.latencies.per_window(),
        server,
        bus,
        generator,
        closed_by_server: c.closed_by_server.load(Relaxed),
        reconnects: c.reconnects.load(Relaxed),
        recovery: cfg.reconnect.then(|| Recovery {
            forced_reconnects: c.forced_reconnects.load(Relaxed),
            resumed: c.resumed.load(Relaxed),
            recovered: c.recovered_streams.load(Relaxed),
            refused: c.refused.load(Relaxed),
            new_epochs: c.new_epochs.load(Relaxed),
            unnumbered: c.unnumbered.load(Relaxed),
            seam_gaps,
        }),
        candles,
        server_errors: c.server_errors.load(Relaxed),
        first_error,
    })
}

/// Deliveries accounted for: received, or skipped by a `seq` jump.
fn accounted(ctx: &Context) -> u64 {
    let c = &ctx.counters;
    c.received.load(Relaxed) + c.seq_gaps.load(Relaxed) + c.seam_gaps.load(Relaxed)
}

/// Samples every server process, or None without any.
fn sample_servers(pids: &[u32]) -> anyhow::Result<Option<Vec<ProcSample>>> {
    if pids.is_empty() {
        return Ok(None);
    }
    proc::sample_each(pids).map(Some)
}

/// The servers' figures over the window: CPU from `connected` to `after`,
/// memory from `before` to `connected`, the nodes added up.
#[allow(clippy::too_many_arguments)]
fn server_figures(
    pids: &[u32],
    before: &[ProcSample],
    connected: &[ProcSample],
    after: &[ProcSample],
    peak: u64,
    received: u64,
    window: Duration,
    subscribed: u64,
) -> Server {
    let secs = window.as_secs_f64().max(1e-9);
    let nodes: Vec<NodeCpu> = pids
        .iter()
        .zip(connected.iter().zip(after))
        .map(|(&pid, (m, a))| {
            let cpu_s = a.cpu.saturating_sub(m.cpu).as_secs_f64();
            NodeCpu {
                pid,
                cpu_s,
                cpu_cores: cpu_s / secs,
            }
        })
        .collect();
    let (before, connected, after) = (
        ProcSample::sum(before),
        ProcSample::sum(connected),
        ProcSample::sum(after),
    );
    let cpu = after.cpu.saturating_sub(connected.cpu).as_secs_f64();
    Server {
        pid: pids.first().copied().unwrap_or_default(),
        nodes: if pids.len() > 1 { nodes } else { Vec::new() },
        cpu_s: cpu,
        cpu_us_per_delivery: (received > 0).then(|| cpu * 1e6 / received as f64),
        cpu_cores: cpu / secs,
        rss_before_kib: before.rss_kib,
        rss_connected_kib: connected.rss_kib,
        rss_peak_kib: peak.max(connected.rss_kib).max(after.rss_kib),
        vm_hwm_kib: after.hwm_kib,
        rss_per_connection_bytes: (subscribed > 0).then(|| {
            (connected.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / subscribed as f64
        }),
    }
}

/// The bus's CPU over the window, per published tick and per delivery.
fn bus_figures(pid: u32, cpu: Duration, ticks: u64, received: u64, window: Duration) -> Bus {
    let cpu_s = cpu.as_secs_f64();
    Bus {
        pid,
        cpu_s,
        cpu_cores: cpu_s / window.as_secs_f64().max(1e-9),
        cpu_us_per_tick: (ticks > 0).then(|| cpu_s * 1e6 / ticks as f64),
        cpu_us_per_delivery: (received > 0).then(|| cpu_s * 1e6 / received as f64),
    }
}

/// Samples the servers' RSS (added up) until `stop`; returns the peak in KiB.
struct Sampler {
    task: tokio::task::JoinHandle<u64>,
}

impl Sampler {
    fn start(pids: Vec<u32>, stop: CancellationToken) -> Self {
        let task = tokio::spawn(async move {
            let mut peak = 0;
            while !stop.is_cancelled() {
                if let Ok(s) = proc::sample_each(&pids) {
                    peak = peak.max(ProcSample::sum(&s).rss_kib);
                }
                tokio::select! {
                    _ = tokio::time::sleep(RSS_SAMPLE_EVERY) => {}
                    _ = stop.cancelled() => {}
                }
            }
            peak
        });
        Self { task }
    }
}

fn progress(enabled: bool, len: u64, template: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Resolves `url` to a socket address; refuses non-loopback targets unless allowed.
async fn resolve_target(cfg: &Config, url: &reqwest::Url) -> anyhow::Result<Target> {
    let host = url.host_str().context("--url has no host")?;
    let port = url.port_or_known_default().context("--url has no port")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    let addr = *addrs
        .first()
        .with_context(|| format!("{host} has no address"))?;
    if !cfg.allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
        anyhow::bail!(
            "{url} is not a loopback address; pass --allow-remote to load a remote server"
        );
    }
    if cfg.protocol == Protocol::Nats
        && cfg.publish_rate > 0.0
        && !cfg.allow_remote
        && !cfg.nats_addr.ip().is_loopback()
    {
        anyhow::bail!(
            "--nats-addr {} is not loopback; pass --allow-remote",
            cfg.nats_addr
        );
    }
    if let Some(bad) = cfg
        .source_ips
        .iter()
        .find(|ip| ip.is_ipv4() != addr.is_ipv4())
    {
        anyhow::bail!("--source-ips {bad} is not of the same family as {addr}");
    }
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None if cfg.protocol == Protocol::Pusher && url.path() == "/" => {
            crate::pusher::socket_path(&cfg.pusher.key)
        }
        None => url.path().to_string(),
    };
    Ok(Target {
        addr,
        host: format!("{host}:{port}"),
        path,
        protocol: cfg.protocol,
    })
}

/// Fails with a clear message when nothing listens at the target.
async fn probe(addr: SocketAddr, url: &reqwest::Url) -> anyhow::Result<()> {
    match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => anyhow::bail!(
            "cannot connect to {url} ({addr}): {e}. Is the server running? \
             (for example: marketmux dev --feed-rate 0 --listen {addr})"
        ),
        Err(_) => anyhow::bail!("connecting to {url} ({addr}) timed out"),
    }
}

/// `ws://host:port/...` → `http://host:port/api/v1/ticks`.
pub fn ingest_url(ws: &reqwest::Url) -> anyhow::Result<reqwest::Url> {
    let mut u = ws.clone();
    u.set_scheme("http")
        .map_err(|_| anyhow::anyhow!("cannot derive the HTTP URL from {ws}"))?;
    u.set_path("/api/v1/ticks");
    u.set_query(None);
    Ok(u)
}

/// Each source address gives about one ephemeral port range of sockets.
fn warn_about_ports(cfg: &Config) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let v: Vec<u64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 2).then(|| v[1].saturating_sub(v[0]) + 1)
        });
    let sources = cfg.source_ips.len().max(1) as u64;
    if let Some(range) = range {
        if cfg.clients as u64 > range * sources {
            eprintln!(
                "warning: {} clients but only {range} ephemeral ports per source address ({} given); \
                 add addresses with --source-ips 127.0.0.1,127.0.0.2,...",
                cfg.clients, sources
            );
        }
    }
}

/// For callers that only have an IP list as text (scripts and tests).
pub fn parse_ips(s: &str) -> Result<Vec<IpAddr>, std::net::AddrParseError> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_ingest_url() {
        let u = reqwest::Url::parse("ws://127.0.0.1:9000/ws?x=1").unwrap();
        assert_eq!(
            ingest_url(&u).unwrap().as_str(),
            "http://127.0.0.1:9000/api/v1/ticks"
        );
    }

    #[test]
    fn cluster_figures_add_the_nodes_up_and_list_each() {
        let at = |cpu_ms: u64, rss_kib: u64| ProcSample {
            cpu: Duration::from_millis(cpu_ms),
            rss_kib,
            hwm_kib: rss_kib,
        };
        let s = server_figures(
            &[7, 8],
            &[at(0, 1000), at(0, 3000)],
            &[at(100, 2000), at(200, 5000)],
            &[at(600, 2100), at(1200, 5100)],
            7500,
            1000,
            Duration::from_secs(2),
            2,
        );
        assert_eq!(s.pid, 7);
        assert!((s.cpu_s - 1.5).abs() < 1e-9, "{s:?}");
        assert!((s.cpu_cores - 0.75).abs() < 1e-9);
        assert!((s.cpu_us_per_delivery.unwrap() - 1500.0).abs() < 1e-6);
        assert_eq!(s.rss_connected_kib, 7000);
        assert_eq!(s.rss_peak_kib, 7500);
        assert!((s.rss_per_connection_bytes.unwrap() - 3000.0 * 1024.0 / 2.0).abs() < 1e-6);
        let shares: Vec<(u32, f64)> = s.nodes.iter().map(|n| (n.pid, n.cpu_s)).collect();
        assert_eq!(shares.len(), 2);
        assert_eq!((shares[0].0, shares[1].0), (7, 8));
        assert!((shares[0].1 - 0.5).abs() < 1e-9 && (shares[1].1 - 1.0).abs() < 1e-9);
        let one = server_figures(
            &[7],
            &[at(0, 1)],
            &[at(0, 1)],
            &[at(10, 1)],
            1,
            1,
            Duration::from_secs(1),
            1,
        );
        assert!(one.nodes.is_empty(), "a single server lists no nodes");
        let b = bus_figures(
            9,
            Duration::from_millis(250),
            500,
            5000,
            Duration::from_secs(1),
        );
        assert_eq!(b.pid, 9);
        assert!((b.cpu_us_per_tick.unwrap() - 500.0).abs() < 1e-9);
        assert!((b.cpu_us_per_delivery.unwrap() - 50.0).abs() < 1e-9);
        assert!((b.cpu_cores - 0.25).abs() < 1e-9);
        assert!(bus_figures(9, Duration::ZERO, 0, 0, Duration::ZERO)
            .cpu_us_per_tick
            .is_none());
    }

    #[test]
    fn ip_lists() {
        assert_eq!(parse_ips("127.0.0.1,127.0.0.2").unwrap().len(), 2);
        assert!(parse_ips("nope").is_err());
    }
}
