//! SIP toxics on real loopback sockets, over UDP (one message per datagram) and TCP (framed by
//! the empty line and Content-Length, across and within segments), against a minimal registrar
//! that answers every request but ACK with 200 OK.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::support::*;

fn request(method: &str, cseq: u32) -> String {
    format!(
        "{method} sip:registrar.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@registrar.test>;tag=alice\r\n\
         To: <sip:alice@registrar.test>\r\n\
         Call-ID: call-{cseq}@test\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message
        .split("\r\n")
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
}

/// The registrar's 200 OK to `request`.
fn ok_for(request: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From"] {
        out.push_str(&format!("{name}: {}\r\n", header(request, name).unwrap()));
    }
    out.push_str(&format!(
        "To: {};tag=reg\r\n",
        header(request, "To").unwrap()
    ));
    for name in ["Call-ID", "CSeq"] {
        out.push_str(&format!("{name}: {}\r\n", header(request, name).unwrap()));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

type Seen = Arc<Mutex<Vec<String>>>;

/// A UDP registrar: records every message, answers requests other than ACK.
async fn udp_registrar() -> (SocketAddr, Seen) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_535];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
            record.lock().unwrap().push(message.clone());
            if !message.starts_with("SIP/2.0") && !message.starts_with("ACK ") {
                let _ = socket.send_to(ok_for(&message).as_bytes(), from).await;
            }
        }
    });
    (addr, seen)
}

/// Sends `message` and waits up to `wait` for one answer.
async fn udp_ask(
    client: &UdpSocket,
    to: SocketAddr,
    message: &str,
    wait: Duration,
) -> Option<String> {
    client.send_to(message.as_bytes(), to).await.unwrap();
    udp_receive(client, wait)
        .await
        .map(|bytes| String::from_utf8(bytes).unwrap())
}

fn cseq(message: &str) -> &str {
    header(message, "CSeq").unwrap()
}

#[tokio::test]
async fn sip_drop_takes_the_first_two_200_to_register_over_udp() {
    // Claim: the first two 200 OKs to REGISTER are dropped, later ones and the 200 to OPTIONS
    // pass; the registrar saw every request.
    let server = TestServer::start(1);
    let (registrar, seen) = udp_registrar().await;
    let listen = create_udp_proxy(server.api, "sip", registrar).await;
    add_toxic(
        server.api,
        "sip",
        r#"{"type":"sip_drop","attributes":{"status":200,"cseq_method":"REGISTER","first":2}}"#,
    )
    .await;
    let client = udp_client().await;
    let options = udp_ask(
        &client,
        listen,
        &request("OPTIONS", 1),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(options.as_deref().map(cseq), Some("1 OPTIONS"));
    for n in 2..=3 {
        assert_eq!(
            udp_ask(&client, listen, &request("REGISTER", n), 500 * MS).await,
            None
        );
    }
    for n in 4..=5 {
        let answer = udp_ask(
            &client,
            listen,
            &request("REGISTER", n),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(answer, Some(ok_for(&request("REGISTER", n))));
    }
    assert_eq!(seen.lock().unwrap().len(), 5);
    // The toxic says how many messages it picked (the harness's proof that it acted).
    let toxics = get(server.api, "/proxies/sip/toxics").await;
    assert_eq!(toxics.json()[0]["picked"], 2, "{toxics:?}");
}

/// A TCP registrar for one connection: reads the three REGISTERs (checking they arrived intact),
/// answers the first in three separate segments, then a keep-alive, the second and third joined
/// in one segment.
async fn tcp_registrar(expected: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut got = vec![0u8; expected.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            expected,
            "requests arrive intact"
        );
        let first = ok_for(&request("REGISTER", 1));
        let (a, rest) = first.split_at(10);
        let (b, c) = rest.split_at(rest.len() - 5);
        for piece in [a, b, c] {
            stream.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(30 * MS).await;
        }
        let joined = format!(
            "\r\n\r\n{}{}",
            ok_for(&request("REGISTER", 2)),
            ok_for(&request("REGISTER", 3))
        );
        stream.write_all(joined.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    addr
}

#[tokio::test]
async fn sip_drop_takes_the_first_200_to_register_over_tcp_across_and_within_segments() {
    // Claim: over TCP, the 200 split across three segments is dropped whole; the keep-alive and
    // the two 200s joined in one segment pass byte for byte; requests split and joined pass intact.
    let server = TestServer::start(1);
    let requests: String = (1..=3).map(|n| request("REGISTER", n)).collect();
    let registrar = tcp_registrar(requests.clone()).await;
    let listen = create_proxy(server.api, "sip", registrar).await;
    add_toxic(
        server.api,
        "sip",
        r#"{"type":"sip_drop","attributes":{"status":200,"cseq_method":"REGISTER","first":1}}"#,
    )
    .await;
    // A framing upstream too (it picks nothing): requests are cut and passed on whole.
    add_toxic(
        server.api,
        "sip",
        r#"{"type":"sip_drop","stream":"upstream","attributes":{"method":"BYE"}}"#,
    )
    .await;
    let mut client = connect(listen).await;
    let (head, tail) = requests.split_at(37);
    client.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(30 * MS).await;
    client.write_all(tail.as_bytes()).await.unwrap();
    let expected = format!(
        "\r\n\r\n{}{}",
        ok_for(&request("REGISTER", 2)),
        ok_for(&request("REGISTER", 3))
    );
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
        .await
        .expect("the answers arrive")
        .unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), expected);
}

fn assert_503(answer: &str, asked: &str) {
    assert!(
        answer.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{answer}"
    );
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        assert_eq!(header(answer, name), header(asked, name), "{name} copied");
    }
    let to = header(answer, "To").unwrap();
    assert!(
        to.starts_with(header(asked, "To").unwrap()) && to.contains(";tag=fp"),
        "{to}"
    );
    assert_eq!(header(answer, "Retry-After"), Some("30"));
    assert!(answer.ends_with("Content-Length: 0\r\n\r\n"));
}

const RESPOND_EVERY_THIRD: &str = r#"{"type":"sip_respond","stream":"upstream","attributes":{"method":"MESSAGE","every":3,"code":503,"retry_after":30}}"#;

#[tokio::test]
async fn sip_respond_answers_every_third_message_with_503_over_udp() {
    // Claim: MESSAGEs 3 and 6 are answered 503 with Retry-After by the proxy and never reach the
    // registrar; the others get the registrar's 200.
    let server = TestServer::start(1);
    let (registrar, seen) = udp_registrar().await;
    let listen = create_udp_proxy(server.api, "sip", registrar).await;
    add_toxic(server.api, "sip", RESPOND_EVERY_THIRD).await;
    let client = udp_client().await;
    for n in 1..=6 {
        let asked = request("MESSAGE", n);
        let answer = udp_ask(&client, listen, &asked, Duration::from_secs(10))
            .await
            .expect("an answer");
        if n % 3 == 0 {
            assert_503(&answer, &asked);
        } else {
            assert_eq!(answer, ok_for(&asked));
        }
    }
    let reached: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|m| cseq(m).to_owned())
        .collect();
    assert_eq!(
        reached,
        ["1 MESSAGE", "2 MESSAGE", "4 MESSAGE", "5 MESSAGE"]
    );
}

/// A TCP registrar that answers every request but ACK on every connection, framing by the empty
/// line (its requests carry no body); records what reached it.
async fn tcp_answering_registrar() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buffer).into_owned();
                    let mut used = 0;
                    for message in text.split_inclusive("\r\n\r\n") {
                        if !message.ends_with("\r\n\r\n") {
                            break;
                        }
                        used += message.len();
                        record.lock().unwrap().push(message.to_owned());
                        if !message.starts_with("ACK ") {
                            let _ = stream.write_all(ok_for(message).as_bytes()).await;
                        }
                    }
                    buffer.drain(..used);
                }
            });
        }
    });
    (addr, seen)
}

/// Reads one SIP message without body from `stream` (up to its empty line) within `wait`.
async fn tcp_read_message(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(wait, async {
        while !got.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            got.push(byte[0]);
        }
        Some(())
    })
    .await;
    match read {
        Ok(Some(())) => Some(String::from_utf8(got).unwrap()),
        _ => None,
    }
}

#[tokio::test]
async fn sip_respond_answers_every_third_message_with_503_over_tcp() {
    // Claim: the same over TCP: the proxy's 503 goes back on the client's connection, in order
    // with the registrar's answers.
    let server = TestServer::start(1);
    let (registrar, seen) = tcp_answering_registrar().await;
    let listen = create_proxy(server.api, "sip", registrar).await;
    add_toxic(server.api, "sip", RESPOND_EVERY_THIRD).await;
    let mut client = connect(listen).await;
    for n in 1..=6 {
        let asked = request("MESSAGE", n);
        client.write_all(asked.as_bytes()).await.unwrap();
        let answer = tcp_read_message(&mut client, Duration::from_secs(10))
            .await
            .expect("an answer");
        if n % 3 == 0 {
            assert_503(&answer, &asked);
        } else {
            assert_eq!(answer, ok_for(&asked));
        }
    }
    assert_eq!(seen.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn sip_hold_keeps_messages_until_removed_over_udp_and_tcp() {
    // Claim: held INVITEs reach nobody while the toxic is present and are delivered (and
    // answered) once it is removed; other requests pass meanwhile.
    let server = TestServer::start(1);
    let (udp_registrar, udp_seen) = udp_registrar().await;
    let (tcp_registrar, tcp_seen) = tcp_answering_registrar().await;
    let udp_listen = create_udp_proxy(server.api, "u", udp_registrar).await;
    let tcp_listen = create_proxy(server.api, "t", tcp_registrar).await;
    let hold = r#"{"type":"sip_hold","stream":"upstream","attributes":{"method":"INVITE"}}"#;
    add_toxic(server.api, "u", hold).await;
    add_toxic(server.api, "t", hold).await;

    let client = udp_client().await;
    let mut stream = connect(tcp_listen).await;
    assert_eq!(
        udp_ask(&client, udp_listen, &request("INVITE", 1), 500 * MS).await,
        None
    );
    stream
        .write_all(request("INVITE", 1).as_bytes())
        .await
        .unwrap();
    assert_eq!(tcp_read_message(&mut stream, 500 * MS).await, None);
    let options = udp_ask(
        &client,
        udp_listen,
        &request("OPTIONS", 2),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(options.as_deref().map(cseq), Some("2 OPTIONS"));
    stream
        .write_all(request("OPTIONS", 2).as_bytes())
        .await
        .unwrap();
    let options = tcp_read_message(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(options.as_deref().map(cseq), Some("2 OPTIONS"));
    assert_eq!(udp_seen.lock().unwrap().len(), 1);
    assert_eq!(tcp_seen.lock().unwrap().len(), 1);

    for proxy in ["u", "t"] {
        let removed = delete(
            server.api,
            &format!("/proxies/{proxy}/toxics/sip_hold_upstream"),
        )
        .await;
        assert_eq!(removed.status, 204);
    }
    let released = udp_receive(&client, Duration::from_secs(10))
        .await
        .expect("released");
    assert_eq!(cseq(std::str::from_utf8(&released).unwrap()), "1 INVITE");
    let released = tcp_read_message(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(released.as_deref().map(cseq), Some("1 INVITE"));
}

#[tokio::test]
async fn sip_delay_delays_matching_messages_only_over_udp() {
    // Claim: a 300 ms delay on REGISTER makes its round trip take at least 300 ms; OPTIONS is not
    // held back by it (its answer arrives before the delayed REGISTER's).
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let (registrar, _) = udp_registrar().await;
    let listen = create_udp_proxy(server.api, "sip", registrar).await;
    add_toxic(
        server.api,
        "sip",
        r#"{"type":"sip_delay","stream":"upstream","attributes":{"method":"REGISTER","delay":300}}"#,
    )
    .await;
    let client = udp_client().await;
    let started = Instant::now();
    let answer = udp_ask(
        &client,
        listen,
        &request("REGISTER", 1),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(answer.as_deref().map(cseq), Some("1 REGISTER"));
    let rtt = started.elapsed();
    assert!(rtt >= 299 * MS && rtt < 3000 * MS, "rtt {rtt:?}");
    client
        .send_to(request("REGISTER", 2).as_bytes(), listen)
        .await
        .unwrap();
    client
        .send_to(request("OPTIONS", 3).as_bytes(), listen)
        .await
        .unwrap();
    let first = udp_receive(&client, Duration::from_secs(10)).await.unwrap();
    let second = udp_receive(&client, Duration::from_secs(10)).await.unwrap();
    assert_eq!(cseq(std::str::from_utf8(&first).unwrap()), "3 OPTIONS");
    assert_eq!(cseq(std::str::from_utf8(&second).unwrap()), "2 REGISTER");
}

#[tokio::test]
async fn bad_sip_toxic_bodies_get_clear_errors() {
    let server = TestServer::start(1);
    create_proxy(server.api, "sip", echo_server().await).await;
    for (body, says) in [
        (
            r#"{"type":"sip_respond","attributes":{"status":200}}"#,
            "sip_respond answers requests",
        ),
        (
            r#"{"type":"sip_respond","attributes":{"method":"ACK"}}"#,
            "never answers ACK",
        ),
        (
            r#"{"type":"sip_drop","attributes":{"status":"OK"}}"#,
            "attribute status must be a SIP status code",
        ),
        (
            r#"{"type":"sip_drop","attributes":{"header":{"name":"Via"}}}"#,
            "attribute header must be",
        ),
        (
            r#"{"type":"sip_delay","attributes":{"probability":2}}"#,
            "attribute probability must be a number in [0, 1]",
        ),
    ] {
        let reply = post(server.api, "/proxies/sip/toxics", body).await;
        assert_eq!(reply.status, 400, "{body}");
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.starts_with("bad request body: ") && error.contains(says),
            "{body}: {error}"
        );
    }
}

#[tokio::test]
async fn sip_delay_delays_matching_messages_over_tcp() {
    // Claim: over TCP a 300 ms delay on the 200 to REGISTER makes that round trip take at least
    // 300 ms, and the answer arrives whole and unchanged.
    let _machine = MACHINE.read().await;
    let server = TestServer::start(1);
    let (registrar, _) = tcp_answering_registrar().await;
    let listen = create_proxy(server.api, "sip", registrar).await;
    add_toxic(
        server.api,
        "sip",
        r#"{"type":"sip_delay","attributes":{"status":200,"cseq_method":"REGISTER","delay":300}}"#,
    )
    .await;
    let mut client = connect(listen).await;
    let asked = request("REGISTER", 1);
    let started = Instant::now();
    client.write_all(asked.as_bytes()).await.unwrap();
    let answer = tcp_read_message(&mut client, Duration::from_secs(10)).await;
    let rtt = started.elapsed();
    assert_eq!(answer, Some(ok_for(&asked)));
    assert!(rtt >= 299 * MS && rtt < 3000 * MS, "rtt {rtt:?}");
}
