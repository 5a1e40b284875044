//! Replication: each routing group's replica on this Front End, and the primary's synchronous commit.
//!
//! A group's *configuration* (epoch, members, primary first) changes only by a reconfiguration (see `rebuild`),
//! which first collects promises for a new, higher epoch from a majority of the old configuration's members. A
//! replica that promised epoch E refuses every call of a lower epoch, so once a new primary exists the old one can
//! no longer get a secondary to acknowledge anything: that is the fencing.
//!
//! The primary applies a client's writes, numbers them (`seq`), sends them to its live secondaries in order over the
//! peer links, and answers the client only after one secondary acknowledged: an acknowledged write is on two
//! Front Ends. A secondary that missed writes answers `Gap` and gets the primary's whole state (`Resync`).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::member::Member;
use super::node::Pool;
use super::placement::{group_name, replicas_min, GroupId};
use super::replica::{Replica, SlotState};
use super::wire::{Answer, Call};
use crate::defects::{self, Defect};
use crate::frontend::store::Write;

impl Pool {
    /// Whether this Front End may acknowledge writes of `group` now; the refusal is the answer to give.
    pub(super) fn writable(&self, state: &SlotState, group: GroupId) -> Result<(), Answer> {
        let quorum_state = self.quorum_state();
        if let Some(reason) = quorum_state.reason() {
            return Err(Answer::Unavailable { reason });
        }
        let (known, newer_primary) = self.peers_route(group);
        let Some(replica) = state
            .replica
            .as_ref()
            .filter(|_| state.acting_primary(&self.me) && known <= state.promised_epoch)
        else {
            // This Front End's own reconfiguration of a group it is the primary of did not complete (too few
            // promises): when the group is short of live replicas, that is the reason to give, not a primary change.
            let pending = state.replica.as_ref().filter(|r| {
                r.config.primary() == &self.me
                    && state.promised_to.as_ref() == Some(&self.me)
                    && known <= r.config.epoch
            });
            if let Some(replica) = pending {
                self.enough_replicas(replica, group)?;
            }
            let own = state
                .replica
                .as_ref()
                .map(|r| (r.config.epoch, r.config.primary().node.clone()));
            let (epoch, primary) = match own {
                Some((epoch, primary)) if epoch >= known => (epoch, Some(primary)),
                _ => (known, newer_primary),
            };
            return Err(Answer::NotPrimary {
                epoch,
                primary: primary.filter(|p| *p != self.me.node),
            });
        };
        self.enough_replicas(replica, group)?;
        let needed = replicas_min(self.settings.nodes.len());
        let leased = needed <= 1
            || replica
                .config
                .members
                .iter()
                .skip(1)
                .any(|m| self.membership.live(m) && self.membership.grants_lease(&m.node));
        if !leased {
            return Err(Answer::Unavailable {
                reason: format!(
                    "routing group {} has no secondary lease yet",
                    group_name(group)
                ),
            });
        }
        Ok(())
    }

    /// Whether the group has the live replicas it needs to serve; the refusal naming the count when not.
    fn enough_replicas(&self, replica: &Replica, group: GroupId) -> Result<(), Answer> {
        let live = replica
            .config
            .members
            .iter()
            .filter(|m| self.member_healthy(&replica.config, m, replica.adopted_at))
            .count();
        let needed = replicas_min(self.settings.nodes.len());
        if live < needed {
            return Err(Answer::Unavailable {
                reason: format!(
                    "routing group {} has {live} live replica(s), needs {needed}",
                    group_name(group)
                ),
            });
        }
        Ok(())
    }

    /// Applies a client's writes as the group's primary and answers once a secondary acknowledged them.
    pub(super) async fn commit_local(
        self: &Arc<Self>,
        group: GroupId,
        user: String,
        writes: Vec<Write>,
        now_unix_ms: u64,
    ) -> Answer {
        let slot = &self.slots[group];
        let order = slot.order.lock().await;
        let (epoch, seq, applied, view, targets) = {
            let mut state = slot.lock();
            if let Err(refusal) = self.writable(&state, group) {
                return refusal;
            }
            // What the Back End has not taken for too long is not added to: refused, nothing applied.
            if let Some(reason) = self
                .settings
                .backend
                .as_ref()
                .and_then(|b| b.refusal(&writes))
            {
                return Answer::Unavailable { reason };
            }
            let Some(replica) = state.replica.as_mut() else {
                return Answer::Unavailable {
                    reason: "no replica".into(),
                };
            };
            let applied: Vec<_> = writes
                .iter()
                .map(|w| replica.store.apply(w, now_unix_ms))
                .collect();
            replica.seq += 1;
            let view = replica.store.view(&user, now_unix_ms);
            if let Some(backend) = &self.settings.backend {
                // The primary writes to the Back End: one writer per group, lazily.
                backend.changed(&user, &writes, &view);
            }
            let targets: Vec<_> = replica.config.members[1..]
                .iter()
                .filter(|m| self.membership.live(m))
                .cloned()
                .collect();
            (replica.config.epoch, replica.seq, applied, view, targets)
        };
        if targets.is_empty() {
            // Only where one replica may serve alone (a pool of two): `writable` checked it.
            return Answer::Committed { applied, view };
        }
        let sent_at = Instant::now();
        let timeout = self.settings.failure_timeout;
        if defects::active(Defect::AckBeforeReplicate) {
            // The bug: the client is answered once the primary applied the write; the secondaries get it with the
            // next batch, a second later, so a primary lost meanwhile takes acknowledged writes with it.
            drop(order);
            let pool = self.clone();
            self.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                for member in targets {
                    let call = Call::Replicate {
                        group,
                        epoch,
                        seq,
                        writes: writes.clone(),
                        now_unix_ms,
                        from: pool.me.clone(),
                        to_incarnation: member.incarnation,
                    };
                    if let Ok(Answer::Gap) = pool.links.call(&member.node, call, timeout).await {
                        pool.resync(group, member).await;
                    }
                }
            });
            return Answer::Committed { applied, view };
        }
        let (acks, mut acked) = mpsc::channel(targets.len());
        for member in targets {
            let wait = self.links.call(
                &member.node,
                Call::Replicate {
                    group,
                    epoch,
                    seq,
                    writes: writes.clone(),
                    now_unix_ms,
                    from: self.me.clone(),
                    to_incarnation: member.incarnation,
                },
                timeout,
            );
            let (pool, acks) = (self.clone(), acks.clone());
            self.spawn(async move {
                let ok = match wait.await {
                    Ok(Answer::Done) => {
                        pool.membership.answered(&member.node, sent_at);
                        true
                    }
                    Ok(Answer::Gap) => pool.resync(group, member).await,
                    _ => false,
                };
                let _ = acks.send(ok).await;
            });
        }
        // Sent in order; the next batch may be numbered while these wait for their acknowledgements.
        drop(order);
        drop(acks);
        // Bounded: one message per secondary written to.
        while let Some(ok) = acked.recv().await {
            if ok {
                return Answer::Committed { applied, view };
            }
        }
        // Applied here (and handed to the lazy writer), possibly at a secondary whose acknowledgement was lost:
        // the client must not be told it was not done.
        Answer::Indeterminate {
            reason: format!(
                "no secondary of routing group {} acknowledged the write",
                group_name(group)
            ),
        }
    }

    /// Sends the whole state to a secondary that missed writes; true once it holds it.
    async fn resync(self: &Arc<Self>, group: GroupId, member: Member) -> bool {
        let slot = &self.slots[group];
        {
            let mut resyncing = slot.resyncing.lock().unwrap_or_else(|e| e.into_inner());
            if !resyncing.insert(member.node.clone()) {
                return false;
            }
        }
        let order = slot.order.lock().await;
        let call = {
            let state = slot.lock();
            state
                .replica
                .as_ref()
                .filter(|_| state.acting_primary(&self.me))
                .map(|replica| Call::Resync {
                    group,
                    epoch: replica.config.epoch,
                    seq: replica.seq,
                    snapshot: replica.store.snapshot(),
                    from: self.me.clone(),
                    to_incarnation: member.incarnation,
                })
        };
        let sent_at = Instant::now();
        let wait = call.map(|call| {
            self.links
                .call(&member.node, call, self.settings.failure_timeout)
        });
        drop(order);
        let done = match wait {
            Some(wait) => matches!(wait.await, Ok(Answer::Done)),
            None => false,
        };
        if done {
            self.membership.answered(&member.node, sent_at);
        }
        slot.resyncing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&member.node);
        done
    }

    /// A user's state read at the group's primary (refused like a write when the group cannot serve).
    pub(super) fn view_local(&self, group: GroupId, user: &str, now_unix_ms: u64) -> Answer {
        let state = self.slots[group].lock();
        if let Err(refusal) = self.writable(&state, group) {
            return refusal;
        }
        match &state.replica {
            Some(replica) => Answer::Viewed(replica.store.view(user, now_unix_ms)),
            None => Answer::Unavailable {
                reason: "no replica".into(),
            },
        }
    }
}
