//! What a Front End says of its pairing: whose users it serves, the `pairing` section of `/status`, and the admin
//! commands.

use super::gate::Decision;
use super::node::{Fence, Pairing};
use crate::admin::AdminApi;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

impl Pairing {
    /// The pools whose users this Front End serves at full service now, as their registrar: its own pool's
    /// while its pool serves and it is neither fenced nor reloading them, its pair's while it holds the pair
    /// failed over with no failover or failback in progress. Resiliency mode (the backup registrar, persistent
    /// writes refused) is not full service. Two pools naming one pool's users at once is a split brain.
    pub fn serves_users_of(&self) -> Vec<String> {
        if !self.own_pool_serving() {
            return Vec::new();
        }
        std::iter::once(self.pool.as_str())
            .chain(self.pair.as_deref())
            .filter(|home| {
                matches!(
                    self.decide_for_home(home),
                    Decision::Home | Decision::Backup { resiliency: false }
                )
            })
            .map(str::to_owned)
            .collect()
    }

    /// The `pairing` section of the Front End's `/status`.
    pub fn status(&self) -> Value {
        let now = Instant::now();
        let runner = self.is_runner();
        let serves_users_of = self.serves_users_of();
        let inner = self.lock();
        json!({
            "pool": self.pool,
            "pair": self.pair,
            "serves_users_of": serves_users_of,
            "pair_heartbeat": {
                "up": inner.watch.up(now),
                "missed_ms": inner.watch.missed(now).as_millis() as u64,
                "up_for_ms": inner.watch.up_for(now).as_millis() as u64,
            },
            "as_home": {
                "fence": match inner.fence {
                    Fence::Unknown => "unknown",
                    Fence::Open => "open",
                    Fence::Fenced => "fenced",
                },
                "restored": inner.restored,
            },
            "as_backup": {
                "record_loaded": inner.record_loaded,
                "pair_failed_over": inner.record.pair_failed_over,
                "failover_epoch": inner.record.failover_epoch,
                "transition": inner.record.transition,
                "resiliency_mode": inner.resiliency,
                "automatic_pool_failover": self.timings.automatic_pool_failover,
            },
            "backup_service": self.pair.as_ref().map(|pair| {
                let mut section = inner.backup.to_json(
                    pair,
                    &self.pool,
                    runner,
                    now,
                    inner.watch.pending_clear_since(),
                );
                // `final` accounts for what the pair acknowledged before its newest heartbeat answer.
                section["as_of_ms_ago"] = json!(inner
                    .watch
                    .last_answer_sent_at()
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64));
                section
            }),
            "management_store": {
                "location": inner.record.store_location,
                "version": inner.record.store_version,
            },
        })
    }

    /// Adds the pairing commands to a Front End's admin API: `pool-failover {"pool"}`, `pool-failback {"pool"}`,
    /// `store-failover {"to"}`, `backup-sync`.
    pub fn admin_commands(self: &Arc<Self>, api: AdminApi) -> AdminApi {
        let field = |body: &Value, name: &str| body[name].as_str().unwrap_or_default().to_owned();
        let (a, b, c, d) = (self.clone(), self.clone(), self.clone(), self.clone());
        api.command("pool-failover", move |body| {
            let (this, pool) = (a.clone(), field(&body, "pool"));
            async move {
                this.failover(&pool, false)
                    .await
                    .map_err(|e| (e.status(), e.to_string()))
            }
        })
        .command("pool-failback", move |body| {
            let (this, pool) = (b.clone(), field(&body, "pool"));
            async move {
                this.failback(&pool)
                    .await
                    .map_err(|e| (e.status(), e.to_string()))
            }
        })
        .command("store-failover", move |body| {
            let (this, to) = (c.clone(), field(&body, "to"));
            async move {
                this.store_failover(&to)
                    .await
                    .map_err(|e| (e.status(), e.to_string()))
            }
        })
        .command("backup-sync", move |_| {
            let this = d.clone();
            async move { Ok(this.backup_sync().await) }
        })
    }
}
