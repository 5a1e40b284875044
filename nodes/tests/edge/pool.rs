//! Remote users of a Front End pool of 3: each signs in through an Edge server, whose upstream connection lands on
//! one Front End of the pool; IMs between them cross the pool's peer links when their connections sit on different
//! Front Ends, and go through two Edge relays (the sender's, then the recipient's).

use std::time::Duration;

use poolnode::director::Resolver;
use poolnode::edge::{self, EdgeConfig};
use poolnode::sip::message::{self, header, headers_all, name, value};
use rsip::{Header, Method, Request, SipMessage};

use crate::pool_support::{timings, TestPool};
use crate::roles::{identity, register, request, Conn, Read, Running};

/// How a test client answers a request the pool sent it.
#[derive(Clone, Copy, Debug)]
enum Echo {
    /// Every Via value, in order (RFC 3261 8.2.6.2).
    AllVias,
    /// Only the first Via header line, as the poolchaos harness's client does: the Edge's own, when the Edge put
    /// its Via on a line of its own.
    FirstViaLine,
}

/// A remote user's connection through an Edge server.
struct Remote {
    name: &'static str,
    conn: Conn,
    echo: Echo,
}

impl Remote {
    /// Connects to `edge` and registers with `sip:fe1:5060` (the pool the Director's 301 names; the pool runs
    /// open, so no challenge) with a Contact that names no address: the pool relays over the registered flow.
    async fn sign_in(edge: &Running, name: &'static str, echo: Echo) -> Remote {
        let mut conn = Conn::connect(edge.sip).await;
        let registered = conn
            .request(&register(
                "sip:fe1:5060;transport=tcp",
                name,
                format!("{name}.invalid"),
                &[],
            ))
            .await;
        assert_eq!(registered.status_code.code(), 200, "{name}: {registered}");
        Remote { name, conn, echo }
    }

    /// Sends an IM to `to`; the sender's final answer is read by [`Remote::acknowledged`].
    async fn send_im(&mut self, to: &str, body: &str) {
        let im = request(
            "MESSAGE",
            &format!("sip:{to}@pool.test"),
            self.name,
            to,
            format!("{}.invalid", self.name),
            &["Content-Type: text/plain".into()],
            body,
        );
        self.conn.send(im.as_bytes()).await;
    }

    /// The next IM the pool relays to this user, answered with `200`.
    async fn receive_im(&mut self) -> Request {
        let im = self.conn.incoming().await;
        assert_eq!(im.method, Method::Message, "{}: {im}", self.name);
        assert!(
            message::top_branch(&im.headers)
                .is_some_and(|b| b.starts_with(edge::relay::BRANCH_PREFIX)),
            "the Edge's Via is on top: {im}"
        );
        self.answer(&im, 200).await;
        im
    }

    async fn answer(&mut self, request: &Request, status: u16) {
        let mut response = message::response(request, status, "OK");
        if let Echo::FirstViaLine = self.echo {
            let first = request
                .headers
                .iter()
                .find(|h| name(h).eq_ignore_ascii_case("Via"))
                .map(|h| value(h).to_owned())
                .expect("a relayed request has a Via");
            response
                .headers
                .retain(|h| !name(h).eq_ignore_ascii_case("Via"));
            let mut headers = vec![Header::Other("Via".into(), first)];
            headers.extend(response.headers.iter().cloned());
            response.headers = headers.into();
        }
        self.conn.send(&message::encode(response)).await;
    }

    /// The final answer to this user's IM.
    async fn acknowledged(&mut self) -> u16 {
        self.conn.final_response().await.status_code.code()
    }

    /// Nothing more arrives within `within` (no second copy of an IM, no stray answer).
    async fn quiet_for(&mut self, within: Duration) {
        match self.conn.read(within).await {
            Read::Nothing => {}
            Read::Message(SipMessage::Request(r)) => panic!("{}: unexpected {r}", self.name),
            Read::Message(SipMessage::Response(r)) => panic!("{}: unexpected {r}", self.name),
            Read::Closed => panic!("{}: the Edge closed the connection", self.name),
        }
    }
}

/// Starts an Edge server whose pool name `fe1` resolves to `fe1` in this order: its clients' upstream connections
/// land on the first Front End of the list.
async fn edge_server(node: &str, fe1: Vec<std::net::SocketAddr>) -> Running {
    let config = EdgeConfig::new(identity(node, "edge"), Resolver::dns().pin("fe1", fe1));
    Running::start(move |l, stop| edge::run(l, config, stop)).await
}

/// One IM from `from` to `to`: the recipient's client gets it exactly once and answers 200, and only then does
/// the sender get 200.
async fn im_round_trip(from: &mut Remote, to: &mut Remote, body: &str) {
    from.send_im(to.name, body).await;
    let im = to.receive_im().await;
    assert_eq!(im.body, body.as_bytes(), "{} got {body:?}", to.name);
    assert_eq!(
        header(&im.headers, "From").map(|f| f.contains(from.name)),
        Some(true),
        "{im}"
    );
    assert_eq!(
        from.acknowledged().await,
        200,
        "{body:?}: {} got the IM and answered 200, so {} gets 200",
        to.name,
        from.name
    );
    assert!(
        headers_all(&im.headers, "Via").len() >= 3,
        "the recipient's Edge, the Front End and the sender's side: {im}"
    );
}

#[tokio::test]
async fn ims_between_remote_users_of_a_pool_are_acknowledged_once_delivered() {
    // Claim: an IM between two remote users of a pool of 3 reaches the recipient exactly once, and its sender
    // gets 200 because, and only after, the recipient's client answered 200, whichever Front Ends hold the two
    // connections and whether or not the client echoes every Via. Each IM is checked at both clients, both
    // directions, with nothing further arriving afterwards.
    let pool = TestPool::start_all(3, timings(60_000)).await;
    pool.settled().await;
    let s = &pool.sip;
    // edge1's clients land on the pool's first Front End, edge2's on its second.
    let edge1 = edge_server("edge1", vec![s[0], s[1], s[2]]).await;
    let edge2 = edge_server("edge2", vec![s[1], s[2], s[0]]).await;

    let mut alice = Remote::sign_in(&edge1, "alice", Echo::AllVias).await;
    let mut bob = Remote::sign_in(&edge2, "bob", Echo::FirstViaLine).await;
    let mut carol = Remote::sign_in(&edge1, "carol", Echo::FirstViaLine).await;

    // Bounded: a few rounds, each user's IMs checked one by one.
    for round in 0..3 {
        // Connections on different Front Ends: delivered over the pool's peer link.
        im_round_trip(&mut alice, &mut bob, &format!("alice to bob {round}")).await;
        im_round_trip(&mut bob, &mut alice, &format!("bob to alice {round}")).await;
        // Both connections on the same Front End, through the same Edge server.
        im_round_trip(&mut alice, &mut carol, &format!("alice to carol {round}")).await;
        im_round_trip(&mut carol, &mut alice, &format!("carol to alice {round}")).await;
        // Different Edge servers and Front Ends, both clients echoing only their first Via line.
        im_round_trip(&mut bob, &mut carol, &format!("bob to carol {round}")).await;
        im_round_trip(&mut carol, &mut bob, &format!("carol to bob {round}")).await;
    }
    for user in [&mut alice, &mut bob, &mut carol] {
        user.quiet_for(Duration::from_millis(500)).await;
    }
}
