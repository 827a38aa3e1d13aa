//! The WebSocket client message parser: any text is an Ok request or a coded
//! error, never a panic; errors always carry a non-empty message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marketmux_core::{ClientRequest, ServerMessage, StreamState};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClientRequest::parse(text) {
        Ok(ClientRequest::Subscribe { symbols, since, id, .. }) => {
            assert!(!symbols.is_empty());
            assert!(since.iter().all(|(s, _)| symbols.contains(s)));
            // The reply echoes the id verbatim and names each position: it must stay valid JSON.
            let streams: Vec<StreamState> = since
                .iter()
                .map(|(symbol, p)| StreamState { symbol: *symbol, epoch: p.epoch, seq: p.seq, recovered: Some(true) })
                .collect();
            let reply = ServerMessage::Subscribed { symbols: &symbols, streams: &streams, id: id.as_deref() }.encode();
            serde_json_check(&reply);
        }
        Ok(ClientRequest::Unsubscribe { symbols, id, .. }) => {
            assert!(!symbols.is_empty());
            let reply = ServerMessage::Unsubscribed { symbols: &symbols, id: id.as_deref() }.encode();
            serde_json_check(&reply);
        }
        Ok(_) => {}
        Err(e) => {
            assert!(!e.message.is_empty());
            let reply = ServerMessage::Error { code: e.code, message: &e.message, id: e.id.as_deref() }.encode();
            serde_json_check(&reply);
        }
    }
});

/// Every reply is one well-formed JSON object, whatever the client sent.
fn serde_json_check(s: &str) {
    let value: serde_json::Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {s}"));
    assert!(value.is_object(), "reply is not a JSON object: {s}");
}
