//! One simulated client: connect, upgrade, subscribe, then read and count
//! every tick until the run stops. Slow clients stop reading once subscribed.
//!
//! With `--reconnect` a client whose socket closes comes back to the next
//! target after a jittered backoff; with `--reconnect-every` it also closes
//! its socket on schedule and comes back at once. Each resubscribe carries
//! the position of every symbol whose epoch the server named (`since`), and
//! [`StreamTracker`] counts what the replay brought and what it left out.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use marketmux_core::{Backoff, Jitter};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::message::{self, ServerMessage, TickFields};
use crate::nats::{self, Op};
use crate::plan::ClientPlan;
use crate::pusher::{self, Event};
use crate::recovery::{self, StreamTracker, Verdict};
use crate::rfc3339::now_ns;
use crate::stats::{add, Counters, Latencies};
use crate::ws::{self, opcode, InBuf, WsError};

/// How long connecting, upgrading and subscribing may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Initial read buffer per socket (grows for larger frames).
const READ_BUFFER: usize = 4096;
/// Symbols per subscribe message (the server's own bound is 256).
const SYMBOLS_PER_MESSAGE: usize = 100;
/// Bytes per subscribe message (the server closes the socket past 4 KiB).
const SUBSCRIBE_BYTES: usize = 3500;
/// Reconnect backoff: a random wait in [d/2, d], d from this doubling...
const RECONNECT_FIRST: Duration = Duration::from_millis(300);
/// ...to this.
const RECONNECT_MAX: Duration = Duration::from_secs(8);
/// How long a client closing its socket on schedule waits to send the close frame.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// Which server the clients speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MarketMux JSON over WebSocket.
    Marketmux,
    /// NATS text protocol over NATS's WebSocket listener.
    Nats,
    /// Pusher channels protocol 7 (Sockudo): one channel per symbol, ticks
    /// published through the HTTP API.
    Pusher,
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
    /// Where clients connect: client i starts at `i % len`, and each
    /// reconnect moves to the next.
    pub targets: Vec<Target>,
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
    /// Close and reopen every socket this often (`--reconnect-every`).
    pub reconnect_every: Option<Duration>,
    /// Resubscribe with each symbol's position (not `--no-recovery`).
    pub recovery: bool,
    /// `max_rate` of every subscribe (`--max-rate`).
    pub max_rate: Option<f64>,
    /// Offer permessage-deflate (`--compression`).
    pub compression: bool,
    /// Candle intervals every client also follows (`--candles`).
    pub candles: Vec<String>,
}

impl Context {
    /// `targets` must not be empty.
    pub fn new(targets: Vec<Target>, symbols: Vec<String>, stop: CancellationToken) -> Self {
        assert!(!targets.is_empty(), "a run needs at least one target");
        let readers = symbols.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            targets,
            symbols,
            counters: Counters::default(),
            latencies: Latencies::default(),
            connect_latency: Mutex::new(crate::stats::micros_histogram()),
            readers,
            publish_start_ns: AtomicI64::new(i64::MAX),
            first_error: Mutex::new(None),
            stop,
            reconnect: false,
            reconnect_every: None,
            recovery: true,
            max_rate: None,
            compression: false,
            candles: Vec::new(),
        }
    }

    fn note_error(&self, e: String) {
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert(e);
        }
    }
}

/// Why a connection ended while the run goes on.
enum End {
    /// The server closed it, or it broke.
    Lost(WsError),
    /// `--reconnect-every` came due.
    Scheduled,
}

/// Runs one client until the context stops.
pub async fn run(ctx: Arc<Context>, plan: ClientPlan, source: Option<IpAddr>) {
    let mut state = State::new(&ctx, &plan);
    let mut at = plan.index % ctx.targets.len();
    let setup = tokio::select! {
        r = tokio::time::timeout(SETUP_TIMEOUT, setup(&ctx, &mut state, at, source)) => {
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
    // One waiter on the stop token and one timer for the client's whole life:
    // a fresh `cancelled()` or `sleep()` per read would join and leave a
    // shared waiter list or the timer wheel on every message.
    let stopped = ctx.stop.cancelled();
    tokio::pin!(stopped);
    let every = ctx.reconnect_every;
    // Each client at its own phase, so reconnects spread over the period.
    let first = every.map_or(Duration::from_secs(86_400), |e| {
        e.mul_f64(rand::random_range(0.0..1.0))
    });
    let due = tokio::time::sleep(first);
    tokio::pin!(due);
    loop {
        let end = tokio::select! {
            r = conn.pump(&ctx, &mut state) => match r {
                Ok(()) => continue,
                Err(_) if ctx.stop.is_cancelled() => break,
                Err(e) => End::Lost(e),
            },
            _ = &mut due, if every.is_some() => End::Scheduled,
            _ = &mut stopped => break,
        };
        state.flush(&ctx);
        let scheduled = match end {
            End::Lost(e) => {
                ctx.counters.closed_by_server.fetch_add(1, Relaxed);
                ctx.note_error(format!("client {} after setup: {e}", plan.index));
                if !ctx.reconnect {
                    return;
                }
                false
            }
            End::Scheduled => {
                ctx.counters.forced_reconnects.fetch_add(1, Relaxed);
                conn.close(state.mask).await;
                true
            }
        };
        match reconnect(&ctx, &mut state, source, &mut at, scheduled).await {
            Some(c) => conn = c,
            None => return,
        }
        if let Some(e) = every {
            due.as_mut().reset(Instant::now() + e);
        }
    }
    state.flush(&ctx);
}

/// Reopens and resubscribes, each attempt at the next target, with jittered
/// exponential backoff before every attempt but the first of a scheduled
/// reconnect. None once the run stops.
async fn reconnect(
    ctx: &Context,
    state: &mut State,
    source: Option<IpAddr>,
    at: &mut usize,
    at_once: bool,
) -> Option<Connection> {
    let mut backoff = reconnect_backoff();
    let mut wait = !at_once;
    loop {
        *at = (*at + 1) % ctx.targets.len();
        if wait {
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = ctx.stop.cancelled() => return None,
            }
        }
        wait = true;
        let attempt = tokio::select! {
            r = tokio::time::timeout(SETUP_TIMEOUT, setup(ctx, state, *at, source)) => r.ok().and_then(Result::ok),
            _ = ctx.stop.cancelled() => return None,
        };
        state.flush(ctx);
        if let Some(c) = attempt {
            ctx.counters.reconnects.fetch_add(1, Relaxed);
            return Some(c);
        }
    }
}

/// The reconnect backoff. Equal jitter (a wait in [d/2, d] rather than
/// [0, d]): a client that lost its node does not come back at once, and makes
/// fewer attempts (so reaches long waits later) while no node answers.
fn reconnect_backoff() -> Backoff {
    Backoff::new(RECONNECT_FIRST, RECONNECT_MAX, Jitter::Equal)
}

/// Connects to target `at`, upgrades, subscribes (from the positions in
/// `state`), and waits for every ack.
async fn setup(
    ctx: &Context,
    state: &mut State,
    at: usize,
    source: Option<IpAddr>,
) -> Result<Connection, WsError> {
    let t = &ctx.targets[at];
    let started = std::time::Instant::now();
    let mut stream = ws::connect(t.addr, source).await?;
    let mut buf = InBuf::new(READ_BUFFER);
    let deflate = ws::upgrade(&mut stream, &t.host, &t.path, &mut buf, ctx.compression).await?;
    ctx.counters.connected.fetch_add(1, Relaxed);
    if deflate {
        ctx.counters.compressed.fetch_add(1, Relaxed);
    }
    if let Ok(mut h) = ctx.connect_latency.lock() {
        h.saturating_record(started.elapsed().as_micros().max(1) as u64);
    }
    let names: Vec<&str> = state.slots.iter().map(|n| &**n).collect();
    // Pusher: subscribe once the server has said the connection is established.
    let mut then_subscribe = None;
    let (request, acks) = match t.protocol {
        Protocol::Marketmux => {
            let options = ctx
                .max_rate
                .map(|r| format!(r#","max_rate":{r}"#))
                .unwrap_or_default();
            let (mut frames, mut acks) = subscribe_frames(
                &names,
                &mut state.streams,
                ctx.recovery,
                &options,
                state.mask,
            );
            let (candles, candle_acks) = candle_frames(&names, &ctx.candles, state.mask);
            frames.extend(candles);
            acks += candle_acks;
            (frames, acks)
        }
        Protocol::Nats => {
            // NATS numbers nothing across connections: every stream starts over.
            for slot in 0..names.len() {
                state.streams.reset(slot);
            }
            let mut p = format!("{}\r\n", nats::CONNECT);
            for (sid, n) in names.iter().enumerate() {
                p.push_str(&format!("SUB {} {}\r\n", nats::subject(n), sid + 1));
            }
            p.push_str("PING\r\n");
            (
                ws::client_frame(opcode::BINARY, p.as_bytes(), state.mask),
                1,
            )
        }
        Protocol::Pusher => {
            // Pusher numbers nothing: the publisher's `seq` is per run.
            for slot in 0..names.len() {
                state.streams.reset(slot);
            }
            then_subscribe = Some((pusher::subscribe_frames(&names, state.mask), names.len()));
            // Nothing to send before `pusher:connection_established`.
            (Vec::new(), 1)
        }
    };
    stream.write_all(&request).await?;
    state.protocol = t.protocol;
    state.acks_pending = acks;
    state.proto.clear();
    state.out.clear();
    let mut conn = Connection {
        stream,
        buf,
        inflater: deflate.then(ws::Inflater::default),
    };
    // Frames already buffered (and anything after the ack) are handled here.
    conn.process(ctx, state)?;
    while state.acks_pending > 0 {
        conn.pump(ctx, state).await?;
    }
    if let Some((frames, acks)) = then_subscribe {
        conn.stream.write_all(&frames).await?;
        state.acks_pending = acks;
        while state.acks_pending > 0 {
            conn.pump(ctx, state).await?;
        }
    }
    Ok(conn)
}

/// The subscribe message(s) and how many acks they get. With `recovery`,
/// symbols with a position go with it in `since` (and `streams` notes that
/// they did). `options` (`,"max_rate":4` or empty) goes into every message.
fn subscribe_frames(
    names: &[&str],
    streams: &mut StreamTracker,
    recovery: bool,
    options: &str,
    mask: [u8; 4],
) -> (Vec<u8>, usize) {
    if let [one] = names {
        if !recovery || streams.position(0).is_none() {
            let m = format!(r#"{{"action":"subscribe","symbol":"{one}"{options}}}"#);
            return (ws::client_frame(opcode::TEXT, m.as_bytes(), mask), 1);
        }
    }
    /// A message's bytes besides its symbols and positions.
    const ENVELOPE: &str = r#"{"action":"subscribe","symbols":[],"since":{}}"#;
    let mut out = Vec::new();
    let mut acks = 0;
    let mut list = String::new();
    let mut since = String::from("{");
    let mut count = 0;
    let mut flush = |list: &mut String, since: &mut String, count: &mut usize| {
        if *count == 0 {
            return;
        }
        let m = if since.len() > 1 {
            format!(r#"{{"action":"subscribe","symbols":[{list}],"since":{since}}}{options}}}"#)
        } else {
            format!(r#"{{"action":"subscribe","symbols":[{list}]{options}}}"#)
        };
        out.extend(ws::client_frame(opcode::TEXT, m.as_bytes(), mask));
        acks += 1;
        list.clear();
        since.truncate(1);
        *count = 0;
    };
    for (slot, name) in names.iter().enumerate() {
        let entry = streams
            .position(slot)
            .filter(|_| recovery)
            .map(|(seq, epoch)| recovery::since_entry(name, seq, epoch))
            .unwrap_or_default();
        let grows = name.len() + 3 + entry.len() + 1;
        let size = ENVELOPE.len() + list.len() + since.len() + grows;
        if count >= SYMBOLS_PER_MESSAGE || (count > 0 && size > SUBSCRIBE_BYTES) {
            flush(&mut list, &mut since, &mut count);
        }
        if count > 0 {
            list.push(',');
        }
        list.push('"');
        list.push_str(name);
        list.push('"');
        if !entry.is_empty() {
            if since.len() > 1 {
                since.push(',');
            }
            since.push_str(&entry);
            streams.resuming(slot);
        }
        count += 1;
    }
    flush(&mut list, &mut since, &mut count);
    (out, acks)
}

/// The candle subscribe message(s) for `names` and `intervals` (none
/// without intervals) and how many acks they get.
fn candle_frames(names: &[&str], intervals: &[String], mask: [u8; 4]) -> (Vec<u8>, usize) {
    if intervals.is_empty() {
        return (Vec::new(), 0);
    }
    let intervals = intervals
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(",");
    let mut out = Vec::new();
    let mut acks = 0;
    let mut rest = names;
    while !rest.is_empty() {
        let mut take = 0;
        let mut size = 64 + intervals.len();
        while take < rest.len() && take < SYMBOLS_PER_MESSAGE {
            size += rest[take].len() + 3;
            if take > 0 && size > SUBSCRIBE_BYTES {
                break;
            }
            take += 1;
        }
        let (chunk, tail) = rest.split_at(take);
        let list = chunk
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(",");
        let m = format!(r#"{{"action":"subscribe","candles":[{intervals}],"symbols":[{list}]}}"#);
        out.extend(ws::client_frame(opcode::TEXT, m.as_bytes(), mask));
        acks += 1;
        rest = tail;
    }
    (out, acks)
}

/// One open socket; what outlives it is in [`State`].
struct Connection {
    stream: TcpStream,
    buf: InBuf,
    /// Set when permessage-deflate was agreed.
    inflater: Option<ws::Inflater>,
}

/// Per-client counts not yet added to the shared counters.
#[derive(Default)]
struct Local {
    received: u64,
    recovered: u64,
    gaps: u64,
    seam_gaps: u64,
    duplicated: u64,
    snapshots: u64,
    malformed: u64,
    errors: u64,
    bytes: u64,
    resumed: u64,
    recovered_streams: u64,
    refused: u64,
    new_epochs: u64,
    unnumbered: u64,
    candles: u64,
    candles_closed: u64,
}

/// One client across its connections.
struct State {
    /// The protocol of the current connection.
    protocol: Protocol,
    /// Picks this client's latency shard.
    key: usize,
    /// Subscribed symbol names, by slot.
    slots: Vec<Box<str>>,
    /// Each slot's position and what its ticks mean.
    streams: StreamTracker,
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
    async fn pump(&mut self, ctx: &Context, state: &mut State) -> Result<(), WsError> {
        let n = self.buf.fill(&mut self.stream).await?;
        if n == 0 {
            return Err(WsError::Eof);
        }
        state.local.bytes += n as u64;
        let r = self.process(ctx, state);
        if !state.out.is_empty() {
            self.stream.write_all(&state.out).await?;
            state.out.clear();
        }
        state.flush(ctx);
        r
    }

    fn process(&mut self, ctx: &Context, state: &mut State) -> Result<(), WsError> {
        let now = now_ns();
        let start = ctx.publish_start_ns.load(Relaxed);
        while let Some(head) = ws::decode(self.buf.bytes())? {
            let mut payload = &self.buf.bytes()[head.header..head.total()];
            if head.compressed {
                let inflater = self.inflater.as_mut().ok_or(WsError::Protocol(
                    "compressed frame without permessage-deflate",
                ))?;
                payload = inflater.inflate(payload)?;
            }
            match head.opcode {
                opcode::TEXT | opcode::BINARY | opcode::CONTINUATION => match state.protocol {
                    Protocol::Marketmux | Protocol::Pusher if !head.fin => {
                        return Err(WsError::Protocol("fragmented message"))
                    }
                    Protocol::Marketmux => state.on_text(ctx, payload, now, start),
                    Protocol::Nats => state.on_nats(ctx, payload, now, start)?,
                    Protocol::Pusher => state.on_pusher(ctx, payload, now, start)?,
                },
                opcode::PING => {
                    let pong = ws::client_frame(opcode::PONG, payload, state.mask);
                    state.out.extend_from_slice(&pong);
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

    /// Closes the socket from this side (1000), without waiting for the reply.
    async fn close(mut self, mask: [u8; 4]) {
        let frame = ws::client_frame(opcode::CLOSE, &1000u16.to_be_bytes(), mask);
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.stream.write_all(&frame)).await;
    }
}

impl State {
    fn new(ctx: &Context, plan: &ClientPlan) -> Self {
        let slots: Vec<Box<str>> = plan
            .symbols
            .iter()
            .map(|&s| ctx.symbols[s].as_str().into())
            .collect();
        Self {
            protocol: Protocol::Marketmux,
            key: plan.index,
            streams: StreamTracker::new(slots.len()),
            slots,
            mask: (plan.index as u32 ^ 0x5bd1_e995)
                .wrapping_mul(2_654_435_761)
                .to_be_bytes(),
            acks_pending: 0,
            proto: Vec::new(),
            out: Vec::new(),
            latencies: Vec::new(),
            local: Local::default(),
        }
    }

    fn slot(&self, symbol: &[u8]) -> Option<usize> {
        self.slots.iter().position(|s| s.as_bytes() == symbol)
    }

    fn on_text(&mut self, ctx: &Context, msg: &[u8], now: i64, start: i64) {
        match message::classify(msg) {
            ServerMessage::Tick(t) => self.on_tick(t, now, start),
            ServerMessage::Candle { closed } => {
                self.local.candles += 1;
                self.local.candles_closed += u64::from(closed);
            }
            // A candle subscribe's reply: its symbols' tick streams are not
            // in it, and their positions stay as they are.
            ServerMessage::Subscribed(m) if message::find(m, br#""candles":"#).is_some() => {
                self.acks_pending = self.acks_pending.saturating_sub(1);
            }
            ServerMessage::Subscribed(m) => {
                self.acks_pending = self.acks_pending.saturating_sub(1);
                self.on_subscribed(m);
            }
            ServerMessage::Error(e) => {
                self.local.errors += 1;
                ctx.note_error(format!("server error: {}", String::from_utf8_lossy(e)));
            }
            ServerMessage::Malformed => self.local.malformed += 1,
            ServerMessage::Other => {}
        }
    }

    /// Applies each symbol's `streams` entry (or its absence) to its position.
    fn on_subscribed(&mut self, msg: &[u8]) {
        let Some(reply) = recovery::parse_subscribed(msg) else {
            self.local.malformed += 1;
            return;
        };
        // Every symbol the reply names, in `symbols` or only in `streams`.
        let extra = reply.streams.keys().filter(|k| !reply.symbols.contains(k));
        for name in reply.symbols.iter().chain(extra) {
            let Some(slot) = self.slot(name.as_bytes()) else {
                continue;
            };
            let r = self.streams.subscribed(slot, reply.streams.get(name));
            let l = &mut self.local;
            l.resumed += u64::from(r.resumed);
            l.recovered_streams += u64::from(r.recovered);
            l.refused += u64::from(r.refused);
            l.new_epochs += u64::from(r.new_epoch);
            l.unnumbered += u64::from(r.unnumbered);
        }
    }

    /// Fails on an error while connecting or subscribing (it would never be acknowledged).
    fn on_pusher(
        &mut self,
        ctx: &Context,
        msg: &[u8],
        now: i64,
        start: i64,
    ) -> Result<(), WsError> {
        match pusher::classify(msg) {
            Event::Tick(t) => self.on_tick(t, now, start),
            Event::Established | Event::Subscribed => {
                self.acks_pending = self.acks_pending.saturating_sub(1);
            }
            Event::Ping => {
                let f = ws::client_frame(opcode::TEXT, pusher::PONG.as_bytes(), self.mask);
                self.out.extend_from_slice(&f);
            }
            Event::Error(e) => {
                self.local.errors += 1;
                ctx.note_error(format!("Pusher: {}", String::from_utf8_lossy(e)));
                if self.acks_pending > 0 {
                    return Err(WsError::Protocol(
                        "the server refused the connection or a subscribe",
                    ));
                }
            }
            Event::Malformed => self.local.malformed += 1,
            Event::Other => {}
        }
        Ok(())
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
        let Some(slot) = self.slot(t.symbol) else {
            self.local.malformed += 1;
            return;
        };
        let snapshot = t.timestamp_ns < start;
        if snapshot && !self.streams.has_epoch(slot) {
            self.streams.baseline(slot, t.seq);
            self.local.snapshots += 1;
            return;
        }
        let Verdict::New {
            gap,
            seam,
            replayed,
        } = self.streams.observe(slot, t.seq)
        else {
            self.local.duplicated += 1;
            return;
        };
        if snapshot {
            // Sent before publishing started: neither expected nor a gap in the run.
            self.local.snapshots += 1;
            return;
        }
        if seam {
            self.local.seam_gaps += gap;
        } else {
            self.local.gaps += gap;
        }
        self.local.received += 1;
        if replayed {
            // Published while this client was away: its age is not latency.
            self.local.recovered += 1;
        } else {
            self.latencies
                .push(((now - t.timestamp_ns).max(0) / 1_000) as u64);
        }
    }

    /// Adds local counts to the shared counters.
    fn flush(&mut self, ctx: &Context) {
        let c = &ctx.counters;
        let l = std::mem::take(&mut self.local);
        add(&c.received, l.received);
        add(&c.recovered, l.recovered);
        add(&c.seq_gaps, l.gaps);
        add(&c.seam_gaps, l.seam_gaps);
        add(&c.duplicated, l.duplicated);
        add(&c.snapshots, l.snapshots);
        add(&c.malformed, l.malformed);
        add(&c.server_errors, l.errors);
        add(&c.bytes_in, l.bytes);
        add(&c.resumed, l.resumed);
        add(&c.recovered_streams, l.recovered_streams);
        add(&c.refused, l.refused);
        add(&c.new_epochs, l.new_epochs);
        add(&c.unnumbered, l.unnumbered);
        add(&c.candles, l.candles);
        add(&c.candles_closed, l.candles_closed);
        ctx.latencies.record(self.key, &self.latencies);
        self.latencies.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::StreamInfo;

    /// The JSON text of each client frame in `frames` (mask [0; 4]: plain).
    fn texts(mut frames: &[u8]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while !frames.is_empty() {
            let len = match frames[1] & 0x7f {
                126 => {
                    let n = u16::from_be_bytes([frames[2], frames[3]]) as usize;
                    (4, n)
                }
                n => (2, n as usize),
            };
            let (head, n) = len;
            let body = &frames[head + 4..head + 4 + n];
            out.push(serde_json::from_slice(body).unwrap());
            frames = &frames[head + 4 + n..];
        }
        out
    }

    #[test]
    fn candle_subscribes_name_the_intervals_and_split_like_tick_subscribes() {
        assert_eq!(candle_frames(&["AAPL"], &[], [0; 4]), (Vec::new(), 0));
        let intervals = ["1m".to_owned(), "1s".to_owned()];
        let (f, acks) = candle_frames(&["AAPL", "MSFT"], &intervals, [0; 4]);
        assert_eq!(acks, 1);
        assert_eq!(
            texts(&f),
            [
                serde_json::json!({"action":"subscribe","candles":["1m","1s"],"symbols":["AAPL","MSFT"]})
            ]
        );
        let names: Vec<String> = (0..250).map(|i| format!("S{i:04}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (f, acks) = candle_frames(&names, &intervals[..1], [0; 4]);
        let messages = texts(&f);
        assert_eq!((acks, messages.len()), (3, 3));
        let all: Vec<&str> = messages
            .iter()
            .flat_map(|m| m["symbols"].as_array().unwrap())
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(all, names);
    }

    #[test]
    fn subscribe_uses_the_seed_form_for_one_symbol() {
        let mut streams = StreamTracker::new(1);
        let (f, acks) = subscribe_frames(&["AAPL"], &mut streams, true, "", [0; 4]);
        assert_eq!(acks, 1);
        assert_eq!(&f[6..], br#"{"action":"subscribe","symbol":"AAPL"}"#);
        let names: Vec<String> = (0..250).map(|i| format!("S{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut streams = StreamTracker::new(250);
        let (_, acks) = subscribe_frames(&names, &mut streams, true, "", [0; 4]);
        assert_eq!(acks, 3);
    }

    #[test]
    fn resubscribes_carry_each_known_position_within_the_frame_limit() {
        let names: Vec<String> = (0..120).map(|i| format!("SYMBOL{i:04}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut streams = StreamTracker::new(names.len());
        for slot in 0..names.len() - 1 {
            let info = StreamInfo {
                epoch: "k3f9".into(),
                seq: 1_000_000 + slot as u64,
                recovered: None,
            };
            streams.subscribed(slot, Some(&info));
        }
        let (frames, acks) = subscribe_frames(&names, &mut streams, true, "", [0; 4]);
        let msgs = texts(&frames);
        assert_eq!(msgs.len(), acks);
        assert!(acks >= 2, "120 positions do not fit one 3.5 KiB frame");
        let mut symbols = 0;
        let mut since = 0;
        for m in &msgs {
            assert!(m.to_string().len() <= SUBSCRIBE_BYTES, "{m}");
            symbols += m["symbols"].as_array().unwrap().len();
            since += m["since"].as_object().map_or(0, |o| o.len());
        }
        assert_eq!(
            (symbols, since),
            (120, 119),
            "the last symbol has no epoch yet"
        );
        assert_eq!(msgs[0]["since"]["SYMBOL0000"]["seq"], 1_000_000);
        assert_eq!(msgs[0]["since"]["SYMBOL0000"]["epoch"], "k3f9");
        // A single symbol with a position uses the list form, which carries `since`.
        let mut one = StreamTracker::new(1);
        let info = StreamInfo {
            epoch: "e".into(),
            seq: 7,
            recovered: None,
        };
        one.subscribed(0, Some(&info));
        let (f, _) = subscribe_frames(&["AAPL"], &mut one, true, "", [0; 4]);
        let m = &texts(&f)[0];
        assert_eq!(m["symbols"][0], "AAPL");
        assert_eq!(m["since"]["AAPL"]["seq"], 7);
        // --no-recovery: the plain form again, no position.
        let (f, _) = subscribe_frames(&["AAPL"], &mut one, false, "", [0; 4]);
        assert_eq!(&f[6..], br#"{"action":"subscribe","symbol":"AAPL"}"#);
    }

    #[test]
    fn reconnect_waits_are_in_the_upper_half_of_each_ceiling() {
        let mut b = reconnect_backoff();
        for ceiling_ms in [300, 600, 1200, 2400, 4800, 8000, 8000] {
            let w = b.next_delay().as_millis();
            assert!((ceiling_ms / 2..=ceiling_ms).contains(&w), "{w} ms");
        }
    }

    fn state(symbols: &[&str]) -> (Context, State) {
        let target = Target {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            host: "127.0.0.1:1".into(),
            path: "/ws".into(),
            protocol: Protocol::Marketmux,
        };
        let symbols: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
        let plan = ClientPlan {
            index: 0,
            symbols: (0..symbols.len()).collect(),
            slow: false,
        };
        let ctx = Context::new(vec![target], symbols, CancellationToken::new());
        let state = State::new(&ctx, &plan);
        (ctx, state)
    }

    fn tick(symbol: &str, seq: u64) -> String {
        format!(
            r#"{{"type":"tick","symbol":"{symbol}","price":1.5,"timestamp":"2026-12-02T18:00:00Z","seq":{seq}}}"#
        )
    }

    /// A scripted server across two connections: first subscribe, a reconnect
    /// with positions, a replay for one symbol and a refusal for the other.
    #[test]
    fn counts_a_scripted_reconnect() {
        let (ctx, mut s) = state(&["AAPL", "MSFT"]);
        let feed = |s: &mut State, m: &str| s.on_text(&ctx, m.as_bytes(), 0, i64::MIN);
        feed(
            &mut s,
            r#"{"type":"subscribed","symbols":["AAPL","MSFT"],"streams":{"AAPL":{"epoch":"e1","seq":10},"MSFT":{"epoch":"e1","seq":0}}}"#,
        );
        for m in [
            tick("AAPL", 10),
            tick("AAPL", 11),
            tick("MSFT", 1),
            tick("AAPL", 11),
        ] {
            feed(&mut s, &m);
        }
        // The node goes away; the next one serves AAPL's position, not MSFT's.
        let (frames, _) = subscribe_frames(&["AAPL", "MSFT"], &mut s.streams, true, "", [0; 4]);
        let since = &texts(&frames)[0]["since"];
        assert_eq!(since["AAPL"]["seq"], 11);
        assert_eq!(since["MSFT"]["seq"], 1);
        feed(
            &mut s,
            r#"{"type":"subscribed","symbols":["AAPL","MSFT"],"streams":{"AAPL":{"epoch":"e1","seq":14,"recovered":true},"MSFT":{"epoch":"e1","seq":9,"recovered":false}}}"#,
        );
        for m in [
            tick("AAPL", 12),
            tick("MSFT", 9),
            tick("AAPL", 13),
            tick("AAPL", 14),
            tick("AAPL", 15),
            tick("MSFT", 10),
        ] {
            feed(&mut s, &m);
        }
        let l = &s.local;
        assert_eq!(l.received, 9, "10, 11, 12..15 of AAPL; 1, 9, 10 of MSFT");
        assert_eq!(l.recovered, 3, "AAPL 12..14");
        assert_eq!(l.duplicated, 1, "AAPL 11 again");
        assert_eq!(l.seam_gaps, 7, "MSFT 2..8");
        assert_eq!(l.gaps, 0);
        assert_eq!((l.resumed, l.recovered_streams, l.refused), (2, 1, 1));
        assert_eq!(l.new_epochs, 0);
        assert_eq!(
            s.latencies.len(),
            6,
            "replayed ticks are not latency samples"
        );
        s.flush(&ctx);
        assert_eq!(ctx.counters.seam_gaps.load(Relaxed), 7);
        assert_eq!(ctx.counters.recovered.load(Relaxed), 3);
    }

    #[test]
    fn a_symbol_only_in_streams_counts_too() {
        let (ctx, mut s) = state(&["AAPL"]);
        let reply = r#"{"type":"subscribed","streams":{"AAPL":{"epoch":"e1","seq":4}}}"#;
        s.on_text(&ctx, reply.as_bytes(), 0, i64::MIN);
        assert_eq!(s.streams.position(0), Some((4, "e1")));
        s.on_text(&ctx, b"{\"type\":\"subscribed\"", 0, i64::MIN);
        assert_eq!(
            s.local.malformed, 1,
            "an unreadable reply is counted, not fatal"
        );
    }
}
