//! The NATS side of the comparison: parsing the text protocol a subscriber
//! receives (over NATS's WebSocket listener), and a publisher that sends
//! `PUB` over plain TCP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The `CONNECT` a client sends first (no verbose `+OK`s, no headers).
pub const CONNECT: &str = r#"CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"lang":"rust","name":"load-test","version":"0.1.0","protocol":1,"headers":false,"no_responders":false}"#;

/// Subject of a symbol's ticks.
pub fn subject(symbol: &str) -> String {
    format!("ticks.{symbol}")
}

/// One server operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    Msg { payload: &'a [u8] },
    Ping,
    Pong,
    Ok,
    Info,
    Err(&'a [u8]),
}

/// Parses the operation at the front of `buf`: `Ok(Some((op, consumed)))`,
/// `Ok(None)` when it is not complete yet.
pub fn parse_op(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, String> {
    let Some(eol) = crate::message::find(buf, b"\r\n") else {
        return if buf.len() > 64 * 1024 {
            Err("NATS protocol line too long".into())
        } else {
            Ok(None)
        };
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let op = if line.starts_with(b"MSG ") {
        let size = line
            .rsplit(|&c| c == b' ')
            .find(|t| !t.is_empty())
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<usize>().ok())
            .ok_or_else(|| format!("bad MSG line: {}", String::from_utf8_lossy(line)))?;
        if buf.len() < after + size + 2 {
            return Ok(None);
        }
        let payload = &buf[after..after + size];
        return Ok(Some((Op::Msg { payload }, after + size + 2)));
    } else if line == b"PING" {
        Op::Ping
    } else if line == b"PONG" {
        Op::Pong
    } else if line == b"+OK" {
        Op::Ok
    } else if line.starts_with(b"INFO") {
        Op::Info
    } else if line.starts_with(b"-ERR") {
        Op::Err(line)
    } else {
        return Err(format!(
            "unknown NATS operation: {}",
            String::from_utf8_lossy(line)
        ));
    };
    Ok(Some((op, after)))
}

/// Appends `PUB subject n\r\npayload\r\n` to `out`.
pub fn push_pub(out: &mut Vec<u8>, symbol: &str, payload: &[u8]) {
    use std::io::Write as _;
    let _ = write!(out, "PUB ticks.{symbol} {}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// A publishing connection to NATS over TCP.
pub struct NatsPublisher {
    wr: OwnedWriteHalf,
    /// PINGs the server sent (answered before the next batch) and PONGs it returned.
    events: mpsc::UnboundedReceiver<Op<'static>>,
    /// The first `-ERR` the server sent.
    pub error: Arc<Mutex<Option<String>>>,
}

impl NatsPublisher {
    /// Connects and waits until the server has processed `CONNECT`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot reach NATS at {addr} (publisher, plain TCP)"))?;
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        wr.write_all(format!("{CONNECT}\r\nPING\r\n").as_bytes())
            .await?;
        let (tx, events) = mpsc::unbounded_channel();
        let error = Arc::new(Mutex::new(None));
        let err = error.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let op = match line.as_str() {
                    "PING" => Op::Ping,
                    "PONG" => Op::Pong,
                    l if l.starts_with("-ERR") => {
                        if let Ok(mut e) = err.lock() {
                            e.get_or_insert_with(|| l.to_string());
                        }
                        continue;
                    }
                    _ => continue,
                };
                if tx.send(op).is_err() {
                    break;
                }
            }
        });
        let mut p = Self { wr, events, error };
        p.wait_pong().await?;
        Ok(p)
    }

    /// Writes `batch` (already `PUB`-encoded), answering pending server PINGs first.
    pub async fn send(&mut self, batch: &[u8]) -> anyhow::Result<()> {
        while let Ok(op) = self.events.try_recv() {
            if op == Op::Ping {
                self.wr.write_all(b"PONG\r\n").await?;
            }
        }
        self.wr.write_all(batch).await?;
        Ok(())
    }

    /// Round trip: once the PONG is back, the server has processed every PUB before it.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.wr.write_all(b"PING\r\n").await?;
        self.wait_pong().await
    }

    async fn wait_pong(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Op::Pong)) => return Ok(()),
                Ok(Some(Op::Ping)) => self.wr.write_all(b"PONG\r\n").await?,
                Ok(Some(_)) => {}
                Ok(None) => anyhow::bail!("NATS closed the publisher connection"),
                Err(_) => anyhow::bail!("NATS did not answer PING within 10 s"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_msg_and_control_ops() {
        let buf = b"INFO {\"x\":1}\r\nMSG ticks.A 7 5\r\nhello\r\nPING\r\nMSG ticks.B 1 reply.x 2\r\nhi\r\n-ERR 'Slow Consumer'\r\n";
        let mut rest = &buf[..];
        let mut ops = Vec::new();
        while let Some((op, n)) = parse_op(rest).unwrap() {
            ops.push(format!("{op:?}"));
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        assert_eq!(ops.len(), 5);
        assert_eq!(
            parse_op(b"MSG ticks.A 7 5\r\nhello\r\n").unwrap(),
            Some((Op::Msg { payload: b"hello" }, 24))
        );
        assert_eq!(
            parse_op(b"MSG ticks.B 1 reply.x 2\r\nhi\r\n")
                .unwrap()
                .unwrap()
                .0,
            Op::Msg { payload: b"hi" }
        );
    }

    #[test]
    fn waits_for_incomplete_ops() {
        assert_eq!(parse_op(b"MSG ticks.A 7 5\r\nhel").unwrap(), None);
        assert_eq!(parse_op(b"MSG ticks.A 7 5\r\nhello\r").unwrap(), None);
        assert_eq!(parse_op(b"PIN").unwrap(), None);
        assert!(parse_op(b"MSG ticks.A 7 x\r\n").is_err());
        assert!(parse_op(b"WHAT\r\n").is_err());
    }

    #[test]
    fn pub_encoding() {
        let mut out = Vec::new();
        push_pub(&mut out, "AAPL", b"{}");
        assert_eq!(out, b"PUB ticks.AAPL 2\r\n{}\r\n");
        assert_eq!(subject("X"), "ticks.X");
    }
}
