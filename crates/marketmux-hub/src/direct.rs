//! [`DirectSocket`]: a client socket the hub may write to from the thread that
//! fans out a batch, instead of waking the client's writer task.
//!
//! Waking a writer costs a scheduler round trip per socket and delivery; at a
//! few ticks per client and batch that is a large share of the work. So after
//! a batch is queued, each client whose writer is idle gets its frames in one
//! non-blocking vectored write, straight from the fan-out. Whatever the socket
//! does not take at once stays queued for the writer task, which then owns the
//! socket until the queue is empty again: writes never interleave, and a
//! client that stops reading is handled by the writer as before.
//!
//! The queue decides when the hub may write (`owner::SocketOwner`)
//! and takes the frames out of its lock for it; [`write_front`] is the write.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::Bytes;
use tokio::time::Instant;

/// Most frames one direct write carries (the rest go to the writer task).
const DIRECT_MAX_FRAMES: usize = 32;

/// The write side of a client socket, for [`crate::ClientQueue::flush_or_wake`].
pub trait DirectSocket: Send + Sync {
    /// Writes what the socket accepts now without blocking; returns the bytes
    /// written, or `ErrorKind::WouldBlock`.
    fn try_write(&self, frames: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Counts a completed write of `frames` frames and `bytes` bytes whose
    /// oldest frame arrived at `oldest` (the node's metrics).
    fn wrote(&self, frames: usize, bytes: usize, oldest: Option<Instant>);
}

/// What one direct write sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Frames written whole.
    pub frames: usize,
    /// Bytes written, including the part of a frame the socket took.
    pub bytes: usize,
}

/// Writes the first [`DIRECT_MAX_FRAMES`] of `frames` to `socket` in one
/// non-blocking (vectored) write, and removes what it took from the front
/// of `frames`: whole frames, and the written part of a frame cut short.
/// A socket that would block, or fails, takes nothing: the writer task
/// meets it again (and closes on an error).
pub(crate) fn write_front(socket: &dyn DirectSocket, frames: &mut VecDeque<Bytes>) -> Written {
    let n = frames.len().min(DIRECT_MAX_FRAMES);
    let result = match frames.front() {
        Some(one) if n == 1 => socket.try_write(&[IoSlice::new(one)]),
        _ => {
            let mut slices = [IoSlice::new(&[]); DIRECT_MAX_FRAMES];
            for (slot, f) in slices.iter_mut().zip(frames.iter()) {
                *slot = IoSlice::new(f);
            }
            socket.try_write(&slices[..n])
        }
    };
    let Ok(bytes) = result else {
        return Written::default();
    };
    let mut left = bytes;
    let mut whole = 0;
    while let Some(front) = frames.front_mut() {
        if left < front.len() {
            if left > 0 {
                *front = front.slice(left..);
            }
            break;
        }
        left -= front.len();
        frames.pop_front();
        whole += 1;
    }
    Written {
        frames: whole,
        bytes,
    }
}

/// Asks the CPU to start loading `*value` into cache: the fan-out touches
/// thousands of queues and sockets in turn, each a likely cache miss, and a
/// load started one step ahead overlaps with the step before.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of x86_64, and a prefetch is a hint: it
        // dereferences nothing and cannot fault.
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
