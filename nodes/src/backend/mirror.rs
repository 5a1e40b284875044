//! Synchronous mirroring between principal and mirror: the commit path, the mirror's apply, catch-up
//! (log tail or snapshot), promotion through the witness, and the operator's failover.
//!
//! The principal writes each commit to its own log and sends it to the mirror at the same time, and acknowledges
//! only when both are durable. So the principal's log always holds everything the mirror holds in its epoch;
//! two logs can differ only after a promotion, where the `(lsn, epoch)` of the last entry tells: if the
//! principal holds the mirror's last entry with the same epoch, the mirror gets the tail after it; otherwise (a
//! diverged tail from an old epoch, or a tail pruned away) it gets a snapshot. A returning old principal thus
//! loses exactly the commits nobody acknowledged.
//!
//! The file holds one concept, the mirroring protocol: its four parts (commit, apply, catch-up, promotion) share
//! the log position and the epoch rules above.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::protocol::{Request, Response};
use super::server::Backend;
use super::store::{Batch, DurableRole, LogEntry, Snapshot};

/// Log entries per catch-up step.
const CATCH_UP_CHUNK: usize = 500;
/// Catch-up steps per synchronization pass (a pass that does not finish resumes at the next heartbeat).
const CATCH_UP_STEPS_MAX: usize = 200;

impl Backend {
    /// Principal: commits `batch`, acknowledged only once durable here and (when synchronized) on the mirror.
    pub(crate) async fn commit(self: &Arc<Self>, batch: Batch, min_epoch: u64) -> Response {
        let _commit = self.commit_lock.lock().await;
        let epoch = match self.check_serving(min_epoch).await {
            Ok(e) => e,
            Err(refusal) => return refusal,
        };
        let (synchronized, exposed, prev_lsn, prev_epoch) = {
            let s = self.lock_state();
            (
                s.mirror_synchronized,
                s.exposed,
                s.last_lsn,
                s.last_entry_epoch,
            )
        };
        if !synchronized && !exposed && !self.expose_locked().await {
            return self.not_principal("the mirror is not synchronized and the witness did not register this principal exposed".into());
        }
        let entry = LogEntry {
            lsn: prev_lsn + 1,
            epoch,
            batch,
        };
        let local = {
            let entry = entry.clone();
            self.with_store(move |s| s.append(std::slice::from_ref(&entry)))
        };
        let meta = if synchronized {
            let sent_at = Instant::now();
            let replicate = Request::Replicate {
                from: self.name.clone(),
                epoch,
                prev_lsn,
                prev_epoch,
                entries: vec![entry.clone()],
                synchronized: true,
            };
            let remote = self
                .partner_data
                .request(&replicate, self.settings.replicate_timeout);
            let (local, remote) = tokio::join!(local, remote);
            let meta = match local {
                Ok(m) => m,
                Err(e) => {
                    // The mirror may have applied the entry this store refused: its next entry would reuse the
                    // lsn under the same epoch with other data, which the mirror would take for the one it holds.
                    // So the mirror is no longer synchronized, and gets a snapshot before anything else.
                    {
                        let mut s = self.lock_state();
                        s.mirror_synchronized = false;
                        s.mirror_diverged = true;
                    }
                    tracing::error!(node = %self.name, lsn = entry.lsn, "local commit failed (not acknowledged; the mirror resynchronizes from a snapshot): {e}");
                    return self.store_refused(&e);
                }
            };
            self.set_position(&meta);
            match remote {
                Ok(Response::Applied {
                    last_lsn,
                    last_entry_epoch,
                }) if last_lsn == entry.lsn && last_entry_epoch == epoch => {
                    let mut s = self.lock_state();
                    s.renew_lease(sent_at);
                    s.mirror_position = Some((last_lsn, last_entry_epoch));
                }
                Ok(Response::Fenced { epoch: newer }) => {
                    self.persist_mirror(newer).await;
                    return self
                        .not_principal("fenced by the mirror: a newer principal exists".into());
                }
                other => {
                    tracing::warn!(node = %self.name, lsn = entry.lsn, "mirror did not apply a commit ({other:?}): running exposed if the witness agrees");
                    self.lock_state().mirror_synchronized = false;
                    if !self.expose_locked().await {
                        // Durable here, not acknowledged: it counts as a commit whose outcome the client does
                        // not know, which a later catch-up ships to the mirror.
                        return self.not_principal(
                            "lost the mirror during the commit and could not run exposed".into(),
                        );
                    }
                }
            }
            meta
        } else {
            match local.await {
                Ok(m) => {
                    self.set_position(&m);
                    m
                }
                Err(e) => {
                    tracing::error!(node = %self.name, lsn = entry.lsn, "local commit failed (not acknowledged): {e}");
                    return self.store_refused(&e);
                }
            }
        };
        if !self.lock_state().serving(Instant::now()) {
            return self.not_principal("lost quorum during the commit".into());
        }
        Response::Committed {
            lsn: meta.last_lsn,
            epoch,
            node: self.name.clone(),
        }
    }

    /// The answer to a commit this node's store refused (a full disk, a read-only one, an I/O error): nothing
    /// was acknowledged, and the caller may retry it later, here or after a failover.
    fn store_refused(&self, e: &super::error::StoreError) -> Response {
        Response::Error {
            reason: format!(
                "{} could not make the commit durable, so it is not acknowledged (retry later): {e}",
                self.name
            ),
        }
    }

    /// Principal, commit lock held: registers with the witness (if any) that it now commits without its mirror.
    pub(crate) async fn expose_locked(&self) -> bool {
        let (epoch, lsn) = {
            let s = self.lock_state();
            if s.role != DurableRole::Principal {
                return false;
            }
            if s.exposed {
                return true;
            }
            (s.epoch, s.last_lsn)
        };
        let Some(witness) = &self.witness_ctl else {
            let mut s = self.lock_state();
            s.exposed = true;
            tracing::warn!(node = %self.name, "no witness: principal runs exposed");
            return true;
        };
        let sent_at = Instant::now();
        let request = Request::Expose {
            node: self.name.clone(),
            epoch,
            lsn,
        };
        match witness
            .request(&request, self.settings.heartbeat_timeout)
            .await
        {
            Ok(Response::Witness(w))
                if w.epoch == epoch
                    && w.principal.as_deref() == Some(&self.name)
                    && !w.mirror_synchronized =>
            {
                let mut s = self.lock_state();
                s.renew_lease(sent_at);
                s.exposed = true;
                s.witness_knows_synchronized = false;
                tracing::warn!(node = %self.name, epoch, "principal runs exposed (witness registered it)");
                true
            }
            Ok(Response::Fenced { epoch: newer }) => {
                self.persist_mirror(newer).await;
                false
            }
            other => {
                tracing::info!(node = %self.name, "witness did not register exposure: {other:?}");
                false
            }
        }
    }

    /// Mirror: applies entries from the principal of `epoch`.
    pub(crate) async fn on_replicate(
        &self,
        from: &str,
        epoch: u64,
        prev_lsn: u64,
        prev_epoch: u64,
        entries: Vec<LogEntry>,
        synchronized: bool,
    ) -> Response {
        let _apply = self.commit_lock.lock().await;
        if let Some(refusal) = self.accept_principal(from, epoch).await {
            return refusal;
        }
        let result = self
            .with_store(move |s| {
                let meta = s.meta();
                let mut fresh = Vec::new();
                for e in &entries {
                    if e.lsn <= meta.last_lsn {
                        if s.entry_epoch(e.lsn)? != Some(e.epoch) {
                            return Ok((false, meta));
                        }
                    } else {
                        fresh.push(e.clone());
                    }
                }
                let Some(first) = fresh.first() else {
                    let anchored =
                        prev_lsn <= meta.last_lsn && s.entry_epoch(prev_lsn)? == Some(prev_epoch);
                    return Ok((anchored, meta));
                };
                // The entry just before the first new one must be the one this mirror holds last.
                let anchor_epoch = if first.lsn == prev_lsn + 1 {
                    prev_epoch
                } else {
                    entries
                        .iter()
                        .find(|e| e.lsn + 1 == first.lsn)
                        .map_or(u64::MAX, |e| e.epoch)
                };
                if first.lsn != meta.last_lsn + 1 || anchor_epoch != meta.last_entry_epoch {
                    return Ok((false, meta));
                }
                Ok((true, s.append(&fresh)?))
            })
            .await;
        match result {
            Ok((true, meta)) => {
                let mut s = self.lock_state();
                s.set_position(&meta);
                s.synchronized_as_mirror = synchronized;
                s.principal_lsn_known = s.principal_lsn_known.max(meta.last_lsn);
                Response::Applied {
                    last_lsn: meta.last_lsn,
                    last_entry_epoch: meta.last_entry_epoch,
                }
            }
            Ok((false, meta)) => {
                self.lock_state().synchronized_as_mirror = false;
                Response::Mismatch {
                    last_lsn: meta.last_lsn,
                    last_entry_epoch: meta.last_entry_epoch,
                }
            }
            Err(e) => Response::Error {
                reason: format!("apply on the mirror: {e}"),
            },
        }
    }

    /// Mirror: replaces everything with the principal's snapshot.
    pub(crate) async fn on_snapshot(&self, from: &str, epoch: u64, snapshot: Snapshot) -> Response {
        let _apply = self.commit_lock.lock().await;
        if let Some(refusal) = self.accept_principal(from, epoch).await {
            return refusal;
        }
        match self.with_store(move |s| s.install(&snapshot)).await {
            Ok(meta) => {
                tracing::info!(node = %self.name, lsn = meta.last_lsn, "mirror installed a snapshot from the principal");
                let mut s = self.lock_state();
                s.set_position(&meta);
                s.synchronized_as_mirror = false;
                Response::Applied {
                    last_lsn: meta.last_lsn,
                    last_entry_epoch: meta.last_entry_epoch,
                }
            }
            Err(e) => Response::Error {
                reason: format!("install a snapshot: {e}"),
            },
        }
    }

    /// Epoch check for data from a principal: a lower epoch is fenced; a higher one makes this node its mirror.
    async fn accept_principal(&self, from: &str, epoch: u64) -> Option<Response> {
        let (mine, role) = {
            let s = self.lock_state();
            (s.epoch, s.role)
        };
        if epoch < mine {
            return Some(Response::Fenced { epoch: mine });
        }
        if epoch == mine && role == DurableRole::Principal {
            return Some(Response::Refused {
                reason: format!("{} is the principal of epoch {mine}, not {from}", self.name),
            });
        }
        if epoch > mine || role == DurableRole::Principal {
            self.persist_mirror(epoch).await;
        }
        let mut s = self.lock_state();
        s.partner_heard_at = Some(Instant::now());
        None
    }

    /// Principal: one synchronization pass: run exposed if the mirror is gone, catch the mirror up when it is
    /// there, and tell the witness once it is synchronized.
    pub(crate) async fn synchronize(self: &Arc<Self>) {
        let (exposed, synchronized, witness_knows) = {
            let s = self.lock_state();
            if s.role != DurableRole::Principal {
                return;
            }
            (
                s.exposed,
                s.mirror_synchronized,
                s.witness_knows_synchronized,
            )
        };
        if !synchronized && !exposed {
            let _commit = self.commit_lock.lock().await;
            let still = {
                let s = self.lock_state();
                !s.mirror_synchronized && !s.exposed && s.serving(Instant::now())
            };
            if still {
                self.expose_locked().await;
            }
        }
        if synchronized && !witness_knows {
            let _commit = self.commit_lock.lock().await;
            self.notify_witness_synchronized().await;
            return;
        }
        if !synchronized {
            self.catch_up().await;
        }
    }

    /// Principal: ships the mirror what it lacks, step by step, and takes the commit lock for the last step so
    /// that no commit slips between "caught up" and "synchronized".
    async fn catch_up(self: &Arc<Self>) {
        let mut position = {
            let s = self.lock_state();
            // The mirror's own latest word on where it stands, else where the last step left it.
            match (&s.partner, s.mirror_position) {
                (Some(p), _) if p.role == DurableRole::Mirror && p.epoch <= s.epoch => {
                    (p.last_lsn, p.last_entry_epoch)
                }
                (_, Some(p)) => p,
                _ => return,
            }
        };
        // A mirror that may hold an entry this principal refused gets a snapshot first (see `commit`).
        let mut snapshot_needed = self.lock_state().mirror_diverged;
        for _ in 0..CATCH_UP_STEPS_MAX {
            let (epoch, my_last) = {
                let s = self.lock_state();
                // Only toward a mirror heard lately: a silent link would hold the commit lock for nothing.
                if s.role != DurableRole::Principal
                    || s.mirror_synchronized
                    || s.partner_silent_for(Instant::now()) >= self.settings.partner_timeout
                {
                    return;
                }
                (s.epoch, s.last_lsn)
            };
            let last_step = !snapshot_needed
                && position.0 <= my_last
                && my_last - position.0 <= CATCH_UP_CHUNK as u64;
            let mut commit_guard = if last_step {
                Some(self.commit_lock.lock().await)
            } else {
                None
            };
            let (pos, force_snapshot) = (position, snapshot_needed);
            let prepared = self
                .with_store(move |s| {
                    let meta = s.meta();
                    let matches = !force_snapshot
                        && pos.0 <= meta.last_lsn
                        && s.entry_epoch(pos.0)? == Some(pos.1);
                    if matches {
                        if let Some(entries) = s.entries_after(pos.0, CATCH_UP_CHUNK)? {
                            return Ok((meta, Ok(entries)));
                        }
                    }
                    Ok((meta, Err(s.snapshot()?)))
                })
                .await;
            let (meta, payload) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(node = %self.name, "prepare catch-up: {e}");
                    return;
                }
            };
            let (request, reaches_end) = match payload {
                Ok(entries) => {
                    let reaches_end = entries.last().map_or(pos.0, |e| e.lsn) == meta.last_lsn;
                    (
                        Request::Replicate {
                            from: self.name.clone(),
                            epoch,
                            prev_lsn: pos.0,
                            prev_epoch: pos.1,
                            entries,
                            synchronized: commit_guard.is_some() && reaches_end,
                        },
                        reaches_end,
                    )
                }
                Err(snapshot) => {
                    // A snapshot can take long: never hold commits up for it.
                    commit_guard = None;
                    tracing::info!(node = %self.name, mirror_lsn = pos.0, lsn = snapshot.lsn, "mirror needs a snapshot");
                    (
                        Request::Snapshot {
                            from: self.name.clone(),
                            epoch,
                            snapshot,
                        },
                        false,
                    )
                }
            };
            let replaces_all = matches!(request, Request::Snapshot { .. });
            let sent_at = Instant::now();
            // The last step holds the commit lock: it gets a commit's timeout, not a snapshot's.
            let timeout = if commit_guard.is_some() {
                self.settings.replicate_timeout
            } else {
                self.settings.catch_up_timeout
            };
            match self.partner_data.request(&request, timeout).await {
                Ok(Response::Applied {
                    last_lsn,
                    last_entry_epoch,
                }) => {
                    position = (last_lsn, last_entry_epoch);
                    snapshot_needed = last_lsn > meta.last_lsn;
                    let caught_up = commit_guard.is_some()
                        && reaches_end
                        && last_lsn == meta.last_lsn
                        && last_entry_epoch == meta.last_entry_epoch;
                    {
                        let mut s = self.lock_state();
                        s.renew_lease(sent_at);
                        s.mirror_position = Some(position);
                        if replaces_all {
                            s.mirror_diverged = false;
                        }
                        if caught_up {
                            s.mirror_synchronized = true;
                            s.exposed = false;
                            s.witness_knows_synchronized = false;
                        }
                    }
                    if caught_up {
                        tracing::info!(node = %self.name, lsn = last_lsn, "mirror caught up: synchronized again");
                        self.notify_witness_synchronized().await;
                        return;
                    }
                }
                Ok(Response::Mismatch {
                    last_lsn,
                    last_entry_epoch,
                }) => {
                    // Where the mirror really stands; a position this principal does not hold means a snapshot.
                    snapshot_needed = position == (last_lsn, last_entry_epoch);
                    position = (last_lsn, last_entry_epoch);
                }
                Ok(Response::Fenced { epoch: newer }) => {
                    drop(commit_guard);
                    self.persist_mirror(newer).await;
                    return;
                }
                other => {
                    tracing::debug!(node = %self.name, "catch-up step failed: {other:?}");
                    return;
                }
            }
        }
    }

    /// Principal, commit lock held: tells the witness the mirror is synchronized (so it may be promoted).
    async fn notify_witness_synchronized(&self) {
        let Some(witness) = &self.witness_ctl else {
            self.lock_state().witness_knows_synchronized = true;
            return;
        };
        let (epoch, lsn, synchronized) = {
            let s = self.lock_state();
            (
                s.epoch,
                s.last_lsn,
                s.mirror_synchronized && s.role == DurableRole::Principal,
            )
        };
        if !synchronized {
            return;
        }
        let sent_at = Instant::now();
        let request = Request::Synchronized {
            node: self.name.clone(),
            epoch,
            lsn,
        };
        match witness
            .request(&request, self.settings.heartbeat_timeout)
            .await
        {
            Ok(Response::Witness(w)) if w.epoch == epoch && w.mirror_synchronized => {
                let mut s = self.lock_state();
                s.renew_lease(sent_at);
                s.witness_knows_synchronized = true;
            }
            Ok(Response::Fenced { epoch: newer }) => self.persist_mirror(newer).await,
            other => {
                tracing::debug!(node = %self.name, "witness did not record synchronized: {other:?}")
            }
        }
    }

    /// Mirror: asks the witness for promotion; on a grant, becomes principal at the new epoch (durably).
    pub(crate) async fn request_promotion(&self, force: bool) -> Result<u64, String> {
        let Some(witness) = &self.witness_ctl else {
            return Err("no witness".into());
        };
        let _apply = self.commit_lock.lock().await;
        let (epoch, lsn) = {
            let s = self.lock_state();
            if s.role != DurableRole::Mirror {
                return Err("not a mirror".into());
            }
            (s.epoch, s.last_lsn)
        };
        let sent_at = Instant::now();
        let request = Request::Promote {
            node: self.name.clone(),
            epoch,
            lsn,
            force,
        };
        match witness
            .request(&request, self.settings.heartbeat_timeout)
            .await
        {
            Ok(Response::Granted { epoch: new }) => {
                self.promote_locked(new, sent_at).await?;
                Ok(new)
            }
            Ok(Response::Refused { reason }) => Err(reason),
            Ok(other) => Err(format!("unexpected witness answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Commit lock held: durably becomes principal of `epoch`, then serves (exposed until the old principal
    /// returns as mirror and catches up).
    async fn promote_locked(&self, epoch: u64, granted_at: Instant) -> Result<(), String> {
        self.with_store(move |s| s.set_role(DurableRole::Principal, epoch))
            .await
            .map_err(|e| format!("persist the promotion: {e}"))?;
        self.lock_state().become_principal(epoch, granted_at);
        tracing::warn!(node = %self.name, epoch, "this node is now the principal");
        Ok(())
    }

    /// Principal: the operator's planned failover, asked by the mirror: step down once the mirror has everything.
    pub(crate) async fn on_handover(&self, from: &str, epoch: u64) -> Response {
        let _commit = self.commit_lock.lock().await;
        let (mine, role, synchronized, position, last) = {
            let s = self.lock_state();
            (
                s.epoch,
                s.role,
                s.mirror_synchronized,
                s.mirror_position,
                (s.last_lsn, s.last_entry_epoch),
            )
        };
        if role != DurableRole::Principal || epoch != mine {
            return Response::Refused {
                reason: format!("{} is not the principal of epoch {epoch}", self.name),
            };
        }
        if !synchronized || position != Some(last) {
            return Response::Refused {
                reason: format!(
                    "the mirror {from} is not synchronized (it holds {:?}, the principal {last:?}); wait for catch-up or use --force",
                    position
                ),
            };
        }
        // Mirror in the same epoch: the new principal raises it when it promotes itself, and this node learns
        // the new epoch from its first heartbeat. (Raising it here would make the mirror adopt the raised epoch
        // as a mirror before it promotes itself.)
        self.persist_mirror(mine).await;
        tracing::warn!(node = %self.name, epoch = mine, "principal handed over to {from}");
        Response::HandedOver {
            lsn: last.0,
            entry_epoch: last.1,
        }
    }

    /// Mirror: the operator's `db-failover`. Planned (the principal hands over) when the principal answers;
    /// otherwise promotes this mirror, refusing an unsynchronized one unless `force`. Reports what may be lost.
    pub(crate) async fn operator_failover(self: &Arc<Self>, force: bool) -> Result<Value, String> {
        let (epoch, role) = {
            let s = self.lock_state();
            (s.epoch, s.role)
        };
        if role != DurableRole::Mirror {
            return Err(format!(
                "{} is not a mirror (db_role {:?})",
                self.name, role
            ));
        }
        let handover = self
            .partner_data
            .request(
                &Request::Handover {
                    from: self.name.clone(),
                    epoch,
                },
                self.settings.partner_timeout,
            )
            .await;
        match handover {
            Ok(Response::HandedOver { lsn, entry_epoch }) => {
                let _apply = self.commit_lock.lock().await;
                let (mine, my_epoch, role, new_epoch) = {
                    let s = self.lock_state();
                    (s.last_lsn, s.last_entry_epoch, s.role, s.epoch + 1)
                };
                if (mine, my_epoch) != (lsn, entry_epoch) || role != DurableRole::Mirror {
                    return Err(format!("the principal handed over at lsn {lsn} but this mirror holds {mine} ({role:?}): not promoting"));
                }
                self.promote_locked(new_epoch, Instant::now()).await?;
                return Ok(json!({
                    "new_principal": self.name,
                    "epoch": new_epoch,
                    "planned": true,
                    "forced": false,
                    "commits_possibly_lost": 0,
                    "message": "planned failover: the old principal handed over with nothing outstanding",
                }));
            }
            Ok(Response::Refused { reason }) if !force => return Err(reason),
            Ok(Response::Refused { reason }) => {
                return Err(format!("the principal is reachable and refused ({reason}); a forced failover is only for an unreachable principal"));
            }
            Ok(Response::Fenced { epoch: newer }) => {
                self.persist_mirror(newer).await;
                return Err(format!(
                    "this mirror was stale (epoch {newer} exists); ask again"
                ));
            }
            _ => {}
        }
        // The principal did not answer.
        let (silent_ms, synchronized, my_lsn, principal_lsn, ever_heard) = {
            let s = self.lock_state();
            (
                s.partner_silent_for(Instant::now()).as_millis() as u64,
                s.synchronized_as_mirror,
                s.last_lsn,
                s.principal_lsn_known,
                s.partner_heard_at.is_some(),
            )
        };
        // What may be lost, as far as this mirror knows.
        let known = if ever_heard {
            format!("the principal was at lsn {principal_lsn} when last heard {silent_ms} ms ago")
        } else {
            "the principal has not been heard since this mirror started, so how far ahead it is is unknown".to_string()
        };
        let timeout_ms = self.settings.partner_timeout.as_millis() as u64;
        if silent_ms < timeout_ms {
            return Err(format!("the principal was heard {silent_ms} ms ago but did not hand over; try again after the partner timeout ({timeout_ms} ms)"));
        }
        let missing = principal_lsn.saturating_sub(my_lsn);
        let in_sync = synchronized && missing == 0;
        if !in_sync && !force {
            return Err(format!(
                "the mirror is not synchronized: it holds lsn {my_lsn}; {known}: at least {missing} commits would be lost, and any the principal made since; repeat with --force to accept that"
            ));
        }
        let new_epoch = if self.witness_ctl.is_some() {
            self.request_promotion(force || !in_sync).await?
        } else {
            let _apply = self.commit_lock.lock().await;
            let (role, new_epoch) = {
                let s = self.lock_state();
                (s.role, s.epoch + 1)
            };
            if role != DurableRole::Mirror {
                return Err("this node changed role meanwhile".into());
            }
            self.promote_locked(new_epoch, Instant::now()).await?;
            new_epoch
        };
        let message = if in_sync {
            "the principal is unreachable; the mirror was synchronized when it last heard it: nothing acknowledged is known to be lost (unless the principal ran exposed since)".to_string()
        } else {
            format!("forced failover from an unsynchronized mirror at lsn {my_lsn}; {known}: at least {missing} commits are lost, and any the principal acknowledged after that; the old principal discards them when it rejoins as mirror")
        };
        tracing::warn!(node = %self.name, new_epoch, missing, "operator failover: {message}");
        Ok(json!({
            "new_principal": self.name,
            "epoch": new_epoch,
            "planned": false,
            "forced": force,
            "synchronized": in_sync,
            "mirror_lsn": my_lsn,
            "principal_lsn_last_known": principal_lsn,
            "principal_last_heard_ms_ago": silent_ms,
            "commits_possibly_lost": missing,
            "message": message,
        }))
    }
}
