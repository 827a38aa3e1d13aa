//! The `POST /api/v1/ticks` body parser: every accepted tick is valid
//! (positive finite price, valid symbol, not dated past the clock-skew
//! bound), and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marketmux_core::ingest::parse_ticks;
use marketmux_core::ClockSkew;

fuzz_target!(|data: &[u8]| {
    let skew = ClockSkew::default();
    if let Ok(ticks) = parse_ticks(data, &skew) {
        for t in ticks {
            assert!(skew.check(&t).is_ok());
            assert!(t.price.is_finite() && t.price > 0.0);
            assert!(!t.symbol.as_str().is_empty());
            let encoded = marketmux_core::encode_tick(&t);
            assert!(encoded.contains(t.symbol.as_str()));
        }
    }
});
