//! The hub's direct writes to an idle client's socket
//! ([`ClientQueue::flush_or_wake`]): one write per batch while the writer
//! task waits, the rest left to the writer in order, and nothing written by
//! anyone else while the hub writes outside the queue's lock.

use std::sync::Arc;

use bytes::Bytes;
use marketmux_core::Symbol;
use marketmux_hub::{ClientQueue, CloseCause, QueueLimits};
use marketmux_test_support::FakeSocket;
use tokio::time::Instant;

fn idle_queue(socket: &Arc<FakeSocket>) -> Arc<ClientQueue> {
    let q = ClientQueue::new(1, QueueLimits::default(), Arc::default());
    q.attach_direct(socket.clone());
    // The writer found nothing to send and waits.
    assert!(q.take_batch(Default::default()).unwrap().is_empty());
    q
}

fn push(q: &ClientQueue, text: &'static str) {
    let (_, _) = q.push_tick_deferred(
        Symbol::new("A").unwrap(),
        &Bytes::from(text),
        Instant::now(),
    );
}

/// What the writer task would take now, as text.
fn left(q: &ClientQueue) -> String {
    let batch = q.take_batch(Default::default()).unwrap();
    batch
        .frames
        .iter()
        .chain(&batch.conflated)
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect()
}

#[test]
fn an_idle_writers_batch_goes_out_in_one_direct_write() {
    let socket = FakeSocket::with_room(1024);
    let q = idle_queue(&socket);
    push(&q, "a1");
    push(&q, "b1");
    q.flush_or_wake();
    assert_eq!(socket.sent(), "a1b1");
    assert_eq!(socket.writes(), 1);
    assert_eq!(q.queued_bytes(), 0);
    // Still idle: the next batch goes direct too.
    push(&q, "a2");
    q.flush_or_wake();
    assert_eq!(socket.sent(), "a1b1a2");
    assert_eq!(left(&q), "");
}

#[test]
fn what_the_socket_does_not_take_stays_queued_in_order() {
    let socket = FakeSocket::with_room(3);
    let q = idle_queue(&socket);
    push(&q, "a1");
    push(&q, "b1");
    q.flush_or_wake();
    assert_eq!(socket.sent(), "a1b");
    // The writer owns the socket now: later batches are queued for it.
    push(&q, "c1");
    socket.set_room(100);
    q.flush_or_wake();
    assert_eq!(socket.sent(), "a1b");
    assert_eq!(left(&q), "1c1");
}

#[test]
fn a_full_socket_or_a_busy_writer_leaves_everything_to_the_writer() {
    let socket = FakeSocket::with_room(0);
    let q = idle_queue(&socket);
    push(&q, "a1");
    q.flush_or_wake();
    assert_eq!(left(&q), "a1");
    // The writer took a batch and writes it: no direct write meanwhile.
    socket.set_room(100);
    push(&q, "a2");
    let _in_flight = q.take_batch(Default::default()).unwrap();
    push(&q, "a3");
    q.flush_or_wake();
    assert_eq!(socket.sent(), "");
    assert_eq!(left(&q), "a3");
}

#[test]
fn a_closed_queue_lets_go_of_the_socket() {
    let socket = FakeSocket::with_room(100);
    let q = idle_queue(&socket);
    assert_eq!(Arc::strong_count(&socket), 2);
    q.close(CloseCause::Normal);
    assert_eq!(Arc::strong_count(&socket), 1);
    push(&q, "a1");
    q.flush_or_wake();
    assert_eq!(socket.sent(), "");
}

#[test]
fn frames_queued_during_a_direct_write_follow_it_through_the_writer() {
    let socket = FakeSocket::with_room(3);
    let q = idle_queue(&socket);
    push(&q, "a1");
    push(&q, "b1");
    let during = q.clone();
    socket.during_next_write(move || {
        // The hub writes without the queue's lock: pushes get in, the writer
        // task gets nothing to write yet.
        push(&during, "c1");
        assert_eq!(left(&during), "", "the writer waits for the hub");
    });
    q.flush_or_wake();
    assert_eq!(socket.sent(), "a1b");
    // What the socket left goes first, then what was queued meanwhile.
    assert_eq!(left(&q), "1c1");
}

#[tokio::test]
async fn a_writer_that_asked_during_a_direct_write_is_woken_after_it() {
    let socket = FakeSocket::with_room(1024);
    let q = idle_queue(&socket);
    push(&q, "a1");
    let during = q.clone();
    socket.during_next_write(move || {
        assert_eq!(left(&during), "");
    });
    q.flush_or_wake();
    assert_eq!(socket.sent(), "a1");
    // The writer waits again: the hub's settle woke it once.
    tokio::time::timeout(std::time::Duration::from_secs(1), q.wait_ready())
        .await
        .expect("woken once the direct write settled");
    assert_eq!(left(&q), "");
}

#[test]
fn a_close_during_a_direct_write_waits_for_it() {
    // A drain asked for while the hub writes: the rest is still written,
    // then the close.
    let socket = FakeSocket::with_room(3);
    let q = idle_queue(&socket);
    push(&q, "a1");
    push(&q, "b1");
    let during = q.clone();
    socket.during_next_write(move || {
        during.close_after_pending(CloseCause::Restart);
        assert!(!during.push_control(Bytes::from_static(b"late")));
    });
    q.flush_or_wake();
    assert_eq!(left(&q), "1");
    assert_eq!(
        q.take_batch(Default::default()).unwrap_err(),
        CloseCause::Restart
    );

    // A hard close while the hub writes: closed at once for everyone, but
    // the writer's close frame waits until the hub's write returned.
    let socket = FakeSocket::with_room(3);
    let q = idle_queue(&socket);
    push(&q, "a1");
    push(&q, "b1");
    let during = q.clone();
    socket.during_next_write(move || {
        during.close(CloseCause::ConnectionLost);
        assert!(during.is_closed());
        assert_eq!(during.close_cause(), Some(CloseCause::ConnectionLost));
        assert!(
            during.take_batch(Default::default()).unwrap().is_empty(),
            "no close frame while the hub writes"
        );
    });
    q.flush_or_wake();
    assert_eq!(socket.sent(), "a1b");
    assert_eq!(
        q.take_batch(Default::default()).unwrap_err(),
        CloseCause::ConnectionLost
    );
    assert_eq!(q.queued_bytes(), 0, "what the socket left is dropped");
    assert_eq!(Arc::strong_count(&socket), 1, "and the socket let go");
}
