//! [`FakeSocket`]: a client socket for the hub's direct writes
//! ([`marketmux_hub::DirectSocket`]) without a network: it takes a set
//! number of bytes, then would block, and keeps what it was sent.

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use marketmux_hub::DirectSocket;
use tokio::time::Instant;

/// Something to do inside a write, before the socket takes any byte.
type DuringWrite = Box<dyn FnOnce() + Send>;

/// A socket that takes at most its room in bytes, then answers
/// `WouldBlock`; it keeps what it was sent, or only counts it ([`FakeSocket::sink`]).
#[derive(Default)]
pub struct FakeSocket {
    room: Mutex<usize>,
    keep: bool,
    sent: Mutex<Vec<u8>>,
    writes: AtomicUsize,
    bytes: AtomicUsize,
    during_write: Mutex<Option<DuringWrite>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeSocket {
    /// A socket with `room` bytes free, keeping what it is sent.
    pub fn with_room(room: usize) -> Arc<Self> {
        Arc::new(Self {
            room: Mutex::new(room),
            keep: true,
            ..Self::default()
        })
    }

    /// A socket that takes everything and keeps only the counts (for
    /// benchmarks: what it is sent costs nothing and holds no memory).
    pub fn sink() -> Arc<Self> {
        Arc::new(Self {
            room: Mutex::new(usize::MAX),
            ..Self::default()
        })
    }

    /// Frees `room` bytes from now on (the client read what it had).
    pub fn set_room(&self, room: usize) {
        *lock(&self.room) = room;
    }

    /// What the socket took, as text (a socket made by [`FakeSocket::with_room`]).
    pub fn sent(&self) -> String {
        String::from_utf8_lossy(&lock(&self.sent)).into_owned()
    }

    /// Writes that took at least one byte.
    pub fn writes(&self) -> usize {
        self.writes.load(Relaxed)
    }

    /// Bytes taken.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }

    /// Runs `f` inside the next write, before the socket takes anything:
    /// what other threads do while the hub writes.
    pub fn during_next_write(&self, f: impl FnOnce() + Send + 'static) {
        *lock(&self.during_write) = Some(Box::new(f));
    }
}

impl DirectSocket for FakeSocket {
    fn try_write(&self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        let during = lock(&self.during_write).take();
        if let Some(f) = during {
            f();
        }
        let mut room = lock(&self.room);
        if *room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        let mut sent = self.keep.then(|| lock(&self.sent));
        for f in frames {
            let take = f.len().min(*room - n);
            if let Some(sent) = sent.as_mut() {
                sent.extend_from_slice(&f[..take]);
            }
            n += take;
            if n == *room {
                break;
            }
        }
        *room -= n;
        self.writes.fetch_add(1, Relaxed);
        self.bytes.fetch_add(n, Relaxed);
        Ok(n)
    }

    fn wrote(&self, _frames: usize, _bytes: usize, _oldest: Option<Instant>) {}
}
