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

use std::io::{self, IoSlice};

use tokio::time::Instant;

/// The write side of a client socket, for [`crate::ClientQueue::flush_or_wake`].
pub trait DirectSocket: Send + Sync {
    /// Writes what the socket accepts now without blocking; returns the bytes
    /// written, or `ErrorKind::WouldBlock`.
    fn try_write(&self, frames: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Counts a completed write of `frames` frames and `bytes` bytes whose
    /// oldest frame arrived at `oldest` (the node's metrics).
    fn wrote(&self, frames: usize, bytes: usize, oldest: Option<Instant>);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use marketmux_core::Symbol;
    use parking_lot::Mutex;

    use super::*;
    use crate::{ClientQueue, CloseReason, QueueLimits};

    /// A socket that takes at most `room` bytes, then would block.
    #[derive(Default)]
    struct FakeSocket {
        room: Mutex<usize>,
        sent: Mutex<Vec<u8>>,
        writes: Mutex<usize>,
    }

    impl FakeSocket {
        fn with_room(room: usize) -> Arc<Self> {
            let s = Self::default();
            *s.room.lock() = room;
            Arc::new(s)
        }
        fn sent(&self) -> String {
            String::from_utf8(self.sent.lock().clone()).unwrap()
        }
    }

    impl DirectSocket for FakeSocket {
        fn try_write(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut room = self.room.lock();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut sent = self.sent.lock();
            let mut n = 0;
            for f in frames {
                let take = f.len().min(*room - n);
                sent.extend_from_slice(&f[..take]);
                n += take;
            }
            *room -= n;
            *self.writes.lock() += 1;
            Ok(n)
        }
        fn wrote(&self, _frames: usize, _bytes: usize, _oldest: Option<Instant>) {}
    }

    fn idle_queue(socket: &Arc<FakeSocket>) -> Arc<ClientQueue> {
        let q = ClientQueue::new(1, QueueLimits::default(), Arc::default());
        q.attach_direct(socket.clone());
        // The writer found nothing to send and waits.
        assert!(q.take_batch(Default::default()).unwrap().is_empty());
        q
    }

    fn push(q: &ClientQueue, text: &'static str) {
        let (_, _) = q.push_tick_deferred(
            Symbol::new("A").unwrap(),
            &Bytes::from(text),
            Instant::now(),
        );
    }

    fn left(q: &ClientQueue) -> String {
        let batch = q.take_batch(Default::default()).unwrap();
        batch
            .frames
            .iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn an_idle_writers_batch_goes_out_in_one_direct_write() {
        let socket = FakeSocket::with_room(1024);
        let q = idle_queue(&socket);
        push(&q, "a1");
        push(&q, "b1");
        q.flush_or_wake();
        assert_eq!(socket.sent(), "a1b1");
        assert_eq!(*socket.writes.lock(), 1);
        assert_eq!(q.queued_bytes(), 0);
        // Still idle: the next batch goes direct too.
        push(&q, "a2");
        q.flush_or_wake();
        assert_eq!(socket.sent(), "a1b1a2");
        assert_eq!(left(&q), "");
    }

    #[test]
    fn what_the_socket_does_not_take_stays_queued_in_order() {
        let socket = FakeSocket::with_room(3);
        let q = idle_queue(&socket);
        push(&q, "a1");
        push(&q, "b1");
        q.flush_or_wake();
        assert_eq!(socket.sent(), "a1b");
        // The writer owns the socket now: later batches are queued for it.
        push(&q, "c1");
        *socket.room.lock() = 100;
        q.flush_or_wake();
        assert_eq!(socket.sent(), "a1b");
        assert_eq!(left(&q), "1c1");
    }

    #[test]
    fn a_full_socket_or_a_busy_writer_leaves_everything_to_the_writer() {
        let socket = FakeSocket::with_room(0);
        let q = idle_queue(&socket);
        push(&q, "a1");
        q.flush_or_wake();
        assert_eq!(left(&q), "a1");
        // The writer took a batch and writes it: no direct write meanwhile.
        *socket.room.lock() = 100;
        push(&q, "a2");
        let _in_flight = q.take_batch(Default::default()).unwrap();
        push(&q, "a3");
        q.flush_or_wake();
        assert_eq!(socket.sent(), "");
        assert_eq!(left(&q), "a3");
    }

    #[test]
    fn a_closed_queue_lets_go_of_the_socket() {
        let socket = FakeSocket::with_room(100);
        let q = idle_queue(&socket);
        assert_eq!(Arc::strong_count(&socket), 2);
        q.close(CloseReason::new(1000, ""));
        assert_eq!(Arc::strong_count(&socket), 1);
        push(&q, "a1");
        q.flush_or_wake();
        assert_eq!(socket.sent(), "");
    }
}
