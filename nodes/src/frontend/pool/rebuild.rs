//! Rebuild and rebalance: every change of a routing group's configuration, run by one coordinator at a time.
//!
//! - **Promotion**: the primary is dead (or restarted, or no longer holds the group): its first healthy secondary
//!   becomes primary at once, keeping the lost member listed so the configuration still needs two promises.
//! - **Rebuild**: a member lost for `rebuild_delay` is replaced by the next live Front End of the group's ring.
//! - **Catch-up**: a member that runs but missed the current configuration (a healed partition) is installed again.
//! - **Rebalance**: a Front End back in the group's desired placement replaces the member that is not (at once, a
//!   restarted member holds nothing), and the desired primary gets the primary role back. The state moves
//!   with the role, so no binding is lost and nobody is signed out.
//!
//! A reconfiguration: promises for a new epoch from a majority of the old configuration, the freshest state among
//! the promisers (it holds every acknowledged write, since a write was on two of three members), then `Install` of
//! that state on every member of the new configuration. Members that restarted since (their node reports a new
//! incarnation) are gone with their replicas: once every other member promised, they count as promisers holding
//! nothing, so a group that lost two of three members to restarts is carried on by its survivor.

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;

use super::member::{GroupConfig, Member};
use super::node::Pool;
use super::placement::{self, GroupId};
use super::replica::Replica;
use super::wire::{Answer, Call};
use crate::frontend::store::UserStore;

impl Pool {
    /// Whether `member` of `config` runs and holds the group: alive, the same process, and reporting the group at
    /// this epoch or later (a member gets one failure timeout after the configuration's adoption to report it).
    pub(super) fn member_healthy(
        &self,
        config: &GroupConfig,
        member: &Member,
        adopted_at: Instant,
    ) -> bool {
        if *member == self.me {
            return true;
        }
        if !self.membership.live(member) {
            return false;
        }
        let holds = self
            .membership
            .report(&member.node)
            .and_then(|r| r.group(config.group).map(|g| g.epoch >= config.epoch))
            .unwrap_or(false);
        holds || adopted_at.elapsed() < self.settings.failure_timeout
    }

    /// One pass over every group this Front End coordinates.
    pub(super) async fn reconcile(self: &Arc<Self>) {
        if !self.quorum_state().serving() {
            return;
        }
        for group in 0..self.slots.len() {
            if let Some(members) = self.plan(group) {
                if let Err(reason) = self.reconfigure(group, members).await {
                    tracing::debug!(group, %reason, "reconfiguration did not complete");
                }
            }
        }
    }

    /// The next configuration's members, when this Front End should change the group's configuration now.
    fn plan(&self, group: GroupId) -> Option<Vec<Member>> {
        let state = self.slots[group].lock();
        let replica = state.replica.as_ref()?;
        let config = &replica.config;
        if self.peers_epoch(group) > config.epoch.max(state.promised_epoch) {
            // Someone holds a newer configuration: wait for it to reach us.
            return None;
        }
        let healthy = |m: &Member| self.member_healthy(config, m, replica.adopted_at);
        let now = Instant::now();
        let mut unhealthy = self.unhealthy.lock().unwrap_or_else(|e| e.into_inner());
        for m in &config.members {
            let key = (group, m.clone());
            if healthy(m) {
                unhealthy.remove(&key);
            } else {
                unhealthy.entry(key).or_insert(now);
            }
        }
        let lost_for = |m: &Member| {
            unhealthy
                .get(&(group, m.clone()))
                .map(|since| now.duration_since(*since))
        };

        if config.primary() != &self.me {
            // A secondary: promote only the first healthy secondary, and only when the primary is lost.
            if healthy(config.primary()) || !config.has(&self.me) {
                return None;
            }
            let first_healthy = config.members[1..].iter().find(|m| healthy(m))?;
            if *first_healthy != self.me {
                return None;
            }
            let mut members = vec![self.me.clone()];
            members.extend(
                config.members[1..]
                    .iter()
                    .filter(|m| **m != self.me)
                    .cloned(),
            );
            members.push(config.primary().clone());
            return Some(members);
        }

        if state.promised_epoch > config.epoch {
            // An earlier reconfiguration of ours got no majority: try again with the same members.
            return Some(config.members.clone());
        }
        let stable = self.settings.failure_timeout;
        let nodes = self.membership.nodes();
        let mut members = config.members.clone();
        // A Front End counts for placement once it has been up for a failure timeout, or while it holds the group
        // healthily: a member heard only lately (the pool just started) is not moved away to be moved back.
        let desired = placement::desired(group, nodes, |n| {
            (self.membership.alive_for(n, stable) && self.membership.current(n).is_some())
                || members.iter().any(|m| m.node == n && healthy(m))
        });

        // Hand the primary role to the desired primary once it holds a replica.
        let target_primary = desired
            .iter()
            .find(|d| members.iter().any(|m| &m.node == *d && healthy(m)));
        let me_desired = desired.contains(&self.me.node);
        if let Some(target) = target_primary {
            let should_move =
                *target != self.me.node && (!me_desired || desired.first() == Some(target));
            if should_move {
                let index = members.iter().position(|m| &m.node == target)?;
                let new_primary = members.remove(index);
                members.insert(0, new_primary);
                return Some(members);
            }
        }

        // Rebuild and rebalance the other members, one change per reconfiguration.
        for index in 1..members.len() {
            let member = members[index].clone();
            let restarted = self
                .membership
                .current(&member.node)
                .is_some_and(|c| c.incarnation != member.incarnation)
                && self.membership.alive_for(&member.node, stable);
            let lost_long = lost_for(&member).is_some_and(|d| d >= self.settings.rebuild_delay);
            let misplaced = healthy(&member) && !desired.contains(&member.node);
            // Live, the same process, yet not on this epoch (it was cut off, say): install it again.
            let lagging = self.membership.live(&member) && !healthy(&member);
            if lagging {
                return Some(members);
            }
            if restarted {
                members[index] = self.membership.current(&member.node)?;
                return Some(members);
            }
            if lost_long || misplaced {
                let replacement = desired
                    .iter()
                    .chain(placement::ring(group, nodes).iter())
                    .find(|n| {
                        !members.iter().any(|m| &m.node == *n)
                            && self.membership.alive_for(n, stable)
                    })
                    .and_then(|n| self.membership.current(n));
                if let Some(replacement) = replacement {
                    members[index] = replacement;
                    return Some(members);
                }
            }
        }
        None
    }

    /// Changes the group's configuration to `members` (this Front End first or among them), fencing the old one.
    pub(super) async fn reconfigure(
        self: &Arc<Self>,
        group: GroupId,
        members: Vec<Member>,
    ) -> Result<(), String> {
        let slot = &self.slots[group];
        let _order = slot.order.lock().await;
        let timeout = self.settings.failure_timeout;
        let (old, epoch, my_seq) = {
            let mut state = slot.lock();
            let replica = state.replica.as_ref().ok_or("no replica")?;
            let old = replica.config.clone();
            let my_seq = replica.seq;
            let epoch = state
                .promised_epoch
                .max(old.epoch)
                .max(self.peers_epoch(group))
                + 1;
            state.promised_epoch = epoch;
            state.promised_to = Some(self.me.clone());
            (old, epoch, my_seq)
        };

        // Phase 1: promises from a majority of the old configuration, this Front End included. A member whose node
        // runs a new process since (it restarted) is gone for good and cannot answer: once every other member
        // promised, the promisers hold all the state that survives, and no one else can coordinate this
        // configuration, so the gone members count as promisers with nothing to offer. Without this, a group
        // that lost two of three members to restarts would wait for their promises forever.
        let gone: Vec<Member> = old
            .members
            .iter()
            .filter(|m| **m != self.me && self.membership.replaced(m))
            .cloned()
            .collect();
        let mut promisers: Vec<(Member, u64, u64)> = vec![(self.me.clone(), old.epoch, my_seq)];
        // A pool of two has configurations of two: the Back End's vote breaks the tie, as it does for quorum.
        let backend = usize::from(old.members.len() == 2 && self.settings.backend_vote.vote());
        let enough = |promisers: usize| {
            promisers + backend >= old.majority()
                || (!gone.is_empty() && promisers + gone.len() == old.members.len())
        };
        let mut calls = JoinSet::new();
        for member in old
            .members
            .iter()
            .filter(|m| **m != self.me && !gone.contains(m))
        {
            let wait = self.links.call(
                &member.node,
                Call::Promise {
                    group,
                    epoch,
                    from: self.me.clone(),
                    to_incarnation: member.incarnation,
                },
                timeout,
            );
            let member = member.clone();
            calls.spawn(async move { (member, wait.await) });
        }
        let mut refused_epoch = 0;
        // Bounded: one turn per member called.
        while !enough(promisers.len()) {
            let Some(joined) = calls.join_next().await else {
                break;
            };
            match joined {
                Ok((
                    member,
                    Ok(Answer::Promised {
                        config_epoch,
                        seq,
                        has_replica,
                    }),
                )) => {
                    self.membership.heard(&member.node);
                    if has_replica {
                        promisers.push((member, config_epoch, seq));
                    } else {
                        // It promised, so it fences; it has no state to offer.
                        promisers.push((member, 0, 0));
                    }
                }
                Ok((_, Ok(Answer::Refused { epoch, .. }))) => {
                    refused_epoch = refused_epoch.max(epoch)
                }
                _ => {}
            }
        }
        calls.abort_all();
        if !enough(promisers.len()) {
            if refused_epoch >= epoch {
                let mut state = slot.lock();
                state.promised_epoch = state.promised_epoch.max(refused_epoch);
            }
            return Err(format!(
                "{} of {} promises for epoch {epoch}",
                promisers.len() + backend,
                old.members.len()
            ));
        }

        // Phase 2: the freshest state among the promisers.
        let (best, _, _) = promisers
            .iter()
            .max_by_key(|(m, config_epoch, seq)| (*config_epoch, *seq, *m == self.me))
            .cloned()
            .ok_or("no promiser")?;
        let (seq, snapshot) = if best == self.me {
            let state = slot.lock();
            let replica = state.replica.as_ref().ok_or("no replica")?;
            (replica.seq, replica.store.snapshot())
        } else {
            match self
                .links
                .call(
                    &best.node,
                    Call::Fetch {
                        group,
                        epoch,
                        from: self.me.clone(),
                    },
                    timeout,
                )
                .await
            {
                Ok(Answer::Snapshot { seq, writes }) => (seq, writes),
                other => return Err(format!("fetch from {}: {other:?}", best.node)),
            }
        };

        // Phase 3: install on the new members, and tell dropped members (they discard their replica).
        let config = GroupConfig {
            group,
            epoch,
            members: members.clone(),
        };
        let sent_at = Instant::now();
        let mut installs = JoinSet::new();
        let told = members
            .iter()
            .chain(old.members.iter().filter(|m| !members.contains(m)))
            .filter(|m| **m != self.me && self.membership.live(m));
        for member in told {
            let wait = self.links.call(
                &member.node,
                Call::Install {
                    config: config.clone(),
                    seq,
                    snapshot: snapshot.clone(),
                    from: self.me.clone(),
                    to_incarnation: member.incarnation,
                },
                timeout,
            );
            let member = member.clone();
            installs.spawn(async move { (member, wait.await) });
        }
        // Bounded: one turn per member told.
        while let Some(joined) = installs.join_next().await {
            if let Ok((member, Ok(Answer::Done))) = joined {
                self.membership.answered(&member.node, sent_at);
            }
        }
        let mut state = slot.lock();
        if state.promised_epoch != epoch {
            return Err("a higher epoch was promised meanwhile".into());
        }
        state.replica = config.has(&self.me).then(|| Replica {
            store: UserStore::from_snapshot(&snapshot),
            seq,
            config,
            adopted_at: Instant::now(),
        });
        tracing::info!(
            group = %placement::group_name(group),
            epoch,
            primary = %members[0].node,
            "routing group reconfigured"
        );
        Ok(())
    }
}
