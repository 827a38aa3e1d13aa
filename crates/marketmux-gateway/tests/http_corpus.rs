//! The `http_request` fuzz target's seed corpus, replayed over an in-memory
//! connection as the target does: every answer is HTTP/1.x and every error
//! answer carries the JSON error body.

use std::time::Duration;

use marketmux_bus::InProcessBus;
use marketmux_gateway::{server, GatewayConfig, GatewayState};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The first answer's status, after checking its shape as the target does.
fn check_answer(out: &[u8]) -> Option<u16> {
    if out.is_empty() {
        return None;
    }
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&out[..end]).expect("an ASCII head");
    assert!(head.starts_with("HTTP/1."), "{head}");
    let status: u16 = head[9..12].parse().expect("a status");
    if status >= 400 {
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("\r\ncontent-type: application/json"),
            "{head}"
        );
        let len: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        let body: serde_json::Value =
            serde_json::from_slice(&out[end + 4..end + 4 + len]).expect("a JSON error body");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    Some(status)
}

#[tokio::test(start_paused = true)]
async fn the_http_fuzz_corpus_is_answered_in_shape() {
    let bus = InProcessBus::new();
    let state = GatewayState::new(
        GatewayConfig::default(),
        GatewayState::new_hub(),
        bus.clone(),
        bus.clone(),
        vec![bus],
    );
    let router = server::guarded(server::router(state.clone()), &state);
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/http_request"
    );
    let mut seen = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("the corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let (mut client, server_side) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(server::serve_stream(
            server_side,
            ([127, 0, 0, 1], 40000).into(),
            state.clone(),
            router.clone(),
        ));
        // The client keeps its side open, as a real one does (hyper closes
        // on a read EOF): the server ends the connection, at the latest at
        // its head timeout, which the paused clock reaches at once.
        let _ = client.write_all(&data).await;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(600), client.read_to_end(&mut out))
            .await
            .expect("the server ends the connection")
            .ok();
        let _ = tokio::time::timeout(Duration::from_secs(600), served)
            .await
            .expect("the server side ends");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        seen.insert(name, check_answer(&out));
    }
    let status = |name: &str| seen.get(name).copied().flatten();
    assert_eq!(status("get_health"), Some(200), "{seen:?}");
    assert_eq!(status("post_tick"), Some(202), "{seen:?}");
    assert_eq!(status("post_foreign"), Some(403), "{seen:?}");
    assert_eq!(status("garbage"), Some(400), "{seen:?}");
    assert_eq!(status("upgrade_http10"), Some(400), "{seen:?}");
    assert_eq!(status("upgrade"), Some(101), "{seen:?}");
}
