//! The WebSocket frame decoder on arbitrary client bytes: frames or a close
//! code, never a panic, never a frame over the bound.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use marketmux_gateway::ws::{close, frame};
use marketmux_hub::CloseCause;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        match frame::decode(&mut buf, 4096) {
            Ok(Some(f)) => assert!(f.payload.len() <= 4096),
            Ok(None) => break,
            Err(e) => {
                let code = close::code(&CloseCause::Protocol(e));
                assert!(matches!(code, 1002 | 1007 | 1009));
                break;
            }
        }
    }
});
