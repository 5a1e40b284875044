//! An in-process Front End pool on 127.0.0.1: every node's SIP, peer and admin sockets are real, peers find each
//! other by explicit addresses, and every peer link passes one shared [`LinkFaults`] (the partition shim).
//! `kill` aborts a node's tasks and drops its sockets; `start` brings it back on the same ports as a new process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poolnode::cluster::Timings;
use poolnode::frontend::pool::{LinkFaults, Pool, PoolSettings};
use poolnode::frontend::pooled::{self, PoolConfig, PoolListeners};
use poolnode::frontend::{Credentials, FrontEnd, FrontEndConfig};
use rsip::Response;
use serde_json::Value;

pub use crate::client::*;

/// Polls stop after this: generous for a busy 2-core machine; a healthy pool converges in about a second.
pub const CONVERGE: Duration = Duration::from_secs(40);

/// Fast timers for tests: heartbeats every 100 ms, a peer dead after 1 s, rebuilds after `rebuild_delay_ms`.
pub fn timings(rebuild_delay_ms: u64) -> Timings {
    Timings {
        fe_heartbeat_interval_ms: 100,
        fe_failure_timeout_ms: 1_000,
        replica_rebuild_delay_ms: rebuild_delay_ms,
        ..Timings::fast()
    }
}

struct Running {
    frontend: Arc<FrontEnd>,
    task: tokio::task::JoinHandle<()>,
}

pub struct TestPool {
    pub names: Vec<String>,
    pub sip: Vec<SocketAddr>,
    peer: Vec<SocketAddr>,
    pub faults: LinkFaults,
    timings: Timings,
    parked: Vec<Option<PoolListeners>>,
    running: Vec<Option<Running>>,
    /// The last pool object of each node, kept after a kill so its counters stay readable.
    last: Vec<Option<Arc<Pool>>>,
    /// Finishes every node's settings at each start (a test's bounds).
    configure: Box<dyn Fn(&mut PoolSettings) + Send + Sync>,
}

impl TestPool {
    /// Binds `n` nodes' sockets (`fe1` … `feN`) without starting any.
    pub async fn new(n: usize, timings: Timings) -> Self {
        let mut parked = Vec::new();
        let (mut sip, mut peer) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let listeners = PoolListeners::bind(
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
                None,
            )
            .await
            .unwrap();
            sip.push(listeners.sip.local_addr().unwrap());
            peer.push(listeners.peer.local_addr().unwrap());
            parked.push(Some(listeners));
        }
        Self {
            names: (1..=n).map(|i| format!("fe{i}")).collect(),
            sip,
            peer,
            faults: LinkFaults::default(),
            timings,
            parked,
            running: (0..n).map(|_| None).collect(),
            last: (0..n).map(|_| None).collect(),
            configure: Box::new(|_| {}),
        }
    }

    /// Binds and starts all `n` nodes, each with its settings finished by `configure`.
    pub async fn start_all_with(
        n: usize,
        timings: Timings,
        configure: impl Fn(&mut PoolSettings) + Send + Sync + 'static,
    ) -> Self {
        let mut pool = Self::new(n, timings).await;
        pool.configure = Box::new(configure);
        for i in 0..n {
            pool.start(i).await;
        }
        pool
    }

    /// Node `i`'s peer port.
    pub fn peer_address(&self, i: usize) -> SocketAddr {
        self.peer[i]
    }

    /// Binds and starts all `n` nodes.
    pub async fn start_all(n: usize, timings: Timings) -> Self {
        let mut pool = Self::new(n, timings).await;
        for i in 0..n {
            pool.start(i).await;
        }
        pool
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Starts node `i` (again, as a new process with an empty state, after a kill); undone by [`TestPool::kill`].
    pub async fn start(&mut self, i: usize) {
        assert!(self.running[i].is_none(), "{} already runs", self.names[i]);
        let listeners = match self.parked[i].take() {
            Some(listeners) => listeners,
            None => PoolListeners::bind(self.sip[i], self.peer[i], None)
                .await
                .unwrap(),
        };
        let addresses: BTreeMap<String, String> = self
            .names
            .iter()
            .zip(&self.peer)
            .filter(|(n, _)| **n != self.names[i])
            .map(|(n, a)| (n.clone(), a.to_string()))
            .collect();
        let mut settings = PoolSettings::new(
            "pool1",
            &self.names[i],
            self.names.clone(),
            addresses,
            &self.timings,
            "test-token",
        );
        settings.faults = self.faults.clone();
        (self.configure)(&mut settings);
        let frontend = pooled::build(PoolConfig {
            frontend: FrontEndConfig {
                credentials: Credentials::open(),
                nonce_secret: "pool1-secret".into(),
                ..FrontEndConfig::default()
            },
            pool: settings,
        });
        self.last[i] = frontend.pool().cloned();
        let task = tokio::spawn({
            let frontend = frontend.clone();
            async move {
                pooled::serve(listeners, frontend, std::future::pending())
                    .await
                    .unwrap();
            }
        });
        self.running[i] = Some(Running { frontend, task });
    }

    /// Kills node `i`: its tasks are aborted and its sockets closed, its state is gone. Undone by
    /// [`TestPool::start`].
    pub async fn kill(&mut self, i: usize) {
        let running = self.running[i].take().expect("kill a running node");
        running.task.abort();
        let _ = running.task.await;
        if let Some(pool) = running.frontend.pool() {
            pool.stop();
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.running[i].is_some()
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.len()).filter(|i| self.is_running(*i)).collect()
    }

    pub fn pool(&self, i: usize) -> Arc<Pool> {
        self.running[i]
            .as_ref()
            .and_then(|r| r.frontend.pool().cloned())
            .expect("a running node")
    }

    pub fn status(&self, i: usize) -> Value {
        self.pool(i).status()
    }

    pub fn index(&self, name: &str) -> usize {
        self.names.iter().position(|n| n == name).unwrap()
    }

    /// Routing groups of this pool.
    pub fn groups(&self) -> usize {
        poolnode::frontend::pool::placement::groups_for(self.len())
    }

    /// The group's home replicas, primary first.
    pub fn home(&self, group: usize) -> Vec<usize> {
        poolnode::frontend::pool::placement::ring(group, &self.names)
            .iter()
            .take(3)
            .map(|n| self.index(n))
            .collect()
    }

    /// The routing group of `user`.
    pub fn user_group(&self, user: &str) -> usize {
        poolnode::frontend::pool::placement::group_of(user, self.groups())
    }

    /// A user name in `group` (the `k`-th one found).
    pub fn user_in(&self, group: usize, k: usize) -> String {
        (0..100_000)
            .map(|i| format!("user{i}"))
            .filter(|u| poolnode::frontend::pool::placement::group_of(u, self.groups()) == group)
            .nth(k)
            .expect("users spread over every group")
    }

    /// Running nodes that say they are the group's primary and accept writes.
    pub fn accepting_primaries(&self, group: usize) -> Vec<(usize, u64)> {
        self.running()
            .into_iter()
            .filter_map(|i| {
                let status = self.status(i);
                let g = &status["groups"][group];
                (g["role"] == "primary" && g["accepting_writes"] == true)
                    .then(|| (i, g["epoch"].as_u64().unwrap()))
            })
            .collect()
    }

    /// Waits until `done` holds, polling every 50 ms; panics after [`CONVERGE`] naming `what`.
    pub async fn until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}; statuses: {:#}",
                Value::Array(self.running().iter().map(|i| self.status(*i)).collect())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node serves and every group has exactly one accepting primary.
    pub async fn settled(&self) {
        self.until(
            "the pool serves and every group has one accepting primary",
            |p| {
                p.running().iter().all(|i| p.status(*i)["serving"] == true)
                    && (0..p.groups()).all(|g| p.accepting_primaries(g).len() == 1)
            },
        )
        .await;
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        for running in self.running.iter_mut().filter_map(Option::take) {
            running.task.abort();
            if let Some(pool) = running.frontend.pool() {
                pool.stop();
            }
        }
    }
}

/// A contact list write (`add`/`remove` lines) or listing (empty body) for `user` over `client`.
pub async fn contacts(client: &mut TcpClient, user: &str, body: &str) -> Response {
    client
        .request(&request(
            "PUBLISH",
            &format!("sip:{user}@pool.test"),
            user,
            user,
            client.local(),
            "TCP",
            &[
                "Event: vnd-poolchaos-contacts".into(),
                "Content-Type: application/vnd.poolchaos.contacts".into(),
            ],
            body,
        ))
        .await
}

/// A REGISTER of `user` with the fixed contact `contact` (a client keeps its contact when it moves to another Front
/// End), over `client`.
pub async fn register_as(
    client: &mut TcpClient,
    server: SocketAddr,
    user: &str,
    contact: SocketAddr,
) -> Response {
    client
        .request(&register(server, user, contact, "TCP", 300, &[]))
        .await
}

/// The body lines of a contact list answer.
pub fn listed(response: &Response) -> Vec<String> {
    String::from_utf8_lossy(&response.body)
        .lines()
        .map(str::to_owned)
        .collect()
}
