//! What an alert is: [`Alert`], [`Condition`], a validated [`NewAlert`], a
//! [`FiredAlert`], and why a request is refused ([`InvalidAlert`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use marketmux_core::{Symbol, Timestamp};
use serde::{Serialize, Serializer};

/// Which side of the target fires an alert. Both are inclusive: a price that
/// reaches the target exactly fires it (ABOVE: `price >= target`, BELOW:
/// `price <= target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Condition {
    /// Fires when the price reaches the target from below.
    #[serde(rename = "ABOVE")]
    Above,
    /// Fires when the price reaches the target from above.
    #[serde(rename = "BELOW")]
    Below,
}

impl Condition {
    /// `"ABOVE"` or `"BELOW"`, as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Above => "ABOVE",
            Condition::Below => "BELOW",
        }
    }

    /// Whether `price` fires an alert on `target` with this condition.
    pub fn is_met(self, price: f64, target: f64) -> bool {
        match self {
            Condition::Above => price >= target,
            Condition::Below => price <= target,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Condition {
    type Err = InvalidAlert;
    /// `ABOVE`/`BELOW`, in any letter case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("ABOVE") {
            Ok(Condition::Above)
        } else if s.eq_ignore_ascii_case("BELOW") {
            Ok(Condition::Below)
        } else {
            Err(InvalidAlert::Condition(s.chars().take(32).collect()))
        }
    }
}

/// One stored alert, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The store's id of the alert.
    pub id: i64,
    /// Whose alert it is.
    pub user_id: i64,
    /// The instrument watched.
    #[serde(serialize_with = "symbol_str")]
    pub symbol: Symbol,
    /// Which side of the target fires it.
    pub condition: Condition,
    /// The price that fires it.
    pub target_price: f64,
    /// False once fired.
    pub active: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it fired: the timestamp of the tick that fired it.
    pub triggered_at: Option<DateTime<Utc>>,
    /// The price of the tick that fired it.
    pub triggered_price: Option<f64>,
}

fn symbol_str<S: Serializer>(s: &Symbol, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

impl Alert {
    /// The alert as a JSON object.
    pub fn to_json(&self) -> String {
        // Serializing plain fields cannot fail; an empty object is the safe fallback.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Why an alert request is refused (answered with 400 / INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidAlert {
    /// The symbol is not a valid symbol.
    #[error("invalid symbol: {0}")]
    Symbol(String),
    /// The condition is neither ABOVE nor BELOW.
    #[error("unknown condition {0:?}: use ABOVE or BELOW")]
    Condition(String),
    /// The target is not a positive finite price.
    #[error("target_price must be a finite number above 0, got {0}")]
    Target(f64),
    /// The user id is not positive.
    #[error("user_id must be a positive integer, got {0}")]
    User(i64),
}

impl InvalidAlert {
    /// The machine-readable error code.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidAlert::Symbol(_) => "invalid_symbol",
            InvalidAlert::Condition(_) => "invalid_condition",
            InvalidAlert::Target(_) => "invalid_target_price",
            InvalidAlert::User(_) => "invalid_user_id",
        }
    }
}

/// A validated request for a new alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewAlert {
    /// Whose alert it is.
    pub user_id: i64,
    /// The instrument to watch.
    pub symbol: Symbol,
    /// Which side of the target fires it.
    pub condition: Condition,
    /// The price that fires it.
    pub target_price: f64,
}

impl NewAlert {
    /// Checks every field of a request.
    pub fn parse(
        user_id: i64,
        symbol: &str,
        target_price: f64,
        condition: &str,
    ) -> Result<Self, InvalidAlert> {
        if user_id <= 0 {
            return Err(InvalidAlert::User(user_id));
        }
        let symbol = Symbol::new(symbol).map_err(|e| InvalidAlert::Symbol(e.to_string()))?;
        let condition = condition.parse()?;
        if !(target_price.is_finite() && target_price > 0.0) {
            return Err(InvalidAlert::Target(target_price));
        }
        Ok(Self {
            user_id,
            symbol,
            condition,
            target_price,
        })
    }
}

/// An alert that has just fired (its store row flipped to inactive by this
/// caller): what is pushed to the user's sockets.
#[derive(Debug, Clone, PartialEq)]
pub struct FiredAlert {
    /// The alert as stored after firing (`active` false, `triggered_*` set).
    pub alert: Alert,
}

impl FiredAlert {
    /// The alert JSON object for `{"type":"alert","alert":...}`.
    pub fn to_json(&self) -> String {
        self.alert.to_json()
    }
}

/// A tick timestamp as a UTC date-time (the epoch for an out-of-range value).
pub fn timestamp_to_utc(ts: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(ts.as_micros()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let a = NewAlert::parse(1, "AAPL", 150.0, "above").unwrap();
        assert_eq!(a.condition, Condition::Above);
        assert_eq!(
            NewAlert::parse(1, "AAPL", 150.0, "SIDEWAYS")
                .unwrap_err()
                .code(),
            "invalid_condition"
        );
        assert_eq!(
            NewAlert::parse(1, "AA PL", 150.0, "ABOVE")
                .unwrap_err()
                .code(),
            "invalid_symbol"
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                NewAlert::parse(1, "AAPL", bad, "BELOW").unwrap_err().code(),
                "invalid_target_price"
            );
        }
        assert_eq!(
            NewAlert::parse(0, "AAPL", 1.0, "BELOW").unwrap_err().code(),
            "invalid_user_id"
        );
    }

    #[test]
    fn conditions_are_inclusive() {
        assert!(Condition::Above.is_met(10.0, 10.0));
        assert!(!Condition::Above.is_met(9.99, 10.0));
        assert!(Condition::Below.is_met(10.0, 10.0));
        assert!(!Condition::Below.is_met(10.01, 10.0));
    }
}
