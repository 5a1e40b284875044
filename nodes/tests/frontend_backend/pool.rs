//! An in-process Front End pool whose nodes are configured by the test (a Back End, Mediation): real sockets on
//! 127.0.0.1, `kill` aborts a node's tasks and drops its sockets, `start` brings it back on the same ports as a new
//! process with an empty state. A trimmed `frontend_pool::support::TestPool` with a configuration hook.

#![allow(dead_code, reason = "each test binary uses part of this pool")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poolnode::cluster::Timings;
use poolnode::frontend::pool::PoolSettings;
use poolnode::frontend::pooled::{self, PoolConfig, PoolListeners};
use poolnode::frontend::{Credentials, FrontEnd, FrontEndConfig};
use serde_json::Value;

/// Polls stop after this: generous for a busy 2-core machine.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// Fast Front End timers: heartbeats every 100 ms, a peer dead after 1 s.
pub fn fe_timings() -> Timings {
    Timings {
        fe_heartbeat_interval_ms: 100,
        fe_failure_timeout_ms: 1_000,
        replica_rebuild_delay_ms: 2_000,
        ..Timings::fast()
    }
}

type Configure = Box<dyn Fn(usize, &mut PoolSettings) + Send + Sync>;

pub struct Fes {
    pub pool: String,
    pub names: Vec<String>,
    pub sip: Vec<SocketAddr>,
    peer: Vec<SocketAddr>,
    parked: Vec<Option<PoolListeners>>,
    running: Vec<Option<(Arc<FrontEnd>, tokio::task::JoinHandle<()>)>>,
    configure: Configure,
}

impl Fes {
    /// Binds `n` nodes' sockets (`fe1` … `feN` of pool `pool`) without starting any; `configure` finishes each
    /// node's settings at every start.
    pub async fn bind(
        pool: &str,
        n: usize,
        configure: impl Fn(usize, &mut PoolSettings) + Send + Sync + 'static,
    ) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (mut sip, mut peer, mut parked) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let listeners = PoolListeners::bind(any, any, None).await.unwrap();
            sip.push(listeners.sip.local_addr().unwrap());
            peer.push(listeners.peer.local_addr().unwrap());
            parked.push(Some(listeners));
        }
        Self {
            pool: pool.to_owned(),
            names: (1..=n).map(|i| format!("fe{i}")).collect(),
            sip,
            peer,
            parked,
            running: (0..n).map(|_| None).collect(),
            configure: Box::new(configure),
        }
    }

    /// Starts node `i` (again, as a new process, after a kill). Undo: [`Fes::kill`].
    pub async fn start(&mut self, i: usize) {
        assert!(self.running[i].is_none(), "{} already runs", self.names[i]);
        let listeners = match self.parked[i].take() {
            Some(l) => l,
            None => self.rebind(i).await,
        };
        let addresses: BTreeMap<String, String> = self
            .names
            .iter()
            .zip(&self.peer)
            .filter(|(n, _)| **n != self.names[i])
            .map(|(n, a)| (n.clone(), a.to_string()))
            .collect();
        let mut settings = PoolSettings::new(
            &self.pool,
            &self.names[i],
            self.names.clone(),
            addresses,
            &fe_timings(),
            "test-token",
        );
        (self.configure)(i, &mut settings);
        let frontend = pooled::build(PoolConfig {
            frontend: FrontEndConfig {
                credentials: Credentials::open(),
                nonce_secret: "secret".into(),
                ..FrontEndConfig::default()
            },
            pool: settings,
        });
        let task = tokio::spawn({
            let frontend = frontend.clone();
            async move {
                pooled::serve(listeners, frontend, std::future::pending())
                    .await
                    .unwrap();
            }
        });
        self.running[i] = Some((frontend, task));
    }

    /// The node's old ports: a killed node's sockets close as its aborted tasks unwind, so retry a while.
    async fn rebind(&self, i: usize) -> PoolListeners {
        // Bounded: 200 tries, 50 ms apart.
        for _ in 0..200 {
            if let Ok(listeners) = PoolListeners::bind(self.sip[i], self.peer[i], None).await {
                return listeners;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{}'s ports stayed taken", self.names[i]);
    }

    pub async fn start_all(&mut self) {
        for i in 0..self.names.len() {
            self.start(i).await;
        }
    }

    /// Kills node `i`: tasks aborted, sockets closed, state gone. Undo: [`Fes::start`].
    pub async fn kill(&mut self, i: usize) {
        let (frontend, task) = self.running[i].take().expect("kill a running node");
        task.abort();
        let _ = task.await;
        if let Some(pool) = frontend.pool() {
            pool.stop();
        }
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.names.len())
            .filter(|i| self.running[*i].is_some())
            .collect()
    }

    pub fn frontend(&self, i: usize) -> Arc<FrontEnd> {
        self.running[i].as_ref().expect("a running node").0.clone()
    }

    pub fn status(&self, i: usize) -> Value {
        self.frontend(i).pool().unwrap().status()
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

    /// Every running node serves and every group has exactly one primary accepting writes.
    pub async fn settled(&self) {
        self.until(
            "the pool serves with one accepting primary per group",
            |p| {
                let statuses: Vec<Value> = p.running().iter().map(|i| p.status(*i)).collect();
                let groups = statuses[0]["groups"].as_array().unwrap().len();
                statuses.iter().all(|s| s["serving"] == true)
                    && (0..groups).all(|g| {
                        statuses
                            .iter()
                            .filter(|s| {
                                s["groups"][g]["role"] == "primary"
                                    && s["groups"][g]["accepting_writes"] == true
                            })
                            .count()
                            == 1
                    })
            },
        )
        .await;
    }
}

impl Drop for Fes {
    fn drop(&mut self) {
        for (frontend, task) in self.running.iter_mut().filter_map(Option::take) {
            task.abort();
            if let Some(pool) = frontend.pool() {
                pool.stop();
            }
        }
    }
}
