//! What a Front End says of its pool: the `/status` document the harness probes, and the admin API around it.

use std::sync::Arc;

use serde_json::{json, Value};

use super::node::Pool;
use super::placement::group_name;
use super::quorum::BackendVote;
use crate::admin::AdminApi;

impl Pool {
    /// Accepted peer connections open now (at most `peer_connections_max`).
    pub fn peer_connections(&self) -> usize {
        self.peer_load.connections.taken()
    }

    /// Accepted peer connections closed since the start for sending no hello within `peer_hello_timeout`.
    pub fn peer_connections_without_hello(&self) -> u64 {
        self.peer_load
            .without_hello
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Peers' calls answered later, in flight now (at most `peer_calls_in_flight_max`).
    pub fn peer_calls_in_flight(&self) -> usize {
        self.peer_load.calls.taken()
    }

    /// Answers queued now on the accepted peer connections (at most `peer_queue_len` on each).
    pub fn peer_answers_queued(&self) -> usize {
        self.peer_load.answers.taken()
    }

    /// Calls queued now toward `peer` (at most `peer_queue_len`).
    pub fn peer_calls_queued(&self, peer: &str) -> usize {
        self.links.queued(peer)
    }

    /// The `/status` document the harness probes.
    pub fn status(&self) -> Value {
        let quorum_state = self.quorum_state();
        let mut users = 0;
        let groups: Vec<Value> = self
            .slots
            .iter()
            .map(|slot| {
                let state = slot.lock();
                let (role, epoch) = match &state.replica {
                    Some(r) if r.config.primary() == &self.me => ("primary", r.config.epoch),
                    Some(r) => ("secondary", r.config.epoch),
                    None => ("none", 0),
                };
                let accepting = self.writable(&state, slot.group).is_ok();
                if accepting {
                    users += state.replica.as_ref().map_or(0, |r| r.store.user_count());
                }
                json!({
                    "group": group_name(slot.group),
                    "role": role,
                    "epoch": epoch,
                    "accepting_writes": accepting,
                })
            })
            .collect();
        let mut status = json!({
            "role": "frontend",
            "pool": self.settings.pool,
            "node": self.me.node,
            "serving": quorum_state.serving(),
            "reason": quorum_state.reason(),
            "fes_running": self.membership.running_names(),
            "groups": groups,
            "users": users,
            "peer_connections": self.peer_connections(),
            "peer_connections_without_hello": self.peer_connections_without_hello(),
            "peer_calls_in_flight": self.peer_calls_in_flight(),
        });
        if let Some(backend) = &self.settings.backend {
            let stats = backend.writer.stats();
            let fields = json!({
                "be_write_lag_ms": stats.lag_ms,
                "be_pending_users": stats.pending_users,
                "be_last_flush_lag_ms": stats.last_flush_lag_ms,
                "be_flushed_users_total": stats.flushed_users_total,
                "be_flush_failures_total": stats.flush_failures_total,
                "be_available": backend.client.available(),
                "be_principal": backend.client.principal(),
                "be_vote": backend.vote.vote(),
                "be_loaded": backend.is_loaded(),
                "resiliency_mode": backend.gate.in_resiliency_mode(),
            });
            if let (Value::Object(status), Value::Object(fields)) = (&mut status, fields) {
                status.extend(fields);
            }
        }
        status
    }

    /// The admin API with `/status` built by `status` and `POST /admin/quorum-recovery`.
    pub fn admin_api(
        self: &Arc<Self>,
        status: impl Fn() -> Value + Send + Sync + 'static,
    ) -> AdminApi {
        let recover = self.clone();
        AdminApi::new(&self.settings.admin_token, status).command("quorum-recovery", move |_| {
            let pool = recover.clone();
            async move { Ok(pool.recover()) }
        })
    }
}
