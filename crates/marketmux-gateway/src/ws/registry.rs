//! [`ConnectionRegistry`]: every open socket of this node, for heartbeats,
//! pushes to a user's sockets, live counts and the shutdown drain.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use marketmux_hub::{ClientId, ClientQueue, CloseCause};
use parking_lot::Mutex;

use crate::limits::Refusal;

#[derive(Default)]
struct Inner {
    /// Sockets admitted and not yet ended, in total and per client address:
    /// counted at admission, before the socket joins `clients`, so that a
    /// burst of upgrades cannot overshoot the limits.
    reserved: usize,
    per_ip: HashMap<IpAddr, usize>,
    clients: HashMap<ClientId, Arc<ClientQueue>>,
    users: HashMap<i64, Vec<ClientId>>,
    user_of: HashMap<ClientId, i64>,
}

/// The open sockets of this node.
#[derive(Default)]
pub struct ConnectionRegistry {
    inner: Mutex<Inner>,
    opened: AtomicU64,
    closed: AtomicU64,
}

impl ConnectionRegistry {
    /// Adds a socket's queue.
    pub fn insert(&self, queue: Arc<ClientQueue>) {
        self.inner.lock().clients.insert(queue.id(), queue);
        self.opened.fetch_add(1, Relaxed);
    }

    /// Admits one more connection (HTTP or WebSocket) from `ip` unless the
    /// node already holds `total` or that address `per_ip` (0: no limit),
    /// refusing with [`Refusal::MaxConnections`] or [`Refusal::PerIp`];
    /// release it with [`ConnectionRegistry::release_ip`] when the connection
    /// ends (see [`crate::limits::ConnectionSlot`]).
    pub fn reserve_ip(&self, ip: IpAddr, per_ip: usize, total: usize) -> Result<(), Refusal> {
        let mut inner = self.inner.lock();
        if total > 0 && inner.reserved >= total {
            return Err(Refusal::MaxConnections);
        }
        let n = inner.per_ip.get(&ip).copied().unwrap_or(0);
        if per_ip > 0 && n >= per_ip {
            return Err(Refusal::PerIp);
        }
        inner.per_ip.insert(ip, n + 1);
        inner.reserved += 1;
        Ok(())
    }

    /// Releases a reservation made by [`ConnectionRegistry::reserve_ip`].
    pub fn release_ip(&self, ip: IpAddr) {
        let mut inner = self.inner.lock();
        if let Some(n) = inner.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_ip.remove(&ip);
            }
            inner.reserved -= 1;
        }
    }

    /// Client IPs with open connections (for leak checks).
    pub fn ips(&self) -> usize {
        self.inner.lock().per_ip.len()
    }

    /// Removes a socket (and its user binding).
    pub fn remove(&self, id: ClientId) {
        let mut inner = self.inner.lock();
        if inner.clients.remove(&id).is_some() {
            self.closed.fetch_add(1, Relaxed);
        }
        if let Some(user) = inner.user_of.remove(&id) {
            if let Some(ids) = inner.users.get_mut(&user) {
                ids.retain(|c| *c != id);
                if ids.is_empty() {
                    inner.users.remove(&user);
                }
            }
        }
    }

    /// Binds socket `id` to `user`, whose alerts it then receives.
    pub fn bind_user(&self, id: ClientId, user: i64) {
        let mut inner = self.inner.lock();
        if !inner.clients.contains_key(&id) {
            return;
        }
        if let Some(old) = inner.user_of.insert(id, user) {
            if let Some(ids) = inner.users.get_mut(&old) {
                ids.retain(|c| *c != id);
            }
            inner.users.retain(|_, ids| !ids.is_empty());
        }
        inner.users.entry(user).or_default().push(id);
    }

    /// Queues `frame` on every socket of `user`; returns how many got it.
    pub fn push_to_user(&self, user: i64, frame: &Bytes) -> usize {
        let queues: Vec<Arc<ClientQueue>> = {
            let inner = self.inner.lock();
            let Some(ids) = inner.users.get(&user) else {
                return 0;
            };
            ids.iter()
                .filter_map(|id| inner.clients.get(id).cloned())
                .collect()
        };
        queues
            .iter()
            .filter(|q| q.push_control(frame.clone()))
            .count()
    }

    /// Queues `frame` on the sockets of one turn out of `turns`: those whose
    /// id equals `turn` modulo `turns`. Called with turns 0, 1, 2, … it
    /// reaches every socket once per `turns` calls, a few at a time (the
    /// heartbeat's pings).
    pub fn push_control_to_turn(&self, frame: &Bytes, turn: u64, turns: u64) {
        let turns = turns.max(1);
        let slot = turn % turns;
        let due: Vec<Arc<ClientQueue>> = self
            .inner
            .lock()
            .clients
            .iter()
            .filter(|(id, _)| *id % turns == slot)
            .map(|(_, q)| q.clone())
            .collect();
        for q in due {
            q.push_control(frame.clone());
        }
    }

    fn all(&self) -> Vec<Arc<ClientQueue>> {
        self.inner.lock().clients.values().cloned().collect()
    }

    /// Open sockets now.
    pub fn len(&self) -> usize {
        self.inner.lock().clients.len()
    }

    /// True when no socket is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting in every socket's queue (for memory checks).
    pub fn queued_bytes(&self) -> usize {
        self.all().iter().map(|q| q.queued_bytes()).sum()
    }

    /// Users with at least one bound socket (for leak checks).
    pub fn bound_users(&self) -> usize {
        self.inner.lock().users.len()
    }

    /// Sockets opened and closed since start.
    pub fn opened_closed(&self) -> (u64, u64) {
        (self.opened.load(Relaxed), self.closed.load(Relaxed))
    }

    /// Closes every socket with `cause`, spread evenly over `period` in small
    /// batches so that clients do not all reconnect at the same instant.
    pub async fn drain(&self, cause: CloseCause, period: Duration) {
        let clients = self.all();
        if clients.is_empty() {
            return;
        }
        let steps = (period.as_millis() / 50).clamp(1, clients.len() as u128) as usize;
        let per_step = clients.len().div_ceil(steps);
        let pause = period / steps as u32;
        for (i, chunk) in clients.chunks(per_step).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for q in chunk {
                q.close(cause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_hold_both_limits_until_released() {
        let r = ConnectionRegistry::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        assert_eq!(r.reserve_ip(a, 2, 3), Ok(()));
        assert_eq!(r.reserve_ip(a, 2, 3), Ok(()));
        assert_eq!(r.reserve_ip(a, 2, 3), Err(Refusal::PerIp));
        assert_eq!(r.reserve_ip(b, 2, 3), Ok(()));
        assert_eq!(
            r.reserve_ip(b, 2, 3),
            Err(Refusal::MaxConnections),
            "3 admitted, none open yet"
        );
        r.release_ip(a);
        assert_eq!(r.reserve_ip(b, 2, 3), Ok(()));
        for ip in [a, b, b] {
            r.release_ip(ip);
        }
        assert_eq!(r.ips(), 0);
        assert_eq!(r.reserve_ip(a, 0, 0), Ok(()), "0: no limit");
    }

    #[test]
    fn turns_reach_every_socket_once_a_few_at_a_time() {
        let r = ConnectionRegistry::default();
        let queues: Vec<_> = (1..=10)
            .map(|id| ClientQueue::new(id, Default::default(), Arc::default()))
            .collect();
        for q in &queues {
            r.insert(q.clone());
        }
        let ping = Bytes::from_static(b"ping");
        for turn in 0..4 {
            r.push_control_to_turn(&ping, turn, 4);
            let reached = queues.iter().filter(|q| q.queued_bytes() > 0).count();
            assert_eq!(reached, [2, 5, 8, 10][turn as usize], "after turn {turn}");
        }
        for q in &queues {
            let batch = q.take_batch(Default::default()).unwrap();
            assert_eq!(batch.len(), 1, "client {} pinged once", q.id());
        }
        // One turn of one: everyone at once.
        r.push_control_to_turn(&ping, 7, 1);
        assert!(queues.iter().all(|q| q.queued_bytes() == ping.len()));
    }
}
