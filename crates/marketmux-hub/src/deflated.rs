//! [`SharedFrame`]: a tick's frame as the fan-out hands it out, with its
//! compressed variant made the first time a compressing subscriber needs it.
//!
//! The compressed variant of a live tick is made at most once per node, by
//! the hub's [`FrameDeflater`], and shared by every compressing subscriber
//! like the plain frame; a tick no compressing client follows is never
//! compressed. (A replay's ticks are encoded for their one client, and
//! compressed for it too.)
//! Subscribers that do not compress only compare one number.

use std::sync::Arc;

use bytes::Bytes;

/// Makes the compressed form of a frame the hub encoded (None: send it as
/// it is, e.g. when compressing would not make it shorter). Must be
/// deterministic and depend on nothing but the frame: its result is shared
/// by every compressing client (permessage-deflate without context takeover).
pub type FrameDeflater = Arc<dyn Fn(&Bytes) -> Option<Bytes> + Send + Sync>;

/// One tick's frame and, once asked for, its compressed variant.
pub(crate) struct SharedFrame<'a> {
    plain: Bytes,
    /// None: not asked for yet; Some(None): compressing does not pay.
    deflated: Option<Option<Bytes>>,
    deflater: Option<&'a FrameDeflater>,
    /// Compressed variants made (0 or 1).
    pub(crate) made: u64,
    /// Bytes the compressed variant saved over every use of it.
    pub(crate) saved: u64,
}

impl<'a> SharedFrame<'a> {
    /// `plain`, compressed by `deflater` when a subscriber asks.
    pub(crate) fn new(plain: Bytes, deflater: Option<&'a FrameDeflater>) -> Self {
        Self {
            plain,
            deflated: None,
            deflater,
            made: 0,
            saved: 0,
        }
    }

    /// Like [`SharedFrame::new`], with a compressed variant already known
    /// (`Some(None)`: known not to pay).
    pub(crate) fn with_deflated(
        plain: Bytes,
        deflated: Option<Option<Bytes>>,
        deflater: Option<&'a FrameDeflater>,
    ) -> Self {
        Self {
            deflated,
            ..Self::new(plain, deflater)
        }
    }

    /// The frame for a subscriber that takes compressed frames up to
    /// `deflate_max` bytes (0: never): the compressed variant, made now if
    /// this is the first such subscriber, or the plain frame.
    #[inline]
    pub(crate) fn for_subscriber(&mut self, deflate_max: usize) -> &Bytes {
        if deflate_max < self.plain.len() {
            return &self.plain;
        }
        let Some(deflater) = self.deflater else {
            return &self.plain;
        };
        let plain = &self.plain;
        let made = &mut self.made;
        let deflated = self.deflated.get_or_insert_with(|| {
            *made += 1;
            deflater(plain)
        });
        match deflated {
            Some(d) => {
                self.saved += (self.plain.len() - d.len().min(self.plain.len())) as u64;
                d
            }
            None => &self.plain,
        }
    }

    /// The compressed variant if it was asked for (to keep with the frame).
    pub(crate) fn into_parts(self) -> (Bytes, Option<Option<Bytes>>) {
        (self.plain, self.deflated)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn compresses_once_for_every_compressing_subscriber_and_never_for_the_others() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let deflater: FrameDeflater = Arc::new(move |f: &Bytes| {
            c.fetch_add(1, Ordering::Relaxed);
            Some(f.slice(..2))
        });
        let mut f = SharedFrame::new(Bytes::from_static(b"abcdef"), Some(&deflater));
        assert_eq!(f.for_subscriber(0), "abcdef");
        assert_eq!(
            calls.load(Ordering::Relaxed),
            0,
            "no compressing subscriber yet"
        );
        assert_eq!(f.for_subscriber(4096), "ab");
        assert_eq!(f.for_subscriber(4096), "ab");
        assert_eq!(
            f.for_subscriber(3),
            "abcdef",
            "longer than that client's window"
        );
        assert_eq!((calls.load(Ordering::Relaxed), f.made, f.saved), (1, 1, 8));
        let (plain, deflated) = f.into_parts();
        assert_eq!(
            (plain, deflated),
            (
                Bytes::from_static(b"abcdef"),
                Some(Some(Bytes::from_static(b"ab")))
            )
        );
        // Without a deflater, or when compressing does not pay: the plain frame.
        let mut f = SharedFrame::new(Bytes::from_static(b"abc"), None);
        assert_eq!(f.for_subscriber(4096), "abc");
        let never: FrameDeflater = Arc::new(|_| None);
        let mut f = SharedFrame::new(Bytes::from_static(b"abc"), Some(&never));
        assert_eq!(f.for_subscriber(4096), "abc");
        assert_eq!((f.made, f.saved), (1, 0));
    }
}
