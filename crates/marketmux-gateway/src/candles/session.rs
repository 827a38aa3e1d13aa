//! [`CandleSubscriptions`]: one socket's candle subscriptions
//! (`{"action":"subscribe","candles":["1m"],"symbols":[...]}`), joined in
//! the node's [`super::live::CandleHub`].
//!
//! Bounds: a socket holds at most `max_subscriptions` (symbol, interval)
//! pairs, the per-connection bound of tick subscriptions, counted apart; a
//! node follows the candles of at most `max_topics` symbols (each is also an
//! upstream Redis channel), counted apart from tick topics. Past either the
//! subscribe is refused whole with `too_many_subscriptions`.

use std::collections::HashSet;
use std::sync::Arc;

use marketmux_core::{ErrorCode, Interval, ServerMessage, Symbol};
use marketmux_hub::ClientQueue;

use super::live::Joined;
use crate::limits::LimitHit;
use crate::state::GatewayState;

/// The (symbol, interval) pairs one socket follows.
#[derive(Debug, Default)]
pub struct CandleSubscriptions {
    held: HashSet<(Symbol, Interval)>,
}

impl CandleSubscriptions {
    /// Subscribes to `symbols`' candles of `intervals`: replies `subscribed`
    /// (with `candles`), then queues the current candle of each, and their
    /// changes from then on.
    pub async fn subscribe(
        &mut self,
        state: &Arc<GatewayState>,
        queue: &Arc<ClientQueue>,
        symbols: &[Symbol],
        intervals: &[Interval],
        id: Option<&str>,
    ) {
        let reply = |msg: ServerMessage<'_>| queue.push_control(GatewayState::control_frame(&msg));
        // Series the node dropped since (their stored candles could not be
        // read) are no longer held: they can be subscribed to again.
        self.held
            .retain(|(s, i)| !symbols.contains(s) || state.candles.has(s, *i, queue.id()));
        let fresh: Vec<(Symbol, Interval)> = symbols
            .iter()
            .flat_map(|s| intervals.iter().map(move |i| (*s, *i)))
            .filter(|pair| !self.held.contains(pair))
            .collect();
        let limit = state.config.max_subscriptions;
        if self.held.len() + fresh.len() > limit {
            state.stats.limits.hit(LimitHit::TooManySubscriptions);
            let message = format!(
                "following {} more candle series would exceed the limit of {limit} per connection ({} in use)",
                fresh.len(),
                self.held.len()
            );
            reply(ServerMessage::Error {
                code: ErrorCode::TooManySubscriptions,
                message: &message,
                id,
            });
            return;
        }
        let max_topics = state.config.max_topics;
        let new_symbols = symbols.iter().filter(|s| !state.candles.follows(s)).count();
        if max_topics > 0 && state.candles.symbol_count() + new_symbols > max_topics {
            state.stats.limits.hit(LimitHit::MaxTopics);
            let message = format!(
                "this node follows the candles of its limit of {max_topics} symbols; {new_symbols} of these are not followed yet"
            );
            reply(ServerMessage::Error {
                code: ErrorCode::TooManySubscriptions,
                message: &message,
                id,
            });
            return;
        }
        self.held.extend(fresh.iter().copied());
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
        for symbol in symbols {
            for interval in intervals {
                if self.held.remove(&(*symbol, *interval)) {
                    state.candles.leave(symbol, *interval, queue);
                }
            }
        }
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
