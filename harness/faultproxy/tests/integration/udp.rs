//! UDP proxies on real loopback sockets: flows kept apart, and each datagram toxic measured at a
//! real UDP echo server. Shares are checked with wide bounds over thousands of datagrams; exact
//! claims use lock-step exchanges, so no socket buffer can drop anything on its own.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const SETTLE: Duration = Duration::from_millis(400);

#[tokio::test]
async fn udp_proxy_forwards_both_ways_and_keeps_flows_apart() {
    // Claim: two clients each get back only their own datagrams, and the server sees each client
    // from its own, stable upstream address; the API reports the protocol.
    let server = TestServer::start(1);
    let echo = UdpEcho::start().await;
    let listen = create_udp_proxy(server.api, "sip", echo.addr).await;
    assert_eq!(
        get(server.api, "/proxies").await.json()["sip"]["protocol"],
        "udp"
    );
    let (a, b) = (udp_client().await, udp_client().await);
    for round in 0..20u8 {
        for (client, tag) in [(&a, b'a'), (&b, b'b')] {
            client.send_to(&[tag, round], listen).await.unwrap();
            let back = udp_receive(client, Duration::from_secs(10)).await;
            assert_eq!(back, Some(vec![tag, round]), "client {}", tag as char);
        }
    }
    let seen = echo.seen();
    let sources = |tag: u8| -> BTreeSet<_> {
        seen.iter()
            .filter(|(_, payload, _)| payload[0] == tag)
            .map(|(from, _, _)| *from)
            .collect()
    };
    let (from_a, from_b) = (sources(b'a'), sources(b'b'));
    assert_eq!(
        (from_a.len(), from_b.len()),
        (1, 1),
        "{from_a:?} {from_b:?}"
    );
    assert_ne!(from_a, from_b, "each client has its own upstream socket");
    assert!(from_a.iter().all(|addr| *addr != listen));
}

/// Sends 2000 numbered datagrams through a proxy carrying `toxic` upstream; returns what the
/// echo server received, in arrival order.
async fn numbered_through(toxic: &str, count: u32, size: usize) -> Vec<(Vec<u8>, Instant)> {
    let server = TestServer::start(1);
    let echo = UdpEcho::start().await;
    let listen = create_udp_proxy(server.api, "u", echo.addr).await;
    add_toxic(server.api, "u", toxic).await;
    let client = udp_client().await;
    udp_send_numbered(&client, listen, count, size).await;
    echo.settle(SETTLE)
        .await
        .into_iter()
        .map(|(_, payload, at)| (payload, at))
        .collect()
}

#[tokio::test]
async fn udp_loss_drops_about_its_probability() {
    // Claim: loss 0.3 over 2000 datagrams loses between 20 % and 40 %.
    let got = numbered_through(
        r#"{"type":"loss","stream":"upstream","attributes":{"probability":0.3}}"#,
        2000,
        32,
    )
    .await;
    let lost = 2000 - got.len();
    assert!((400..=800).contains(&lost), "lost {lost} of 2000");
}

#[tokio::test]
async fn udp_loss_burst_loses_in_runs() {
    // Claim: Gilbert-Elliott loss (p 0.05, r 0.2: mean run 5) loses in runs far longer than
    // independent loss of the same share would (mean run about 1.2).
    let got = numbered_through(
        r#"{"type":"loss_burst","stream":"upstream","attributes":{"p":0.05,"r":0.2}}"#,
        2000,
        32,
    )
    .await;
    let arrived: BTreeSet<u32> = got.iter().map(|(p, _)| sequence(p)).collect();
    let lost: Vec<u32> = (0..2000).filter(|seq| !arrived.contains(seq)).collect();
    let runs = lost.windows(2).filter(|w| w[1] != w[0] + 1).count() + 1;
    let mean_run = lost.len() as f64 / runs as f64;
    assert!(lost.len() >= 100, "some loss: {}", lost.len());
    assert!(mean_run >= 2.5, "{} lost in {runs} runs", lost.len());
}

#[tokio::test]
async fn udp_duplicate_sends_each_datagram_twice() {
    // Claim: duplicate with probability 1 delivers every datagram exactly twice.
    let got = numbered_through(
        r#"{"type":"duplicate","stream":"upstream","attributes":{"probability":1}}"#,
        100,
        32,
    )
    .await;
    let mut counts = [0u32; 100];
    for (payload, _) in &got {
        counts[sequence(payload) as usize] += 1;
    }
    assert!(counts.iter().all(|n| *n == 2), "{counts:?}");
}

#[tokio::test]
async fn udp_reorder_lets_later_datagrams_overtake() {
    // Claim: reorder (30 % held back 50 ms) delivers every datagram, some after later ones.
    let got = numbered_through(
        r#"{"type":"reorder","stream":"upstream","attributes":{"probability":0.3,"delay":50}}"#,
        200,
        32,
    )
    .await;
    let order: Vec<u32> = got.iter().map(|(p, _)| sequence(p)).collect();
    assert_eq!(
        order.iter().collect::<BTreeSet<_>>().len(),
        200,
        "all arrive"
    );
    // A datagram was overtaken when a later-numbered one arrived before it.
    let mut highest = 0;
    let mut overtaken = 0;
    for seq in &order {
        if *seq < highest {
            overtaken += 1;
        }
        highest = highest.max(*seq);
    }
    assert!(
        (20..=120).contains(&overtaken),
        "{overtaken} overtaken in {order:?}"
    );
}

#[tokio::test]
async fn udp_corrupt_flips_one_bit() {
    // Claim: corrupt with probability 1 changes exactly one bit of every datagram.
    let server = TestServer::start(1);
    let echo = UdpEcho::start().await;
    let listen = create_udp_proxy(server.api, "u", echo.addr).await;
    add_toxic(
        server.api,
        "u",
        r#"{"type":"corrupt","stream":"upstream","attributes":{"probability":1}}"#,
    )
    .await;
    let client = udp_client().await;
    let sent: Vec<u8> = (0..64).collect();
    for _ in 0..20 {
        client.send_to(&sent, listen).await.unwrap();
        let back = udp_receive(&client, Duration::from_secs(10)).await.unwrap();
        let flipped: u32 = back
            .iter()
            .zip(&sent)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!((back.len(), flipped), (sent.len(), 1));
    }
}

#[tokio::test]
async fn udp_latency_adds_its_amount_and_removal_restores() {
    // Claim: 200 ms upstream latency makes each round trip take at least 200 ms; removing it
    // brings round trips back under that.
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let echo = UdpEcho::start().await;
    let listen = create_udp_proxy(server.api, "u", echo.addr).await;
    add_toxic(
        server.api,
        "u",
        r#"{"type":"latency","stream":"upstream","attributes":{"latency":200}}"#,
    )
    .await;
    let client = udp_client().await;
    for round in 0..3u8 {
        let started = Instant::now();
        client.send_to(&[round], listen).await.unwrap();
        assert_eq!(
            udp_receive(&client, Duration::from_secs(10)).await,
            Some(vec![round])
        );
        let rtt = started.elapsed();
        assert!(rtt >= 199 * MS && rtt < 1200 * MS, "rtt {rtt:?}");
    }
    let removed = delete(server.api, "/proxies/u/toxics/latency_upstream").await;
    assert_eq!(removed.status, 204);
    let started = Instant::now();
    client.send_to(b"x", listen).await.unwrap();
    assert!(udp_receive(&client, Duration::from_secs(10))
        .await
        .is_some());
    assert!(started.elapsed() < 190 * MS, "{:?}", started.elapsed());
}

#[tokio::test]
async fn udp_bandwidth_caps_the_rate() {
    // Claim: at 100 KB/s, 50 datagrams of 1000 bytes take at least 0.5 s to arrive.
    let started = Instant::now();
    let got = numbered_through(
        r#"{"type":"bandwidth","stream":"upstream","attributes":{"rate":100}}"#,
        50,
        1000,
    )
    .await;
    assert_eq!(got.len(), 50);
    let last = got.iter().map(|(_, at)| *at).max().unwrap();
    let took = last - started;
    assert!(took >= 495 * MS && took < 10 * 1000 * MS, "took {took:?}");
}

#[tokio::test]
async fn udp_down_drops_everything_until_enabled() {
    // Claim: enabled=false drops every datagram; enabled=true forwards again on the same port.
    let server = TestServer::start(1);
    let echo = UdpEcho::start().await;
    let listen = create_udp_proxy(server.api, "u", echo.addr).await;
    let client = udp_client().await;
    client.send_to(b"up", listen).await.unwrap();
    assert!(udp_receive(&client, Duration::from_secs(10))
        .await
        .is_some());
    let down = post(server.api, "/proxies/u", r#"{"enabled":false}"#).await;
    assert_eq!(down.status, 200);
    for _ in 0..5 {
        let _ = client.send_to(b"down", listen).await;
    }
    assert_eq!(udp_receive(&client, 500 * MS).await, None);
    assert!(echo.seen().iter().all(|(_, payload, _)| payload != b"down"));
    let up = post(server.api, "/proxies/u", r#"{"enabled":true}"#).await;
    assert_eq!(up.json()["listen"], listen.to_string());
    client.send_to(b"again", listen).await.unwrap();
    assert_eq!(
        udp_receive(&client, Duration::from_secs(10)).await,
        Some(b"again".to_vec())
    );
}

#[tokio::test]
async fn udp_loss_removal_restores_delivery() {
    // Claim: loss 1 drops everything on a live flow; removing it delivers again.
    let server = TestServer::start(1);
    let echo = UdpEcho::start().await;
    let listen = create_udp_proxy(server.api, "u", echo.addr).await;
    let client = udp_client().await;
    client.send_to(b"1", listen).await.unwrap();
    assert!(udp_receive(&client, Duration::from_secs(10))
        .await
        .is_some());
    add_toxic(
        server.api,
        "u",
        r#"{"type":"loss","attributes":{"probability":1}}"#,
    )
    .await;
    client.send_to(b"2", listen).await.unwrap();
    assert_eq!(udp_receive(&client, 500 * MS).await, None);
    assert_eq!(
        delete(server.api, "/proxies/u/toxics/loss_downstream")
            .await
            .status,
        204
    );
    client.send_to(b"3", listen).await.unwrap();
    assert_eq!(
        udp_receive(&client, Duration::from_secs(10)).await,
        Some(b"3".to_vec())
    );
}

/// Which of 100 lock-step datagrams came back through a loss 0.3 toxic on a server with `seed`.
async fn loss_pattern(seed: u64) -> BTreeSet<u32> {
    let server = TestServer::start(seed);
    let echo = UdpEcho::start().await;
    let listen = create_udp_proxy(server.api, "u", echo.addr).await;
    add_toxic(
        server.api,
        "u",
        r#"{"type":"loss","stream":"upstream","attributes":{"probability":0.3}}"#,
    )
    .await;
    let client = udp_client().await;
    let mut back = BTreeSet::new();
    for seq in 0..100u32 {
        client.send_to(&seq.to_be_bytes(), listen).await.unwrap();
        // A late answer is still counted: it arrives while waiting for a later one.
        while let Some(payload) = udp_receive(&client, 30 * MS).await {
            back.insert(sequence(&payload));
            if sequence(&payload) == seq {
                break;
            }
        }
    }
    while let Some(payload) = udp_receive(&client, 300 * MS).await {
        back.insert(sequence(&payload));
    }
    back
}

#[tokio::test]
async fn udp_same_seed_replays_the_loss_pattern() {
    // Claim: two servers with seed 7 lose exactly the same datagrams of a flow; seed 8 differs.
    let first = loss_pattern(7).await;
    assert_eq!(first, loss_pattern(7).await);
    assert!((50..95).contains(&first.len()), "{}", first.len());
    assert_ne!(first, loss_pattern(8).await);
}

#[tokio::test]
async fn toxic_types_of_the_other_protocol_are_refused() {
    // Claim: a stream-only type on a UDP proxy and a datagram type on a TCP proxy get a 400 that
    // names the type and the protocol; shared types are accepted on both.
    let server = TestServer::start(1);
    let api = server.api;
    create_udp_proxy(api, "u", UdpEcho::start().await.addr).await;
    create_proxy(api, "t", echo_server().await).await;
    for (proxy, type_name, protocol) in [
        ("u", "slicer", "udp"),
        ("u", "timeout", "udp"),
        ("t", "loss", "tcp"),
        ("t", "reorder", "tcp"),
    ] {
        let reply = post(
            api,
            &format!("/proxies/{proxy}/toxics"),
            &format!(r#"{{"type":"{type_name}"}}"#),
        )
        .await;
        assert_eq!(reply.status, 400, "{type_name} on {protocol}");
        assert_eq!(
            reply.json(),
            json!({"error": format!("toxic type {type_name} does not act on a {protocol} proxy"), "status": 400})
        );
    }
    for proxy in ["u", "t"] {
        for type_name in ["latency", "bandwidth", "sip_drop"] {
            add_toxic(api, proxy, &format!(r#"{{"type":"{type_name}"}}"#)).await;
        }
    }
    let bad = post(
        api,
        "/proxies",
        r#"{"name":"x","upstream":"127.0.0.1:1","protocol":"sctp"}"#,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]
        .as_str()
        .unwrap()
        .contains("protocol must be tcp or udp"));
}

#[tokio::test]
async fn datagram_and_sip_types_show_their_default_attributes() {
    let server = TestServer::start(1);
    let api = server.api;
    create_udp_proxy(api, "u", UdpEcho::start().await.addr).await;
    let rule = json!({"every":1,"first":0,"probability":1.0});
    let with = |extra: serde_json::Value| {
        let mut attributes = rule.clone();
        for (key, value) in extra.as_object().unwrap() {
            attributes[key] = value.clone();
        }
        attributes
    };
    let expected = [
        ("loss", json!({"probability":0.0})),
        (
            "loss_burst",
            json!({"p":0.0,"r":1.0,"loss_good":0.0,"loss_bad":1.0}),
        ),
        ("duplicate", json!({"probability":0.0})),
        ("reorder", json!({"probability":0.0,"delay":10})),
        ("corrupt", json!({"probability":0.0})),
        ("sip_drop", rule.clone()),
        ("sip_hold", rule.clone()),
        ("sip_delay", with(json!({"delay":0}))),
        (
            "sip_respond",
            with(json!({"code":503,"reason":"Service Unavailable"})),
        ),
    ];
    for (type_name, attributes) in expected {
        let body = format!(r#"{{"type":"{type_name}","toxicity":0}}"#);
        let toxic = add_toxic(api, "u", &body).await;
        assert_eq!(toxic["attributes"], attributes, "{type_name}");
    }
}

#[tokio::test]
async fn the_tunnel_carries_datagrams_from_a_socket_of_each_stream_s_own() {
    // Claim: `DATAGRAM host:port` turns the tunnel stream into length-prefixed datagrams: each one written
    // arrives at the UDP server whole, from one source port per stream (two streams, two ports), and each
    // answer comes back as one frame, in order.
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let echo = UdpEcho::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tunnel = listener.local_addr().unwrap();
    tokio::spawn(faultproxy::tunnel::serve(listener));
    let open = || async {
        let stream = tokio::net::TcpStream::connect(tunnel).await.unwrap();
        let mut stream = BufReader::new(stream);
        stream
            .get_mut()
            .write_all(format!("DATAGRAM {}\n", echo.addr).as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert_eq!(line, format!("OK {}\n", echo.addr));
        stream
    };
    let (mut a, mut b) = (open().await, open().await);
    for round in 0..10u8 {
        for (stream, tag) in [(&mut a, b'a'), (&mut b, b'b')] {
            // Two datagrams in one write: they stay two.
            let payloads = [vec![tag, round], vec![tag, round, 9, 9, 9]];
            let mut frames = Vec::new();
            for p in &payloads {
                frames.extend_from_slice(&(p.len() as u16).to_be_bytes());
                frames.extend_from_slice(p);
            }
            stream.get_mut().write_all(&frames).await.unwrap();
            for p in &payloads {
                let mut len = [0u8; 2];
                tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut len))
                    .await
                    .expect("an answer in time")
                    .unwrap();
                let mut back = vec![0u8; u16::from_be_bytes(len) as usize];
                stream.read_exact(&mut back).await.unwrap();
                assert_eq!(&back, p, "stream {}", tag as char);
            }
        }
    }
    let seen = echo.seen();
    let sources = |tag: u8| -> BTreeSet<_> {
        seen.iter()
            .filter(|(_, payload, _)| payload[0] == tag)
            .map(|(from, _, _)| *from)
            .collect()
    };
    assert_eq!(seen.len(), 40, "every datagram arrived once");
    let (from_a, from_b) = (sources(b'a'), sources(b'b'));
    assert_eq!(
        (from_a.len(), from_b.len()),
        (1, 1),
        "one source per stream"
    );
    assert_ne!(from_a, from_b, "each stream its own socket");
}
