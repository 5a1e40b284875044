//! Claim: every malformed message in the corpus gets its error response or a clean close, and the server (and,
//! where the stream can be resynchronized, the connection) keeps serving.
//! Why it proves it: each case checks the exact status sequence, then either that the same connection still
//! answers OPTIONS or that it was closed, and the server answers a fresh connection after the whole corpus.

use crate::support::*;

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Shut our write side after sending (a truncated message's end).
    half_close: bool,
    /// Statuses of the responses expected, in order.
    statuses: Vec<u16>,
    /// The server must close the connection after those responses.
    closes: bool,
}

fn options_with(server: std::net::SocketAddr, edit: impl Fn(String) -> String) -> Vec<u8> {
    edit(options(server, "alice")).into_bytes()
}

fn corpus(server: std::net::SocketAddr) -> Vec<Case> {
    let valid = options(server, "alice");
    let case = |name, bytes: Vec<u8>, statuses: Vec<u16>, closes| Case {
        name,
        bytes,
        half_close: false,
        statuses,
        closes,
    };
    vec![
        Case {
            name: "truncated body at end of stream",
            bytes: options_with(server, |t| t.replace("Content-Length: 0\r\n\r\n", "Content-Length: 100\r\n\r\nonly ten b")),
            half_close: true,
            statuses: vec![400],
            closes: true,
        },
        case(
            "Content-Length too short, the rest runs into the next message",
            [options_with(server, |t| t.replace("Content-Length: 0\r\n\r\n", "Content-Length: 2\r\n\r\nhello")), valid.clone().into_bytes()].concat(),
            vec![200, 400],
            false,
        ),
        case("negative Content-Length", options_with(server, |t| t.replace("Content-Length: 0", "Content-Length: -5")), vec![400], true),
        case("non-numeric Content-Length", options_with(server, |t| t.replace("Content-Length: 0", "Content-Length: abc")), vec![400], true),
        case("two different Content-Lengths", options_with(server, |t| t.replace("Content-Length: 0", "Content-Length: 0\r\nl: 7")), vec![400], true),
        case("missing Content-Length on a stream", options_with(server, |t| t.replace("Content-Length: 0\r\n", "")), vec![400], false),
        case("missing Via", options_with(server, |t| without_line(&t, "Via:")), vec![400], false),
        case("missing From", options_with(server, |t| without_line(&t, "From:")), vec![400], false),
        case("missing To", options_with(server, |t| without_line(&t, "To:")), vec![400], false),
        case("missing Call-ID", options_with(server, |t| without_line(&t, "Call-ID:")), vec![400], false),
        case("missing CSeq", options_with(server, |t| without_line(&t, "CSeq:")), vec![400], false),
        case("CSeq method not matching the request", options_with(server, |t| t.replace("CSeq: 1 OPTIONS", "CSeq: 1 REGISTER")), vec![400], false),
        case("CSeq without a number", options_with(server, |t| t.replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS")), vec![400], false),
        case(
            "huge header line",
            options_with(server, |t| t.replace("Max-Forwards: 70", &format!("X-Huge: {}", "a".repeat(20_000)))),
            vec![513],
            true,
        ),
        case(
            "header line over the line limit but section within",
            options_with(server, |t| t.replace("Max-Forwards: 70", &format!("X-Long: {}", "a".repeat(9_000)))),
            vec![513],
            false,
        ),
        case(
            "too many header lines",
            options_with(server, |t| t.replace("Max-Forwards: 70", "X-Many: 1\r\n".repeat(200).trim_end())),
            vec![513],
            false,
        ),
        case("body over the limit", options_with(server, |t| t.replace("Content-Length: 0", "Content-Length: 1000000")), vec![413], true),
        case("NUL byte in a header value", options_with(server, |t| t.replace("Max-Forwards: 70", "Subject: a\0b")), vec![400], false),
        case("invalid UTF-8 in a header value", options_with(server, |t| t.replace("Max-Forwards: 70", "Subject: \u{00ff}")).into_iter().map(|b| if b == 0xc3 { 0xff } else { b }).collect(), vec![400], false),
        case("header line without a colon", options_with(server, |t| t.replace("Max-Forwards: 70", "Max-Forwards 70")), vec![400], false),
        case("unknown method", options_with(server, |t| t.replacen("OPTIONS", "FROB", 1).replace("CSeq: 1 OPTIONS", "CSeq: 1 FROB")), vec![400], false),
        case("binary garbage with a line end", b"\x00\x01\x02\xff\xfe garbage \x07\r\nmore\r\n".to_vec(), vec![], true),
        case("binary garbage without a line end", vec![0xAB; 3_000], vec![], true),
        case("a bad request line", b"HELLO\r\n\r\n".to_vec(), vec![], true),
        case(
            "pipelined valid, invalid, valid",
            [valid.clone(), options(server, "alice").replace("CSeq: 1 OPTIONS", "CSeq: 1 MESSAGE"), valid.clone()].concat().into_bytes(),
            vec![200, 400, 200],
            false,
        ),
        case("an unsolicited response is ignored", b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKstray\r\nContent-Length: 0\r\n\r\n".to_vec(), vec![], false),
    ]
}

fn without_line(text: &str, prefix: &str) -> String {
    text.split("\r\n")
        .filter(|l| !l.starts_with(prefix))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_message_gets_an_error_or_a_clean_close_over_tcp() {
    let server = Server::open().await;
    for case in corpus(server.addr) {
        let mut client = TcpClient::connect(server.addr).await;
        client.send(&case.bytes).await;
        if case.half_close {
            use tokio::io::AsyncWriteExt;
            client.stream.shutdown().await.unwrap();
        }
        for expected in &case.statuses {
            let response = client.response().await;
            assert_eq!(
                response.status_code.code(),
                *expected,
                "case `{}`: {response}",
                case.name
            );
            if *expected >= 400 {
                assert!(
                    response.status_code.to_string().len() > 4,
                    "case `{}` has no reason phrase",
                    case.name
                );
            }
        }
        if case.closes {
            assert!(
                client.closed().await,
                "case `{}`: connection not closed",
                case.name
            );
        } else {
            let response = client.request(&options(server.addr, "alice")).await;
            assert_eq!(
                response.status_code.code(),
                200,
                "case `{}`: connection stopped serving",
                case.name
            );
        }
        server.assert_serving().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_datagram_gets_an_error_or_is_dropped_over_udp() {
    let server = Server::open().await;
    let client = UdpClient::bind(server.addr).await;
    let udp = |t: String| t.replace("SIP/2.0/TCP", "SIP/2.0/UDP");
    let valid = udp(options(server.addr, "alice"));
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        (
            "body shorter than Content-Length",
            valid
                .replace(
                    "Content-Length: 0\r\n\r\n",
                    "Content-Length: 50\r\n\r\nshort",
                )
                .into_bytes(),
            Some(400),
        ),
        (
            "negative Content-Length",
            valid
                .replace("Content-Length: 0", "Content-Length: -1")
                .into_bytes(),
            Some(400),
        ),
        (
            "missing Via",
            without_line(&valid, "Via:").into_bytes(),
            Some(400),
        ),
        (
            "CSeq method not matching",
            valid
                .replace("CSeq: 1 OPTIONS", "CSeq: 1 PUBLISH")
                .into_bytes(),
            Some(400),
        ),
        (
            "huge header section",
            valid
                .replace(
                    "Max-Forwards: 70",
                    &format!("X-Huge: {}", "a".repeat(30_000)),
                )
                .into_bytes(),
            Some(513),
        ),
        (
            "body over the limit",
            format!(
                "{}{}",
                valid.replace("Content-Length: 0", "Content-Length: 50000"),
                "b".repeat(50_000)
            )
            .into_bytes(),
            Some(413),
        ),
        (
            "NUL byte in a header value",
            valid
                .replace("Max-Forwards: 70", "Subject: \0")
                .into_bytes(),
            Some(400),
        ),
        (
            "binary garbage",
            vec![0xff, 0x00, 0x13, 0x37, 0x0d, 0x0a],
            None,
        ),
    ];
    for (name, bytes, expected) in cases {
        client.send(&bytes).await;
        match expected {
            Some(status) => {
                let response = client.response().await;
                assert_eq!(
                    response.status_code.code(),
                    status,
                    "case `{name}`: {response}"
                );
            }
            None => {
                let answer = client
                    .try_message(std::time::Duration::from_millis(300))
                    .await;
                assert!(answer.is_none(), "case `{name}` was answered");
            }
        }
        let response = client.request(&valid).await;
        assert_eq!(
            response.status_code.code(),
            200,
            "case `{name}`: server stopped serving UDP"
        );
    }
    server.stop().await;
}
