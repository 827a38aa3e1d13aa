//! The write half of a client's TCP socket, shared by its writer task and the
//! hub's direct writes ([`marketmux_hub::DirectSocket`]). The queue decides
//! who may write when, so the two never interleave.

use std::io::{self, ErrorKind, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use marketmux_hub::DirectSocket;
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::state::GatewayState;

/// The writer task's handle: `AsyncWrite` over the shared half. Shutting it
/// down is a no-op: the FIN goes out when the last handle is dropped (the
/// queue drops its own when it closes).
pub struct SharedWriteHalf(pub Arc<OwnedWriteHalf>);

impl AsyncWrite for SharedWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream: &TcpStream = (*self.0).as_ref();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The hub's handle: non-blocking vectored writes, counted like the writer's.
pub struct DirectHalf {
    /// The socket's descriptor, read once: a write reaches it without going
    /// through the half, its `TcpStream` and tokio's registration (each a
    /// pointer to follow, and a cache miss when thousands of sockets take turns).
    fd: RawFd,
    /// Keeps `fd` open.
    _half: Arc<OwnedWriteHalf>,
    state: Arc<GatewayState>,
}

impl DirectHalf {
    /// The hub's handle on `half`, counting into `state`.
    pub fn new(half: Arc<OwnedWriteHalf>, state: Arc<GatewayState>) -> Self {
        let stream: &TcpStream = (*half).as_ref();
        Self {
            fd: stream.as_raw_fd(),
            _half: half,
            state,
        }
    }
}

impl DirectSocket for DirectHalf {
    /// send(2) on the socket itself, not through tokio: the writer's
    /// readiness is left as it was (a stale "writable" costs the writer one
    /// `WouldBlock`), and the call skips the VFS layer of write(2).
    fn try_write(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: `_half` owns the descriptor and lives as long as `self`.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let socket = socket2::SockRef::from(&fd);
        match frames {
            [one] => socket.send_with_flags(one, libc::MSG_NOSIGNAL),
            _ => socket.send_vectored_with_flags(frames, libc::MSG_NOSIGNAL),
        }
    }

    fn wrote(&self, frames: usize, bytes: usize, oldest: Option<Instant>) {
        self.state
            .stats
            .record_write(frames as u64, bytes as u64, oldest);
    }
}
