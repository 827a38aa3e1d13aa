//! [`CandleSubscriptions`]: one socket's candle subscriptions
//! (`{"action":"subscribe","candles":["1m"],"symbols":[...]}`), joined in
//! the node's [`super::live::CandleHub`].
//!
//! Bounds: each (symbol, interval) pair is one subscription under the
//! socket's `max_subscriptions`, counted together with its tick
//! subscriptions, and under `max_subscriptions_per_ip`, counted together
//! with every subscription of the client's address ([`crate::limits`]); a
//! node follows the candles of at most `max_topics` symbols (each is also an
//! upstream Redis channel), counted apart from tick topics. Past any of them
//! the subscribe is refused whole with `too_many_subscriptions`.
//!
//! A `max_rate` on a candle subscribe caps each of its (symbol, interval)
//! pairs on its own, in the socket's queue ([`ClientQueue::set_update_cap`]):
//! subscribing again to a pair changes or removes its cap, as for ticks.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use marketmux_core::{ErrorCode, Interval, MaxRate, ServerMessage, Symbol};
use marketmux_hub::ClientQueue;

use super::live::{stream_of, Joined};
use crate::limits::{self, LimitHit};
use crate::state::GatewayState;

/// What the subscribe names.
const SERIES: &str = "candle series";

/// One candle subscribe, as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct CandleRequest<'a> {
    /// The symbols, without repeats.
    pub symbols: &'a [Symbol],
    /// Their intervals to follow, without repeats.
    pub intervals: &'a [Interval],
    /// The cap of each (symbol, interval) pair (None: every update).
    pub max_rate: Option<MaxRate>,
    /// The request's `id`, echoed in the reply.
    pub id: Option<&'a str>,
}

/// The (symbol, interval) pairs one socket follows.
#[derive(Debug)]
pub struct CandleSubscriptions {
    held: HashSet<(Symbol, Interval)>,
    /// The client's address: each pair holds a place under
    /// `max_subscriptions_per_ip`.
    peer: IpAddr,
}

impl CandleSubscriptions {
    /// No subscription yet, for a socket of `peer`.
    pub fn new(peer: IpAddr) -> Self {
        Self {
            held: HashSet::new(),
            peer,
        }
    }

    /// How many (symbol, interval) pairs the socket follows.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether the socket follows no candles.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Subscribes to the request's symbols' candles of its intervals (the
    /// socket holds `ticks_held` tick subscriptions besides): replies
    /// `subscribed` (with `candles`), then queues the current candle of
    /// each, and their changes from then on, capped at the request's
    /// `max_rate` if it has one.
    pub async fn subscribe(
        &mut self,
        state: &Arc<GatewayState>,
        queue: &Arc<ClientQueue>,
        request: &CandleRequest<'_>,
        ticks_held: usize,
    ) {
        let CandleRequest {
            symbols,
            intervals,
            max_rate,
            id,
        } = *request;
        let reply = |msg: ServerMessage<'_>| queue.push_control(GatewayState::control_frame(&msg));
        let refuse = |message: &str| {
            reply(ServerMessage::Error {
                code: ErrorCode::TooManySubscriptions,
                message,
                id,
            })
        };
        // Series the node dropped since (their stored candles could not be
        // read) are no longer held: they can be subscribed to again.
        let before = self.held.len();
        self.held
            .retain(|(s, i)| !symbols.contains(s) || state.candles.has(s, *i, queue.id()));
        state
            .subscriptions_per_ip
            .release(self.peer, before - self.held.len());
        let fresh: Vec<(Symbol, Interval)> = symbols
            .iter()
            .flat_map(|s| intervals.iter().map(move |i| (*s, *i)))
            .filter(|pair| !self.held.contains(pair))
            .collect();
        let in_use = ticks_held + self.held.len();
        if let Err(message) = limits::check_per_socket(state, in_use, fresh.len(), SERIES) {
            refuse(&message);
            return;
        }
        let max_topics = state.config.max_topics;
        let new_symbols = symbols.iter().filter(|s| !state.candles.follows(s)).count();
        if max_topics > 0 && state.candles.symbol_count() + new_symbols > max_topics {
            state.stats.limits.hit(LimitHit::MaxTopics);
            refuse(&format!(
                "this node follows the candles of its limit of {max_topics} symbols; {new_symbols} of these are not followed yet"
            ));
            return;
        }
        if let Err(message) = limits::reserve_per_ip(state, self.peer, fresh.len(), SERIES) {
            refuse(&message);
            return;
        }
        self.held.extend(fresh.iter().copied());
        // Every pair of the request takes its cap, before the new ones
        // join (so their first updates are capped too).
        let cap = max_rate.map(MaxRate::interval);
        for symbol in symbols {
            for interval in intervals {
                queue.set_update_cap(*symbol, stream_of(*interval), cap);
            }
        }
        reply(ServerMessage::CandlesSubscribed {
            symbols,
            intervals,
            id,
        });
        for symbol in symbols {
            let new: Vec<Interval> = fresh
                .iter()
                .filter(|(s, _)| s == symbol)
                .map(|(_, i)| *i)
                .collect();
            if new.is_empty() {
                continue;
            }
            if state.candles.join(*symbol, &new, queue) == Joined::Load {
                load(state, symbol).await;
            }
        }
    }

    /// Leaves `symbols`' candles of `intervals`; replies `unsubscribed`.
    pub fn unsubscribe(
        &mut self,
        state: &GatewayState,
        queue: &ClientQueue,
        symbols: &[Symbol],
        intervals: &[Interval],
        id: Option<&str>,
    ) {
        let mut left = 0;
        for symbol in symbols {
            for interval in intervals {
                if self.held.remove(&(*symbol, *interval)) {
                    state.candles.leave(symbol, *interval, queue);
                    left += 1;
                }
            }
        }
        state.subscriptions_per_ip.release(self.peer, left);
        queue.push_control(GatewayState::control_frame(
            &ServerMessage::CandlesUnsubscribed {
                symbols,
                intervals,
                id,
            },
        ));
    }

    /// Leaves every candle series (the socket closed).
    pub fn leave_all(&mut self, state: &GatewayState, queue: &ClientQueue) {
        state
            .subscriptions_per_ip
            .release(self.peer, self.held.len());
        for (symbol, interval) in self.held.drain() {
            state.candles.leave(&symbol, interval, queue);
        }
    }
}

/// Reads `symbol`'s stored candles for the node's first subscriber of them,
/// once the node receives the symbol's ticks (what [`marketmux_bus::PriceStore::open`]
/// waits for), and hands them to the hub.
async fn load(state: &GatewayState, symbol: &Symbol) {
    let opened = match state.prices.open(symbol, None).await {
        Ok(o) => o,
        Err(e) => return state.candles.abandon(symbol, &e.to_string()),
    };
    let mut pages = Vec::with_capacity(Interval::ALL.len());
    for interval in Interval::ALL {
        // The newest closed candle and the current one: where each interval stands.
        match state.prices.candles(symbol, interval, 2).await {
            Ok(page) => pages.push((interval, page.unwrap_or_default())),
            Err(e) => return state.candles.abandon(symbol, &e.to_string()),
        }
    }
    state.candles.loaded(symbol, opened.head.epoch, &pages);
}
