//! Overload: beyond the in-flight budget, 503 with Retry-After at once.

use std::time::Duration;

use poolnode::frontend::{Credentials, FrontEndConfig};

use crate::support::*;

/// Claim: with two requests in flight (IMs waiting on a recipient that does not answer) and a budget of two, a
/// third request gets 503 with Retry-After; once they end, requests are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_budget_get_503_with_retry_after() {
    let server = Server::start(FrontEndConfig {
        credentials: Credentials::open(),
        requests_in_flight_max: 2,
        retry_after: Duration::from_secs(7),
        im_answer_timeout: Duration::from_secs(3),
        ..FrontEndConfig::default()
    })
    .await;
    let mut bob = TcpClient::connect(server.addr).await;
    bob.request(&register(server.addr, "bob", bob.local(), "TCP", 300, &[]))
        .await;
    let mut alice = TcpClient::connect(server.addr).await;
    for text in ["one", "two"] {
        let im = request(
            "MESSAGE",
            "sip:bob@pool.test",
            "alice",
            "bob",
            alice.local(),
            "TCP",
            &["Content-Type: text/plain".into()],
            text,
        );
        alice.send(im.as_bytes()).await;
        // Bob receives it but does not answer: the request stays in flight.
        assert_eq!(bob.incoming().await.body, text.as_bytes());
    }
    let mut carol = TcpClient::connect(server.addr).await;
    let refused = carol.request(&options(server.addr, "carol")).await;
    assert_eq!(refused.status_code.code(), 503);
    assert_eq!(value(&refused, "Retry-After"), "7");

    // Both IMs time out (408), freeing the budget.
    assert_eq!(alice.response().await.status_code.code(), 408);
    assert_eq!(alice.response().await.status_code.code(), 408);
    assert_eq!(
        carol
            .request(&options(server.addr, "carol"))
            .await
            .status_code
            .code(),
        200
    );
    server.stop().await;
}
