//! Forwarding: any Front End of the pool serves any client of the pool. A client's writes and reads go to its
//! routing group's primary, here or over the peer link; an IM goes to the Front End holding the recipient's
//! connection. We forward rather than redirect: a client keeps one connection (as Lync clients keep theirs to
//! whichever pool server DNS gave them), a Front End's loss breaks only the connections on it, and a primary that
//! moves (promotion, rebalance) moves without the client noticing.
//!
//! Where the primary is comes from the highest-epoch configuration known, this Front End's own replica or its
//! peers' heartbeats; a `NotPrimary` answer names a newer one, and the call is tried again until a deadline of a few
//! failure timeouts: long enough for a promotion to settle. A call to a primary that membership declares down while
//! it waits is abandoned at once (a killed peer's address may swallow a dial for seconds), so a client whose primary
//! died waits about one failure timeout, not the call's whole timeout.

use std::sync::Arc;
use std::time::Duration;

use super::node::Pool;
use super::placement::{group_name, group_of, GroupId};
use super::wire::{Answer, Call};
use crate::frontend::error::PeerError;
use crate::frontend::store::{Applied, UserView, Write};

/// How long one forwarded call keeps trying, in failure timeouts: detection of a dead primary (one), its
/// promotion (a few heartbeats), and headroom on a loaded machine.
const FORWARD_FAILURE_TIMEOUTS: u32 = 3;

impl Pool {
    /// The routing group of a user.
    pub fn group_of(&self, user: &str) -> GroupId {
        group_of(user, self.slots.len())
    }

    /// The highest configuration epoch of `group` in an alive peer's report (callable with the slot locked).
    pub(super) fn peers_epoch(&self, group: GroupId) -> u64 {
        self.peers_route(group).0
    }

    /// The highest-epoch configuration of `group` in alive peers' reports: its epoch and its primary's node.
    pub(super) fn peers_route(&self, group: GroupId) -> (u64, Option<String>) {
        self.membership
            .reports()
            .iter()
            .filter_map(|r| r.group(group))
            .map(|g| (g.epoch, Some(g.primary.node.clone())))
            .max_by_key(|(epoch, _)| *epoch)
            .unwrap_or((0, None))
    }

    /// The highest-epoch configuration known for `group`, here or at a peer: its epoch and its primary's node.
    pub(super) fn route_known(&self, group: GroupId) -> (u64, Option<String>) {
        let own = {
            let state = self.slots[group].lock();
            state
                .replica
                .as_ref()
                .map(|r| (r.config.epoch, Some(r.config.primary().node.clone())))
        };
        let peers = self.peers_route(group);
        match own {
            Some(own) if own.0 >= peers.0 => own,
            _ => peers,
        }
    }

    /// Runs `call` at the group's primary (locally when that is this Front End).
    async fn at_primary(self: &Arc<Self>, group: GroupId, call: Call) -> Answer {
        let mut hint: Option<String> = None;
        let timeout = self.settings.failure_timeout * 2;
        let deadline =
            tokio::time::Instant::now() + self.settings.failure_timeout * FORWARD_FAILURE_TIMEOUTS;
        let mut last = Answer::Unavailable {
            reason: format!("no primary of routing group {} known", group_name(group)),
        };
        // A commit sent to a primary that then stopped answering may have been applied there.
        let mut sent_unanswered = false;
        for attempt in 0u32.. {
            if attempt > 0 {
                if tokio::time::Instant::now() + self.settings.heartbeat_interval > deadline {
                    break;
                }
                tokio::time::sleep(self.settings.heartbeat_interval).await;
            }
            let Some(target) = hint.take().or_else(|| self.route_known(group).1) else {
                continue;
            };
            let answer = if target == self.me.node {
                match &call {
                    Call::Commit {
                        user,
                        writes,
                        now_unix_ms,
                        ..
                    } => {
                        self.commit_local(group, user.clone(), writes.clone(), *now_unix_ms)
                            .await
                    }
                    Call::View {
                        user, now_unix_ms, ..
                    } => self.view_local(group, user, *now_unix_ms),
                    _ => unreachable!("only commits and views are forwarded"),
                }
            } else if !self.membership.alive(&target) {
                last = Answer::Unavailable {
                    reason: format!(
                        "primary {target} of routing group {} is down",
                        group_name(group)
                    ),
                };
                continue;
            } else {
                match self.call_while_alive(&target, call.clone(), timeout).await {
                    Ok(answer) => answer,
                    Err(Unanswered { reason, unsent }) => {
                        sent_unanswered |= matches!(call, Call::Commit { .. }) && !unsent;
                        last = Answer::Unavailable { reason };
                        continue;
                    }
                }
            };
            match answer {
                Answer::NotPrimary { primary, .. } => {
                    hint = primary.filter(|p| *p != target);
                    last = Answer::Unavailable {
                        reason: format!("routing group {} is changing primary", group_name(group)),
                    };
                }
                other => return other,
            }
        }
        match last {
            Answer::Unavailable { reason } if sent_unanswered => Answer::Indeterminate {
                reason: format!("{reason}; a primary that got the write did not answer"),
            },
            other => other,
        }
    }

    /// `call` at `target`, given up as soon as membership declares `target` down (checked every heartbeat
    /// interval) or after `timeout`. Giving up is safe: a down primary is fenced by the next epoch, so whatever it
    /// did with the call is superseded, and the caller tries the new primary.
    async fn call_while_alive(
        &self,
        target: &str,
        call: Call,
        timeout: Duration,
    ) -> Result<Answer, Unanswered> {
        let answer = self.links.call(target, call, timeout);
        tokio::pin!(answer);
        let mut watch = tokio::time::interval(self.settings.heartbeat_interval);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                answer = &mut answer => return answer.map_err(|error| Unanswered {
                    reason: format!("failed to {error}"),
                    unsent: matches!(error, PeerError::QueueFull { .. }),
                }),
                _ = watch.tick() => {
                    if !self.membership.alive(target) {
                        return Err(Unanswered {
                            reason: format!("primary {target} declared down while answering"),
                            unsent: false,
                        });
                    }
                }
            }
        }
    }

    /// Commits `writes` of `user` at the user's primary: what each did and the user's state after, or why not.
    pub async fn commit(
        self: &Arc<Self>,
        user: &str,
        writes: Vec<Write>,
        now_unix_ms: u64,
    ) -> Result<(Vec<Applied>, UserView), CommitError> {
        let group = self.group_of(user);
        let call = Call::Commit {
            group,
            user: user.to_owned(),
            writes,
            now_unix_ms,
        };
        match self.at_primary(group, call).await {
            Answer::Committed { applied, view } => Ok((applied, view)),
            Answer::Unavailable { reason } => Err(CommitError::NotDone(reason)),
            Answer::Indeterminate { reason } => Err(CommitError::Unknown(reason)),
            other => Err(CommitError::NotDone(format!("unexpected answer {other:?}"))),
        }
    }

    /// Reads `user`'s state at the user's primary.
    pub async fn view(self: &Arc<Self>, user: &str, now_unix_ms: u64) -> Result<UserView, String> {
        let group = self.group_of(user);
        let call = Call::View {
            group,
            user: user.to_owned(),
            now_unix_ms,
        };
        match self.at_primary(group, call).await {
            Answer::Viewed(view) => Ok(view),
            Answer::Unavailable { reason } => Err(reason),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Relays an encoded SIP request to `user`'s client bound at `contact`, whose connection is on `node`: the
    /// client's final status and reason, a refusal before anything reached the client (`node` at its cap of peer
    /// calls, or its queue here full), or `None` when the node could not be asked (the outcome is unknown).
    pub async fn deliver(
        &self,
        node: &str,
        user: &str,
        contact: &str,
        message: String,
        timeout: Duration,
    ) -> Option<Delivery> {
        let call = Call::Deliver {
            user: user.to_owned(),
            contact: contact.to_owned(),
            message,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self
            .links
            .call(node, call, timeout + self.settings.failure_timeout)
            .await
        {
            Ok(Answer::Delivered { code, reason }) => Some(Delivery::Answered(code, reason)),
            Ok(Answer::Unavailable { reason }) => Some(Delivery::Refused(reason)),
            Err(PeerError::QueueFull { peer }) => {
                Some(Delivery::Refused(format!("the link to {peer} is full")))
            }
            _ => None,
        }
    }

    /// Sends `call` to peer `node` and waits up to `timeout` for its answer (`None`: no answer).
    pub async fn call_peer(&self, node: &str, call: Call, timeout: Duration) -> Option<Answer> {
        self.links.call(node, call, timeout).await.ok()
    }

    /// Whether peer `node` is alive (heard within a failure timeout).
    pub fn peer_alive(&self, node: &str) -> bool {
        self.membership.alive(node)
    }

    /// Tells every other running Front End that `user`'s presence changed (their watchers get a NOTIFY).
    pub fn broadcast_changed(&self, user: &str) {
        for node in self.membership.running_names() {
            if node != self.me.node {
                let wait = self.links.call(
                    &node,
                    Call::Changed {
                        user: user.to_owned(),
                    },
                    self.settings.failure_timeout,
                );
                self.spawn(async move {
                    let _ = wait.await;
                });
            }
        }
    }
}

/// What became of a request relayed through the peer holding its recipient's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The client's final status and reason.
    Answered(u16, String),
    /// Refused before it reached the client, with the reason (a bound of the pool): nothing was delivered, and the
    /// sender may try again later.
    Refused(String),
}

/// Why a call to a primary got no answer.
struct Unanswered {
    reason: String,
    /// Refused before it left this node (the peer's queue was full): a commit was surely not applied.
    unsent: bool,
}

/// Why a commit did not answer `Committed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// Not applied anywhere: refused before any replica changed (no primary, below quorum, too few replicas).
    NotDone(String),
    /// Applied at a primary but not known to be replicated, or sent to a primary that stopped answering: it may
    /// or may not have taken effect.
    Unknown(String),
}

impl CommitError {
    pub fn reason(&self) -> &str {
        match self {
            CommitError::NotDone(reason) | CommitError::Unknown(reason) => reason,
        }
    }
}
