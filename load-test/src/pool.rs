//! [`ClientPool`]: the threads the client sockets run on, one single-threaded
//! runtime each.
//!
//! Each client is one task with one socket. On a work-stealing runtime every
//! read also pays for the shared run queue, cross-thread wake-ups and worker
//! parking, and those costs land on the cores the server under test needs.
//! Clients are spread round-robin instead, and a thread only ever runs its
//! own: the generator's CPU per delivery is what its kernel reads cost.

use std::future::Future;
use std::thread::JoinHandle;

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
    /// Starts `n` (at least one) client threads.
    pub fn new(n: usize) -> anyhow::Result<Self> {
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
        let mut pool = ClientPool::new(2).unwrap();
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
}
