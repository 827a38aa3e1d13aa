//! Why load-test parses RFC 3339 timestamps itself: the client parses one per
//! delivered tick, and in the broadcast scenarios the load generator, not the
//! server, is the bottleneck.
//!
//! `cargo run --release -p load-test --example timestamp_parse`

use std::hint::black_box;
use std::time::Instant;

use load_test::rfc3339;

fn main() {
    let inputs: Vec<String> = (0..1_000)
        .map(|i| format!("2026-05-12T15:04:{:02}.{:06}Z", i % 60, i * 997 % 1_000_000))
        .collect();
    const ROUNDS: usize = 2_000;
    let parses = (ROUNDS * inputs.len()) as f64;
    for round in 1..=3 {
        let start = Instant::now();
        let mut own = 0i64;
        for _ in 0..ROUNDS {
            for s in &inputs {
                own = own.wrapping_add(rfc3339::parse(black_box(s.as_bytes())).unwrap_or(0));
            }
        }
        let own_ns = start.elapsed().as_nanos() as f64 / parses;

        let start = Instant::now();
        let mut theirs = 0i64;
        for _ in 0..ROUNDS {
            for s in &inputs {
                let text = std::str::from_utf8(black_box(s.as_bytes())).unwrap_or("");
                theirs = theirs.wrapping_add(
                    chrono::DateTime::parse_from_rfc3339(text)
                        .ok()
                        .and_then(|t| t.timestamp_nanos_opt())
                        .unwrap_or(0),
                );
            }
        }
        let chrono_ns = start.elapsed().as_nanos() as f64 / parses;
        assert_eq!(own, theirs, "both parsers must agree");
        println!(
            "round {round}: load_test::rfc3339 {own_ns:.1} ns/parse, chrono {chrono_ns:.1} ns/parse ({:.2}x)",
            chrono_ns / own_ns
        );
    }
}
