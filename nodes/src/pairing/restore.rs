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
    // Publications keep the record's order, for the last one is the user's presence: what the state already
    // holds in that order stays, and from the first one out of place on, each is published again (a publish
    // moves its tag to the end), so a newer publication is never left before an older one.
    let publications = |d: &PresenceDoc| Publication {
        etag: d.etag.clone(),
        content_type: d.content_type.clone(),
        body: d.body.clone(),
        expires_at_unix_ms: d.expires_at_unix_ms,
    };
    let kept: Vec<&Publication> = view
        .publications
        .iter()
        .filter(|p| record.presence.iter().any(|d| d.etag == p.etag))
        .collect();
    let in_place = record
        .presence
        .iter()
        .zip(&kept)
        .take_while(|(d, p)| publications(d) == ***p)
        .count();
    for doc in &record.presence[in_place..] {
        // `replaces` the same tag: applying it twice leaves one copy.
        writes.push(Write::Publish {
            user: user.clone(),
            publication: publications(doc),
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

    /// The state holds the publications in another order than the record (a pool formed from a Back End that
    /// listed them by tag): replace puts them in the record's order, so the record's last is the presence.
    #[test]
    fn replace_puts_publications_in_the_records_order() {
        let doc = |etag: &str| PresenceDoc {
            etag: etag.into(),
            content_type: "application/pidf+xml".into(),
            body: format!("<note>{etag}</note>").into_bytes(),
            expires_at_unix_ms: u64::MAX,
        };
        let store = UserStore::new();
        for etag in ["aa", "zz"] {
            let record = UserRecord {
                user: "alice".into(),
                presence: vec![doc(etag)],
                ..UserRecord::default()
            };
            for w in crate::frontend::pool::backend::writes_of(&record) {
                store.apply(&w, 0);
            }
        }
        // Written zz (before the loss), then at the backup pool mm and, last, bb.
        let record = UserRecord {
            user: "alice".into(),
            pool: "pa".into(),
            presence: vec![doc("zz"), doc("aa"), doc("mm"), doc("bb")],
            ..UserRecord::default()
        };
        for w in writes_for(&record, &store.view("alice", 1), Mode::Replace) {
            store.apply(&w, 1);
        }
        let after = store.view("alice", 1);
        assert_eq!(after.presence().unwrap().etag, "bb");
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
