//! [`Symbol`]: an instrument name such as `AAPL` or `BINANCE:BTCUSDT`.

use std::fmt;
use std::str::FromStr;

/// Longest accepted symbol, in bytes.
pub const MAX_SYMBOL_LEN: usize = 32;

/// A validated instrument name: 1–32 characters of `A-Z a-z 0-9 . : - _ /`.
///
/// Stored inline (33 bytes, `Copy`), so hashing, comparing and copying a symbol
/// on the hot path never allocates nor touches a reference count.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol {
    len: u8,
    bytes: [u8; MAX_SYMBOL_LEN],
}

/// Why a string is not a valid [`Symbol`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    /// An empty symbol.
    #[error("symbol is empty")]
    Empty,
    /// Longer than a symbol may be.
    #[error("symbol is longer than {MAX_SYMBOL_LEN} characters")]
    TooLong,
    /// A character a symbol may not hold.
    #[error("symbol contains {0:?}; allowed are A-Z a-z 0-9 . : - _ /")]
    InvalidChar(char),
}

impl Symbol {
    /// Validates `s` and stores it inline.
    pub fn new(s: &str) -> Result<Self, SymbolError> {
        if s.is_empty() {
            return Err(SymbolError::Empty);
        }
        if let Some(c) = s.chars().find(|c| !is_symbol_char(*c)) {
            return Err(SymbolError::InvalidChar(c));
        }
        // Every allowed character is ASCII, so bytes == chars from here on.
        if s.len() > MAX_SYMBOL_LEN {
            return Err(SymbolError::TooLong);
        }
        let mut bytes = [0u8; MAX_SYMBOL_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self {
            len: s.len() as u8,
            bytes,
        })
    }

    /// The symbol as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (checked in `new`).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | '/')
}

impl FromStr for Symbol {
    type Err = SymbolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Symbol::new(s)
    }
}

impl TryFrom<&str> for Symbol {
    type Error = SymbolError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Symbol::new(s)
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({})", self.as_str())
    }
}

impl serde::Serialize for Symbol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Symbol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Symbol::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exchange_prefixed_symbols() {
        for s in [
            "AAPL",
            "BINANCE:BTCUSDT",
            "OANDA:EUR_USD",
            "BRK.B",
            "ES-F",
            "BTC/USD",
            "a",
        ] {
            assert_eq!(Symbol::new(s).unwrap().as_str(), s);
        }
        assert_eq!(Symbol::new(&"X".repeat(32)).unwrap().as_str().len(), 32);
    }

    #[test]
    fn rejects_bad_symbols() {
        assert_eq!(Symbol::new(""), Err(SymbolError::Empty));
        assert_eq!(Symbol::new(&"X".repeat(33)), Err(SymbolError::TooLong));
        assert_eq!(Symbol::new("AA PL"), Err(SymbolError::InvalidChar(' ')));
        assert_eq!(Symbol::new("ÄAPL"), Err(SymbolError::InvalidChar('Ä')));
        assert!(Symbol::new("A\"").is_err());
        // Many multi-byte characters: rejected for the character, not the length.
        assert_eq!(
            Symbol::new(&"é".repeat(40)),
            Err(SymbolError::InvalidChar('é'))
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let s: Symbol = serde_json::from_str("\"MSFT\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"MSFT\"");
        assert!(serde_json::from_str::<Symbol>("\"bad symbol\"").is_err());
    }
}
