//! The Front End's request dispatch: the quorum rule, pool pairing and overload first, then each method to its
//! handler; `run` and `serve` put a standalone Front End on its listeners.

use std::sync::Arc;

use rsip::{Method, Request, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::error::FrontEndError;
use super::server::{FrontEnd, FrontEndConfig, Refusal, ALLOW};
use super::{contacts, im, presence, registrar, resiliency};
use crate::sip::message;
use crate::sip::{Handler, Listeners, Peer, Reply};

impl FrontEnd {
    /// Whether a PUBLISH is a persistent change refused in resiliency mode: presence, or contact list `add` and
    /// `remove` (a listing only reads the replicas, so it is served).
    fn refused_in_resiliency_mode(&self, request: &Request) -> bool {
        if self.resiliency_mode() != Some(true) {
            return false;
        }
        if !contacts::is_contacts(request) {
            return true;
        }
        std::str::from_utf8(&request.body)
            .ok()
            .and_then(contacts::parse)
            .is_some_and(|commands| {
                commands
                    .iter()
                    .any(|c| !matches!(c, contacts::Command::List))
            })
    }

    fn options(request: &Request) -> Response {
        let mut response = message::response(request, 200, "OK");
        message::push(&mut response.headers, "Allow", ALLOW);
        message::push(
            &mut response.headers,
            "Accept",
            "application/pidf+xml, text/plain, application/vnd.poolchaos.contacts",
        );
        message::push(
            &mut response.headers,
            "Allow-Events",
            "presence, vnd-poolchaos-contacts",
        );
        response
    }

    fn overloaded(&self, request: &Request) -> Response {
        message::unavailable(request, "Overloaded", self.overload.retry_after)
    }
}

impl FrontEnd {
    /// Answers one request (the overload permit is the caller's).
    async fn dispatch(&self, request: Request, peer: Peer) -> Reply {
        if let Some(reply) = self.in_call(&request, &peer) {
            return reply;
        }
        match request.method {
            Method::Register => {
                let mut response = registrar::register(self, &request, &peer).await;
                if let (Some(on), 200) = (self.resiliency_mode(), response.status_code.code()) {
                    message::push(
                        &mut response.headers,
                        resiliency::HEADER,
                        resiliency::word(on),
                    );
                }
                if let Some(pairing) = self.pairing() {
                    response = pairing.registered(&request, &peer, response);
                }
                Reply::Response(response)
            }
            Method::Publish if self.refused_in_resiliency_mode(&request) => {
                Reply::Response(resiliency::refusal(&request))
            }
            Method::Options => Reply::Response(Self::options(&request)),
            Method::Message => im::message(self, request, peer).await,
            Method::Publish if contacts::is_contacts(&request) => {
                Reply::Response(contacts::handle(self, &request, &peer).await)
            }
            Method::Publish => presence::publish(self, &request, &peer).await,
            Method::Subscribe => presence::subscribe(self, &request, &peer).await,
            Method::Bye
            | Method::Cancel
            | Method::Notify
            | Method::Info
            | Method::Update
            | Method::PRack
            | Method::Refer => Reply::Response(message::response(
                &request,
                481,
                "Call/Transaction Does Not Exist",
            )),
            Method::Invite if self.pool().is_some() => self.invite(request, peer),
            Method::Invite => {
                let mut response = message::response(&request, 405, "Method Not Allowed");
                message::push(&mut response.headers, "Allow", ALLOW);
                Reply::Response(response)
            }
            Method::Ack => Reply::Nothing,
        }
    }
}

impl Handler for FrontEnd {
    async fn handle(&self, request: Request, peer: Peer) -> Reply {
        if request.method == Method::Ack {
            // An ACK inside a call is relayed to the other end; any other gets nothing.
            let _ = self.in_call(&request, &peer);
            return Reply::Nothing;
        }
        if let Some(reason) = self.pool().and_then(|p| p.quorum_state().reason()) {
            // Below quorum (or not started) every Front End of the pool stops serving: no split service.
            return Reply::Response(Refusal(reason).response(&request));
        }
        if let Some(response) = self.pairing().and_then(|p| p.screen(&request)) {
            // Pool pairing: a user who belongs elsewhere now, or is in resiliency mode at its backup registrar.
            return Reply::Response(response);
        }
        let Some(permit) = self.overload.admit() else {
            return Reply::Response(self.overloaded(&request));
        };
        let this = self.arc();
        if let (
            Some(this),
            Method::Register | Method::Publish | Method::Message | Method::Subscribe,
        ) = (this, &request.method)
        {
            // These wait on the user's routing group, whose primary may be another Front End, or none for a while:
            // worked out off the connection's read loop, so the connection's next requests are not held up behind
            // them. A pooled write waits for its replication; an IM or a subscription looks up the other user.
            // RFC 3261 10.2 has a client wait for a REGISTER's answer before the next one for the same AOR.
            return Reply::Later(Box::pin(async move {
                let reply = this.dispatch(request, peer).await;
                holding(reply, permit)
            }));
        }
        holding(self.dispatch(request, peer).await, permit)
    }
}

/// The reply, with the overload permit held until its answer leaves (a relay that waits included).
fn holding(reply: Reply, permit: OwnedSemaphorePermit) -> Reply {
    match reply {
        Reply::Deferred(future) => Reply::Deferred(Box::pin(async move {
            let _permit = permit;
            future.await
        })),
        Reply::Later(future) => Reply::Later(Box::pin(async move {
            let reply = future.await;
            holding(reply, permit)
        })),
        other => other,
    }
}

/// Serves `listeners` as one Front End until `shutdown` completes.
pub async fn run(
    listeners: Listeners,
    config: FrontEndConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), FrontEndError> {
    serve(listeners, Arc::new(FrontEnd::new(config)), shutdown).await
}

/// Serves with a Front End the caller keeps a handle on (tests read its store).
pub async fn serve(
    listeners: Listeners,
    frontend: Arc<FrontEnd>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), FrontEndError> {
    let sweeper = {
        let frontend = frontend.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(frontend.config.sweep_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Ends when aborted at shutdown.
            loop {
                tick.tick().await;
                frontend.sweep();
            }
        })
    };
    let transport = frontend.config.transport.clone();
    let result = crate::sip::run(listeners, frontend, transport, shutdown).await;
    sweeper.abort();
    Ok(result?)
}
