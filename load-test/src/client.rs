//! One simulated client: connect, upgrade, subscribe, then read and count
//! every tick until the run stops. Slow clients stop reading once subscribed.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::message::{self, ServerMessage, TickFields};
use crate::nats::{self, Op};
use crate::plan::ClientPlan;
use crate::rfc3339::now_ns;
use crate::stats::{add, Counters, Latencies, SeqTracker};
use crate::ws::{self, opcode, InBuf, WsError};

/// How long connecting, upgrading and subscribing may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Initial read buffer per socket (grows for larger frames).
const READ_BUFFER: usize = 4096;
/// Symbols per subscribe message (keeps messages under the 4 KiB frame limit).
const SYMBOLS_PER_MESSAGE: usize = 100;

/// Which server the clients speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MarketMux JSON over WebSocket.
    Marketmux,
    /// NATS text protocol over NATS's WebSocket listener.
    Nats,
}

/// Where the clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    pub path: String,
    pub protocol: Protocol,
}

/// What every client shares.
pub struct Context {
    pub target: Target,
    pub symbols: Vec<String>,
    pub counters: Counters,
    pub latencies: Latencies,
    /// Connect + upgrade time, µs.
    pub connect_latency: Mutex<Histogram<u64>>,
    /// Subscribed reading clients per symbol (what expected deliveries count).
    pub readers: Vec<AtomicU64>,
    /// Ticks stamped before this instant (ns since epoch) are snapshots, not live.
    pub publish_start_ns: AtomicI64,
    pub first_error: Mutex<Option<String>>,
    pub stop: CancellationToken,
    /// Reopen sockets the server closes (`--reconnect`).
    pub reconnect: bool,
}

impl Context {
    pub fn new(target: Target, symbols: Vec<String>, stop: CancellationToken) -> Self {
        let readers = symbols.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            target,
            symbols,
            counters: Counters::default(),
            latencies: Latencies::default(),
            connect_latency: Mutex::new(crate::stats::micros_histogram()),
            readers,
            publish_start_ns: AtomicI64::new(i64::MAX),
            first_error: Mutex::new(None),
            stop,
            reconnect: false,
        }
    }

    fn note_error(&self, e: String) {
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert(e);
        }
    }
}

/// Runs one client until the context stops.
pub async fn run(ctx: Arc<Context>, plan: ClientPlan, source: Option<IpAddr>) {
    let setup = tokio::select! {
        r = tokio::time::timeout(SETUP_TIMEOUT, setup(&ctx, &plan, source)) => {
            r.unwrap_or_else(|_| Err(WsError::Protocol("setup timed out")))
        }
        _ = ctx.stop.cancelled() => Err(WsError::Protocol("run stopped during setup")),
    };
    let mut conn = match setup {
        Ok(c) => c,
        Err(e) => {
            ctx.counters.failed.fetch_add(1, Relaxed);
            ctx.counters.settled.fetch_add(1, Relaxed);
            ctx.note_error(format!("client {}: {e}", plan.index));
            return;
        }
    };
    ctx.counters.subscribed.fetch_add(1, Relaxed);
    if !plan.slow {
        for &s in &plan.symbols {
            ctx.readers[s].fetch_add(1, Relaxed);
        }
    }
    ctx.counters.settled.fetch_add(1, Relaxed);
    if plan.slow {
        // Hold the socket without reading, so the server's queue for it fills.
        ctx.stop.cancelled().await;
        return;
    }
    // One waiter on the stop token for the client's whole life: a fresh
    // `cancelled()` per message would join and leave the token's waiter list
    // (one lock shared by every client) on each read.
    let stopped = ctx.stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let closed = tokio::select! {
            r = conn.pump(&ctx) => match r {
                Err(e) if !ctx.stop.is_cancelled() => {
                    ctx.counters.closed_by_server.fetch_add(1, Relaxed);
                    ctx.note_error(format!("client {} after setup: {e}", plan.index));
                    true
                }
                Err(_) => break,
                Ok(()) => false,
            },
            _ = &mut stopped => break,
        };
        if closed {
            conn.state.flush(&ctx);
            if !ctx.reconnect {
                return;
            }
            match reconnect(&ctx, &plan, source).await {
                Some(c) => conn = c,
                None => return,
            }
        }
    }
    conn.state.flush(&ctx);
}

/// Reopens and resubscribes a closed socket with jittered exponential backoff
/// (a random wait in [d/2, d], d from 300 ms doubling to 8 s). None once the
/// run stops.
async fn reconnect(ctx: &Context, plan: &ClientPlan, source: Option<IpAddr>) -> Option<Connection> {
    let mut delay = Duration::from_millis(300);
    loop {
        let wait = delay.mul_f64(rand::random_range(0.5..=1.0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.stop.cancelled() => return None,
        }
        let attempt = tokio::select! {
            r = tokio::time::timeout(SETUP_TIMEOUT, setup(ctx, plan, source)) => r.ok().and_then(Result::ok),
            _ = ctx.stop.cancelled() => return None,
        };
        if let Some(c) = attempt {
            ctx.counters.reconnects.fetch_add(1, Relaxed);
            return Some(c);
        }
        delay = (delay * 2).min(Duration::from_secs(8));
    }
}

async fn setup(
    ctx: &Context,
    plan: &ClientPlan,
    source: Option<IpAddr>,
) -> Result<Connection, WsError> {
    let t = &ctx.target;
    let started = Instant::now();
    let mut stream = ws::connect(t.addr, source).await?;
    let mut buf = InBuf::new(READ_BUFFER);
    ws::upgrade(&mut stream, &t.host, &t.path, &mut buf).await?;
    ctx.counters.connected.fetch_add(1, Relaxed);
    if let Ok(mut h) = ctx.connect_latency.lock() {
        h.saturating_record(started.elapsed().as_micros().max(1) as u64);
    }
    let mask = (plan.index as u32 ^ 0x5bd1_e995)
        .wrapping_mul(2_654_435_761)
        .to_be_bytes();
    let names: Vec<&str> = plan
        .symbols
        .iter()
        .map(|&s| ctx.symbols[s].as_str())
        .collect();
    let (request, acks) = match t.protocol {
        Protocol::Marketmux => subscribe_frames(&names, mask),
        Protocol::Nats => {
            let mut p = format!("{}\r\n", nats::CONNECT);
            for (sid, n) in names.iter().enumerate() {
                p.push_str(&format!("SUB {} {}\r\n", nats::subject(n), sid + 1));
            }
            p.push_str("PING\r\n");
            (ws::client_frame(opcode::BINARY, p.as_bytes(), mask), 1)
        }
    };
    stream.write_all(&request).await?;
    let mut conn = Connection {
        stream,
        buf,
        state: State {
            protocol: t.protocol,
            key: plan.index,
            slots: names.iter().map(|n| n.as_bytes().into()).collect(),
            seq: SeqTracker::new(names.len()),
            mask,
            acks_pending: acks,
            proto: Vec::new(),
            out: Vec::new(),
            latencies: Vec::new(),
            local: Local::default(),
        },
    };
    // Frames already buffered (and anything after the ack) are handled here.
    conn.process(ctx)?;
    while conn.state.acks_pending > 0 {
        conn.pump(ctx).await?;
    }
    Ok(conn)
}

/// The subscribe message(s) and how many acks they get.
fn subscribe_frames(names: &[&str], mask: [u8; 4]) -> (Vec<u8>, usize) {
    if let [one] = names {
        let m = format!(r#"{{"action":"subscribe","symbol":"{one}"}}"#);
        return (ws::client_frame(opcode::TEXT, m.as_bytes(), mask), 1);
    }
    let mut out = Vec::new();
    let mut acks = 0;
    for chunk in names.chunks(SYMBOLS_PER_MESSAGE) {
        let list: Vec<String> = chunk.iter().map(|n| format!("\"{n}\"")).collect();
        let m = format!(r#"{{"action":"subscribe","symbols":[{}]}}"#, list.join(","));
        out.extend(ws::client_frame(opcode::TEXT, m.as_bytes(), mask));
        acks += 1;
    }
    (out, acks)
}

struct Connection {
    stream: TcpStream,
    buf: InBuf,
    state: State,
}

/// Per-client counts not yet added to the shared counters.
#[derive(Default)]
struct Local {
    received: u64,
    gaps: u64,
    out_of_order: u64,
    snapshots: u64,
    malformed: u64,
    errors: u64,
    bytes: u64,
}

struct State {
    protocol: Protocol,
    /// Picks this client's latency shard.
    key: usize,
    /// Subscribed symbol names, by slot.
    slots: Vec<Box<[u8]>>,
    seq: SeqTracker,
    mask: [u8; 4],
    acks_pending: usize,
    /// NATS protocol bytes not yet parsed (an operation may span frames).
    proto: Vec<u8>,
    /// Replies (pongs) to write after this batch.
    out: Vec<u8>,
    latencies: Vec<u64>,
    local: Local,
}

impl Connection {
    /// Reads once, handles every complete frame, and publishes the counts.
    async fn pump(&mut self, ctx: &Context) -> Result<(), WsError> {
        let n = self.buf.fill(&mut self.stream).await?;
        if n == 0 {
            return Err(WsError::Eof);
        }
        self.state.local.bytes += n as u64;
        let r = self.process(ctx);
        if !self.state.out.is_empty() {
            self.stream.write_all(&self.state.out).await?;
            self.state.out.clear();
        }
        self.state.flush(ctx);
        r
    }

    fn process(&mut self, ctx: &Context) -> Result<(), WsError> {
        let now = now_ns();
        let start = ctx.publish_start_ns.load(Relaxed);
        while let Some(head) = ws::decode(self.buf.bytes())? {
            let payload = &self.buf.bytes()[head.header..head.total()];
            match head.opcode {
                opcode::TEXT | opcode::BINARY | opcode::CONTINUATION => match self.state.protocol {
                    Protocol::Marketmux if !head.fin => {
                        return Err(WsError::Protocol("fragmented message"))
                    }
                    Protocol::Marketmux => self.state.on_text(ctx, payload, now, start),
                    Protocol::Nats => self.state.on_nats(ctx, payload, now, start)?,
                },
                opcode::PING => {
                    let pong = ws::client_frame(opcode::PONG, payload, self.state.mask);
                    self.state.out.extend_from_slice(&pong);
                }
                opcode::PONG => {}
                opcode::CLOSE => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    ctx.note_error(format!("server closed the socket: {code} {reason}"));
                    return Err(WsError::Eof);
                }
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
            self.buf.consume(head.total());
        }
        Ok(())
    }
}

impl State {
    fn on_text(&mut self, ctx: &Context, msg: &[u8], now: i64, start: i64) {
        match message::classify(msg) {
            ServerMessage::Tick(t) => self.on_tick(t, now, start),
            ServerMessage::Subscribed => self.acks_pending = self.acks_pending.saturating_sub(1),
            ServerMessage::Error(e) => {
                self.local.errors += 1;
                ctx.note_error(format!("server error: {}", String::from_utf8_lossy(e)));
            }
            ServerMessage::Malformed => self.local.malformed += 1,
            ServerMessage::Other => {}
        }
    }

    fn on_nats(&mut self, ctx: &Context, data: &[u8], now: i64, start: i64) -> Result<(), WsError> {
        // Parse straight from the frame when nothing is pending; copy only leftovers.
        let mut pending = std::mem::take(&mut self.proto);
        let input: &[u8] = if pending.is_empty() {
            data
        } else {
            pending.extend_from_slice(data);
            &pending
        };
        let mut at = 0;
        loop {
            match nats::parse_op(&input[at..]) {
                Ok(Some((op, n))) => {
                    at += n;
                    match op {
                        Op::Msg { payload } => match message::tick_fields(payload) {
                            Some(t) => self.on_tick(t, now, start),
                            None => self.local.malformed += 1,
                        },
                        Op::Ping => {
                            let f = ws::client_frame(opcode::BINARY, b"PONG\r\n", self.mask);
                            self.out.extend_from_slice(&f);
                        }
                        Op::Pong => self.acks_pending = self.acks_pending.saturating_sub(1),
                        Op::Err(e) => {
                            self.local.errors += 1;
                            ctx.note_error(format!("NATS: {}", String::from_utf8_lossy(e)));
                        }
                        Op::Ok | Op::Info => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    ctx.note_error(e);
                    return Err(WsError::Protocol("bad NATS protocol data"));
                }
            }
        }
        let rest = &input[at..];
        let mut keep = Vec::new();
        if !rest.is_empty() {
            keep.extend_from_slice(rest);
        }
        self.proto = keep;
        Ok(())
    }

    fn on_tick(&mut self, t: TickFields<'_>, now: i64, start: i64) {
        let Some(slot) = self.slots.iter().position(|s| **s == *t.symbol) else {
            self.local.malformed += 1;
            return;
        };
        if t.timestamp_ns < start {
            self.seq.baseline(slot, t.seq);
            self.local.snapshots += 1;
            return;
        }
        let step = self.seq.observe(slot, t.seq);
        self.local.received += 1;
        self.local.gaps += step.gap;
        self.local.out_of_order += u64::from(step.out_of_order);
        self.latencies
            .push(((now - t.timestamp_ns).max(0) / 1_000) as u64);
    }

    /// Adds local counts to the shared counters.
    fn flush(&mut self, ctx: &Context) {
        let c = &ctx.counters;
        let l = std::mem::take(&mut self.local);
        add(&c.received, l.received);
        add(&c.seq_gaps, l.gaps);
        add(&c.out_of_order, l.out_of_order);
        add(&c.snapshots, l.snapshots);
        add(&c.malformed, l.malformed);
        add(&c.server_errors, l.errors);
        add(&c.bytes_in, l.bytes);
        ctx.latencies.record(self.key, &self.latencies);
        self.latencies.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_uses_the_seed_form_for_one_symbol() {
        let (f, acks) = subscribe_frames(&["AAPL"], [0; 4]);
        assert_eq!(acks, 1);
        assert_eq!(&f[6..], br#"{"action":"subscribe","symbol":"AAPL"}"#);
        let names: Vec<String> = (0..250).map(|i| format!("S{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_, acks) = subscribe_frames(&names, [0; 4]);
        assert_eq!(acks, 3);
    }
}
