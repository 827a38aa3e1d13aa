//! A symbol's stream: [`Epoch`] (one life of its sequence) and [`Position`]
//! (a point in it).
//!
//! Every accepted tick of a symbol gets the symbol's next `seq` (1, 2, 3, …)
//! where it enters the bus. The epoch names the life of that sequence: it
//! changes only when the sequence starts again from 1 (the store lost its
//! data, a `dev` node restarted without its data directory). A client that
//! kept a position `{seq, epoch}` can ask for what followed it.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest epoch text: `u64::MAX` in base 36.
pub const MAX_EPOCH_LEN: usize = 13;

/// Epochs made by [`Epoch::random`] stay below this (8 base-36 digits), so
/// they read short and a Lua number holds them exactly.
const RANDOM_EPOCH_BOUND: u64 = 36u64.pow(8);

/// One life of a symbol's sequence; shown to clients as a short lowercase
/// base-36 string (`"k3f9"`). `Epoch::default()` (0) means "no epoch yet".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Epoch(u64);

/// Why a string is not an [`Epoch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// An empty epoch.
    #[error("epoch is empty")]
    Empty,
    /// Longer than an epoch may be.
    #[error("epoch is longer than {MAX_EPOCH_LEN} characters")]
    TooLong,
    /// A character outside `0-9 a-z`.
    #[error("epoch contains {0:?}; allowed are 0-9 a-z")]
    InvalidChar(char),
    /// Not a number an epoch can name.
    #[error("epoch is out of range")]
    OutOfRange,
}

impl Epoch {
    /// The epoch with this raw value (0: none).
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw value.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// Whether an epoch was assigned (not `Epoch::default()`).
    pub fn is_set(self) -> bool {
        self.0 != 0
    }

    /// A fresh, unpredictable epoch; never 0, at most 8 characters.
    pub fn random() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self(1 + h.finish() % (RANDOM_EPOCH_BOUND - 1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; MAX_EPOCH_LEN];
        let mut n = self.0;
        let mut i = MAX_EPOCH_LEN;
        loop {
            i -= 1;
            let d = (n % 36) as u8;
            digits[i] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
            n /= 36;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits and letters were written.
        f.write_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"))
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({self})")
    }
}

impl FromStr for Epoch {
    type Err = EpochError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(EpochError::Empty);
        }
        if s.len() > MAX_EPOCH_LEN {
            return Err(EpochError::TooLong);
        }
        let mut n: u64 = 0;
        for c in s.chars() {
            let d = match c {
                '0'..='9' => c as u64 - '0' as u64,
                'a'..='z' => c as u64 - 'a' as u64 + 10,
                _ => return Err(EpochError::InvalidChar(c)),
            };
            n = n
                .checked_mul(36)
                .and_then(|n| n.checked_add(d))
                .ok_or(EpochError::OutOfRange)?;
        }
        Ok(Self(n))
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A point in a symbol's stream: the tick numbered `seq` in `epoch`
/// (`seq` 0: before the first tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The life of the symbol's sequence the `seq` belongs to.
    pub epoch: Epoch,
    /// The last `seq` the client got.
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_round_trips() {
        for raw in [1, 35, 36, 1_234_567, RANDOM_EPOCH_BOUND - 1, u64::MAX] {
            let e = Epoch::from_raw(raw);
            let s = e.to_string();
            assert!(s.len() <= MAX_EPOCH_LEN, "{s}");
            assert_eq!(s.parse::<Epoch>().unwrap(), e, "{s}");
        }
        assert_eq!(Epoch::from_raw(35).to_string(), "z");
        assert_eq!(Epoch::from_raw(36).to_string(), "10");
        assert_eq!(Epoch::default().to_string(), "0");
        assert_eq!(format!("{:?}", Epoch::from_raw(35)), "Epoch(z)");
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!("".parse::<Epoch>(), Err(EpochError::Empty));
        assert_eq!("K3F9".parse::<Epoch>(), Err(EpochError::InvalidChar('K')));
        assert_eq!("k-3".parse::<Epoch>(), Err(EpochError::InvalidChar('-')));
        assert_eq!("0123456789abcd".parse::<Epoch>(), Err(EpochError::TooLong));
        assert_eq!(
            "zzzzzzzzzzzzz".parse::<Epoch>(),
            Err(EpochError::OutOfRange)
        );
    }

    #[test]
    fn random_epochs_are_short_set_and_differ() {
        let a = Epoch::random();
        let b = Epoch::random();
        assert_ne!(a, b);
        for e in [a, b] {
            assert!(e.is_set());
            assert!(e.to_string().len() <= 8);
        }
    }

    #[test]
    fn serde_uses_the_string() {
        let e: Epoch = serde_json::from_str(r#""k3f9""#).unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), r#""k3f9""#);
        assert!(serde_json::from_str::<Epoch>(r#""K3F9""#).is_err());
        assert!(serde_json::from_str::<Epoch>("12").is_err());
    }
}
