//! [`ClientPool`]: the threads the client sockets run on, one single-threaded
//! runtime each.
//!
//! Each client is one task with one socket. On a work-stealing runtime every
//! read also pays for the shared run queue, cross-thread wake-ups and worker
//! parking, and those costs land on the cores the server under test needs.
//! Clients are spread round-robin instead, and a thread only ever runs its
//! own: the generator's CPU per delivery is what its kernel reads cost.
//!
//! With a wake interval, a thread does not sleep in `epoll_wait` until the
//! next message either: it sleeps for the interval, then reads every socket
//! that has data and sleeps again. A thread blocked in `epoll_wait` is woken
//! once per message when messages trickle in socket by socket (as a server
//! writes them), and on loopback that wake-up is paid inside the *server's*
//! write (`sock_def_readable` → `ep_poll_callback` → `try_to_wake_up`): the
//! interval takes most of those wake-ups off both sides, at the cost of up to
//! one interval of added latency.

use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinSet};

/// `n` threads, each running one current-thread runtime until the pool is dropped.
pub struct ClientPool {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    next: usize,
}

impl ClientPool {
    /// Starts `n` (at least one) client threads; with `wake_interval`, each
    /// wakes at most once per interval (see the module doc).
    pub fn new(n: usize, wake_interval: Option<Duration>) -> anyhow::Result<Self> {
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start a client runtime")?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("clients-{i}"))
                .spawn(move || {
                    if let Some(every) = wake_interval.filter(|d| !d.is_zero()) {
                        rt.spawn(pace(every));
                    }
                    let _ = rt.block_on(stopped);
                    // Clients are done or abandoned: do not wait for stragglers.
                    rt.shutdown_background();
                })
                .context("cannot start a client thread")?;
            threads.push((stop, thread));
        }
        Ok(Self {
            handles,
            threads,
            next: 0,
        })
    }

    /// Spawns `task` into `set` on the next thread, round-robin.
    pub fn spawn<F>(&mut self, set: &mut JoinSet<F::Output>, task: F) -> AbortHandle
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        let handle = &self.handles[self.next % self.handles.len()];
        self.next += 1;
        set.spawn_on(task, handle)
    }

    /// Number of client threads.
    pub fn threads(&self) -> usize {
        self.handles.len()
    }
}

/// Keeps its runtime from blocking in `epoll_wait`: sleeps the thread for
/// `every`, then yields, so the runtime polls its sockets without waiting
/// (the yielded task is queued behind every task the poll made ready) and
/// runs every client with data before this task sleeps again.
async fn pace(every: Duration) {
    loop {
        std::thread::sleep(every);
        tokio::task::yield_now().await;
    }
}

impl Drop for ClientPool {
    fn drop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spreads_tasks_over_its_threads_round_robin() {
        let mut pool = ClientPool::new(2, None).unwrap();
        let mut set = JoinSet::new();
        for _ in 0..4 {
            pool.spawn(&mut set, async {
                std::thread::current().name().map(str::to_owned)
            });
        }
        let mut names = Vec::new();
        while let Some(r) = set.join_next().await {
            names.push(r.unwrap().unwrap());
        }
        names.sort();
        assert_eq!(names, ["clients-0", "clients-0", "clients-1", "clients-1"]);
        assert_eq!(pool.threads(), 2);
    }

    /// A paced thread still runs its tasks: socket reads and timers alike.
    #[tokio::test]
    async fn a_paced_thread_reads_its_sockets_and_fires_its_timers() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut pool = ClientPool::new(1, Some(Duration::from_millis(2))).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut set = JoinSet::new();
        pool.spawn(&mut set, async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while got.len() < 6 {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&buf[..n]);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            got
        });
        let (mut peer, _) = listener.accept().await.unwrap();
        peer.write_all(b"abc").await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        peer.write_all(b"def").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), set.join_next())
            .await
            .expect("the paced thread made progress")
            .unwrap()
            .unwrap();
        assert_eq!(got, b"abcdef");
    }
}
