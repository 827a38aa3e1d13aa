//! How a subscribe opens each symbol's stream for one socket.
//!
//! Per new symbol: the socket follows it in the hub at once, with its live
//! ticks held ([`SymbolHub::subscribe_held`]); the price store says where the
//! stream stands and, for a `since` it can serve, what the client missed
//! ([`PriceStore::open`]); the `subscribed` reply names every position
//! (`streams`); then [`Plan::start`] queues each symbol's replay (or its
//! latest tick) and the held ticks above it. The live ticks that arrive while
//! the store answers are held, not lost, and any already in the replay are
//! dropped: no gap and no duplicate where the replay meets the live stream.
//!
//! The store is asked only when the client sent a position or this node has
//! no numbered tick of the symbol yet; all of a subscribe's questions share
//! one deadline ([`OPEN_TIMEOUT`]). A store that does not answer in time
//! costs recovery (`recovered:false`), not the subscription.

use std::sync::Arc;
use std::time::Duration;

use marketmux_bus::{BusError, StreamOpen};
use marketmux_core::{Position, StreamState, Symbol, Tick};
use marketmux_hub::{ClientQueue, StreamStart, SymbolHub};
use tokio::time::Instant;

use crate::state::GatewayState;

/// Longest a subscribe waits for the price store, all its symbols together.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// What a subscribe queues after its reply: per new symbol, how its stream starts.
pub(crate) struct Plan {
    /// The reply's `streams`: every symbol of the request whose position is known.
    pub(crate) streams: Vec<StreamState>,
    starts: Vec<Opening>,
    /// New symbols not followed: the node holds its bound of topics.
    refused: Vec<Symbol>,
}

/// One new symbol's start.
struct Opening {
    symbol: Symbol,
    start: StreamStart,
    /// What the reply said of the client's `since` (None: it sent none).
    recovered: Option<bool>,
}

/// Follows each of `fresh` (held), asks the store where each stream stands,
/// and decides how each starts. `symbols` is the whole request (some may be
/// followed already); `since`, the positions the client sent.
pub(crate) async fn open(
    state: &GatewayState,
    queue: &Arc<ClientQueue>,
    symbols: &[Symbol],
    fresh: &[Symbol],
    since: &[(Symbol, Position)],
) -> Plan {
    let since_of = |s: &Symbol| since.iter().find(|(x, _)| x == s).map(|(_, p)| *p);
    let hub = &state.hub;
    let mut refused = Vec::new();
    let held: Vec<(Symbol, Option<Position>, Option<Tick>)> = fresh
        .iter()
        .filter_map(|s| match hub.subscribe_held(*s, queue) {
            Ok(sub) => Some((*s, since_of(s), sub.latest)),
            // Another socket took the last topics since the caller's check.
            Err(_) => {
                refused.push(*s);
                None
            }
        })
        .collect();
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let answers = futures_util::future::join_all(held.iter().map(|(s, since, latest)| {
        let ask = since.is_some() || latest.and_then(|t| t.position()).is_none();
        async move {
            if !ask {
                return None;
            }
            Some(
                match tokio::time::timeout_at(deadline, state.prices.open(s, *since)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(BusError::Unavailable(format!(
                        "no answer within {OPEN_TIMEOUT:?}"
                    ))),
                },
            )
        }
    }))
    .await;

    let mut plan = Plan {
        streams: Vec::with_capacity(symbols.len()),
        starts: Vec::with_capacity(held.len()),
        refused,
    };
    for ((symbol, since, latest), answer) in held.into_iter().zip(answers) {
        let (head, start, recovered) = match answer {
            Some(Ok(open)) => decide(hub, queue, symbol, since, open),
            Some(Err(e)) => {
                tracing::debug!(%symbol, error = %e, "Price store did not open the stream");
                let head = latest.and_then(|t| t.position());
                (
                    head,
                    StreamStart::Latest { latest, head },
                    since.map(|_| false),
                )
            }
            None => {
                let head = latest.and_then(|t| t.position());
                (head, StreamStart::Latest { latest, head }, None)
            }
        };
        if let Some(head) = head {
            plan.streams.push(StreamState {
                symbol,
                epoch: head.epoch,
                seq: head.seq,
                recovered,
            });
        }
        plan.starts.push(Opening {
            symbol,
            start,
            recovered,
        });
    }
    // Symbols the socket already follows: their stream goes on unbroken.
    for s in symbols.iter().filter(|s| !fresh.contains(s)) {
        if let Some(at) = hub.position(s, queue.id()) {
            plan.streams.push(StreamState {
                symbol: *s,
                epoch: at.epoch,
                seq: at.seq,
                recovered: since_of(s).map(|p| p == at),
            });
        }
    }
    plan
}

/// How a stream the store opened starts: the replay when the client's
/// position is served and every live tick since was held, else the latest tick.
fn decide(
    hub: &SymbolHub,
    queue: &ClientQueue,
    symbol: Symbol,
    since: Option<Position>,
    open: StreamOpen,
) -> (Option<Position>, StreamStart, Option<bool>) {
    let head = Some(open.head);
    match (since, open.replay) {
        (Some(since), Some(ticks)) if !hub.hold_overflowed(&symbol, queue.id()) => {
            (head, StreamStart::Replay { since, ticks }, Some(true))
        }
        _ => (
            head,
            StreamStart::Latest {
                latest: open.latest,
                head,
            },
            since.map(|_| false),
        ),
    }
}

impl Plan {
    /// The new symbols the socket now follows.
    pub(crate) fn followed(&self) -> impl Iterator<Item = Symbol> + '_ {
        self.starts.iter().map(|o| o.symbol)
    }

    /// Queues each new symbol's first ticks and releases its held ticks
    /// (after the reply was queued). Returns the new symbols that were
    /// refused (the node's bound of topics).
    pub(crate) fn start(self, state: &GatewayState, queue: &Arc<ClientQueue>) -> Vec<Symbol> {
        let counts = &state.stats.recovery;
        for o in self.starts {
            let started = state.hub.start(&o.symbol, queue, o.start);
            match o.recovered {
                Some(true) if !started.replay_abandoned => counts.recovered(started.replayed),
                Some(_) => counts.not_recovered(),
                None => {}
            }
        }
        self.refused
    }
}
