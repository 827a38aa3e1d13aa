//! Every client frame counts against the socket's budget: a raw socket that
//! floods pongs, or empty continuation frames of a message it never ends, is
//! told `rate_limited` and closed with 1008 within a bounded time, and the
//! node spends a bounded amount of CPU on it.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use marketmux_gateway::GatewayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A masked client frame (the mask is all zeroes: the payload is sent as is).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![(u8::from(fin) << 7) | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// CPU time (user + system) this process has used so far; the node runs in it.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at the state.
    let after = &stat[stat.rfind(')').expect("comm ends") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

async fn upgraded(node: &TestNode) -> TcpStream {
    let mut s = TcpStream::connect(node.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "upgrade answered");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Floods `chunk` (after `opening`) as fast as the socket takes it, and
/// returns what the server sent and how long until it closed.
async fn flood(node: &TestNode, opening: &[u8], chunk: &[u8]) -> (Vec<u8>, Duration) {
    let s = upgraded(node).await;
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(opening).await.unwrap();
    let chunk = chunk.repeat(4096 / chunk.len());
    let writer = tokio::spawn(async move {
        // Ends when the server closes (write error) or the test gives up.
        while wr.write_all(&chunk).await.is_ok() {}
    });
    let start = Instant::now();
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(10), read_all).await;
    writer.abort();
    assert!(
        closed.is_ok(),
        "the flooding socket was not closed within 10 s"
    );
    (got, start.elapsed())
}

fn assert_rate_limited_then_closed(got: &[u8], what: &str) {
    let text = String::from_utf8_lossy(got);
    assert!(text.contains("\"rate_limited\""), "{what}: {text}");
    let close = got
        .windows(4)
        .any(|w| w[0] == 0x88 && w[2..4] == 1008u16.to_be_bytes());
    assert!(close, "{what}: no close 1008 in {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pong_and_empty_continuation_floods_are_closed_with_bounded_cpu() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let cpu_before = cpu_time();

    let (got, took) = flood(&node, &[], &frame(true, 0xA, b"")).await;
    assert_rate_limited_then_closed(&got, "pongs");
    assert!(
        took < Duration::from_secs(3),
        "pong flood closed after {took:?}"
    );

    // A text message that never ends: empty continuations without FIN.
    let (got, took) = flood(&node, &frame(false, 0x1, b"{"), &frame(false, 0x0, b"")).await;
    assert_rate_limited_then_closed(&got, "continuations");
    assert!(
        took < Duration::from_secs(3),
        "continuation flood closed after {took:?}"
    );

    let cpu = cpu_time() - cpu_before;
    assert!(
        cpu < Duration::from_secs(2),
        "the floods cost {cpu:?} of CPU"
    );
    node.eventually("sockets gone", |s| s.registry.is_empty())
        .await;
}
