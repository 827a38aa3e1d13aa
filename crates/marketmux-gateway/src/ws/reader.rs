//! [`FrameReader`]: reads client messages off a socket, reassembling
//! fragments and enforcing the frame size bound.
//!
//! Every frame the client sends comes back as one [`Message`], a fragment of
//! an unfinished message included ([`Message::Fragment`]), so the connection
//! can charge each frame to the socket's budget: a client cannot make the
//! server decode frames without end by sending ones that never finish a
//! message (empty continuations) or need no answer (pongs).

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::deflate;
use marketmux_hub::ProtocolViolation;

use super::frame::{self, OpCode};

/// Initial (and idle) read buffer: small, since most client messages are tiny.
const INITIAL_BUFFER: usize = 256;

/// What one client frame amounted to.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// A whole text message (its last frame).
    Text(Bytes),
    /// A whole binary message (its last frame).
    Binary,
    /// A frame of a message that is not finished yet (kept by the reader).
    Fragment,
    /// A ping, with its payload to echo.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close, with the client's code.
    Close(u16),
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client closed the TCP connection.
    #[error("peer closed the connection")]
    Eof,
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol.
    #[error("the client broke the protocol: {0:?}")]
    Protocol(ProtocolViolation),
}

impl From<ProtocolViolation> for ReadError {
    fn from(violation: ProtocolViolation) -> Self {
        Self::Protocol(violation)
    }
}

/// Reads messages from `R`, at most `max_message` bytes each.
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    max_message: usize,
    /// permessage-deflate was negotiated: compressed messages are inflated.
    deflate: bool,
    /// The message being reassembled: its opcode, whether it is compressed,
    /// and its payload so far.
    partial: Option<(OpCode, bool, BytesMut)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Starts with `prefix`: bytes already read past the HTTP upgrade request.
    pub fn new(rd: R, prefix: Bytes, max_message: usize) -> Self {
        let mut buf = BytesMut::with_capacity(INITIAL_BUFFER.max(prefix.len()));
        buf.extend_from_slice(&prefix);
        Self {
            rd,
            buf,
            max_message,
            deflate: false,
            partial: None,
        }
    }

    /// Accepts compressed messages (permessage-deflate was negotiated): each
    /// is inflated into at most the message bound, past which the socket
    /// closes with 1009, like a plain message over it.
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    async fn next_frame(&mut self) -> Result<frame::Frame, ReadError> {
        loop {
            if let Some(f) = frame::decode_with(&mut self.buf, self.max_message, self.deflate)? {
                return Ok(f);
            }
            if self.buf.capacity() - self.buf.len() < 64 {
                self.buf.reserve(INITIAL_BUFFER);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(ReadError::Eof);
            }
        }
    }

    /// The next frame's message: a whole message, or [`Message::Fragment`].
    pub async fn next_message(&mut self) -> Result<Message, ReadError> {
        let f = self.next_frame().await?;
        // Give back memory a large message made the buffer take.
        if self.buf.is_empty() && self.buf.capacity() > 4 * INITIAL_BUFFER {
            self.buf = BytesMut::with_capacity(INITIAL_BUFFER);
        }
        match f.opcode {
            OpCode::Ping => Ok(Message::Ping(f.payload)),
            OpCode::Pong => Ok(Message::Pong),
            OpCode::Close => {
                if f.payload.len() == 1 {
                    return Err(ProtocolViolation::MalformedClose.into());
                }
                Ok(Message::Close(frame::close_code(&f.payload)))
            }
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(ProtocolViolation::UnfinishedMessage.into());
                }
                if f.fin {
                    return self.finish(f.opcode, f.compressed, f.payload);
                }
                self.partial = Some((f.opcode, f.compressed, BytesMut::from(&f.payload[..])));
                Ok(Message::Fragment)
            }
            OpCode::Continuation => {
                let Some((op, compressed, mut acc)) = self.partial.take() else {
                    return Err(ProtocolViolation::StrayContinuation.into());
                };
                if acc.len() + f.payload.len() > self.max_message {
                    return Err(ProtocolViolation::MessageTooLarge.into());
                }
                acc.extend_from_slice(&f.payload);
                if f.fin {
                    return self.finish(op, compressed, acc.freeze());
                }
                self.partial = Some((op, compressed, acc));
                Ok(Message::Fragment)
            }
        }
    }

    /// Bytes held by the read buffer (for memory accounting).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// A whole message: inflated if it was compressed, then checked.
    fn finish(&self, op: OpCode, compressed: bool, payload: Bytes) -> Result<Message, ReadError> {
        let payload = if compressed {
            deflate::inflate(&payload, self.max_message)?
        } else {
            payload
        };
        finish(op, payload)
    }
}

fn finish(op: OpCode, payload: Bytes) -> Result<Message, ReadError> {
    match op {
        OpCode::Text => {
            if std::str::from_utf8(&payload).is_err() {
                return Err(ProtocolViolation::InvalidUtf8.into());
            }
            Ok(Message::Text(payload))
        }
        _ => Ok(Message::Binary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![
            (if fin { 0x80 } else { 0 }) | op,
            0x80 | payload.len() as u8,
            1,
            2,
            3,
            4,
        ];
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i & 3]),
        );
        out
    }

    #[tokio::test]
    async fn reassembles_fragments_around_a_ping() {
        let mut wire = masked(false, 1, b"hel");
        wire.extend(masked(true, 9, b"p"));
        wire.extend(masked(true, 0, b"lo"));
        wire.extend(masked(true, 8, &1000u16.to_be_bytes()));
        let mut r = FrameReader::new(&wire[..], Bytes::new(), 4096);
        assert_eq!(r.next_message().await.unwrap(), Message::Fragment);
        assert_eq!(
            r.next_message().await.unwrap(),
            Message::Ping(Bytes::from_static(b"p"))
        );
        assert_eq!(
            r.next_message().await.unwrap(),
            Message::Text(Bytes::from_static(b"hello"))
        );
        assert_eq!(r.next_message().await.unwrap(), Message::Close(1000));
        assert!(matches!(r.next_message().await, Err(ReadError::Eof)));
    }

    /// A masked client frame carrying `text` compressed, RSV1 set.
    fn compressed(text: &str) -> Vec<u8> {
        let packed = deflate::deflate_frame(&frame::text_frame(text)).expect("shrinks");
        assert!(packed[1] < 126, "short test messages only");
        let mut out = masked(true, 1, &packed[2..]);
        out[0] |= 0x40;
        out
    }

    #[tokio::test]
    async fn inflates_compressed_messages_under_the_bound() {
        let text = r#"{"action":"subscribe","symbols":["AAPL.X","AAPL.Y","AAPL.Z","AAPL.W"]}"#;
        let mut wire = compressed(text);
        wire.extend(masked(true, 1, b"plain"));
        let mut r = FrameReader::new(&wire[..], Bytes::new(), 150).with_deflate(true);
        assert_eq!(
            r.next_message().await.unwrap(),
            Message::Text(Bytes::from(text))
        );
        assert_eq!(
            r.next_message().await.unwrap(),
            Message::Text(Bytes::from_static(b"plain"))
        );
        // 1,000 bytes in a frame of a few: closed as too large once inflated.
        let bomb = compressed(&"a".repeat(1000));
        assert!(bomb.len() < 40);
        let mut r = FrameReader::new(&bomb[..], Bytes::new(), 150).with_deflate(true);
        match r.next_message().await {
            Err(ReadError::Protocol(e)) => assert_eq!(e, ProtocolViolation::InflatedTooLarge),
            other => panic!("{other:?}"),
        }
        // Without the extension, RSV1 is a protocol error.
        let wire = compressed(text);
        let mut r = FrameReader::new(&wire[..], Bytes::new(), 150);
        match r.next_message().await {
            Err(ReadError::Protocol(e)) => assert_eq!(e, ProtocolViolation::ReservedBits),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bounds_reassembled_messages_and_checks_utf8() {
        let mut wire = masked(false, 1, &[b'a'; 100]);
        wire.extend(masked(true, 0, &[b'a'; 100]));
        let mut r = FrameReader::new(&wire[..], Bytes::new(), 150);
        assert_eq!(r.next_message().await.unwrap(), Message::Fragment);
        match r.next_message().await {
            Err(ReadError::Protocol(e)) => assert_eq!(e, ProtocolViolation::MessageTooLarge),
            other => panic!("{other:?}"),
        }
        let wire = masked(true, 1, &[0xff, 0xfe]);
        let mut r = FrameReader::new(&wire[..], Bytes::new(), 150);
        match r.next_message().await {
            Err(ReadError::Protocol(e)) => assert_eq!(e, ProtocolViolation::InvalidUtf8),
            other => panic!("{other:?}"),
        }
    }
}
