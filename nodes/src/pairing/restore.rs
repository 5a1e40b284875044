//! Between Back End records and the routing groups' state: a user's [`UserView`] becomes the record the lazy
//! writer and failback write, and a record becomes the writes that make a user's state in the routing groups
//! equal to it (a restarted pool, a failover from the copy, a failback).

use crate::backend::{PresenceDoc, UserRecord};
use crate::frontend::store::{Publication, UserView, Write};

/// How a record meets the state already in the routing groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only users without any persistent state get the record: a Front End that (re)starts in a pool whose other
    /// Front Ends may hold newer, not yet written changes must not undo them.
    Fill,
    /// The state becomes exactly the record: after a failover or failback nobody else wrote meanwhile.
    Replace,
}

/// The record of `user` (homed on `home`) holding what `view` shows.
pub fn record_of(user: &str, home: &str, view: &UserView) -> UserRecord {
    UserRecord {
        user: user.to_owned(),
        pool: home.to_owned(),
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

/// The writes that bring `view` to `record` (none when they already agree, or in [`Mode::Fill`] when the user
/// has state).
pub fn writes_for(record: &UserRecord, view: &UserView, mode: Mode) -> Vec<Write> {
    let user = &record.user;
    if mode == Mode::Fill && !(view.contacts.is_empty() && view.publications.is_empty()) {
        return Vec::new();
    }
    let mut writes = Vec::new();
    for contact in view
        .contacts
        .iter()
        .filter(|c| !record.contacts.contains(c))
    {
        writes.push(Write::ContactRemove {
            user: user.clone(),
            contact: contact.clone(),
        });
    }
    for contact in record
        .contacts
        .iter()
        .filter(|c| !view.contacts.contains(c))
    {
        writes.push(Write::ContactAdd {
            user: user.clone(),
            contact: contact.clone(),
        });
    }
    for publication in view
        .publications
        .iter()
        .filter(|p| !record.presence.iter().any(|d| d.etag == p.etag))
    {
        writes.push(Write::Unpublish {
            user: user.clone(),
            etag: publication.etag.clone(),
        });
    }
    for doc in &record.presence {
        let publication = Publication {
            etag: doc.etag.clone(),
            content_type: doc.content_type.clone(),
            body: doc.body.clone(),
            expires_at_unix_ms: doc.expires_at_unix_ms,
        };
        if view.publications.contains(&publication) {
            continue;
        }
        // `replaces` the same tag: applying it twice leaves one copy.
        writes.push(Write::Publish {
            user: user.clone(),
            publication,
            replaces: Some(doc.etag.clone()),
        });
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::store::UserStore;

    fn view_with(contacts: &[&str]) -> UserView {
        UserView {
            contacts: contacts.iter().map(|c| c.to_string()).collect(),
            ..UserView::default()
        }
    }

    #[test]
    fn replace_makes_the_state_equal_to_the_record_and_is_idempotent() {
        let store = UserStore::new();
        for c in ["sip:old@x", "sip:kept@x"] {
            store.apply(
                &Write::ContactAdd {
                    user: "alice".into(),
                    contact: c.into(),
                },
                0,
            );
        }
        let mut record = record_of("alice", "pa", &view_with(&["sip:kept@x", "sip:new@x"]));
        record.presence.push(PresenceDoc {
            etag: "e1".into(),
            content_type: "application/pidf+xml".into(),
            body: b"<presence/>".to_vec(),
            expires_at_unix_ms: u64::MAX,
        });
        for _ in 0..2 {
            for w in writes_for(&record, &store.view("alice", 1), Mode::Replace) {
                store.apply(&w, 1);
            }
        }
        let after = store.view("alice", 1);
        assert_eq!(after.contacts, ["sip:kept@x", "sip:new@x"]);
        assert_eq!(after.publications.len(), 1);
        assert_eq!(record_of("alice", "pa", &after), record);
        assert!(writes_for(&record, &after, Mode::Replace).is_empty());
    }

    #[test]
    fn fill_leaves_a_user_with_state_alone() {
        let record = record_of("alice", "pa", &view_with(&["sip:a@x"]));
        assert!(writes_for(&record, &view_with(&["sip:b@x"]), Mode::Fill).is_empty());
        assert_eq!(writes_for(&record, &view_with(&[]), Mode::Fill).len(), 1);
    }
}
