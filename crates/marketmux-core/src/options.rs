//! What a subscriber may ask for beyond the symbols: [`SubscribeOptions`],
//! today a rate cap per subscription ([`MaxRate`]).

use std::time::Duration;

/// A cap on the ticks per second of each symbol a subscription sends,
/// between [`MaxRate::MIN`] and [`MaxRate::MAX`].
///
/// Between sends the newest tick replaces older ones, and the newest is sent
/// at most [`MaxRate::interval`] after it arrived.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct MaxRate(f64);

impl MaxRate {
    /// Lowest cap: one tick every ten seconds.
    pub const MIN: f64 = 0.1;
    /// Highest cap: a thousand ticks per second.
    pub const MAX: f64 = 1000.0;

    /// The cap for `per_sec` ticks per second: `Ok(None)` for 0 (every tick),
    /// an error for anything that is not a number within
    /// [`MaxRate::MIN`]`..=`[`MaxRate::MAX`].
    pub fn new(per_sec: f64) -> Result<Option<Self>, String> {
        if per_sec == 0.0 {
            return Ok(None);
        }
        if per_sec.is_finite() && (Self::MIN..=Self::MAX).contains(&per_sec) {
            Ok(Some(Self(per_sec)))
        } else {
            Err(format!(
                "`max_rate` must be 0 (every tick) or a number of ticks per second from {} to {}, got {per_sec}",
                Self::MIN,
                Self::MAX
            ))
        }
    }

    /// Ticks per second.
    pub fn per_sec(self) -> f64 {
        self.0
    }

    /// The shortest time between two ticks of one symbol sent to the client.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

/// Options of one subscribe request, applied to every symbol it names
/// (those already followed too: subscribing again changes them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SubscribeOptions {
    /// `"max_rate"`: at most this many ticks per second of each symbol, or
    /// on a candle subscribe this many updates per second of each symbol and
    /// interval (None: every one).
    pub max_rate: Option<MaxRate>,
}

impl SubscribeOptions {
    /// Reads `max_rate` as the request gave it (absent: no cap).
    pub fn parse(max_rate: Option<&serde_json::Value>) -> Result<Self, String> {
        let max_rate = match max_rate {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let n = v.as_f64().ok_or_else(|| {
                    format!("`max_rate` must be a number of ticks per second, got {v}")
                })?;
                MaxRate::new(n)?
            }
        };
        Ok(Self { max_rate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cap_is_a_number_in_range_or_zero() {
        let parse = |v: serde_json::Value| SubscribeOptions::parse(Some(&v)).map(|o| o.max_rate);
        assert_eq!(SubscribeOptions::parse(None).unwrap().max_rate, None);
        assert_eq!(parse(json!(0)).unwrap(), None);
        assert_eq!(parse(json!(0.0)).unwrap(), None);
        assert_eq!(parse(json!(4)).unwrap().unwrap().per_sec(), 4.0);
        assert_eq!(
            parse(json!(0.1)).unwrap().unwrap().interval(),
            Duration::from_secs(10)
        );
        assert_eq!(
            parse(json!(1000)).unwrap().unwrap().interval(),
            Duration::from_millis(1)
        );
        for bad in [
            json!(-1),
            json!(0.05),
            json!(1000.5),
            json!(10_000),
            json!("NaN"),
            json!("4"),
            json!(true),
            json!([4]),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
        assert!(MaxRate::new(f64::NAN).is_err());
        assert!(MaxRate::new(f64::INFINITY).is_err());
    }
}
