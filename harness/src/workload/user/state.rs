//! Who a user is ([`UserSpec`]) and what it keeps from one connection to the next ([`Life`]: its random stream,
//! sequence numbers, the registrars it was given, the addresses it suspects, its digest challenge, its calls).
//! The loop in `life` holds it and lends it to every other part of the user.

use std::collections::HashMap;
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::workload::sip::{Challenge, Transport};

/// Who a user is and whom it talks to.
#[derive(Debug, Clone)]
pub struct UserSpec {
    pub name: String,
    pub password: String,
    /// The home pool's name.
    pub home: String,
    /// The home pool's pair: the backup registrar tried when no server of the home pool answers.
    pub backup: Option<String>,
    /// Users this one sends IMs to.
    pub im_targets: Vec<String>,
    /// The contact it adds to its list and whose presence it watches.
    pub contact: Option<String>,
    /// Seeds the user's own random draws (which address first, IM targets, the first delay of each timer).
    pub seed: u64,
    /// The Director pool the user asks first for its registrar (`301`: home pool `q=0.7`, backup `q=0.3`).
    pub director: Option<String>,
    /// Remote users only: the Edge pools to come in through, by priority (own site's first, as DNS SRV
    /// gives them). A remote user reaches nothing else.
    pub edges: Vec<String>,
    /// Whether the user places calls to telephone numbers (the topology has a Mediation pool).
    pub calls: bool,
    /// A link through the fault proxy to the home pool (`toxiproxy:<port>`), when the topology has one:
    /// the user then connects there, and the proxy picks a server of the pool for each connection.
    pub via: Option<(String, u16)>,
    /// What the user speaks SIP over: TCP, or UDP (datagrams through the tunnel, from a port of the user's own).
    pub transport: Transport,
    /// When the user signs off (REGISTER `Expires: 0`) and stops, if it is one of those the workload's
    /// `sign_off` picks; set when the workload starts.
    pub sign_off_at: Option<Instant>,
}

/// State that outlives one connection.
pub(super) struct Life {
    pub(super) rng: ChaCha8Rng,
    pub(super) cseq: u32,
    pub(super) im_seq: u64,
    pub(super) publish_seq: u64,
    pub(super) contact_added: bool,
    /// Contacts added by the contact interval so far (each a new one: `sip:<user>-n<k>@<domain>`).
    pub(super) contacts_added: u64,
    /// The last sign-in was answered in resiliency mode: the user tries its contact change again, as a user does
    /// who edits a list the client shows, and the pool must refuse it.
    pub(super) signed_in_resiliency: bool,
    pub(super) nc: u32,
    /// The registrars the Director named (primary, backup), kept across sessions as a client keeps them.
    pub(super) registrars: Option<(String, Option<String>)>,
    /// Addresses that did not accept a connection lately, and when: tried only after every other address failed
    /// too, as SIP clients keep a short list of unreachable targets (RFC 3263 section 4.3), instead of waiting for a
    /// connect timeout on each again. Forgotten after [`SUSPECT_FOR`](super::locate::SUSPECT_FOR), and when the
    /// pool sends the user home.
    pub(super) suspect: HashMap<String, Instant>,
    /// The address the current session's connection was dialled to (`None` through a fault-proxy link).
    pub(super) dialled: Option<String>,
    /// Every node's name by its addresses, to say which node the connection went to.
    pub(super) nodes: Arc<HashMap<String, String>>,
    /// The last addresses each name resolved to, and when it was last asked: a client keeps a DNS answer for a
    /// while, and uses it when the name stops resolving (every server of the pool gone).
    pub(super) resolved: HashMap<String, (Vec<String>, Instant)>,
    /// The last digest challenge, answered on every REGISTER until the server asks again.
    pub(super) challenge: Option<Challenge>,
    /// A remote user whose last REGISTER at the primary registrar failed tries the backup next.
    pub(super) use_backup: bool,
    /// Calls answered and not yet ended (by the gateway's BYE, or by losing the connection).
    pub(super) calls_up: std::collections::BTreeSet<String>,
}

impl Life {
    /// A user's state before its first connection: its random stream seeded from `seed`, nothing learnt yet.
    pub(super) fn new(seed: u64, nodes: Arc<HashMap<String, String>>) -> Life {
        Life {
            rng: ChaCha8Rng::seed_from_u64(seed),
            cseq: 1,
            im_seq: 0,
            publish_seq: 0,
            contact_added: false,
            contacts_added: 0,
            signed_in_resiliency: false,
            nc: 0,
            registrars: None,
            suspect: HashMap::new(),
            dialled: None,
            nodes,
            resolved: HashMap::new(),
            challenge: None,
            use_backup: false,
            calls_up: Default::default(),
        }
    }
}
