//! The user store: every piece of *persistent* user state a Front End holds (registration bindings, published
//! presence, contact lists), changed only through [`Write`]s applied by [`UserStore::apply`].
//!
//! Writes are data so that the next steps can ship them: replication sends each `Write` to the secondary Front
//! Ends before the `200`, and the Back End receives the same writes lazily. Everything derived from the state
//! (notably whether a REGISTER is `added` or `refreshed`) is computed here, from the state, so a replica that holds
//! the same writes answers the same way.
//!
//! Times are wall-clock milliseconds since the Unix epoch, so an expiry means the same instant on every replica.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// One registration binding: a contact address where the user can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The Contact URI, which names the binding within its user.
    pub contact: String,
    pub call_id: String,
    pub cseq: u32,
    pub expires_at_unix_ms: u64,
    /// Pool mode: the Front End holding the client's connection, where IMs and NOTIFYs for this binding go out.
    /// A refresh over another Front End moves it there. `None` in standalone mode.
    #[serde(default)]
    pub front_end: Option<String>,
}

/// One published presence document (RFC 3903), named by its entity tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub etag: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub expires_at_unix_ms: u64,
}

/// A persistent write: the unit replication and the Back End will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Adds a binding, or refreshes the binding with the same contact.
    Bind { user: String, binding: Binding },
    /// Removes one binding (REGISTER with `expires=0`).
    Unbind { user: String, contact: String },
    /// Removes every binding (REGISTER with `Contact: *`).
    UnbindAll { user: String },
    /// Adds a publication, or replaces the one tagged `replaces` (a refresh or a modification).
    Publish {
        user: String,
        publication: Publication,
        replaces: Option<String>,
    },
    /// Removes a publication (PUBLISH with `Expires: 0`).
    Unpublish { user: String, etag: String },
    /// Adds an entry to the user's contact list.
    ContactAdd { user: String, contact: String },
    /// Removes an entry from the user's contact list.
    ContactRemove { user: String, contact: String },
}

impl Write {
    /// The user the write is about.
    pub fn user(&self) -> &str {
        match self {
            Write::Bind { user, .. }
            | Write::Unbind { user, .. }
            | Write::UnbindAll { user }
            | Write::Publish { user, .. }
            | Write::Unpublish { user, .. }
            | Write::ContactAdd { user, .. }
            | Write::ContactRemove { user, .. } => user,
        }
    }
}

/// The `register-action` of the `presence-state` header: what the registrar knew of a binding before a REGISTER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterAction {
    /// The binding is new to this server (first registration, or a refresh for a binding the server lost).
    Added,
    /// The server still held this binding.
    Refreshed,
}

impl RegisterAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterAction::Added => "added",
            RegisterAction::Refreshed => "refreshed",
        }
    }
}

/// What applying a write did, for the handler's answer and for notifying watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Bound(RegisterAction),
    /// Bindings removed.
    Unbound(usize),
    /// A publication was stored.
    Published,
    /// A publication was removed (false: it was not there).
    Unpublished(bool),
    /// The contact list changed (false: the write was a no-op).
    ContactsChanged(bool),
}

/// What a sweep removed because it expired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expired {
    /// (user, binding) pairs.
    pub bindings: Vec<(String, Binding)>,
    /// Users whose publications expired.
    pub publications: Vec<String>,
}

/// One user's persistent state as a handler reads it: what a routing group's primary sends back to the Front End
/// that serves the client.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// Live bindings.
    pub bindings: Vec<Binding>,
    /// Live publications, oldest first.
    pub publications: Vec<Publication>,
    /// The contact list, in order.
    pub contacts: Vec<String>,
}

impl UserView {
    /// The current presence document: the most recent live publication.
    pub fn presence(&self) -> Option<&Publication> {
        self.publications.last()
    }

    /// The live publication with this entity tag.
    pub fn publication(&self, etag: &str) -> Option<&Publication> {
        self.publications.iter().find(|p| p.etag == etag)
    }
}

#[derive(Debug, Default)]
struct UserState {
    bindings: Vec<Binding>,
    publications: Vec<Publication>,
    /// Ordered, so a listing is stable.
    contacts: BTreeSet<String>,
}

impl UserState {
    fn is_empty(&self) -> bool {
        self.bindings.is_empty() && self.publications.is_empty() && self.contacts.is_empty()
    }
}

/// In-memory user state of one Front End. A binding or publication past its expiry is treated as absent by every
/// read and by [`UserStore::apply`], even before a sweep removes it.
#[derive(Debug, Default)]
pub struct UserStore {
    users: Mutex<HashMap<String, UserState>>,
}

impl UserStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one persistent write at time `now_unix_ms`.
    pub fn apply(&self, write: &Write, now_unix_ms: u64) -> Applied {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let applied = match write {
            Write::Bind { user, binding } => {
                let state = users.entry(user.clone()).or_default();
                match state
                    .bindings
                    .iter_mut()
                    .find(|b| b.contact == binding.contact)
                {
                    Some(known) if known.expires_at_unix_ms > now_unix_ms => {
                        *known = binding.clone();
                        Applied::Bound(RegisterAction::Refreshed)
                    }
                    Some(stale) => {
                        *stale = binding.clone();
                        Applied::Bound(RegisterAction::Added)
                    }
                    None => {
                        state.bindings.push(binding.clone());
                        Applied::Bound(RegisterAction::Added)
                    }
                }
            }
            Write::Unbind { user, contact } => {
                let Some(state) = users.get_mut(user) else {
                    return Applied::Unbound(0);
                };
                let before = state.bindings.len();
                state.bindings.retain(|b| &b.contact != contact);
                Applied::Unbound(before - state.bindings.len())
            }
            Write::UnbindAll { user } => {
                let Some(state) = users.get_mut(user) else {
                    return Applied::Unbound(0);
                };
                Applied::Unbound(std::mem::take(&mut state.bindings).len())
            }
            Write::Publish {
                user,
                publication,
                replaces,
            } => {
                let state = users.entry(user.clone()).or_default();
                // The same tag twice is one publication: a replica seeded from the Back End may see a write again.
                state
                    .publications
                    .retain(|p| Some(&p.etag) != replaces.as_ref() && p.etag != publication.etag);
                state.publications.push(publication.clone());
                Applied::Published
            }
            Write::Unpublish { user, etag } => {
                let Some(state) = users.get_mut(user) else {
                    return Applied::Unpublished(false);
                };
                let before = state.publications.len();
                state.publications.retain(|p| &p.etag != etag);
                Applied::Unpublished(before != state.publications.len())
            }
            Write::ContactAdd { user, contact } => Applied::ContactsChanged(
                users
                    .entry(user.clone())
                    .or_default()
                    .contacts
                    .insert(contact.clone()),
            ),
            Write::ContactRemove { user, contact } => {
                let Some(state) = users.get_mut(user) else {
                    return Applied::ContactsChanged(false);
                };
                Applied::ContactsChanged(state.contacts.remove(contact))
            }
        };
        let user = write.user();
        // Users with nothing left take no memory.
        if users.get(user).is_some_and(UserState::is_empty) {
            users.remove(user);
        }
        applied
    }

    /// Everything the store holds for `user` that is live at `now_unix_ms`.
    pub fn view(&self, user: &str, now_unix_ms: u64) -> UserView {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = users.get(user) else {
            return UserView::default();
        };
        UserView {
            bindings: state
                .bindings
                .iter()
                .filter(|b| b.expires_at_unix_ms > now_unix_ms)
                .cloned()
                .collect(),
            publications: state
                .publications
                .iter()
                .filter(|p| p.expires_at_unix_ms > now_unix_ms)
                .cloned()
                .collect(),
            contacts: state.contacts.iter().cloned().collect(),
        }
    }

    /// The whole state as writes that rebuild it on an empty store: how a replica is copied to another Front End.
    /// Expired entries are copied too; the receiver's reads and sweeps treat them as the sender's would.
    pub fn snapshot(&self) -> Vec<Write> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let mut writes = Vec::new();
        for (user, state) in users.iter() {
            for binding in &state.bindings {
                writes.push(Write::Bind {
                    user: user.clone(),
                    binding: binding.clone(),
                });
            }
            for publication in &state.publications {
                writes.push(Write::Publish {
                    user: user.clone(),
                    publication: publication.clone(),
                    replaces: None,
                });
            }
            for contact in &state.contacts {
                writes.push(Write::ContactAdd {
                    user: user.clone(),
                    contact: contact.clone(),
                });
            }
        }
        writes
    }

    /// A store holding exactly what `snapshot` described.
    pub fn from_snapshot(snapshot: &[Write]) -> Self {
        let store = Self::new();
        for write in snapshot {
            // At time 0 nothing has expired, so every entry is kept as it was.
            store.apply(write, 0);
        }
        store
    }

    /// Number of users with any persistent state.
    pub fn user_count(&self) -> usize {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The user's live bindings.
    pub fn bindings(&self, user: &str, now_unix_ms: u64) -> Vec<Binding> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(user)
            .map(|s| {
                s.bindings
                    .iter()
                    .filter(|b| b.expires_at_unix_ms > now_unix_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The user's live publication with this entity tag.
    pub fn publication(&self, user: &str, etag: &str, now_unix_ms: u64) -> Option<Publication> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(user)?
            .publications
            .iter()
            .find(|p| p.etag == etag && p.expires_at_unix_ms > now_unix_ms)
            .cloned()
    }

    /// The user's current presence document: the most recent live publication.
    pub fn presence(&self, user: &str, now_unix_ms: u64) -> Option<Publication> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(user)?
            .publications
            .iter()
            .rev()
            .find(|p| p.expires_at_unix_ms > now_unix_ms)
            .cloned()
    }

    /// The user's contact list, in order.
    pub fn contacts(&self, user: &str) -> Vec<String> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(user)
            .map(|s| s.contacts.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of live bindings over all users.
    pub fn binding_count(&self, now_unix_ms: u64) -> usize {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .values()
            .map(|s| {
                s.bindings
                    .iter()
                    .filter(|b| b.expires_at_unix_ms > now_unix_ms)
                    .count()
            })
            .sum()
    }

    /// Removes bindings and publications whose expiry has passed. Every replica reaches the same state on its own,
    /// so expiry is not a write.
    pub fn expire(&self, now_unix_ms: u64) -> Expired {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let mut expired = Expired::default();
        users.retain(|user, state| {
            state.bindings.retain(|b| {
                let live = b.expires_at_unix_ms > now_unix_ms;
                if !live {
                    expired.bindings.push((user.clone(), b.clone()));
                }
                live
            });
            let before = state.publications.len();
            state
                .publications
                .retain(|p| p.expires_at_unix_ms > now_unix_ms);
            if state.publications.len() != before {
                expired.publications.push(user.clone());
            }
            !state.is_empty()
        });
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(contact: &str, expires_at_unix_ms: u64) -> Write {
        Write::Bind {
            user: "alice".into(),
            binding: Binding {
                contact: contact.into(),
                call_id: "c".into(),
                cseq: 1,
                expires_at_unix_ms,
                front_end: None,
            },
        }
    }

    #[test]
    fn refresh_of_a_known_binding_is_refreshed_and_of_a_lost_one_added() {
        let store = UserStore::new();
        assert_eq!(
            store.apply(&bind("sip:a@h", 2_000), 1_000),
            Applied::Bound(RegisterAction::Added)
        );
        assert_eq!(
            store.apply(&bind("sip:a@h", 3_000), 1_500),
            Applied::Bound(RegisterAction::Refreshed)
        );
        // Expired but not yet swept: the server has lost it.
        assert_eq!(
            store.apply(&bind("sip:a@h", 9_000), 3_500),
            Applied::Bound(RegisterAction::Added)
        );
        assert_eq!(
            store.apply(&bind("sip:b@h", 9_000), 3_500),
            Applied::Bound(RegisterAction::Added)
        );
        assert_eq!(store.bindings("alice", 4_000).len(), 2);
    }

    #[test]
    fn sweep_removes_expired_bindings_only() {
        let store = UserStore::new();
        store.apply(&bind("sip:a@h", 2_000), 1_000);
        store.apply(&bind("sip:b@h", 5_000), 1_000);
        let expired = store.expire(3_000);
        assert_eq!(expired.bindings.len(), 1);
        assert_eq!(expired.bindings[0].1.contact, "sip:a@h");
        assert_eq!(store.binding_count(3_000), 1);
    }

    #[test]
    fn a_snapshot_rebuilds_the_same_state() {
        let store = UserStore::new();
        store.apply(&bind("sip:a@h", 9_000), 1_000);
        store.apply(
            &Write::ContactAdd {
                user: "bob".into(),
                contact: "sip:alice@h".into(),
            },
            1_000,
        );
        let copy = UserStore::from_snapshot(&store.snapshot());
        assert_eq!(copy.view("alice", 2_000), store.view("alice", 2_000));
        assert_eq!(copy.view("bob", 2_000), store.view("bob", 2_000));
        assert_eq!(copy.user_count(), 2);
    }

    #[test]
    fn contacts_are_a_set_in_order() {
        let store = UserStore::new();
        let add = |c: &str| Write::ContactAdd {
            user: "alice".into(),
            contact: c.into(),
        };
        assert_eq!(
            store.apply(&add("sip:c@h"), 0),
            Applied::ContactsChanged(true)
        );
        assert_eq!(
            store.apply(&add("sip:b@h"), 0),
            Applied::ContactsChanged(true)
        );
        assert_eq!(
            store.apply(&add("sip:b@h"), 0),
            Applied::ContactsChanged(false)
        );
        assert_eq!(store.contacts("alice"), vec!["sip:b@h", "sip:c@h"]);
    }
}
