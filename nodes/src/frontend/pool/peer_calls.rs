//! The calls a pool's peers make to this Front End ([`Callee`] for [`Pool`]): heartbeats, the replication and
//! reconfiguration calls each routing group's replica answers, and the calls that reach the Front End's own
//! connections through [`super::local::Local`] (deliver, ring, relay, changed).
//!
//! Calls answered later (a forwarded commit, deliver, ring, relay) each hold a place among
//! `peer_calls_in_flight_max` until answered; beyond it a call is refused at once with the answer its caller
//! takes for "not done here": `Unavailable` (a commit or an IM is then `503` with `Retry-After` to the client).

use std::sync::Arc;
use std::time::Duration;

use super::node::Pool;
use super::wire::{Answer, Call, Callee};
use crate::sip::BoxFuture;

/// Why a call is refused at `peer_calls_in_flight_max`.
const AT_LIMIT: &str = "too many peer calls in flight";

/// Whether a call is answered later, off the connection's reading task.
fn answered_later(call: &Call) -> bool {
    matches!(
        call,
        Call::Commit { .. } | Call::Deliver { .. } | Call::Ring { .. } | Call::CallRelay { .. }
    )
}

/// The answer to a call refused at `peer_calls_in_flight_max`: nothing was done for it.
fn at_limit() -> Answer {
    Answer::Unavailable {
        reason: AT_LIMIT.into(),
    }
}

impl Callee for Pool {
    fn answer(self: &Arc<Self>, from: &str, call: Call) -> Result<Answer, BoxFuture<Answer>> {
        self.membership.heard(from);
        let slot = if answered_later(&call) {
            match self
                .peer_load
                .calls
                .take(self.settings.peer_calls_in_flight_max)
            {
                Some(slot) => Some(slot),
                None => return Ok(at_limit()),
            }
        } else {
            None
        };
        let mine = |incarnation: u64| incarnation == self.me.incarnation;
        let not_me = || Answer::Refused {
            epoch: 0,
            reason: "another incarnation".into(),
        };
        Ok(match call {
            Call::Heartbeat(report) => {
                self.membership.reported(report);
                Answer::Heartbeat(self.report())
            }
            Call::Promise {
                group,
                epoch,
                from,
                to_incarnation,
            } => {
                if !mine(to_incarnation) || group >= self.slots.len() {
                    return Ok(not_me());
                }
                let primary_healthy = {
                    let state = self.slots[group].lock();
                    state.replica.as_ref().is_some_and(|r| {
                        self.member_healthy(&r.config, r.config.primary(), r.adopted_at)
                    })
                };
                self.slots[group].promise(epoch, &from, primary_healthy)
            }
            Call::Fetch { group, epoch, from } if group < self.slots.len() => {
                self.slots[group].fetch(epoch, &from)
            }
            Call::Install {
                config,
                seq,
                snapshot,
                from,
                to_incarnation,
            } if config.group < self.slots.len() => {
                if !mine(to_incarnation) {
                    return Ok(not_me());
                }
                let group = config.group;
                let answer = self.slots[group].install(config, seq, &snapshot, &from, &self.me);
                if matches!(answer, Answer::Done) {
                    self.formation().formed = true;
                }
                answer
            }
            Call::Replicate {
                group,
                epoch,
                seq,
                writes,
                now_unix_ms,
                from,
                to_incarnation,
            } if group < self.slots.len() => {
                if !mine(to_incarnation) {
                    return Ok(not_me());
                }
                self.slots[group].replicate(epoch, seq, &writes, now_unix_ms, &from)
            }
            Call::Resync {
                group,
                epoch,
                seq,
                snapshot,
                from,
                to_incarnation,
            } if group < self.slots.len() => {
                if !mine(to_incarnation) {
                    return Ok(not_me());
                }
                self.slots[group].resync(epoch, seq, &snapshot, &from)
            }
            Call::Commit {
                group,
                user,
                writes,
                now_unix_ms,
            } if group < self.slots.len() => {
                let pool = self.clone();
                return Err(Box::pin(async move {
                    let _slot = slot;
                    pool.commit_local(group, user, writes, now_unix_ms).await
                }));
            }
            Call::View {
                group,
                user,
                now_unix_ms,
            } if group < self.slots.len() => self.view_local(group, &user, now_unix_ms),
            Call::Deliver {
                user,
                contact,
                message,
                timeout_ms,
            } => {
                let Some(local) = self.local() else {
                    return Ok(Answer::Delivered {
                        code: 480,
                        reason: "Temporarily Unavailable".into(),
                    });
                };
                let delivered =
                    local.deliver(user, contact, message, Duration::from_millis(timeout_ms));
                return Err(Box::pin(async move {
                    let _slot = slot;
                    let (code, reason) = delivered.await;
                    Answer::Delivered { code, reason }
                }));
            }
            Call::Ring {
                user,
                contact,
                message,
                timeout_ms,
            } => {
                let Some(local) = self.local() else {
                    return Ok(Answer::Relayed { response: None });
                };
                let rung = local.ring(from.to_owned(), user, contact, message, timeout_ms);
                return Err(Box::pin(async move {
                    let _slot = slot;
                    Answer::Relayed {
                        response: rung.await,
                    }
                }));
            }
            Call::CallRelay {
                call_id,
                toward_client,
                message,
                timeout_ms,
            } => {
                let Some(local) = self.local() else {
                    return Ok(Answer::Relayed { response: None });
                };
                let relayed = local.relay(call_id, toward_client, message, timeout_ms);
                return Err(Box::pin(async move {
                    let _slot = slot;
                    Answer::Relayed {
                        response: relayed.await,
                    }
                }));
            }
            Call::Changed { user } => {
                if let Some(local) = self.local() {
                    local.changed_here(&user);
                }
                Answer::Done
            }
            _ => Answer::Refused {
                epoch: 0,
                reason: "no such routing group".into(),
            },
        })
    }
}
