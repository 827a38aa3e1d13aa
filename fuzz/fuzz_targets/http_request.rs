//! The HTTP layer on arbitrary client bytes: request heads and bodies
//! through hyper, the node's head bounds, its guards and its routes (REST,
//! ingest, the upgrade), over an in-memory connection. Nothing panics or
//! hangs, every answer is HTTP/1.x, and every error answer carries the JSON
//! error body `{"error":{"code","message"}}`.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use marketmux_bus::InProcessBus;
use marketmux_gateway::{server, GatewayConfig, GatewayState};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Runtime;

struct Node {
    rt: Runtime,
    state: Arc<GatewayState>,
    router: axum::Router,
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let (state, router) = rt.block_on(async {
            let bus = InProcessBus::new();
            let state = GatewayState::new(
                GatewayConfig::default(),
                GatewayState::new_hub(),
                bus.clone(),
                bus.clone(),
                vec![bus],
            );
            let router = server::guarded(server::router(state.clone()), &state);
            (state, router)
        });
        Node { rt, state, router }
    })
}

/// Checks the first answer in `out`: HTTP/1.x, and an error one is JSON with a code.
fn check_answer(out: &[u8]) {
    if out.is_empty() {
        return; // closed without an answer (e.g. bytes that never form a head)
    }
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&out[..end]).expect("an ASCII head");
    assert!(
        head.starts_with("HTTP/1.1 ") || head.starts_with("HTTP/1.0 "),
        "{head}"
    );
    let status: u16 = head[9..12].parse().expect("a status");
    if status < 400 {
        return;
    }
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\ncontent-type: application/json"), "{head}");
    let len: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    let body: serde_json::Value =
        serde_json::from_slice(&out[end + 4..end + 4 + len]).expect("a JSON error body");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

fuzz_target!(|data: &[u8]| {
    let node = node();
    node.rt.block_on(async {
        let (mut client, server_side) = tokio::io::duplex(64 * 1024);
        let peer = ([127, 0, 0, 1], 40000).into();
        let served = tokio::spawn(server::serve_stream(
            server_side,
            peer,
            node.state.clone(),
            node.router.clone(),
        ));
        // The client keeps its side open, as a real one does (hyper closes
        // on a read EOF): the server ends the connection, at the latest at
        // its head timeout, which the paused clock reaches at once.
        let _ = client.write_all(data).await;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(600), client.read_to_end(&mut out))
            .await
            .expect("the server ends the connection")
            .ok();
        let _ = tokio::time::timeout(Duration::from_secs(600), served)
            .await
            .expect("the server side ends");
        check_answer(&out);
    });
});
