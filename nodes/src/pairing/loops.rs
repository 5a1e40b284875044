//! The pairing's loops: the heartbeat to the pair, maintenance (the home pool's fence and reload, the pair's
//! users in resiliency mode, automatic failover) and the backup service.

use super::backup::{self, STREAM_PAUSE};
use super::error::PairingError;
use super::gate::{self};
use super::node::{Fence, Pairing, NOTICE_TIMEOUT, USERS_PER_BATCH};
use super::restore::{self, Mode};
use super::watch::NodeReport;
use crate::backend::operator::http_json;
use crate::backend::{Batch, Op, UserRecord};
use crate::cluster::ADMIN_PORT;
use crate::defects::{self, Defect};
use crate::frontend::store::{now_unix_ms, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

impl Pairing {
    /// Runs the heartbeat, maintenance and backup service loops until the node's tasks are aborted.
    pub async fn run(self: Arc<Self>) {
        tokio::join!(
            self.clone().heartbeat_loop(),
            self.clone().maintenance_loop(),
            self.clone().backup_loop(),
        );
    }

    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let Some(pair) = self.pair.clone() else {
            return;
        };
        let nodes = self
            .cluster
            .pool(&pair)
            .map(|p| p.nodes.clone())
            .unwrap_or_default();
        let mut tick = tokio::time::interval(self.heartbeat_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = JoinSet::new();
        // Ends when the node's tasks are aborted (dropping `beats` aborts the heartbeats in flight).
        loop {
            tick.tick().await;
            while beats.try_join_next().is_some() {}
            let sent_at = Instant::now();
            for node in &nodes {
                let address = self.cluster.address(&self.pool, node, ADMIN_PORT);
                let (this, node) = (self.clone(), node.clone());
                beats.spawn(async move {
                    let answer = tokio::time::timeout(
                        this.failure_timeout(),
                        http_json(&address, "GET", "/status", None, None),
                    )
                    .await;
                    match answer {
                        Ok(Ok((200, status))) => {
                            let report = NodeReport::from_status(&status, Instant::now());
                            this.lock().watch.round(sent_at, vec![(node, report)]);
                        }
                        other => {
                            tracing::debug!(%node, %address, answer = ?other, "no heartbeat answer")
                        }
                    }
                });
            }
        }
    }

    pub(super) async fn maintenance_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.heartbeat_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        // Ends when the node's tasks are aborted.
        loop {
            tick.tick().await;
            let now = Instant::now();
            if !self.listened_since(last_tick, now) {
                tracing::warn!(pool = %self.pool, stalled_ms = now.saturating_duration_since(last_tick).as_millis() as u64, "this Front End stood still: the pair's silence is counted again from now");
            }
            last_tick = now;
            if let Ok(_guard) = self.commands.try_lock() {
                self.refresh_record().await;
                self.adopt_pair_store().await;
            }
            self.maintain_home().await;
            self.maintain_backup(now).await;
        }
    }

    /// Whether this Front End could hear its pair since `since`: it did not stand still (paused, starved, or held
    /// up by its own Back End) longer than the failure timeout, and it is not cut off from its own pool (isolated,
    /// below quorum). When it could not, what it did not hear from the pair meanwhile says nothing about the pair:
    /// the pair's silence is counted again from `now`. False only for a stall (cut off is said by the pool).
    pub(super) fn listened_since(&self, since: Instant, now: Instant) -> bool {
        let stalled = now.saturating_duration_since(since) > self.failure_timeout();
        let own_pool_serving = self.own_pool_serving();
        if stalled || !own_pool_serving {
            self.lock().watch.resumed(now);
        }
        !stalled
    }

    pub(super) fn own_pool_serving(&self) -> bool {
        self.host().is_none_or(|h| h.pool_serving())
    }

    pub(super) async fn backup_loop(self: Arc<Self>) {
        if self.pair.is_none() || self.own_backend.is_none() || self.pair_backend.is_none() {
            return;
        }
        let pause = match self.timings.backup_service_interval_ms {
            0 => STREAM_PAUSE,
            ms => Duration::from_millis(ms),
        };
        // Ends when the node's tasks are aborted.
        loop {
            tokio::time::sleep(pause).await;
            if self.is_runner() {
                self.backup_pass().await;
            }
        }
    }

    /// Whether this Front End runs the pool's single-runner jobs: the first running Front End in topology order.
    pub(super) fn is_runner(&self) -> bool {
        let Some(host) = self.host() else {
            return false;
        };
        let nodes = self
            .cluster
            .pool(&self.pool)
            .map(|p| p.nodes.clone())
            .unwrap_or_default();
        nodes
            .iter()
            .find(|n| **n == self.node || host.peer_alive(n))
            .is_some_and(|n| *n == self.node)
    }

    /// As a home pool: follow the fence, and once it lifts after the pair held our users, have them reloaded from
    /// our Back End (where the failback wrote them) by one Front End for the whole pool.
    ///
    /// One reload for the pool, not one per Front End: a Front End that reloaded late would replace what users
    /// wrote through another that already served them. Every Front End refuses the users (`503`, reloading) from
    /// the fence until the pool's record says the reload is done. A fence that lifts without the pair ever holding
    /// our users (a failover that failed and was rolled back) reloads nothing: the routing groups are current, the
    /// Back End is written lazily and may be behind them.
    pub(super) async fn maintain_home(&self) {
        let now = Instant::now();
        let (fence, behind, epoch) = {
            let mut inner = self.lock();
            let said = match self.pair {
                None => Some(false),
                Some(_) => inner.watch.fences_us(now).or_else(|| {
                    // Nobody to fence us: the pair has been silent since we started, for the failover interval.
                    (!inner.watch.ever_answered()
                        && now.saturating_duration_since(self.started) >= self.failover_interval())
                    .then_some(false)
                }),
            };
            // The bug of a known-bad pool: the pair's answer is read as "not failed over" whatever it says, so a
            // home pool back from a site loss reloads and serves its users while its pair still holds them.
            let said = said.map(|fenced| fenced && !defects::active(Defect::FailbackWithoutFence));
            match said {
                Some(true) => {
                    if inner.fence != Fence::Fenced {
                        tracing::warn!(pool = %self.pool, "fenced: the pair holds this pool failed over");
                    }
                    inner.fence = Fence::Fenced;
                }
                Some(false) => inner.fence = Fence::Open,
                None => {}
            }
            if let Some(epoch) = inner.watch.pair_epoch() {
                inner.pair_epoch = inner.pair_epoch.max(epoch);
            }
            let behind = inner.pair_epoch > 0
                && (!inner.record_loaded || inner.record.home_reloaded_epoch < inner.pair_epoch);
            let restored = inner.fence == Fence::Open && !behind;
            if restored && !inner.restored && inner.pair_epoch > 0 {
                tracing::info!(pool = %self.pool, epoch = inner.pair_epoch, "serving this pool's users again");
            }
            inner.restored = restored;
            (inner.fence, behind, inner.pair_epoch)
        };
        if fence != Fence::Open || !behind || !self.lock().record_loaded || !self.is_runner() {
            return;
        }
        let _command = self.commands.lock().await;
        let records = match &self.own_backend {
            None => Vec::new(),
            Some(own) => match own.load_all(&self.pool).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::debug!(%error, "users not reloaded from the Back End yet");
                    return;
                }
            },
        };
        if let Err(error) = self.restore(&records, Mode::Replace).await {
            tracing::debug!(%error, "users not reloaded into the routing groups yet");
            return;
        }
        match self
            .persist(|r| r.home_reloaded_epoch = r.home_reloaded_epoch.max(epoch))
            .await
        {
            Ok(_) => {
                tracing::info!(pool = %self.pool, users = records.len(), epoch, "reloaded this pool's users from the Back End after failback")
            }
            Err(error) => tracing::debug!(%error, "reload not recorded yet"),
        }
    }

    /// As a backup pool: enter and leave resiliency mode, fail over by ourselves when the profile says so.
    /// `turn_started` is when this maintenance turn began: a turn held up (reading our Back End while cut off)
    /// must not judge the pair's silence by a clock that ran on without us.
    pub(super) async fn maintain_backup(self: &Arc<Self>, turn_started: Instant) {
        let Some(pair) = self.pair.clone() else {
            return;
        };
        let reload_pair = {
            let inner = self.lock();
            inner.record.pair_failed_over
                && inner.record.transition.is_none()
                && !inner.pair_restored
        };
        if reload_pair {
            // Started while the pair is failed over to us: its users' copy into our routing groups, without undoing
            // what other Front Ends of ours hold newer.
            if let Some(own) = &self.own_backend {
                if let Ok(records) = own.load_all(&pair).await {
                    if self.restore(&records, Mode::Fill).await.is_ok() {
                        self.lock().pair_restored = true;
                    }
                }
            }
        }
        let now = Instant::now();
        self.listened_since(turn_started, now);
        let (enter, leave, automatic) = {
            let mut inner = self.lock();
            if !inner.record_loaded || inner.record.fences_pair() {
                return;
            }
            let missed = inner.watch.missed(now) >= self.failover_interval();
            let back = inner.watch.up_for(now)
                >= Duration::from_millis(self.timings.backup_failback_interval_ms);
            let enter = missed && !inner.resiliency;
            let leave = inner.resiliency && back;
            if enter {
                inner.resiliency = true;
            }
            if leave {
                inner.resiliency = false;
            }
            (enter, leave, missed && self.timings.automatic_pool_failover)
        };
        if enter {
            tracing::warn!(pool = %self.pool, %pair, "pair missed its heartbeat for the failover interval: its users are accepted in resiliency mode");
        }
        if leave {
            tracing::info!(pool = %self.pool, %pair, "pair back for the failback interval: its users go home");
            self.send_pair_users_home().await;
        }
        if automatic && self.is_runner() {
            match self.failover(&pair, true).await {
                Ok(done) => tracing::warn!(%done, "automatic pool failover"),
                Err(error) => tracing::warn!(%error, "automatic pool failover not done"),
            }
        }
    }

    /// One backup pass: the pair's Back End → ours, in the pair's namespace.
    pub(super) async fn backup_pass(&self) {
        let (Some(pair), Some(own), Some(source)) =
            (&self.pair, &self.own_backend, &self.pair_backend)
        else {
            return;
        };
        let _pass = self.passes.lock().await;
        if self.lock().record.fences_pair() {
            self.lock().backup.suspended = true;
            return;
        }
        let started = Instant::now();
        let result = async {
            let mut records = source
                .load_all(pair)
                .await
                .map_err(|e| format!("read {pair}'s Back End: {e}"))?;
            // Only the pair's own users: its Back End also holds ours under its name while it serves them after a
            // failover (the Front End pool's lazy writer names the serving pool), and those must not come back
            // to us as its data.
            records.retain(|r| self.homes.get(&r.user) == Some(pair));
            let copy = own
                .load_all(pair)
                .await
                .map_err(|e| format!("read our copy: {e}"))?;
            let users = records.len();
            let changed = backup::changed(records, &copy);
            for chunk in changed.chunks(USERS_PER_BATCH) {
                if self.lock().record.fences_pair() {
                    return Err("the pair was failed over during the pass".to_owned());
                }
                own.write(Batch::new(chunk.iter().cloned().map(Op::PutUser).collect()))
                    .await
                    .map_err(|e| format!("write our copy: {e}"))?;
            }
            Ok((users, changed.len()))
        }
        .await;
        let mut inner = self.lock();
        match result {
            Ok((users, copied)) => inner.backup.passed(started, users, copied),
            Err(error) => inner.backup.failed(error),
        }
    }

    /// Loads `records` into the routing groups.
    pub(super) async fn restore(
        &self,
        records: &[UserRecord],
        mode: Mode,
    ) -> Result<usize, PairingError> {
        let host = self
            .host()
            .ok_or_else(|| PairingError::NotServing("the Front End stopped".into()))?;
        let mut changed = 0;
        for record in records {
            let now = now_unix_ms();
            let view = host
                .view(&record.user, now)
                .await
                .map_err(PairingError::NotServing)?;
            let writes = restore::writes_for(record, &view, mode);
            if writes.is_empty() {
                continue;
            }
            host.commit(&record.user, writes, now)
                .await
                .map_err(PairingError::NotServing)?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Sends a resiliency NOTIFY to every pair user's client connected to this Front End.
    pub(super) fn notify_pair_users(&self, on: bool, register_at: Option<&str>) {
        let (Some(host), Some(pair)) = (self.host(), self.pair.as_deref()) else {
            return;
        };
        for user in self.cluster.users_of(pair) {
            for (contact, peer) in host.flows_of(&user.name) {
                if !peer.is_open() {
                    continue;
                }
                let body = gate::notice_body(on, pair, register_at);
                let name = user.name.clone();
                tokio::spawn(async move {
                    if let Some(notify) = gate::notice(&name, &contact, body) {
                        let _ = peer.request(notify, NOTICE_TIMEOUT).await;
                    }
                });
            }
        }
    }

    /// Ends resiliency mode for the pair's users: their clients are told to register at home and their
    /// registrations here are removed (a REGISTER then gets `301` to the home pool).
    pub(super) async fn send_pair_users_home(&self) {
        let (Some(host), Some(pair)) = (self.host(), self.pair.clone()) else {
            return;
        };
        self.notify_pair_users(false, Some(&pair));
        for user in self.cluster.users_of(&pair) {
            let now = now_unix_ms();
            if host
                .view(&user.name, now)
                .await
                .is_ok_and(|v| !v.bindings.is_empty())
            {
                let unbind = vec![Write::UnbindAll {
                    user: user.name.clone(),
                }];
                let _ = host.commit(&user.name, unbind, now).await;
                host.forget_flows(&user.name);
            }
        }
    }
}
