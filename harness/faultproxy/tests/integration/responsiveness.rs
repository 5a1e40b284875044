//! The API answers while proxies carry all the traffic the machine can push.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// A sink on a free loopback port: reads and discards, on plain threads.
fn sink_server(stop: Arc<AtomicBool>) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 256 * 1024];
                while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_within_a_second_under_bulk_traffic() {
    // Claim: with 4 connections saturating a proxy, every API call (reads and toxic changes)
    // answers within 1 s; the traffic counter proves the proxy really was saturated meanwhile.
    let _machine = MACHINE.write().await;
    let server = TestServer::start(1);
    let stop = Arc::new(AtomicBool::new(false));
    let sink = sink_server(stop.clone());
    let listen = create_proxy(server.api, "bulk", sink).await;
    let sent = Arc::new(AtomicU64::new(0));
    let blasters: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(listen).unwrap();
                let chunk = vec![0x5a_u8; 256 * 1024];
                // Bounded: stops on the flag or after 30 s, whichever first.
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                    if stream.write_all(&chunk).is_err() {
                        break;
                    }
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sent.load(Ordering::Relaxed);
    let mut slowest = Duration::ZERO;
    for round in 0..20 {
        let started = Instant::now();
        assert_eq!(get(server.api, "/proxies").await.status, 200);
        let body =
            format!(r#"{{"name":"t{round}","type":"latency","stream":"upstream","toxicity":0}}"#);
        assert_eq!(
            post(server.api, "/proxies/bulk/toxics", &body).await.status,
            200
        );
        assert_eq!(
            delete(server.api, &format!("/proxies/bulk/toxics/t{round}"))
                .await
                .status,
            204
        );
        slowest = slowest.max(started.elapsed() / 3);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = sent.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for blaster in blasters {
        blaster.join().unwrap();
    }
    let _ = std::net::TcpStream::connect(sink); // wakes the sink's accept loop to see the flag
    assert!(
        during > 100 * 1024 * 1024,
        "traffic flowed meanwhile: {during} bytes"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "slowest API call {slowest:?}"
    );
    eprintln!(
        "bulk: {} MiB during the calls, slowest call {slowest:?}",
        during >> 20
    );
}
