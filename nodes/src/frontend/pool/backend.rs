//! A pooled Front End's Back End: [`BackendLink`] ties the Back End client's helpers to the pool.
//!
//! - *Lazy writes.* A primary that commits a change to a user's contacts or publications queues the user's whole
//!   record in the [`LazyWriter`], which writes it every `be_write_interval_ms`; bindings are not written (they are
//!   transient on the scale of a restart, and a client registers again).
//! - *Reload.* A Front End that creates the first configurations of a pool (a first start, or every Front End
//!   restarted) first loads the pool's users with `load_all` and seeds each replica it creates from them, so a pool
//!   restarted as a whole loses nothing that reached the Back End.
//! - *Quorum.* [`CachedVote`] is the [`BackendVote`] of a pool with an even number of voters: the principal's vote,
//!   asked in the background every heartbeat, counted only while fresh (a quorum check never waits on the network).
//! - *Resiliency mode.* The [`ResiliencyGate`] says when the Back End has been unavailable past the grace period.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::placement::{group_of, GroupId};
use super::quorum::BackendVote;
use crate::backend::{BackendClient, LazyWriter, PresenceDoc, ResiliencyGate, UserRecord};
use crate::cluster::Timings;
use crate::frontend::store::{Publication, UserStore, UserView, Write};

/// The Back End's vote as last granted; refreshed by [`CachedVote::run`].
#[derive(Debug)]
pub struct CachedVote {
    client: BackendClient,
    granted_at: Mutex<Option<Instant>>,
    /// A vote older than this is not counted: as long as a peer Front End counts as alive without news.
    fresh_for: Duration,
    refresh_interval: Duration,
}

impl CachedVote {
    pub fn new(client: BackendClient, refresh_interval: Duration, fresh_for: Duration) -> Self {
        Self {
            client,
            granted_at: Mutex::new(None),
            fresh_for,
            refresh_interval,
        }
    }

    /// Asks the principal once; a yes renews the vote.
    pub async fn refresh(&self) {
        if self.client.vote().await.is_some() {
            *self.granted_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// Refreshes every interval; ends when the node's tasks are aborted.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.refresh_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Ends when aborted with the node.
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }
}

impl BackendVote for CachedVote {
    fn vote(&self) -> bool {
        self.granted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < self.fresh_for)
    }
}

/// How long the oldest change of a Front End may wait for the Back End beyond the lazy write interval before the
/// Front End refuses further persistent changes with `503` and `Retry-After` (Lync answers so when its queue to
/// the Back End reaches 12 s): a Back End that cannot store them (its disk full, no principal) does not make the
/// pool take on changes without bound.
pub const BACKEND_BACKLOG_MAX: Duration = Duration::from_secs(12);

/// A pooled Front End's Back End: client, lazy writer, resiliency gate, vote, and the users loaded at start.
#[derive(Debug)]
pub struct BackendLink {
    pub client: BackendClient,
    pub writer: Arc<LazyWriter>,
    pub gate: Arc<ResiliencyGate>,
    pub vote: Arc<CachedVote>,
    /// The Front End pool whose users this is.
    pool: String,
    /// The oldest change's wait past which persistent changes are refused: the lazy write interval plus
    /// [`BACKEND_BACKLOG_MAX`].
    backlog_max: Duration,
    /// The pool's users as loaded at start; `None` until loaded, emptied once the first configurations used it.
    loaded: Mutex<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    done: bool,
    records: Vec<UserRecord>,
}

impl BackendLink {
    /// The link of a Front End of pool `pool` over `client`; the vote is asked every `heartbeat_interval` and
    /// counts for `failure_timeout`.
    pub fn new(
        client: BackendClient,
        pool: &str,
        timings: &Timings,
        heartbeat_interval: Duration,
        failure_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            writer: Arc::new(LazyWriter::new(client.clone(), timings)),
            gate: Arc::new(ResiliencyGate::new(client.clone(), timings)),
            vote: Arc::new(CachedVote::new(
                client.clone(),
                heartbeat_interval,
                failure_timeout,
            )),
            client,
            pool: pool.to_owned(),
            backlog_max: Duration::from_millis(timings.be_write_interval_ms) + BACKEND_BACKLOG_MAX,
            loaded: Mutex::new(Loaded::default()),
        })
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the pool's users were loaded (first configurations wait for it).
    pub fn is_loaded(&self) -> bool {
        self.loaded().done
    }

    /// Loads the pool's users, retrying every `pause` until it succeeds; ends when the node's tasks are aborted.
    pub async fn load(self: Arc<Self>, pause: Duration) {
        // Bounded by the node's life: a pool cannot start from an empty state while its Back End holds users.
        loop {
            match self.client.load_all(&self.pool).await {
                Ok(records) => {
                    tracing::info!(users = records.len(), "loaded from the back end");
                    let mut loaded = self.loaded();
                    loaded.records = records;
                    loaded.done = true;
                    return;
                }
                Err(error) => tracing::warn!(%error, "load from the back end failed; retrying"),
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// A store holding what the Back End has of the users of `group` (of `groups`).
    pub fn seed(&self, group: GroupId, groups: usize) -> UserStore {
        let store = UserStore::new();
        let loaded = self.loaded();
        for record in loaded
            .records
            .iter()
            .filter(|r| group_of(&r.user, groups) == group)
        {
            for write in writes_of(record) {
                // At time 0 nothing has expired: entries keep their own expiry.
                store.apply(&write, 0);
            }
        }
        store
    }

    /// Drops the loaded users once the first configurations hold them.
    pub fn forget_loaded(&self) {
        self.loaded().records = Vec::new();
    }

    /// Queues `user`'s persistent data after a change of its contacts or publications.
    pub fn changed(&self, user: &str, writes: &[Write], view: &UserView) {
        if persistent(writes) {
            self.writer.mark_dirty(record_of(&self.pool, user, view));
        }
    }

    /// Why `writes` must be refused now, if they must: they change persistent data while this Front End's
    /// oldest change has waited [`BACKEND_BACKLOG_MAX`] or longer past the lazy write interval for the Back End.
    pub fn refusal(&self, writes: &[Write]) -> Option<String> {
        let lag = Duration::from_millis(self.writer.stats().lag_ms);
        (persistent(writes) && lag >= self.backlog_max).then(|| {
            format!(
                "Back End Backlog: changes have waited {} s for the Back End",
                lag.as_secs()
            )
        })
    }
}

/// Whether `writes` change persistent data (contacts, publications), not only registrations.
fn persistent(writes: &[Write]) -> bool {
    writes.iter().any(|w| {
        !matches!(
            w,
            Write::Bind { .. } | Write::Unbind { .. } | Write::UnbindAll { .. }
        )
    })
}

/// A user's persistent data as the Back End stores it.
pub fn record_of(pool: &str, user: &str, view: &UserView) -> UserRecord {
    UserRecord {
        user: user.to_owned(),
        pool: pool.to_owned(),
        password: None,
        contacts: view.contacts.clone(),
        presence: view
            .publications
            .iter()
            .map(|p| PresenceDoc {
                etag: p.etag.clone(),
                content_type: p.content_type.clone(),
                body: p.body.clone(),
                expires_at_unix_ms: p.expires_at_unix_ms,
            })
            .collect(),
        settings: Default::default(),
    }
}

/// The writes that rebuild a Back End record in a store.
pub fn writes_of(record: &UserRecord) -> Vec<Write> {
    let contacts = record.contacts.iter().map(|c| Write::ContactAdd {
        user: record.user.clone(),
        contact: c.clone(),
    });
    let publications = record.presence.iter().map(|p| Write::Publish {
        user: record.user.clone(),
        publication: Publication {
            etag: p.etag.clone(),
            content_type: p.content_type.clone(),
            body: p.body.clone(),
            expires_at_unix_ms: p.expires_at_unix_ms,
        },
        replaces: None,
    });
    contacts.chain(publications).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_rebuilds_the_same_contacts_and_presence() {
        let store = UserStore::new();
        for w in [
            Write::ContactAdd {
                user: "alice".into(),
                contact: "sip:bob@p".into(),
            },
            Write::Publish {
                user: "alice".into(),
                publication: Publication {
                    etag: "e1".into(),
                    content_type: "application/pidf+xml".into(),
                    body: b"<x/>".to_vec(),
                    expires_at_unix_ms: u64::MAX,
                },
                replaces: None,
            },
        ] {
            store.apply(&w, 1);
        }
        let view = store.view("alice", 1);
        let copy = UserStore::new();
        for w in writes_of(&record_of("p", "alice", &view)) {
            copy.apply(&w, 0);
        }
        assert_eq!(copy.view("alice", 1), view);
    }
}
