//! The write half of a client's TCP socket, shared by its writer task and the
//! hub's direct writes ([`marketmux_hub::DirectSocket`]). The queue decides
//! who may write when, so the two never interleave.

use std::io::{self, ErrorKind, IoSlice};
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
    pub half: Arc<OwnedWriteHalf>,
    pub state: Arc<GatewayState>,
}

impl DirectSocket for DirectHalf {
    /// send(2) on the socket itself, not through tokio: the writer's
    /// readiness is left as it was (a stale "writable" costs the writer one
    /// `WouldBlock`), and the call skips the VFS layer of write(2).
    fn try_write(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        let stream: &TcpStream = (*self.half).as_ref();
        let socket = socket2::SockRef::from(stream);
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
