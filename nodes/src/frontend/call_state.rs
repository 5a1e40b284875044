//! The calls a Front End holds an end of ([`Calls`], by Call-ID, each a [`CallEntry`] with its [`Dialog`] and its
//! two [`End`]s) and where calls go ([`CallSettings`]). The SIP side of calls is in [`super::calls`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsip::{Method, Request, Response};

use crate::cluster::{ClusterConfig, SIP_PORT};
use crate::director::Resolver;
use crate::mediation::{Leg, Link};
use crate::sip::message::{self, header, uri_in};
use crate::sip::Flow;
use crate::slots::{Slot, Slots};

/// Calls a Front End holds an end of at once, unless its settings say otherwise.
pub const CALLS_MAX_DEFAULT: usize = 1_000;

/// Where calls go, how long each step may take, and how many calls one Front End holds.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// The Mediation pool calls to numbers go to: the first of the Front End pool's site, else the first.
    pub mediation_pool: String,
    /// Where that pool is reached (`host:port`); every address the name resolves to is tried in turn.
    pub mediation_target: String,
    /// Every Mediation pool of the cluster: an INVITE whose From host names one comes from the PSTN side and is
    /// taken without digest credentials (Mediation holds none).
    pub mediation_pools: Vec<String>,
    pub resolver: Resolver,
    /// Opening a connection to one Mediation server; past it the next address is tried.
    pub connect_timeout: Duration,
    /// How long an INVITE may wait for its final answer (RFC 3261 Timer B: 64 × T1).
    pub invite_timeout: Duration,
    /// How long a request inside a call may wait for the other end's answer.
    pub relay_timeout: Duration,
    /// How often each call checks that the ends it holds are still there.
    pub leg_check_interval: Duration,
    /// Calls this Front End holds an end of at once, those being set up included; a new one beyond is answered
    /// `503` with `Retry-After`.
    pub calls_max: usize,
}

impl CallSettings {
    /// Calls to numbers go to `mediation_pool`, reached at `mediation_target` through `resolver`.
    pub fn new(mediation_pool: &str, mediation_target: &str, resolver: Resolver) -> Self {
        Self {
            mediation_pool: mediation_pool.to_owned(),
            mediation_target: mediation_target.to_owned(),
            mediation_pools: vec![mediation_pool.to_owned()],
            resolver,
            connect_timeout: Duration::from_secs(3),
            invite_timeout: Duration::from_secs(32),
            relay_timeout: Duration::from_secs(5),
            leg_check_interval: Duration::from_millis(200),
            calls_max: CALLS_MAX_DEFAULT,
        }
    }

    /// From the cluster description: the first Mediation pool whose site is the Front End pool's, else the first
    /// Mediation pool; `None` when the cluster has none.
    pub fn from_cluster(
        cluster: &ClusterConfig,
        frontend_pool: &str,
        resolver: Resolver,
    ) -> Option<Self> {
        let site = cluster.pool(frontend_pool)?.site.clone();
        let mediation: Vec<_> = cluster
            .pools
            .iter()
            .filter(|p| p.role == "mediation")
            .collect();
        let chosen = mediation
            .iter()
            .find(|p| p.site == site)
            .or(mediation.first())?;
        let mut settings = Self::new(
            &chosen.name,
            &cluster.address(frontend_pool, &chosen.name, SIP_PORT),
            resolver,
        );
        settings.mediation_pools = mediation.iter().map(|p| p.name.clone()).collect();
        Some(settings)
    }
}

/// One end of a call as this Front End reaches it.
#[derive(Clone)]
pub(super) enum End {
    /// A connection on this Front End (the client's registered flow, or the Mediation connection).
    Leg(Leg),
    /// Another Front End of the pool holds it.
    Node(String),
}

/// What requests of our own inside the dialog need: both ends' identities and targets.
pub(super) struct Dialog {
    pub(super) call_id: String,
    /// From of the INVITE (the calling end, with its tag).
    pub(super) invite_from: String,
    /// To of the 2xx (the called end, with its tag).
    pub(super) answer_to: String,
    /// The calling end's Contact.
    pub(super) uac_contact: String,
    /// The called end's Contact.
    pub(super) uas_contact: String,
    /// Calls out: the client called. Calls in: Mediation called.
    pub(super) client_is_uac: bool,
}

impl Dialog {
    pub(super) fn new(invite: &Request, answer: &Response, client_is_uac: bool) -> Self {
        let from = header(&invite.headers, "From").unwrap_or_default();
        let contact_in = |headers: &rsip::Headers, fallback: &str| {
            header(headers, "Contact")
                .map(|c| uri_in(c).to_owned())
                .unwrap_or_else(|| fallback.to_owned())
        };
        Self {
            call_id: header(&invite.headers, "Call-ID")
                .unwrap_or_default()
                .to_owned(),
            invite_from: from.to_owned(),
            answer_to: header(&answer.headers, "To").unwrap_or_default().to_owned(),
            uac_contact: contact_in(&invite.headers, uri_in(from)),
            uas_contact: contact_in(&answer.headers, &invite.uri.to_string()),
            client_is_uac,
        }
    }

    /// A request of ours toward the client's end or Mediation's.
    pub(super) fn request_toward(
        &self,
        toward_client: bool,
        method: Method,
        cseq: u32,
    ) -> Option<Request> {
        let (from, to, uri) = if toward_client == self.client_is_uac {
            (&self.answer_to, &self.invite_from, &self.uac_contact)
        } else {
            (&self.invite_from, &self.answer_to, &self.uas_contact)
        };
        let headers = vec![
            ("Max-Forwards".to_owned(), "70".to_owned()),
            ("From".to_owned(), from.clone()),
            ("To".to_owned(), to.clone()),
            ("Call-ID".to_owned(), self.call_id.clone()),
            ("CSeq".to_owned(), format!("{cseq} {method}")),
        ];
        message::request(method, uri, headers, Vec::new()).ok()
    }
}

/// One call as this Front End holds it.
pub(super) struct CallEntry {
    pub(super) dialog: Dialog,
    pub(super) client: End,
    pub(super) mediation: End,
    /// Calls in: the flow Mediation's requests arrive on here (the client's come on another).
    pub(super) mediation_flow: Option<Flow>,
    pub(super) cseq: AtomicU32,
    pub(super) ended: AtomicBool,
    /// The call's place among `calls_max`, given back when it ends.
    pub(super) slot: Mutex<Option<Slot>>,
}

impl CallEntry {
    pub(super) fn end(&self, toward_client: bool) -> &End {
        if toward_client {
            &self.client
        } else {
            &self.mediation
        }
    }
}

/// The calls this Front End holds an end of, and its connections to Mediation servers.
#[derive(Default)]
pub struct Calls {
    pub(super) by_id: Mutex<HashMap<String, Arc<CallEntry>>>,
    /// One open connection per Mediation server, reused by every call placed on it.
    pub(super) links: Mutex<HashMap<SocketAddr, Link>>,
    /// Calls up or being set up: the places taken among `calls_max`.
    held: Slots,
}

impl Calls {
    /// A place for one more call, or `None` when `calls_max` are up or being set up.
    pub(super) fn reserve(&self, calls_max: usize) -> Option<Slot> {
        self.held.take(calls_max)
    }

    /// Calls up or being set up (at most `calls_max`).
    pub fn held(&self) -> usize {
        self.held.taken()
    }

    pub(super) fn get(&self, call_id: &str) -> Option<Arc<CallEntry>> {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(call_id)
            .cloned()
    }

    pub(super) fn insert(&self, entry: Arc<CallEntry>) {
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.dialog.call_id.clone(), entry);
    }

    /// Ends a call once (true the first time).
    pub(super) fn end(&self, entry: &Arc<CallEntry>) -> bool {
        if entry.ended.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut by_id = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if by_id
            .get(&entry.dialog.call_id)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            by_id.remove(&entry.dialog.call_id);
        }
        drop(by_id);
        entry.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        true
    }

    /// Calls up now (ends held here).
    pub fn count(&self) -> usize {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
