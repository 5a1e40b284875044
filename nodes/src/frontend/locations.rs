//! [`Locations`]: the connection (flow) each binding of a user registered over, through which the user's IMs,
//! NOTIFYs and calls go out.

use std::collections::HashMap;
use std::sync::Mutex;

use super::store::Binding;
use crate::sip::{Flow, Peer};

/// The flow each binding registered over: transient (a connection cannot be replicated), so it lives beside the
/// store rather than in it. IMs and NOTIFYs for a user go out over these flows.
#[derive(Default)]
pub struct Locations {
    flows: Mutex<HashMap<String, Vec<(String, Peer)>>>,
}

impl Locations {
    pub fn set(&self, user: &str, contact: &str, peer: &Peer) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        let entries = flows.entry(user.to_owned()).or_default();
        entries.retain(|(c, _)| c != contact);
        entries.push((contact.to_owned(), peer.clone()));
    }

    pub fn remove(&self, user: &str, contact: &str) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = flows.get_mut(user) {
            entries.retain(|(c, _)| c != contact);
            if entries.is_empty() {
                flows.remove(user);
            }
        }
    }

    pub fn remove_all(&self, user: &str) {
        self.flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
    }

    /// Whether `user` registered over `flow` (and that flow is still open).
    pub fn has_flow(&self, user: &str, flow: Flow) -> bool {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows
            .get(user)
            .is_some_and(|entries| entries.iter().any(|(_, p)| p.flow() == flow && p.is_open()))
    }

    /// Every open flow here, with its user and contact (whom to tell a change of resiliency mode).
    pub fn all(&self) -> Vec<(String, String, Peer)> {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows
            .iter()
            .flat_map(|(user, entries)| {
                entries
                    .iter()
                    .filter(|(_, p)| p.is_open())
                    .map(move |(contact, p)| (user.clone(), contact.clone(), p.clone()))
            })
            .collect()
    }

    /// Every flow of `user`, with its contact.
    pub fn flows_of(&self, user: &str) -> Vec<(String, Peer)> {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows.get(user).cloned().unwrap_or_default()
    }

    /// Forgets flows whose TCP connection closed (pool mode: the binding itself lives at the group's primary, and a
    /// client that comes back registers over a new flow).
    pub fn forget_closed(&self) {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows.retain(|_, entries| {
            entries.retain(|(_, p)| p.is_open());
            !entries.is_empty()
        });
    }

    /// The flows of the given live bindings, one per binding, open or not: a closed TCP flow still names the
    /// contact to dial.
    pub fn flows(&self, user: &str, live: &[Binding]) -> Vec<(String, Peer)> {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entries) = flows.get(user) else {
            return Vec::new();
        };
        entries
            .iter()
            .filter(|(contact, _)| live.iter().any(|b| &b.contact == contact))
            .cloned()
            .collect()
    }
}
