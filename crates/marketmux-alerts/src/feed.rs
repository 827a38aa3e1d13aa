//! [`TickFeed`]: where [`Evaluator::run`](crate::Evaluator::run) reads its
//! ticks from, so one evaluation loop serves every role: the in-process
//! [`TickInbox`] in `dev`, a Kafka consumer group in the `alerts` role.
//!
//! A feed hands out batches; once a batch was evaluated with no fire left
//! pending, the loop calls [`TickFeed::settled`] (Kafka commits its offsets
//! there). A feed that replays unsettled batches after a restart says so with
//! [`TickFeed::HOLDS_UNSETTLED`]: while fires are pending, the loop then reads
//! it no faster than it retries them, folds what it reads meanwhile into one
//! held batch ([`TickFeed::absorb`]), and settles that as soon as a retry has
//! stored every pending fire, whether or not another batch arrives.

use std::future::Future;
use std::sync::Arc;

use marketmux_core::Tick;

use crate::inbox::TickInbox;

/// A source of tick batches for the evaluation loop.
pub trait TickFeed: Send + 'static {
    /// One batch, as the feed reads it. The default is an empty batch that
    /// settles nothing, which [`TickFeed::absorb`] folds batches into.
    type Batch: Send + Default;
    /// Why a read failed; the loop logs it and reads again after a backoff.
    type Error: std::fmt::Display + Send;

    /// Whether an unsettled batch is read again after a restart (so the loop
    /// holds back while fires are pending instead of running ahead).
    const HOLDS_UNSETTLED: bool;

    /// The next batch; `None` once the feed has ended for good.
    fn next_batch(
        &mut self,
    ) -> impl Future<Output = Option<Result<Self::Batch, Self::Error>>> + Send;

    /// The ticks of `batch`, in the order they are to be evaluated.
    fn ticks(batch: &Self::Batch) -> impl Iterator<Item = &Tick>;

    /// Folds `later` into `held`, both evaluated but not settled yet, keeping
    /// only what settling them needs (Kafka: the furthest offset of each
    /// partition; the ticks are dropped). Settling the result settles both.
    fn absorb(held: &mut Self::Batch, later: Self::Batch);

    /// Every fire `batch` caused is stored: the feed need not hand it out again.
    fn settled(&mut self, batch: Self::Batch);
}

/// The in-process hand-off from the bus. It never fails, never ends, and
/// keeps nothing to replay: a drained batch is gone.
impl TickFeed for Arc<TickInbox> {
    type Batch = Vec<Tick>;
    type Error = std::convert::Infallible;

    const HOLDS_UNSETTLED: bool = false;

    async fn next_batch(&mut self) -> Option<Result<Vec<Tick>, Self::Error>> {
        loop {
            self.ready().await;
            let ticks = self.drain();
            if !ticks.is_empty() {
                return Some(Ok(ticks));
            }
        }
    }

    fn ticks(batch: &Vec<Tick>) -> impl Iterator<Item = &Tick> {
        batch.iter()
    }

    /// Nothing is replayed, so nothing needs keeping.
    fn absorb(held: &mut Vec<Tick>, _later: Vec<Tick>) {
        held.clear();
    }

    fn settled(&mut self, _batch: Vec<Tick>) {}
}
