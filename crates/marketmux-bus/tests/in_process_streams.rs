//! The in-process bus (`dev`) as one stream per symbol: concurrent publishers'
//! ticks reach the handlers in `seq` order, duplicates are dropped, `open` and
//! history pages, and a save/restore keeps epochs, sequences and history.

use std::sync::Arc;
use std::time::Duration;

use marketmux_bus::{HistoryConfig, HistoryPage, InProcessBus, Origin, PriceStore, TickPublisher};
use marketmux_core::{Position, Symbol, Tick, Timestamp};
use marketmux_test_support::tick;
use parking_lot::Mutex;

fn recorder(bus: &InProcessBus) -> Arc<Mutex<Vec<Tick>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.add_batch_handler(Arc::new(move |ticks: &[Tick]| {
        s.lock().extend_from_slice(ticks)
    }));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_reach_the_handlers_in_seq_order() {
    let bus = InProcessBus::new();
    let seen = recorder(&bus);
    let tasks: Vec<_> = (0..4)
        .map(|p| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..250 {
                    let batch = vec![tick("RACE", f64::from(p * 1000 + i + 1)); 2];
                    bus.publish(batch).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock();
    let seqs: Vec<u64> = seen.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
    assert!(seen.iter().all(|t| t.epoch == seen[0].epoch));
}

#[tokio::test]
async fn duplicates_open_and_history() {
    let bus = InProcessBus::with_history(HistoryConfig {
        size: 3,
        ttl: Duration::from_secs(60),
    });
    let seen = recorder(&bus);
    let s = Symbol::new("AAPL").unwrap();
    let first = bus.open(&s, None).await.unwrap();
    assert_eq!((first.head.seq, first.latest), (0, None));
    let epoch = first.head.epoch;
    let from = |sequence| {
        Some(Origin {
            producer_id: 9,
            sequence,
        })
    };
    let batch: Vec<_> = (1..=5)
        .map(|i: u32| (tick("AAPL", f64::from(i)), from(u64::from(i))))
        .collect();
    assert_eq!(bus.publish_from(batch.clone()).await.unwrap(), 0);
    assert_eq!(bus.publish_from(batch).await.unwrap(), 5);
    assert_eq!(seen.lock().len(), 5, "duplicates reach no handler");
    assert!(
        seen.lock().iter().all(|t| t.epoch == epoch),
        "open made the epoch"
    );
    let at = |seq| Some(Position { epoch, seq });
    let open = bus.open(&s, at(2)).await.unwrap();
    assert_eq!(open.head.seq, 5);
    let replay: Vec<u64> = open.replay.unwrap().iter().map(|t| t.seq).collect();
    assert_eq!(replay, [3, 4, 5]);
    assert_eq!(open.latest.map(|t| t.seq), Some(5));
    assert_eq!(bus.open(&s, at(1)).await.unwrap().replay, None);
    assert_eq!(
        bus.history(&s, Some(1), 10).await.unwrap(),
        HistoryPage::Gone { epoch }
    );
    let unknown = Symbol::new("NONE").unwrap();
    assert_eq!(
        bus.history(&unknown, None, 10).await.unwrap(),
        HistoryPage::Unknown
    );
}

#[tokio::test]
async fn saved_streams_come_back_with_their_epochs_and_history() {
    let dir = std::env::temp_dir().join(format!(
        "marketmux-saved-{}-{}",
        std::process::id(),
        Timestamp::now().0
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("streams.json");
    let bus = InProcessBus::new();
    let s = Symbol::new("MSFT").unwrap();
    bus.publish((1..=4).map(|i| tick("MSFT", f64::from(i))).collect())
        .await
        .unwrap();
    let head = bus.open(&s, None).await.unwrap().head;
    assert_eq!(bus.save_streams(&path).unwrap(), 1);

    let again = InProcessBus::new();
    assert_eq!(again.restore_streams(&path).unwrap(), 1);
    assert!(!path.exists(), "the file is taken");
    let open = again
        .open(&s, Some(Position { seq: 2, ..head }))
        .await
        .unwrap();
    assert_eq!(open.head, head);
    let replay: Vec<(u64, f64)> = open
        .replay
        .unwrap()
        .iter()
        .map(|t| (t.seq, t.price))
        .collect();
    assert_eq!(replay, [(3, 3.0), (4, 4.0)]);
    assert_eq!(again.latest(&s).await.unwrap().map(|t| t.seq), Some(4));
    again.publish(vec![tick("MSFT", 5.0)]).await.unwrap();
    assert_eq!(
        again.latest(&s).await.unwrap().map(|t| (t.seq, t.epoch)),
        Some((5, head.epoch))
    );

    // No file (a crash after the restore): nothing to restore, new epochs.
    let third = InProcessBus::new();
    assert_eq!(third.restore_streams(&path).unwrap(), 0);
    assert_ne!(third.open(&s, None).await.unwrap().head.epoch, head.epoch);
    std::fs::write(&path, b"not json").unwrap();
    assert!(third.restore_streams(&path).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
