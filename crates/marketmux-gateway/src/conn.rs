//! One client's TCP connection under HTTP/1: [`ClientStream`] gives the
//! errors hyper answers by itself a JSON body, and [`canned`] builds the
//! responses the accept loop writes without a handler (408, refusals).
//!
//! hyper answers an unparsable request head itself, before any handler runs:
//! 400 (garbage), 431 (head over the buffer), 414 (request target too long),
//! each with an empty body. [`ClientStream`] recognises those exact writes (a
//! bodiless `400`/`414`/`431` head without `content-type`; every response of
//! the router is JSON and has one) and puts the JSON error in their place.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A response written outside the router: `status` with the JSON error
/// `{"error":{"code","message"}}`, closing the connection.
pub fn canned(status: StatusCode, code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into()
}

/// The JSON answer in place of a bodiless error head hyper wrote itself, or
/// `None` when `head` is anything else. `line_ended` says whether the request
/// line had ended when hyper gave up: a request line alone over the limit is
/// a target too long (414), not headers too large (431).
pub fn replace_hyper_error(head: &[u8], line_ended: bool, max_head: usize) -> Option<Bytes> {
    let status = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?
        .get(..4)?;
    if !matches!(status, b"400 " | b"414 " | b"431 ") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    let has = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if has(b"\r\ncontent-type:") || !has(b"\r\ncontent-length: 0\r\n") {
        return None;
    }
    Some(match status {
        b"400 " => canned(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request is not valid HTTP/1.1",
        ),
        b"414 " => uri_too_long(max_head),
        b"431 " if !line_ended => uri_too_long(max_head),
        b"431 " => canned(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!("the request line and headers are over {max_head} bytes"),
        ),
        _ => return None,
    })
}

fn uri_too_long(max_head: usize) -> Bytes {
    canned(
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        &format!("the request line is over {max_head} bytes"),
    )
}

/// A client connection as hyper sees it: reads pass through; hyper's own
/// bodiless error answers are replaced on their way out (see the module doc).
#[derive(Debug)]
pub struct ClientStream<T> {
    inner: T,
    /// Our answer, not yet fully written; hyper was told its head was.
    replacement: Bytes,
    /// Whether a line has ended since the last response: the request line
    /// of the head being read is complete.
    line_ended: bool,
    /// Whether bytes arrived since the last response: a request is under way.
    mid_request: Arc<AtomicBool>,
    /// The request head limit, for the messages.
    max_head: usize,
}

impl<T> ClientStream<T> {
    /// Wraps `inner`, whose request heads hyper bounds to `max_head` bytes.
    pub fn new(inner: T, max_head: usize) -> Self {
        Self {
            inner,
            replacement: Bytes::new(),
            line_ended: false,
            mid_request: Arc::default(),
            max_head,
        }
    }

    /// Set while a request is under way (bytes read since the last
    /// response): whether a client that times out is owed an answer.
    pub fn mid_request(&self) -> Arc<AtomicBool> {
        self.mid_request.clone()
    }

    /// The connection itself (after an upgrade).
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncWrite + Unpin> ClientStream<T> {
    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.replacement.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.replacement))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.replacement.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Looks at the start of a write: a response head ends the request under
    /// way, and a bodiless one of hyper's errors, written `alone`, is
    /// replaced (then `true`).
    fn intercept(&mut self, cx: &mut Context<'_>, head: &[u8], alone: bool) -> io::Result<bool> {
        if !head.starts_with(b"HTTP/1.") {
            return Ok(false);
        }
        self.mid_request.store(false, Relaxed);
        let line_ended = std::mem::take(&mut self.line_ended);
        let Some(replacement) = alone
            .then(|| replace_hyper_error(head, line_ended, self.max_head))
            .flatten()
        else {
            return Ok(false);
        };
        self.replacement = replacement;
        // Goes out now, or on the flush hyper makes before closing.
        if let Poll::Ready(Err(e)) = self.poll_replacement(cx) {
            return Err(e);
        }
        Ok(true)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.mid_request.store(true, Relaxed);
        }
        if !this.line_ended && buf.filled()[before..].contains(&b'\n') {
            this.line_ended = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if this.intercept(cx, buf, true)? {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let Some(head) = filled.next() {
            if this.intercept(cx, head, filled.next().is_none())? {
                return Poll::Ready(Ok(head.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(r: &Bytes) -> serde_json::Value {
        let text = std::str::from_utf8(r).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn hyper_error_heads_get_json_bodies() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let r = replace_hyper_error(hyper_431, true, 8192).unwrap();
        assert!(r.starts_with(b"HTTP/1.1 431 "));
        assert_eq!(body_of(&r)["error"]["code"], "headers_too_large");
        let r = replace_hyper_error(hyper_431, false, 8192).unwrap();
        assert!(r.starts_with(b"HTTP/1.1 414 "));
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let r = replace_hyper_error(hyper_400, true, 8192).unwrap();
        assert_eq!(body_of(&r)["error"]["code"], "bad_request");
    }

    #[test]
    fn router_responses_pass_untouched() {
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ncontent-type: text/plain\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
            b"{\"error\":1}",
        ] {
            assert!(replace_hyper_error(head, true, 8192).is_none(), "{head:?}");
        }
    }
}
