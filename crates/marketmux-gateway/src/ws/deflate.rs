//! permessage-deflate (RFC 7692): the negotiation, the server's compressed
//! frames, and the inflation of compressed client messages.
//!
//! - Negotiation ([`negotiate`]): the first offer of `Sec-WebSocket-Extensions`
//!   this server can honour is accepted, always with `server_no_context_takeover`
//!   and `client_no_context_takeover`: each message is compressed on its own,
//!   so a tick's compressed frame does not depend on what its client got
//!   before. That is what lets the hub make it once per node and share it
//!   like the plain frame; and no socket keeps a compression window between
//!   messages (32 KiB each way otherwise).
//! - A client's `server_max_window_bits=N` (8..=15) is accepted and answered:
//!   without context takeover a back-reference never reaches further than the
//!   message itself, so a frame whose payload fits in `2^N` bytes is valid for
//!   that client; a longer one is sent uncompressed (RSV1 clear), as the
//!   extension allows for any message ([`Deflate::max_payload`]).
//! - Server frames ([`deflate_frame`]): raw DEFLATE ending in a sync flush,
//!   its last four bytes (`00 00 ff ff`) removed, in a frame with RSV1 set.
//!   Frames that do not shrink stay uncompressed. Control frames never are.
//! - Client messages ([`inflate`]): inflated into at most the node's message
//!   bound; a message that would inflate past it closes the socket with 1009
//!   (a deflate bomb costs the server the bound, not the bomb).

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::{header, HeaderMap, HeaderValue};
use marketmux_hub::ProtocolViolation;

/// The extension's token.
const TOKEN: &str = "permessage-deflate";
/// The tail a sync flush ends with; removed from each message (RFC 7692 §7.2.1).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// permessage-deflate as agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The LZ77 window the client allows the server (`server_max_window_bits`).
    pub server_window_bits: u8,
}

impl Deflate {
    /// The largest frame that may go to this client compressed: its payload
    /// must fit the window it allows (see the module doc).
    pub fn max_payload(self) -> usize {
        1usize << self.server_window_bits
    }
}

/// Picks the first offer in `headers` this server can honour, and the
/// `Sec-WebSocket-Extensions` value that answers it. None when the client
/// offers no permessage-deflate this server accepts.
pub fn negotiate(headers: &HeaderMap) -> Option<(Deflate, HeaderValue)> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(accept_offer)
}

/// Reads one offer (`permessage-deflate; param; param=value`); None if it is
/// another extension or has a parameter this server cannot honour.
fn accept_offer(offer: &str) -> Option<(Deflate, HeaderValue)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(TOKEN) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_bits: Option<u8> = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        // A parameter named twice makes the offer invalid (RFC 7692 §7).
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => server_bits = Some(window_bits(v)?),
            // The client's window is the client's business: without context
            // takeover this server inflates each message on its own, whatever
            // window it was made with.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    let mut answer = format!("{TOKEN}; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = server_bits {
        answer.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let deflate = Deflate {
        server_window_bits: server_bits.unwrap_or(15),
    };
    Some((deflate, HeaderValue::from_str(&answer).ok()?))
}

/// A window size parameter: a decimal 8..=15 without leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.is_empty() || v.len() > 2 {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

thread_local! {
    /// One compressor per thread that fans ticks out, reset between messages
    /// (a compressor holds a few hundred KiB: one per tick would cost more
    /// than the compression).
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
}

/// The compressed form of `frame`, a whole unfragmented text or binary
/// server frame as the hub shares it; None if it is not one, or if
/// compressing does not make it shorter (it is then sent as it is).
pub fn deflate_frame(frame: &[u8]) -> Option<Bytes> {
    let (first, payload) = split_frame(frame)?;
    // Only whole (FIN) text or binary frames, not already compressed.
    if first & 0x80 == 0 || first & 0x70 != 0 || !matches!(first & 0x0f, 0x1 | 0x2) {
        return None;
    }
    let mut out = Vec::with_capacity(payload.len() + 16);
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        loop {
            let consumed = c.total_in() as usize;
            out.reserve(64);
            match c.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync) {
                Ok(_) if c.total_in() as usize == payload.len() && out.len() < out.capacity() => {
                    return Some(());
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })?;
    if !out.ends_with(&SYNC_TAIL) {
        return None;
    }
    out.truncate(out.len() - SYNC_TAIL.len());
    let mut framed = Vec::with_capacity(out.len() + 10);
    framed.push(first | 0x40);
    push_len(&mut framed, out.len());
    framed.extend_from_slice(&out);
    (framed.len() < frame.len()).then(|| Bytes::from(framed))
}

/// The first byte and the payload of an unmasked server frame.
fn split_frame(frame: &[u8]) -> Option<(u8, &[u8])> {
    let (&first, rest) = frame.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if len & 0x80 != 0 {
        return None;
    }
    let (n, body) = match len {
        126 => {
            let (l, body) = rest.split_at_checked(2)?;
            (u16::from_be_bytes([l[0], l[1]]) as usize, body)
        }
        127 => {
            let (l, body) = rest.split_at_checked(8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(l);
            (usize::try_from(u64::from_be_bytes(b)).ok()?, body)
        }
        n => (n as usize, rest),
    };
    (body.len() == n).then_some((first, body))
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Inflates one compressed client message into at most `max` bytes.
///
/// Fails with [`ProtocolViolation::InflatedTooLarge`] (close 1009) if it
/// would inflate past `max` (no more than `max + 1` bytes are ever
/// produced), and with [`ProtocolViolation::CorruptDeflate`] (1007) if it is
/// not valid DEFLATE data.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Bytes, ProtocolViolation> {
    let too_large = ProtocolViolation::InflatedTooLarge;
    let corrupt = ProtocolViolation::CorruptDeflate;
    let mut d = Decompress::new(false);
    let mut out: Vec<u8> = Vec::with_capacity((compressed.len() * 4).clamp(64, max + 1));
    // The message, then the tail the sender removed; a final block ends it early.
    'inputs: for input in [compressed, &SYNC_TAIL[..]] {
        let start = d.total_in();
        loop {
            let consumed = (d.total_in() - start) as usize;
            let full = out.len() == out.capacity();
            if consumed == input.len() && !full {
                break;
            }
            if full {
                if out.len() > max {
                    return Err(too_large);
                }
                out.reserve_exact((out.capacity() * 2).min(max + 1) - out.len());
            }
            let before = (d.total_in(), out.len());
            let status = d
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|_| corrupt)?;
            if out.len() > max {
                return Err(too_large);
            }
            if status == Status::StreamEnd {
                break 'inputs;
            }
            if (d.total_in(), out.len()) == before {
                if consumed == input.len() {
                    break;
                }
                // No progress with input left: the data is cut or broken.
                return Err(corrupt);
            }
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::text_frame;

    fn offer(v: &str) -> Option<(Deflate, String)> {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(v).unwrap(),
        );
        negotiate(&h).map(|(d, a)| (d, a.to_str().unwrap().to_owned()))
    }

    const ANSWER: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn accepts_the_offers_browsers_and_libraries_make() {
        // Chromium and Firefox.
        let (d, a) = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!((d.server_window_bits, a.as_str()), (15, ANSWER));
        // Python websockets, with and without its own window choice.
        assert!(
            offer("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
                .is_some_and(|(d, a)| d.server_window_bits == 12
                    && a == format!("{ANSWER}; server_max_window_bits=12"))
        );
        assert!(offer(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        )
        .is_some_and(|(_, a)| a == ANSWER));
        assert!(offer("PerMessage-Deflate").is_some());
        // The first offer that can be honoured wins.
        let (d, _) = offer(
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=9",
        )
        .unwrap();
        assert_eq!(d.server_window_bits, 9);
        assert_eq!(d.max_payload(), 512);
    }

    #[test]
    fn refuses_offers_it_cannot_honour() {
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
        ] {
            assert!(offer(bad).is_none(), "{bad}");
        }
        assert!(negotiate(&HeaderMap::new()).is_none());
    }

    #[test]
    fn a_compressed_frame_inflates_back_to_the_plain_payload() {
        let text = r#"{"type":"tick","symbol":"AAPL","price":150.25,"timestamp":"2026-05-12T15:04:05.123456Z","seq":12,"epoch":"k3f9"}"#;
        let plain = text_frame(text);
        let packed = deflate_frame(&plain).expect("a tick shrinks");
        assert!(packed.len() < plain.len());
        assert_eq!(packed[0], 0xC1, "FIN, RSV1, text");
        let (_, payload) = split_frame(&packed).unwrap();
        assert_eq!(&inflate(payload, 4096).unwrap()[..], text.as_bytes());
        // Each message on its own: the same bytes every time.
        assert_eq!(deflate_frame(&plain).unwrap(), packed);
        // Long payloads use the 16-bit length form.
        let long = "tick ".repeat(2000);
        let packed = deflate_frame(&text_frame(&long)).unwrap();
        let (_, payload) = split_frame(&packed).unwrap();
        assert_eq!(&inflate(payload, 10_000).unwrap()[..], long.as_bytes());
    }

    #[test]
    fn frames_that_do_not_shrink_or_are_not_data_stay_as_they_are() {
        assert!(deflate_frame(&text_frame("a")).is_none());
        let ping = [0x89u8, 0x00];
        assert!(deflate_frame(&ping).is_none());
        assert!(deflate_frame(&[0x81, 0x05, b'a']).is_none(), "truncated");
    }

    #[test]
    fn arbitrary_bytes_inflate_within_the_bound_or_fail_cleanly() {
        // A small xorshift: thousands of different inputs, the same every run.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..5_000 {
            let len = (next() % 64) as usize;
            let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            match inflate(&input, 256) {
                Ok(out) => assert!(out.len() <= 256),
                Err(e) => assert!(
                    matches!(
                        e,
                        ProtocolViolation::CorruptDeflate | ProtocolViolation::InflatedTooLarge
                    ),
                    "{e:?}"
                ),
            }
        }
    }

    #[test]
    fn inflation_stops_at_the_bound() {
        let bomb = "a".repeat(1_000_000);
        let packed = deflate_frame(&crate::ws::frame::encode(
            crate::ws::frame::OpCode::Text,
            bomb.as_bytes(),
        ))
        .unwrap();
        let (_, payload) = split_frame(&packed).unwrap();
        assert!(payload.len() < 4096, "{} bytes", payload.len());
        assert_eq!(
            inflate(payload, 4096).unwrap_err(),
            ProtocolViolation::InflatedTooLarge
        );
        assert_eq!(inflate(payload, 1_000_000).unwrap().len(), 1_000_000);
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 4096).unwrap_err(),
            ProtocolViolation::CorruptDeflate
        );
    }
}
