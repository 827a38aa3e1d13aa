//! The publishing side of a scenario: ticks at a fixed rate, round-robin
//! over the symbols, in batches (`POST /api/v1/ticks`, NATS `PUB`s, or
//! Pusher `batch_events`). Each tick's timestamp is its send time, which the
//! clients subtract from their receive time.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::nats::{self, NatsPublisher};
use crate::pusher_api::{self, Credentials, PusherPublisher};
use crate::rfc3339;

/// Most ticks in one batch (the ingest endpoint's own bound is 10,000).
const MAX_BATCH: u64 = 5_000;

/// Where ticks go.
pub enum Sink {
    /// `POST` JSON arrays to the gateway's ingest endpoint.
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
    },
    /// `PUB ticks.SYM` to a NATS server over TCP.
    Nats(Box<NatsPublisher>),
    /// `POST /apps/{id}/batch_events` to a Pusher server, at most `batch`
    /// events per request.
    Pusher {
        publisher: Box<PusherPublisher>,
        batch: usize,
    },
}

impl Sink {
    /// An HTTP sink for `url` (`http://host:port/api/v1/ticks`).
    pub fn http(url: reqwest::Url) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Sink::Http { client, url })
    }

    /// A NATS sink publishing to `addr`.
    pub async fn nats(addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Sink::Nats(Box::new(NatsPublisher::connect(addr).await?)))
    }

    async fn send(&mut self, body: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Sink::Http { client, url } => {
                let resp = client
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status();
                if !status.is_success() {
                    let text = resp.text().await.unwrap_or_default();
                    anyhow::bail!("ingest answered {status}: {text}");
                }
                Ok(())
            }
            Sink::Nats(p) => p.send(&body).await,
            Sink::Pusher { .. } => anyhow::bail!("a Pusher sink takes events, not a body"),
        }
    }

    /// Waits until the server has taken every tick sent so far; returns the
    /// requests that finished meanwhile.
    async fn flush(&mut self) -> Vec<Sent> {
        let failed = |e: anyhow::Error| Sent {
            symbols: Vec::new(),
            result: Err(e),
            took: Duration::ZERO,
        };
        match self {
            Sink::Http { .. } => Vec::new(),
            Sink::Nats(p) => p.flush().await.err().map(failed).into_iter().collect(),
            Sink::Pusher { publisher, .. } => publisher.finish().await,
        }
    }
}

/// One request (or socket write) and the ticks it carried.
pub struct Sent {
    /// The symbol index of each tick.
    pub symbols: Vec<usize>,
    pub result: anyhow::Result<()>,
    /// Until the server accepted it.
    pub took: Duration,
}

/// Where to publish, before connecting.
#[derive(Debug, Clone)]
pub enum SinkSpec {
    /// The gateway's `POST /api/v1/ticks` URL.
    Http(reqwest::Url),
    /// A NATS client port (plain TCP).
    Nats(SocketAddr),
    /// A Pusher server's HTTP API at this URL's host and port, events per request.
    Pusher {
        base: reqwest::Url,
        creds: Credentials,
        batch: usize,
    },
}

impl SinkSpec {
    async fn connect(self) -> anyhow::Result<Sink> {
        match self {
            SinkSpec::Http(url) => Sink::http(url),
            SinkSpec::Nats(addr) => Sink::nats(addr).await,
            SinkSpec::Pusher { base, creds, batch } => Ok(Sink::Pusher {
                publisher: Box::new(PusherPublisher::new(&base, creds)?),
                batch: batch.max(1),
            }),
        }
    }
}

/// What one publishing run does.
pub struct Job {
    pub symbols: Vec<String>,
    pub rate: f64,
    pub duration: Duration,
    pub interval: Duration,
    /// Counts accepted ticks as they go.
    pub progress: Arc<AtomicU64>,
    pub stop: CancellationToken,
}

/// A publisher on its own thread and single-threaded runtime, so its sends
/// never wait behind thousands of client tasks: that wait would be generator
/// delay counted as server latency.
pub struct PublisherThread {
    start: oneshot::Sender<Job>,
    done: oneshot::Receiver<Published>,
}

impl PublisherThread {
    /// Starts the thread and connects the sink; fails if the sink cannot connect.
    pub async fn spawn(spec: SinkSpec) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<()>>();
        let (start, start_rx) = oneshot::channel::<Job>();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let sink = match spec.connect().await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let Ok(job) = start_rx.await else { return };
                    let out = run(
                        sink,
                        &job.symbols,
                        job.rate,
                        job.duration,
                        job.interval,
                        job.progress,
                        job.stop,
                    )
                    .await;
                    let _ = done_tx.send(out);
                });
            })
            .context("cannot start the publisher thread")?;
        ready_rx.await.context("the publisher thread ended")??;
        Ok(Self { start, done })
    }

    /// Publishes `job` and returns what was accepted.
    pub async fn run(self, job: Job) -> Published {
        let died = || Published {
            first_error: Some("the publisher thread ended early".into()),
            ..Published::default()
        };
        if self.start.send(job).is_err() {
            return died();
        }
        self.done.await.unwrap_or_else(|_| died())
    }
}

/// What the publisher did.
#[derive(Debug, Default, Clone)]
pub struct Published {
    /// Ticks accepted per symbol index.
    pub per_symbol: Vec<u64>,
    pub ticks: u64,
    pub batches: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Time each batch took to be accepted (HTTP response, or NATS socket write), µs.
    /// A Pusher batch is one `batch_events` request.
    pub send_micros: Option<hdrhistogram::Histogram<u64>>,
}

/// Publishes `rate` ticks/s for `duration`, a batch every `interval`.
/// `progress` counts accepted ticks as they go.
pub async fn run(
    mut sink: Sink,
    symbols: &[String],
    rate: f64,
    duration: Duration,
    interval: Duration,
    progress: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Published {
    let mut out = Published {
        per_symbol: vec![0; symbols.len()],
        ..Published::default()
    };
    let mut seq = vec![0u64; symbols.len()];
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut sent = 0u64;
    let mut next = 0usize;
    let start = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut send_micros = crate::stats::micros_histogram();
    let mut batch: Vec<(usize, String)> = Vec::new();
    while sent < total && !stop.is_cancelled() {
        ticker.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        let n = due.saturating_sub(sent).min(MAX_BATCH);
        if n == 0 {
            continue;
        }
        batch.clear();
        // The gateway's ingest body has no `seq` (the gateway assigns it);
        // NATS and Pusher subscribers get the tick as the gateway would send it.
        let with_seq = !matches!(sink, Sink::Http { .. });
        for _ in 0..n {
            let s = next % symbols.len();
            next += 1;
            seq[s] += 1;
            let ts = rfc3339::format(rfc3339::now_ns());
            let price = 100.0 + (seq[s] % 1000) as f64 / 100.0;
            let json = tick_json(&symbols[s], price, &ts, with_seq.then_some(seq[s]));
            batch.push((s, json));
        }
        sent += n;
        for done in send(&mut sink, symbols, &batch).await {
            account(&mut out, &mut send_micros, &progress, done);
        }
    }
    for done in sink.flush().await {
        account(&mut out, &mut send_micros, &progress, done);
    }
    if let Sink::Nats(p) = &sink {
        if let Some(e) = p.error.lock().ok().and_then(|e| e.clone()) {
            out.first_error.get_or_insert(e);
        }
    }
    out.elapsed = start.elapsed();
    out.send_micros = Some(send_micros);
    out
}

/// Sends one batch of `(symbol index, tick JSON)`; returns the requests
/// that finished (for HTTP and NATS, this one).
async fn send(sink: &mut Sink, symbols: &[String], batch: &[(usize, String)]) -> Vec<Sent> {
    if let Sink::Pusher {
        publisher,
        batch: per_request,
    } = sink
    {
        let mut done = Vec::new();
        for chunk in batch.chunks(*per_request) {
            let body = pusher_api::batch_body(
                chunk
                    .iter()
                    .map(|(s, json)| (symbols[*s].as_str(), json.as_str())),
            );
            let ticks = chunk.iter().map(|(s, _)| *s).collect();
            done.extend(publisher.submit(body, ticks).await);
        }
        return done;
    }
    let mut body = Vec::with_capacity(batch.len() * 120);
    let is_nats = matches!(sink, Sink::Nats(_));
    if !is_nats {
        body.push(b'[');
    }
    for (i, (s, json)) in batch.iter().enumerate() {
        if is_nats {
            nats::push_pub(&mut body, &symbols[*s], json.as_bytes());
        } else {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(json.as_bytes());
        }
    }
    if !is_nats {
        body.push(b']');
    }
    let t0 = Instant::now();
    let result = sink.send(body).await;
    vec![Sent {
        symbols: batch.iter().map(|(s, _)| *s).collect(),
        result,
        took: t0.elapsed(),
    }]
}

/// Counts one finished request: accepted ticks per symbol, or an error.
fn account(
    out: &mut Published,
    send_micros: &mut hdrhistogram::Histogram<u64>,
    progress: &AtomicU64,
    done: Sent,
) {
    if !done.took.is_zero() {
        send_micros.saturating_record(done.took.as_micros().max(1) as u64);
    }
    match done.result {
        Ok(()) => {
            out.batches += 1;
            out.ticks += done.symbols.len() as u64;
            for &s in &done.symbols {
                out.per_symbol[s] += 1;
            }
            progress.fetch_add(done.symbols.len() as u64, Relaxed);
        }
        Err(e) => {
            out.errors += 1;
            out.first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
}

/// A tick as JSON: the ingest body element, or with `seq` the exact payload
/// NATS subscribers get (the same shape the gateway sends).
pub fn tick_json(symbol: &str, price: f64, timestamp: &str, seq: Option<u64>) -> String {
    let mut s = String::with_capacity(112);
    if seq.is_some() {
        s.push_str(r#"{"type":"tick","#);
    } else {
        s.push('{');
    }
    let _ = write!(
        s,
        r#""symbol":"{symbol}","price":{price},"timestamp":"{timestamp}""#
    );
    if let Some(seq) = seq {
        let _ = write!(s, r#","seq":{seq}"#);
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{classify, ServerMessage};

    #[test]
    fn nats_payload_reads_like_a_gateway_tick() {
        let ts = rfc3339::format(1_747_062_245_123_456_789);
        let j = tick_json("AAPL", 100.5, &ts, Some(3));
        let ServerMessage::Tick(t) = classify(j.as_bytes()) else {
            panic!("{j}");
        };
        assert_eq!(
            (t.symbol, t.seq, t.timestamp_ns),
            (&b"AAPL"[..], 3, 1_747_062_245_123_456_789)
        );
        let v: serde_json::Value = serde_json::from_str(&tick_json("A", 1.0, &ts, None)).unwrap();
        assert_eq!(v["timestamp"], ts.as_str());
        assert!(v.get("seq").is_none());
    }
}
