//! Counters shared by the hub and every client queue.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Monotonic counters (read by `/metrics`) plus the live subscription count.
///
/// Updated once per publish (not once per subscriber) on the fast path.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Ticks handed to [`crate::SymbolHub::publish_batch`].
    pub ticks_in: AtomicU64,
    /// Ticks encoded (once per tick that had at least one subscriber).
    pub ticks_encoded: AtomicU64,
    /// Frames placed on client queues (ticks, snapshots).
    pub deliveries: AtomicU64,
    /// Ticks that replaced an older, not yet written tick of a lagging client.
    pub conflated: AtomicU64,
    /// Clients closed because they stayed behind past their bound.
    pub slow_closed: AtomicU64,
    /// Ticks not sent to a client that already had their `seq` (or a later one).
    pub stale_dropped: AtomicU64,
    /// Ticks (and open-candle updates) a rate-capped client never got:
    /// replaced, while held for its cap's interval, by a newer update of the
    /// same stream (or superseded by the candle's closed state).
    pub capped_skipped: AtomicU64,
    /// Compressed variants of tick frames made, for clients that negotiated
    /// compression: one per live tick per node (a replay's, per client).
    pub deflated_frames: AtomicU64,
    /// Bytes the compressed frames saved, over every frame queued compressed.
    pub deflate_bytes_saved: AtomicU64,
    /// Notices sent to clients that a symbol's stream started again (new epoch).
    pub stream_restarts: AtomicU64,
    /// Live (client, symbol) subscriptions.
    pub subscriptions: AtomicU64,
    /// Live topics (symbols with at least one local subscriber).
    pub topics: AtomicU64,
}

/// A point-in-time copy of [`HubStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubSnapshot {
    /// Ticks published into the hub.
    pub ticks_in: u64,
    /// Ticks encoded (once each).
    pub ticks_encoded: u64,
    /// Frames handed to client queues.
    pub deliveries: u64,
    /// Unsent ticks replaced by newer ones.
    pub conflated: u64,
    /// Clients closed for falling behind.
    pub slow_closed: u64,
    /// Ticks not sent because the client already had that `seq`.
    pub stale_dropped: u64,
    /// New-epoch notices sent.
    pub stream_restarts: u64,
    /// Ticks and candle updates a rate cap replaced before they were sent.
    pub capped_skipped: u64,
    /// Compressed frames made.
    pub deflated_frames: u64,
    /// Bytes compression saved.
    pub deflate_bytes_saved: u64,
    /// Live (client, symbol) subscriptions.
    pub subscriptions: u64,
    /// Live topics.
    pub topics: u64,
}

impl HubStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> HubSnapshot {
        HubSnapshot {
            ticks_in: self.ticks_in.load(Relaxed),
            ticks_encoded: self.ticks_encoded.load(Relaxed),
            deliveries: self.deliveries.load(Relaxed),
            conflated: self.conflated.load(Relaxed),
            slow_closed: self.slow_closed.load(Relaxed),
            stale_dropped: self.stale_dropped.load(Relaxed),
            stream_restarts: self.stream_restarts.load(Relaxed),
            capped_skipped: self.capped_skipped.load(Relaxed),
            deflated_frames: self.deflated_frames.load(Relaxed),
            deflate_bytes_saved: self.deflate_bytes_saved.load(Relaxed),
            subscriptions: self.subscriptions.load(Relaxed),
            topics: self.topics.load(Relaxed),
        }
    }
}
