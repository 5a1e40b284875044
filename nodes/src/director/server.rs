//! The Director: the first SIP hop for clients. It authenticates a REGISTER with digest, homes nobody, and
//! answers `301 Moved Permanently` naming the user's home pool as primary registrar (`q=0.7`) and the home
//! pool's pair as backup registrar (`q=0.3`), as Lync's Directors do. Other requests aimed at a user are
//! redirected the same way to that user's home pool.
//!
//! A Director keeps no state: every Director of a pool shares the nonce key (derived from the cluster), so a
//! challenge one issued is answered at any other, and a client whose Director died retries at the next address
//! of the pool name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rsip::{Method, Request, Response};
use serde_json::{json, Value};

use super::node::{self, NodeError, NodeIdentity, RoleListeners};
use crate::admin::AdminApi;
use crate::cluster::SIP_PORT;
use crate::sip::digest::{Authentication, Digest};
use crate::sip::message::{self, header, uri_in, user_of};
use crate::sip::{Handler, Peer, Reply, TransportConfig};

/// Methods a Director answers, for `Allow`.
pub const ALLOW: &str = "REGISTER, OPTIONS, MESSAGE, INVITE, SUBSCRIBE, PUBLISH, ACK";

/// Settings of one Director.
#[derive(Debug, Clone)]
pub struct DirectorConfig {
    pub identity: NodeIdentity,
    /// Digest realm; the Front Ends use the same, so a client keeps one set of credentials.
    pub realm: String,
    pub nonce_lifetime: Duration,
    pub transport: TransportConfig,
}

impl DirectorConfig {
    pub fn new(identity: NodeIdentity) -> Self {
        Self {
            identity,
            realm: "poolchaos".into(),
            nonce_lifetime: Duration::from_secs(300),
            transport: TransportConfig::default(),
        }
    }
}

/// What a Director has answered, for `/status`.
#[derive(Debug, Default)]
struct Counters {
    redirected: AtomicU64,
    challenged: AtomicU64,
    refused: AtomicU64,
}

/// One Director server.
pub struct Director {
    config: DirectorConfig,
    digest: Digest,
    counters: Counters,
}

impl Director {
    pub fn new(config: DirectorConfig) -> Self {
        let identity = &config.identity;
        // Every Director of the pool derives the same key, so their nonces are interchangeable without any
        // state shared at run time.
        let secret = format!(
            "{}/{}/director-nonce",
            identity.cluster.admin_token, identity.pool
        );
        Self {
            digest: Digest::new(config.realm.clone(), secret, config.nonce_lifetime),
            counters: Counters::default(),
            config,
        }
    }

    /// `/status`: role, pool, node and what it answered so far.
    pub fn status(&self) -> Value {
        let c = &self.counters;
        json!({
            "role": "director",
            "pool": self.config.identity.pool,
            "node": self.config.identity.node,
            "redirected": c.redirected.load(Ordering::Relaxed),
            "challenged": c.challenged.load(Ordering::Relaxed),
            "refused": c.refused.load(Ordering::Relaxed),
        })
    }

    /// The `Contact` value of a redirect to `home`: the pool as primary registrar and its pair as backup.
    pub fn redirect_contacts(&self, home: &str) -> String {
        let identity = &self.config.identity;
        let contact = |pool: &str, q: &str| {
            format!(
                "<sip:{};transport=tcp>;q={q}",
                identity.address(pool, SIP_PORT)
            )
        };
        let mut contacts = vec![contact(home, "0.7")];
        if let Some(pair) = identity.cluster.pool(home).and_then(|p| p.pair.as_deref()) {
            contacts.push(contact(pair, "0.3"));
        }
        contacts.join(", ")
    }

    fn home_of(&self, user: &str) -> Option<&str> {
        self.config
            .identity
            .cluster
            .users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.home.as_str())
    }

    fn password_of(&self, user: &str) -> Option<String> {
        self.config
            .identity
            .cluster
            .users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.password.clone())
    }

    fn redirect(&self, request: &Request, home: &str) -> Response {
        self.counters.redirected.fetch_add(1, Ordering::Relaxed);
        let mut response = message::response(request, 301, "Moved Permanently");
        message::push(
            &mut response.headers,
            "Contact",
            self.redirect_contacts(home),
        );
        response
    }

    fn refuse(&self, request: &Request, status: u16, reason: &str) -> Response {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        message::response(request, status, reason)
    }

    fn challenge(&self, request: &Request, stale: bool) -> Response {
        self.counters.challenged.fetch_add(1, Ordering::Relaxed);
        let mut response = message::response(request, 401, "Unauthorized");
        message::push(
            &mut response.headers,
            "WWW-Authenticate",
            self.digest.challenge(stale),
        );
        response
    }

    /// REGISTER: the user (To) must exist and prove it with digest; then the redirect to its home pool.
    fn register(&self, request: &Request) -> Response {
        let Some(user) = header(&request.headers, "To").and_then(|to| user_of(uri_in(to))) else {
            return self.refuse(request, 400, "Bad To (No User)");
        };
        let Some(home) = self.home_of(user) else {
            return self.refuse(request, 404, "Not Found");
        };
        let Some(authorization) = header(&request.headers, "Authorization") else {
            return self.challenge(request, false);
        };
        match self
            .digest
            .verify(authorization, "REGISTER", |u| self.password_of(u))
        {
            Authentication::Valid { username } if username == user => self.redirect(request, home),
            Authentication::Valid { .. } => {
                self.refuse(request, 403, "Forbidden (Identity Mismatch)")
            }
            Authentication::Stale => self.challenge(request, true),
            Authentication::Invalid => self.refuse(request, 403, "Forbidden"),
        }
    }

    /// A request to a user (MESSAGE, INVITE, SUBSCRIBE, PUBLISH): redirected to the user's home pool. No
    /// credentials: the answer only names a pool, and the home pool authenticates the request itself.
    fn to_user(&self, request: &Request) -> Response {
        let uri = request.uri.to_string();
        match user_of(&uri).and_then(|u| self.home_of(u)) {
            Some(home) => self.redirect(request, home),
            None => self.refuse(request, 404, "Not Found"),
        }
    }
}

impl Handler for Director {
    async fn handle(&self, request: Request, _peer: Peer) -> Reply {
        Reply::Response(match request.method {
            Method::Ack => return Reply::Nothing,
            Method::Register => self.register(&request),
            Method::Options => {
                let mut response = message::response(&request, 200, "OK");
                message::push(&mut response.headers, "Allow", ALLOW);
                response
            }
            Method::Message | Method::Invite | Method::Subscribe | Method::Publish => {
                self.to_user(&request)
            }
            _ => self.refuse(&request, 481, "Call/Transaction Does Not Exist"),
        })
    }
}

/// The admin API of a Director: `/status` only, it has no commands.
pub fn admin_api(director: &Arc<Director>) -> AdminApi {
    let d = director.clone();
    AdminApi::new(&director.config.identity.cluster.admin_token, move || {
        d.status()
    })
}

/// Serves one Director on `listeners` until `shutdown` completes.
pub async fn run(
    listeners: RoleListeners,
    config: DirectorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let transport = config.transport.clone();
    let director = Arc::new(Director::new(config));
    let admin = admin_api(&director);
    node::serve(listeners, director, transport, admin, shutdown).await
}

/// `poolnode director`: the cluster from `POOLNODE_CLUSTER`, binds, prints the ready line, serves until
/// `shutdown` completes.
pub async fn run_node(
    args: node::RoleArgs,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let cluster = Arc::new(crate::cluster::ClusterConfig::from_env()?);
    let identity = NodeIdentity::new(cluster, &args.node_name()?, "director")?;
    let listeners = RoleListeners::bind(args.listen_sip, args.listen_admin).await?;
    node::print_ready("director", &identity.node, &listeners);
    run(listeners, DirectorConfig::new(identity), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterConfig, PoolConfig, Route, Timings, UserConfig};

    fn pool(name: &str, role: &str, nodes: &[&str], pair: Option<&str>) -> PoolConfig {
        PoolConfig {
            name: name.into(),
            role: role.into(),
            site: "s1".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            pair: pair.map(str::to_owned),
            backend: None,
            witness: None,
            next_hop: None,
            gateway: None,
        }
    }

    #[test]
    fn redirect_names_home_then_pair_and_honours_proxied_routes() {
        let cluster = ClusterConfig {
            name: "t".into(),
            timings: Timings::fast(),
            pools: vec![
                pool("dir", "director", &["dir1"], None),
                pool("fe1", "frontend", &["fe1a"], Some("fe2")),
                pool("fe2", "frontend", &["fe2a"], Some("fe1")),
                pool("fe3", "frontend", &["fe3a"], None),
            ],
            users: vec![UserConfig {
                name: "a".into(),
                password: "p".into(),
                home: "fe1".into(),
            }],
            routes: vec![Route {
                from: "dir".into(),
                to: "fe2".into(),
                address: "toxiproxy:20001".into(),
            }],
            admin_token: "t".into(),
        };
        let identity = NodeIdentity::new(Arc::new(cluster), "dir1", "director").unwrap();
        let d = Director::new(DirectorConfig::new(identity));
        assert_eq!(
            d.redirect_contacts("fe1"),
            "<sip:fe1:5060;transport=tcp>;q=0.7, <sip:toxiproxy:20001;transport=tcp>;q=0.3"
        );
        assert_eq!(
            d.redirect_contacts("fe3"),
            "<sip:fe3:5060;transport=tcp>;q=0.7"
        );
    }
}
