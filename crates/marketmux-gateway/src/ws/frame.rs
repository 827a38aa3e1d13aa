//! RFC 6455 framing: decoding masked client frames, encoding server frames.
//!
//! Server frames are unmasked, so a frame is a 2–10 byte header followed by
//! the payload. [`text_frame`] builds header and payload in one allocation,
//! which the hub then shares between every subscriber.

use bytes::{Buf, Bytes, BytesMut};
use marketmux_hub::ProtocolViolation;

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: the next frame of a fragmented message.
    Continuation,
    /// 0x1: UTF-8 text.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: close, with an optional code and reason.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// One decoded (unmasked) client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The last frame of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// RSV1 with permessage-deflate: the message this frame starts is compressed.
    pub compressed: bool,
    /// The unmasked payload.
    pub payload: Bytes,
}

/// Decodes one frame from the front of `buf`, or `Ok(None)` if more bytes are needed.
///
/// `max_payload` bounds a single frame: a longer one is refused with 1009
/// before its payload is read, so a client cannot make the server buffer it.
pub fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, ProtocolViolation> {
    decode_with(buf, max_payload, false)
}

/// Like [`decode`] on a socket where `deflate` (permessage-deflate) was
/// negotiated or not: with it, RSV1 on the first frame of a text or binary
/// message marks the message compressed; anywhere else it is refused (1002).
pub fn decode_with(
    buf: &mut BytesMut,
    max_payload: usize,
    deflate: bool,
) -> Result<Option<Frame>, ProtocolViolation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let compressed = deflate && b0 & 0x70 == 0x40;
    if b0 & 0x70 != 0 && !compressed {
        return Err(ProtocolViolation::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ProtocolViolation::UnknownOpcode)?;
    if compressed && !matches!(opcode, OpCode::Text | OpCode::Binary) {
        return Err(ProtocolViolation::MisplacedCompression);
    }
    if b1 & 0x80 == 0 {
        return Err(ProtocolViolation::Unmasked);
    }
    let (len, mut header) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(ProtocolViolation::OversizedControl);
    }
    if len > max_payload as u64 {
        return Err(ProtocolViolation::FrameTooLarge);
    }
    let len = len as usize;
    if buf.len() < header + 4 + len {
        buf.reserve(header + 4 + len - buf.len());
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[header..header + 4]);
    header += 4;
    buf.advance(header);
    let mut payload = buf.split_to(len);
    unmask(&mut payload, mask);
    Ok(Some(Frame {
        fin,
        opcode,
        compressed,
        payload: payload.freeze(),
    }))
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

fn header(opcode: OpCode, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode.to_u8());
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

/// A whole unmasked server frame.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 10);
    header(opcode, payload.len(), &mut out);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A text frame carrying `text`.
pub fn text_frame(text: &str) -> Bytes {
    encode(OpCode::Text, text.as_bytes())
}

/// A close frame with `code` and a reason cut to the 123 bytes the protocol allows.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Close, &payload)
}

/// The code to answer a client's close with: its own code when RFC 6455 lets
/// an endpoint send it, 1000 when it sent none, 1002 when it sent one that
/// must never be on the wire (below 1000, 1004–1006, 1015, unassigned).
pub fn close_reply(code: u16) -> u16 {
    match code {
        1005 => 1000,
        1000..=1003 | 1007..=1014 | 3000..=4999 => code,
        _ => 1002,
    }
}

/// Reads the close code of a close frame's payload (1005 when absent).
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a masked client frame, as a browser would.
    fn client_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | op];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    #[test]
    fn decodes_masked_frames_incrementally() {
        let text = "x".repeat(300);
        let bytes = client_frame(true, 1, text.as_bytes());
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = decode(&mut buf, 4096).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none());
            } else {
                let f = got.unwrap();
                assert_eq!((f.fin, f.opcode), (true, OpCode::Text));
                assert_eq!(&f.payload[..], text.as_bytes());
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_protocol_violations() {
        let mut unmasked = BytesMut::from(&[0x81u8, 0x01, b'a'][..]);
        assert_eq!(
            decode(&mut unmasked, 4096).unwrap_err(),
            ProtocolViolation::Unmasked
        );
        let mut big = BytesMut::from(&client_frame(true, 1, &[b'a'; 5000])[..]);
        assert_eq!(
            decode(&mut big, 4096).unwrap_err(),
            ProtocolViolation::FrameTooLarge
        );
        let mut rsv = BytesMut::from(&[0xC1u8, 0x80, 0, 0, 0, 0][..]);
        assert_eq!(
            decode(&mut rsv, 4096).unwrap_err(),
            ProtocolViolation::ReservedBits
        );
        let mut op = BytesMut::from(&[0x83u8, 0x80, 0, 0, 0, 0][..]);
        assert_eq!(
            decode(&mut op, 4096).unwrap_err(),
            ProtocolViolation::UnknownOpcode
        );
        let mut frag_ping = BytesMut::from(&client_frame(false, 9, b"")[..]);
        assert_eq!(
            decode(&mut frag_ping, 4096).unwrap_err(),
            ProtocolViolation::OversizedControl
        );
    }

    #[test]
    fn rsv1_marks_a_compressed_message_only_where_deflate_was_agreed() {
        let frame = |first: u8| BytesMut::from(&client_frame(true, first & 0x0f, b"x")[..]);
        let with_rsv1 = |first: u8| {
            let mut f = frame(first);
            f[0] |= 0x40;
            f
        };
        let f = decode_with(&mut with_rsv1(1), 4096, true).unwrap().unwrap();
        assert!(f.compressed && f.fin && f.opcode == OpCode::Text);
        assert!(
            !decode_with(&mut frame(1), 4096, true)
                .unwrap()
                .unwrap()
                .compressed
        );
        assert_eq!(
            decode(&mut with_rsv1(1), 4096).unwrap_err(),
            ProtocolViolation::ReservedBits
        );
        for op in [0x0, 0x9, 0xA, 0x8] {
            assert_eq!(
                decode_with(&mut with_rsv1(op), 4096, true).unwrap_err(),
                ProtocolViolation::MisplacedCompression,
                "{op}"
            );
        }
        let mut rsv2 = frame(1);
        rsv2[0] |= 0x20;
        assert_eq!(
            decode_with(&mut rsv2, 4096, true).unwrap_err(),
            ProtocolViolation::ReservedBits
        );
    }

    #[test]
    fn encodes_every_length_form() {
        for n in [0usize, 125, 126, 65_535, 65_536] {
            let f = encode(OpCode::Text, &vec![b'a'; n]);
            let header = if n < 126 {
                2
            } else if n <= 65_535 {
                4
            } else {
                10
            };
            assert_eq!(f.len(), n + header, "{n}");
            assert_eq!(f[0], 0x81);
        }
        let c = close_frame(1008, &"é".repeat(100));
        assert!(c.len() <= 127);
        assert_eq!(close_code(&c[2..]), 1008);
        for (got, reply) in [(1005, 1000), (1000, 1000), (1001, 1001), (4000, 4000)] {
            assert_eq!(close_reply(got), reply, "{got}");
        }
        for bad in [0, 999, 1004, 1006, 1015, 2000, 5000] {
            assert_eq!(close_reply(bad), 1002, "{bad}");
        }
        assert!(std::str::from_utf8(&c[4..]).is_ok());
    }
}
