//! Pool pairing and disaster recovery, in-process: two paired sites (Front End pool + Back End pair with witness
//! each), an Edge server, real sockets on 127.0.0.1. One module per claim.

#[path = "../frontend/support.rs"]
#[expect(
    dead_code,
    reason = "the Front End tests' client is shared; this binary uses part of it"
)]
mod client;
mod support;

mod admin;
mod automatic;
mod failback_presence;
mod pool_loss;
mod rolled_back;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use client::{register, request, TcpClient};
use poolnode::sip::message::{self, header};
use rsip::{Request, Response, SipMessage};

/// A client that answers the server's requests (NOTIFYs) with `200` and keeps them, so they never get in the way
/// of the response it waits for.
pub struct Ua {
    pub user: String,
    pub tcp: TcpClient,
    /// The contact it registers, the same over every connection (the server relays over the flow).
    contact: SocketAddr,
    pub notifies: Vec<Request>,
}

impl Ua {
    pub async fn connect(user: &str, server: SocketAddr) -> Ua {
        let tcp = TcpClient::connect(server).await;
        let contact = tcp.local();
        Ua {
            user: user.into(),
            tcp,
            contact,
            notifies: Vec::new(),
        }
    }

    /// Moves to another server (a new connection), keeping the contact.
    pub async fn reconnect(&mut self, server: SocketAddr) {
        self.tcp = TcpClient::connect(server).await;
    }

    pub async fn send(&mut self, text: &str) -> Response {
        self.tcp.send(text.as_bytes()).await;
        loop {
            match self.tcp.message().await {
                SipMessage::Response(r) => return r,
                SipMessage::Request(r) => {
                    self.tcp.answer(&r, 200).await;
                    self.notifies.push(r);
                }
            }
        }
    }

    /// Reads requests for up to `wait`, answering and keeping them.
    pub async fn drain(&mut self, wait: std::time::Duration) {
        while let Ok(message) = tokio::time::timeout(wait, self.tcp.message()).await {
            if let SipMessage::Request(r) = message {
                self.tcp.answer(&r, 200).await;
                self.notifies.push(r);
            }
        }
    }

    pub async fn register(&mut self, server: SocketAddr) -> Response {
        let text = register(server, &self.user, self.contact, "TCP", 300, &[]);
        self.send(&text).await
    }

    /// Registers until `server` answers `200` (a pool still forming or reloading answers `503`), at most 100 tries
    /// 100 ms apart; the last answer.
    pub async fn register_until_ok(&mut self, server: SocketAddr) -> Response {
        let mut answer = self.register(server).await;
        for _ in 0..100 {
            if code(&answer) == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            answer = self.register(server).await;
        }
        answer
    }

    pub async fn contacts(&mut self, body: &str) -> Response {
        let user = self.user.clone();
        let text = request(
            "PUBLISH",
            &format!("sip:{user}@pool.test"),
            &user,
            &user,
            self.tcp.local(),
            "TCP",
            &[
                "Event: vnd-poolchaos-contacts".into(),
                "Content-Type: application/vnd.poolchaos.contacts".into(),
            ],
            body,
        );
        self.send(&text).await
    }

    pub async fn im(&mut self, to: &str, body: &str) -> Response {
        let user = self.user.clone();
        let text = request(
            "MESSAGE",
            &format!("sip:{to}@pool.test"),
            &user,
            to,
            self.tcp.local(),
            "TCP",
            &["Content-Type: text/plain".into()],
            body,
        );
        self.send(&text).await
    }

    pub async fn subscribe(&mut self, to: &str) -> Response {
        let user = self.user.clone();
        let text = request(
            "SUBSCRIBE",
            &format!("sip:{to}@pool.test"),
            &user,
            to,
            self.tcp.local(),
            "TCP",
            &[
                "Event: presence".into(),
                "Expires: 300".into(),
                format!("Contact: <sip:{user}@{}>", self.contact),
            ],
            "",
        );
        self.send(&text).await
    }

    /// PUBLISHes a new presence document (no `SIP-If-Match`, an hour's expiry, as the harness's users do)
    /// whose note is `note`.
    pub async fn publish(&mut self, note: &str) -> Response {
        let user = self.user.clone();
        let text = request(
            "PUBLISH",
            &format!("sip:{user}@pool.test"),
            &user,
            &user,
            self.tcp.local(),
            "TCP",
            &[
                "Event: presence".into(),
                "Expires: 3600".into(),
                "Content-Type: application/pidf+xml".into(),
            ],
            &format!(
                "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                 entity=\"sip:{user}@pool.test\"><tuple id=\"t1\"><status><basic>open</basic></status>\
                 <note>{note}</note></tuple></presence>"
            ),
        );
        self.send(&text).await
    }

    /// The note of the last presence NOTIFY received so far.
    pub fn last_presence_note(&self) -> Option<String> {
        let body = self
            .notifies
            .iter()
            .rev()
            .find(|r| header(&r.headers, "Event") == Some("presence"))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())?;
        let start = body.find("<note>")? + "<note>".len();
        let end = body[start..].find("</note>")? + start;
        Some(body[start..end].to_owned())
    }

    /// The bodies of the resiliency NOTIFYs received so far.
    pub fn resiliency_notices(&self) -> Vec<String> {
        self.notifies
            .iter()
            .filter(|r| header(&r.headers, "Event") == Some("vnd-poolchaos-resiliency"))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }
}

pub fn code(response: &Response) -> u16 {
    response.status_code.code()
}

pub fn listed(response: &Response) -> BTreeSet<String> {
    String::from_utf8_lossy(&response.body)
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn text(response: &Response) -> String {
    String::from_utf8_lossy(&message::encode(response.clone())).into_owned()
}
