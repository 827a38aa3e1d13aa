//! permessage-deflate over real sockets: the negotiation (and its absence),
//! ticks compressed once per node and read back exactly, compressed client
//! messages, and a deflate bomb.

mod common;

use std::time::Duration;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use marketmux_gateway::GatewayConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket client written out by hand, to see the frames as sent.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The upgrade response head.
    head: String,
}

/// One server frame.
#[derive(Debug)]
struct Frame {
    first: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn compressed(&self) -> bool {
        self.first & 0x40 != 0
    }
    fn opcode(&self) -> u8 {
        self.first & 0x0f
    }
    /// The message: inflated when compressed (no context takeover).
    fn text(&self) -> String {
        let bytes = if self.compressed() {
            inflate(&self.payload)
        } else {
            self.payload.clone()
        };
        String::from_utf8(bytes).expect("UTF-8")
    }
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(64 * 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("valid DEFLATE data");
    assert_eq!(d.total_in() as usize, input.len(), "inflated whole");
    out
}

/// `text` compressed as a permessage-deflate message payload.
fn deflate(text: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(text.len() + 64);
    c.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

impl RawClient {
    /// Upgrades with `extensions` as the `Sec-WebSocket-Extensions` offer.
    async fn connect(node: &TestNode, extensions: Option<&str>) -> Self {
        let mut stream = TcpStream::connect(node.addr).await.expect("connect");
        let offer = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            node.addr
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut c = Self {
            stream,
            buf: Vec::new(),
            head: String::new(),
        };
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            c.fill().await;
        };
        c.head = String::from_utf8_lossy(&c.buf[..end]).to_ascii_lowercase();
        c.buf.drain(..end + 4);
        assert!(c.head.starts_with("http/1.1 101"), "{}", c.head);
        c
    }

    /// The `Sec-WebSocket-Extensions` answer, if any.
    fn extensions(&self) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-extensions:"))
            .map(str::trim)
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("data within 5 s")
            .expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn frame(&mut self) -> Frame {
        loop {
            if self.buf.len() >= 2 {
                let (len, header) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= header + len {
                    let first = self.buf[0];
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Frame { first, payload };
                }
            }
            self.fill().await;
        }
    }

    /// The next text message as JSON, with whether it came compressed.
    async fn message(&mut self) -> (Value, bool) {
        loop {
            let f = self.frame().await;
            match f.opcode() {
                0x1 => {
                    return (
                        serde_json::from_str(&f.text()).expect("JSON"),
                        f.compressed(),
                    )
                }
                0x8 => panic!("closed: {:?}", f.payload),
                _ => continue,
            }
        }
    }

    async fn send_text(&mut self, text: &str) {
        let f = client_frame(0x81, text.as_bytes());
        self.stream.write_all(&f).await.unwrap();
    }

    async fn send_compressed(&mut self, text: &str) {
        let f = client_frame(0xC1, &deflate(text.as_bytes()));
        self.stream.write_all(&f).await.unwrap();
    }

    /// Reads until a close frame; returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame().await;
            if f.opcode() == 0x8 {
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }
}

const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

#[tokio::test]
async fn ticks_are_compressed_once_per_node_and_read_back_exactly() {
    let node = TestNode::start(GatewayConfig::default()).await;
    // A browser's offer, a library's offer with a small window, and a plain client.
    let mut browser =
        RawClient::connect(&node, Some("permessage-deflate; client_max_window_bits")).await;
    let mut small = RawClient::connect(
        &node,
        Some("permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"),
    )
    .await;
    let mut plain = node.connect().await;
    assert_eq!(browser.extensions(), Some(ANSWER));
    assert_eq!(
        small.extensions(),
        Some(format!("{ANSWER}; server_max_window_bits=8").as_str())
    );
    let subscribe = r#"{"action":"subscribe","symbols":["ZIP"]}"#;
    browser.send_text(subscribe).await;
    small.send_text(subscribe).await;
    send(&mut plain, subscribe).await;
    for c in [&mut browser, &mut small] {
        let (m, compressed) = c.message().await;
        assert_eq!(m["type"], "subscribed");
        assert!(!compressed, "control replies go uncompressed");
    }
    recv(&mut plain).await;

    for i in 1..=20 {
        node.publish("ZIP", 100.0 + i as f64 / 8.0);
    }
    for i in 1..=20u64 {
        let want = recv(&mut plain).await;
        let (got, compressed) = browser.message().await;
        assert!(compressed, "tick {i} compressed");
        assert_eq!(got, want, "the same tick, byte for byte once inflated");
        assert_eq!(got["seq"], i);
        // A window of 256 bytes takes the shared compressed frame when the
        // tick fits in it, else the plain one.
        let (got, compressed) = small.message().await;
        assert_eq!(got, want);
        let frame_len = want.to_string().len() + 2;
        assert_eq!(compressed, frame_len <= 256, "{frame_len} bytes");
    }
    let stats = node.state.hub.stats().snapshot();
    assert_eq!(stats.deflated_frames, 20, "once per tick, not per client");
    assert!(stats.deflate_bytes_saved > 0);
}

#[tokio::test]
async fn no_compression_unless_offered_and_turned_on() {
    let off = TestNode::start(GatewayConfig {
        compression: false,
        ..GatewayConfig::default()
    })
    .await;
    let on = TestNode::start(GatewayConfig::default()).await;
    for (node, offer) in [
        (&off, Some("permessage-deflate")),
        (&on, None),
        (&on, Some("x-webkit-deflate-frame")),
        (&on, Some("permessage-deflate; server_max_window_bits=16")),
    ] {
        let mut c = RawClient::connect(node, offer).await;
        assert_eq!(c.extensions(), None, "{offer:?}");
        c.send_text(r#"{"action":"subscribe","symbol":"RAW"}"#)
            .await;
        assert_eq!(c.message().await.0["type"], "subscribed");
        node.publish("RAW", 1.0);
        let (tick, compressed) = c.message().await;
        assert_eq!((tick["type"].as_str(), compressed), (Some("tick"), false));
        // Without the extension a compressed frame is a protocol error.
        c.send_compressed(r#"{"action":"ping"}"#).await;
        assert_eq!(c.close_code().await, 1002);
    }
    assert_eq!(off.state.hub.stats().snapshot().deflated_frames, 0);
}

#[tokio::test]
async fn compressed_client_messages_are_read_and_a_deflate_bomb_closes_with_1009() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let mut c = RawClient::connect(&node, Some("permessage-deflate")).await;
    c.send_compressed(r#"{"action":"ping","id":1}"#).await;
    assert_eq!(
        c.message().await.0,
        serde_json::json!({"type":"pong","id":1})
    );
    // Under 4 KiB on the wire, far more once inflated.
    let bomb = format!(r#"{{"action":"ping","id":"{}"}}"#, "a".repeat(100_000));
    let packed = deflate(bomb.as_bytes());
    assert!(packed.len() < 4096, "{} bytes", packed.len());
    c.stream
        .write_all(&client_frame(0xC1, &packed))
        .await
        .unwrap();
    assert_eq!(c.close_code().await, 1009);
}
