//! `max_rate`: a rate cap per subscription, of ticks and of candles, over
//! real sockets.

mod common;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use marketmux_core::{Interval, Timestamp};
use marketmux_gateway::GatewayConfig;
use serde_json::Value;
use tokio::time::Instant;

/// Live task count of the node's runtime, from `/debug/vars`.
async fn tasks(node: &TestNode) -> u64 {
    let vars: Value = reqwest::get(node.url("/debug/vars"))
        .await
        .expect("GET /debug/vars")
        .json()
        .await
        .expect("JSON");
    vars["tasks"].as_u64().expect("tasks")
}

#[tokio::test]
async fn a_capped_and_an_uncapped_client_on_one_symbol_at_100_ticks_per_sec() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let mut capped = node.connect().await;
    let mut plain = node.connect().await;
    send(
        &mut capped,
        r#"{"action":"subscribe","symbols":["RATE"],"max_rate":4}"#,
    )
    .await;
    send(&mut plain, r#"{"action":"subscribe","symbols":["RATE"]}"#).await;
    assert_eq!(recv(&mut capped).await["type"], "subscribed");
    assert_eq!(recv(&mut plain).await["type"], "subscribed");

    // 100 ticks per second for one second, read by both clients meanwhile.
    let start = Instant::now();
    let feed = async {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        for i in 1..=100 {
            every.tick().await;
            node.publish("RATE", i as f64);
        }
        Instant::now()
    };
    let read_capped = async {
        let mut seqs = Vec::new();
        while seqs.last() != Some(&100) {
            let t = recv(&mut capped).await;
            assert_eq!(t["type"], "tick", "{t}");
            seqs.push(t["seq"].as_u64().expect("seq"));
        }
        (seqs, Instant::now())
    };
    let read_plain = async {
        let mut seqs = Vec::new();
        while seqs.len() < 100 {
            seqs.push(recv(&mut plain).await["seq"].as_u64().expect("seq"));
        }
        seqs
    };
    let (fed_at, (seqs, last_at), all) = tokio::join!(feed, read_capped, read_plain);

    assert_eq!(all, (1..=100).collect::<Vec<u64>>(), "uncapped: every tick");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert_eq!(seqs.last(), Some(&100), "the final price arrives");
    // At most one tick per 250 ms over however long the feed took (about
    // 1 s, more on a loaded machine), and the held final one.
    let fed_for = (fed_at - start).as_secs_f64();
    let most = (fed_for * 4.0).ceil() as usize + 1;
    assert!(
        (3..=most).contains(&seqs.len()),
        "{} ticks over {fed_for:.2}s: {seqs:?}",
        seqs.len()
    );
    assert!(last_at >= fed_at);
    // Nothing more: the capped client got the newest, not a backlog.
    assert!(try_recv(&mut capped, Duration::from_millis(400))
        .await
        .is_none());
    let skipped = node.state.hub.stats().snapshot().capped_skipped;
    assert_eq!(skipped as usize, 100 - seqs.len());
}

#[tokio::test]
async fn five_thousand_capped_subscriptions_cost_no_task_each() {
    const SOCKETS: usize = 50;
    const SYMBOLS: usize = 100;
    let node = TestNode::start(GatewayConfig::default()).await;
    let symbols: Vec<String> = (0..SYMBOLS).map(|i| format!("CAP{i}")).collect();
    let before = tasks(&node).await;
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        sockets.push(node.connect().await);
    }
    let with_sockets = tasks(&node).await;
    let request = serde_json::json!({
        "action": "subscribe", "symbols": symbols, "max_rate": 2
    })
    .to_string();
    for ws in &mut sockets {
        send(ws, &request).await;
        assert_eq!(recv(ws).await["type"], "subscribed");
    }
    assert_eq!(
        node.state.hub.stats().snapshot().subscriptions as usize,
        SOCKETS * SYMBOLS
    );
    // Five ticks of every symbol at once: the first goes out, the newest is
    // held for half a second by each of the 5,000 subscriptions.
    let ticks: Vec<_> = (1..=5)
        .flat_map(|round| symbols.iter().map(move |s| tick(s, round as f64)))
        .collect();
    node.bus.publish_now(&ticks);
    let holding = tasks(&node).await;
    assert!(
        holding <= with_sockets + 10,
        "capped subscriptions started tasks: {with_sockets} with the sockets, {holding} with 5,000 held ticks"
    );
    assert!(
        with_sockets - before <= 3 * SOCKETS as u64,
        "{before} tasks before, {with_sockets} with {SOCKETS} sockets"
    );

    // Every subscription gets the first and then the final price, nothing in between.
    for ws in &mut sockets {
        let mut got: HashMap<String, Vec<u64>> = HashMap::new();
        while got.values().filter(|s| s.last() == Some(&5)).count() < SYMBOLS {
            let t = recv(ws).await;
            let symbol = t["symbol"].as_str().expect("symbol").to_owned();
            got.entry(symbol)
                .or_default()
                .push(t["seq"].as_u64().expect("seq"));
        }
        assert!(got.values().all(|s| s == &[1, 5]), "{got:?}");
    }
    let stats = node.state.hub.stats().snapshot();
    assert_eq!(stats.capped_skipped as usize, SOCKETS * SYMBOLS * 3);
    assert_eq!(stats.deliveries as usize, SOCKETS * SYMBOLS * 2);
}

#[tokio::test]
async fn bad_max_rate_values_are_refused_and_a_new_subscribe_changes_the_cap() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let mut ws = node.connect().await;
    for bad in ["-1", r#""NaN""#, "10000", "0.01", r#""4""#] {
        let text = format!(r#"{{"action":"subscribe","symbol":"CHG","max_rate":{bad},"id":3}}"#);
        send(&mut ws, &text).await;
        let m = recv(&mut ws).await;
        assert_eq!(
            (m["type"].as_str(), m["code"].as_str(), m["id"].as_i64()),
            (Some("error"), Some("invalid_request"), Some(3)),
            "{text} -> {m}"
        );
        assert!(m["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_rate"));
    }
    assert_eq!(node.state.hub.stats().snapshot().subscriptions, 0);

    // The socket stays usable: one tick per 10 s.
    send(
        &mut ws,
        r#"{"action":"subscribe","symbol":"CHG","max_rate":0.1}"#,
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    for i in 1..=3 {
        node.publish("CHG", i as f64);
    }
    assert_eq!(recv(&mut ws).await["seq"], 1);
    assert!(try_recv(&mut ws, Duration::from_millis(300))
        .await
        .is_none());
    // Subscribing again without a cap: the held tick now, then every tick.
    send(&mut ws, r#"{"action":"subscribe","symbol":"CHG"}"#).await;
    let mut seqs = Vec::new();
    loop {
        let m = recv(&mut ws).await;
        if m["type"] == "subscribed" {
            break;
        }
        seqs.push(m["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, [3], "the held tick goes out before the reply");
    node.publish("CHG", 4.0);
    node.publish("CHG", 5.0);
    while seqs.last() != Some(&5) {
        let m = recv(&mut ws).await;
        if m["type"] == "tick" {
            seqs.push(m["seq"].as_u64().expect("seq"));
        }
    }
    assert_eq!(seqs, [3, 4, 5]);
    // And a cap again: the newest within its interval.
    send(
        &mut ws,
        r#"{"action":"subscribe","symbol":"CHG","max_rate":20}"#,
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    for i in 6..=9 {
        node.publish("CHG", i as f64);
    }
    let mut seqs = Vec::new();
    while seqs.last() != Some(&9) {
        seqs.push(recv(&mut ws).await["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, [6, 9]);
}

/// Candle messages on `ws`, with when each arrived, until one matches
/// `done` (included). Anything else but a candle fails the test.
async fn candles_until(ws: &mut Ws, done: impl Fn(&Value) -> bool) -> Vec<(Instant, Value)> {
    let mut got = Vec::new();
    loop {
        let m = recv(ws).await;
        assert_eq!(m["type"], "candle", "{m}");
        let stop = done(&m);
        got.push((Instant::now(), m));
        if stop {
            return got;
        }
    }
}

/// The closed candles among `got`, as `(start, [open, high, low, close], ticks)`.
fn closed(got: &[(Instant, Value)]) -> Vec<(String, [f64; 4], u64)> {
    got.iter()
        .map(|(_, m)| m)
        .filter(|m| m["closed"] == true)
        .map(|m| {
            let f = |k: &str| m[k].as_f64().expect(k);
            (
                m["start"].as_str().expect("start").to_owned(),
                [f("open"), f("high"), f("low"), f("close")],
                m["ticks"].as_u64().expect("ticks"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_candles_come_at_their_rate_with_every_closed_candle_once() {
    let node = TestNode::start(GatewayConfig::default()).await;
    let mut capped = node.connect().await;
    let mut plain = node.connect().await;
    send(
        &mut capped,
        r#"{"action":"subscribe","candles":["1s"],"symbols":["CANDLE"],"max_rate":2}"#,
    )
    .await;
    send(
        &mut plain,
        r#"{"action":"subscribe","candles":["1s"],"symbols":["CANDLE"]}"#,
    )
    .await;
    assert_eq!(recv(&mut capped).await["type"], "subscribed");
    assert_eq!(recv(&mut plain).await["type"], "subscribed");
    // Ticks of the symbol are not capped by a cap on its candles.
    send(
        &mut capped,
        r#"{"action":"subscribe","symbols":["CANDLE"]}"#,
    )
    .await;
    assert_eq!(recv(&mut capped).await["type"], "subscribed");
    send(
        &mut capped,
        r#"{"action":"unsubscribe","symbols":["CANDLE"]}"#,
    )
    .await;
    assert_eq!(recv(&mut capped).await["type"], "unsubscribed");

    // 100 ticks per second for 3.5 s, the price moving so candles differ;
    // the last candle closes by the clock, after its end plus the grace.
    let last_start = RefCell::new(None::<String>);
    let feed = async {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        let mut last = None;
        for i in 1..=350 {
            every.tick().await;
            last = Some(node.publish("CANDLE", 100.0 + (i * 7 % 31) as f64));
        }
        let last = last.expect("a tick");
        let start = Interval::S1.start_of(last.timestamp);
        *last_start.borrow_mut() = Some(Timestamp(start * 1_000_000).to_rfc3339());
    };
    let is_last_closed =
        |m: &Value| m["closed"] == true && last_start.borrow().as_deref() == m["start"].as_str();
    let (_, got_capped, got_plain) = tokio::join!(
        feed,
        candles_until(&mut capped, is_last_closed),
        candles_until(&mut plain, is_last_closed)
    );

    // Every closed candle, once each, with the uncapped client's numbers.
    let (closed_capped, closed_plain) = (closed(&got_capped), closed(&got_plain));
    assert!(closed_plain.len() >= 4, "{closed_plain:?}");
    let starts: HashSet<&String> = closed_plain.iter().map(|c| &c.0).collect();
    assert_eq!(
        starts.len(),
        closed_plain.len(),
        "closed once: {closed_plain:?}"
    );
    assert_eq!(closed_capped, closed_plain);
    assert!(closed_plain.iter().map(|c| c.2).sum::<u64>() == 350);

    // At most about 2 updates per second, closed ones included; the
    // uncapped client got one per tick.
    assert!(got_plain.len() >= 350, "{} updates", got_plain.len());
    let span = (got_capped.last().expect("one").0 - got_capped[0].0).as_secs_f64();
    assert!(
        got_capped.len() as f64 <= span * 2.0 + 2.0,
        "{} updates over {span:.2}s",
        got_capped.len()
    );
    let at: Vec<Instant> = got_capped.iter().map(|(t, _)| *t).collect();
    for (i, t) in at.iter().enumerate() {
        let in_a_second = at[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(1))
            .count();
        assert!(in_a_second <= 3, "{in_a_second} updates within 1 s");
    }
    assert!(got_capped.len() >= 6, "{} updates", got_capped.len());
    assert!(node.state.hub.stats().snapshot().capped_skipped > 0);
}
