//! Reads a node's `GET /metrics`, for the tests that check its counters.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Every sample of `addr`'s `/metrics`, by series; the test fails if the node
/// does not answer or the text is not valid Prometheus exposition.
pub async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics endpoint answers")
        .text()
        .await
        .expect("metrics body");
    marketmux_test_support::exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}
