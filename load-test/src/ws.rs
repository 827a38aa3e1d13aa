//! A minimal RFC 6455 client: the upgrade request, masked client frames, and
//! decoding the server's unmasked frames in place from one reusable buffer;
//! permessage-deflate (RFC 7692) when asked, each message inflated on its own
//! (the client asks for `server_no_context_takeover`).

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest server frame accepted.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest upgrade response accepted.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Why a client could not connect or its stream broke.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("upgrade refused: {0}")]
    Refused(String),
    #[error("protocol: {0}")]
    Protocol(&'static str),
    #[error("connection closed by the server")]
    Eof,
}

/// Opens a TCP connection, bound to `source` when given.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, WsError> {
    let err = |source| WsError::Connect { addr, source };
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0)).map_err(err)?;
    }
    let stream = sock.connect(addr).await.map_err(err)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The permessage-deflate offer of `--compression`.
pub const DEFLATE_OFFER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Sends the upgrade request (offering permessage-deflate with `deflate`) and
/// waits for `101`. Returns whether the server agreed to permessage-deflate.
/// Bytes read past the response head stay in `buf`.
pub async fn upgrade(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    buf: &mut InBuf,
    deflate: bool,
) -> Result<bool, WsError> {
    let offer = if deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    loop {
        if let Some(end) = crate::message::find(buf.bytes(), b"\r\n\r\n") {
            let head = &buf.bytes()[..end];
            let status = head.split(|&c| c == b'\r').next().unwrap_or_default();
            let ok = status.starts_with(b"HTTP/1.1 101");
            let agreed = deflate && agreed_deflate(head);
            let status = String::from_utf8_lossy(status).into_owned();
            buf.consume(end + 4);
            return if ok {
                Ok(agreed)
            } else {
                Err(WsError::Refused(with_hint(status)))
            };
        }
        if buf.bytes().len() > MAX_RESPONSE_HEAD {
            return Err(WsError::Protocol("upgrade response head too long"));
        }
        if buf.fill(stream).await? == 0 {
            return Err(WsError::Eof);
        }
    }
}

/// Whether a response head agrees to permessage-deflate.
fn agreed_deflate(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                && value.split(',').any(|e| {
                    e.trim()
                        .to_ascii_lowercase()
                        .starts_with("permessage-deflate")
                })
        })
    })
}

thread_local! {
    /// One decompressor per client thread: without context takeover no
    /// state outlives a message, and thousands of sockets sharing one keep
    /// it in cache (one each would cost ~40 KiB per socket). flate2 runs on
    /// zlib-rs here (load-test's Cargo.toml): its reset between messages is
    /// a few stores, where miniz_oxide's cleared the whole state and rebuilt
    /// the Huffman tables, enough per message to slow a node sharing the
    /// machine (README, "A rate cap and compression").
    static DECOMPRESSOR: std::cell::RefCell<flate2::Decompress> =
        std::cell::RefCell::new(flate2::Decompress::new(false));
}

/// Inflates compressed messages (permessage-deflate without context
/// takeover) into one reused buffer, with its thread's decompressor.
pub struct Inflater {
    out: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            out: Vec::with_capacity(1024),
        }
    }
}

impl Inflater {
    /// The message `payload` carried compressed, at most [`MAX_FRAME`] bytes.
    pub fn inflate(&mut self, payload: &[u8]) -> Result<&[u8], WsError> {
        DECOMPRESSOR.with_borrow_mut(|d| Self::inflate_with(d, payload, &mut self.out))?;
        Ok(&self.out)
    }

    fn inflate_with(
        d: &mut flate2::Decompress,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), WsError> {
        const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
        let bad = WsError::Protocol("compressed message is not valid DEFLATE data");
        d.reset(false);
        out.clear();
        for input in [payload, &TAIL[..]] {
            let start = d.total_in();
            loop {
                let used = (d.total_in() - start) as usize;
                let full = out.len() == out.capacity();
                if used == input.len() && !full {
                    break;
                }
                if full {
                    if out.len() >= MAX_FRAME {
                        return Err(WsError::Protocol("inflated message larger than 1 MiB"));
                    }
                    out.reserve(out.capacity().max(1024));
                }
                let before = (d.total_in(), out.len());
                d.decompress_vec(&input[used..], out, flate2::FlushDecompress::Sync)
                    .map_err(|_| {
                        WsError::Protocol("compressed message is not valid DEFLATE data")
                    })?;
                if (d.total_in(), out.len()) == before {
                    if used == input.len() {
                        break;
                    }
                    return Err(bad);
                }
            }
        }
        Ok(())
    }
}

/// Frame opcodes the client handles.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// A decoded frame header: the payload is `bytes[header..header + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    /// RSV1: a compressed message (permessage-deflate).
    pub compressed: bool,
    pub opcode: u8,
    pub header: usize,
    pub len: usize,
}

impl FrameHead {
    /// Header and payload together.
    pub fn total(&self) -> usize {
        self.header + self.len
    }
}

/// Decodes the frame at the front of `b` once it is complete, or `Ok(None)`.
pub fn decode(b: &[u8]) -> Result<Option<FrameHead>, WsError> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err(WsError::Protocol("server frame is masked"));
    }
    let (header, len) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (
                10,
                usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
            )
        }
        126 | 127 => return Ok(None),
        n => (2, n as usize),
    };
    if len > MAX_FRAME {
        return Err(WsError::Protocol("server frame larger than 1 MiB"));
    }
    let head = FrameHead {
        fin: b[0] & 0x80 != 0,
        compressed: b[0] & 0x40 != 0,
        opcode: b[0] & 0x0f,
        header,
        len,
    };
    Ok((b.len() >= head.total()).then_some(head))
}

/// Encodes a masked client frame (FIN set).
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A read buffer that is filled from a socket and consumed from the front.
pub struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuf {
    pub fn new(capacity: usize) -> Self {
        Self {
            data: vec![0; capacity.max(64)],
            start: 0,
            end: 0,
        }
    }

    /// The unread bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads once from `r` (growing the buffer if a frame does not fit); 0 at EOF.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.data.len() * 2;
                self.data.resize(n, 0);
            }
        }
        let n = r.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// The refused status line, with what to do about the refusals a load test
/// meets by design: the gateway's per-address limit and its total limit.
fn with_hint(status: String) -> String {
    let hint = if status.contains(" 429") {
        "the server limits sockets per client address (default 2,000): spread the clients \
         with --source-ips 127.0.0.1,127.0.0.2,... or start it with --max-connections-per-ip 0"
    } else if status.contains(" 503") {
        "the server is draining or at --max-connections"
    } else {
        return status;
    };
    format!("{status} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_all_length_forms_and_waits_for_more() {
        for n in [0usize, 125, 126, 65_535, 65_536] {
            let f = server_frame(opcode::TEXT, &vec![b'x'; n]);
            let head = decode(&f).unwrap().unwrap();
            assert_eq!((head.len, head.total(), head.opcode), (n, f.len(), 1));
            assert!(head.fin);
            assert_eq!(decode(&f[..f.len() - 1]).unwrap(), None.filter(|_| n > 0));
        }
        assert_eq!(decode(&[0x81]).unwrap(), None);
        assert_eq!(decode(&[0x81, 126, 0]).unwrap(), None);
    }

    #[test]
    fn inflates_compressed_messages_and_reads_the_agreement() {
        use flate2::{Compress, Compression, FlushCompress};
        let text = br#"{"type":"tick","symbol":"AAPL","price":1.5,"seq":3}"#;
        let mut c = Compress::new(Compression::default(), false);
        let mut packed = Vec::with_capacity(256);
        c.compress_vec(text, &mut packed, FlushCompress::Sync)
            .unwrap();
        assert!(packed.ends_with(&[0, 0, 0xff, 0xff]));
        packed.truncate(packed.len() - 4);
        let mut frame = server_frame(opcode::TEXT, &packed);
        frame[0] |= 0x40;
        let head = decode(&frame).unwrap().unwrap();
        assert!(head.compressed);
        let mut inflater = Inflater::default();
        let payload = &frame[head.header..head.total()];
        assert_eq!(inflater.inflate(payload).unwrap(), text);
        assert_eq!(
            inflater.inflate(payload).unwrap(),
            text,
            "each message on its own"
        );
        assert!(inflater.inflate(&[0xff, 0xff, 0xff]).is_err());
        assert!(agreed_deflate(
            b"HTTP/1.1 101 Switching Protocols\r\nsec-websocket-extensions: permessage-deflate; server_no_context_takeover"
        ));
        assert!(!agreed_deflate(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket"
        ));
    }

    #[test]
    fn refuses_masked_and_huge_frames() {
        assert!(decode(&[0x81, 0x85, 0, 0, 0, 0]).is_err());
        let mut f = vec![0x81, 127];
        f.extend_from_slice(&(u64::MAX).to_be_bytes());
        assert!(decode(&f).is_err());
    }

    #[test]
    fn refusals_by_limit_say_what_to_do() {
        let r = with_hint("HTTP/1.1 429 Too Many Requests".into());
        assert!(
            r.starts_with("HTTP/1.1 429") && r.contains("--source-ips"),
            "{r}"
        );
        assert_eq!(
            with_hint("HTTP/1.1 403 Forbidden".into()),
            "HTTP/1.1 403 Forbidden"
        );
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(opcode::TEXT, b"hello", [1, 2, 3, 4]);
        assert_eq!(&f[..6], &[0x81, 0x85, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, b"hello");
        let long = client_frame(opcode::BINARY, &[0; 300], [0; 4]);
        assert_eq!(&long[..4], &[0x82, 0xFE, 1, 44]);
    }

    #[tokio::test]
    async fn inbuf_grows_and_compacts() {
        let data: Vec<u8> = (0..200u8).collect();
        let mut r = &data[..];
        let mut b = InBuf::new(64);
        while b.fill(&mut r).await.unwrap() > 0 {}
        assert_eq!(b.bytes(), &data[..]);
        b.consume(150);
        assert_eq!(b.bytes(), &data[150..]);
        b.consume(100);
        assert!(b.bytes().is_empty());
    }
}
