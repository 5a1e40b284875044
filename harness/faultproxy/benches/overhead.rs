//! What the proxy costs when no toxic is active: added round-trip latency (p50/p99) on small
//! request/response ping-pong, and bulk throughput through the proxy as a share of direct.
//! Goal: ≤ 100 µs added at p99 and ≥ 0.8× direct throughput. Run with
//! `cargo bench -p faultproxy --bench overhead`; loopback only; prints a short table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const ROUND_TRIPS: u64 = 20_000;
const WARMUP_ROUND_TRIPS: u64 = 2_000;
const MESSAGE_BYTES: usize = 64;
const BULK_BYTES: u64 = 1 << 30;
const BULK_WRITE_BYTES: usize = 256 * 1024;

/// A faultproxy on its own thread, as the binary runs it; returns the API address.
fn start_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let api = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            faultproxy::run(listener, Some(1), std::future::pending())
                .await
                .unwrap();
        });
    });
    api
}

/// Creates a proxy with one blocking HTTP request; returns its listen address.
fn create_proxy(api: SocketAddr, name: &str, upstream: SocketAddr) -> SocketAddr {
    let body = format!(r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"{upstream}"}}"#);
    let mut stream = TcpStream::connect(api).unwrap();
    write!(
        stream,
        "POST /proxies HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let json = reply.split_once("\r\n\r\n").unwrap().1;
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["listen"].as_str().unwrap().parse().unwrap()
}

fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            stream.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads to EOF, then answers one byte: the sender's clock then covers the whole transfer.
fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; BULK_WRITE_BYTES];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                assert_eq!(total, BULK_BYTES, "every byte arrived");
                let _ = stream.write_all(&[1]);
            });
        }
    });
    addr
}

fn ping_pong(addr: SocketAddr) -> Histogram<u64> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let message = [0x42u8; MESSAGE_BYTES];
    let mut back = [0u8; MESSAGE_BYTES];
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    for i in 0..WARMUP_ROUND_TRIPS + ROUND_TRIPS {
        let started = Instant::now();
        stream.write_all(&message).unwrap();
        stream.read_exact(&mut back).unwrap();
        if i >= WARMUP_ROUND_TRIPS {
            histogram
                .record(started.elapsed().as_nanos() as u64)
                .unwrap();
        }
    }
    histogram
}

/// Bytes per second of a 1 GiB one-way transfer.
fn bulk(addr: SocketAddr) -> f64 {
    let mut stream = TcpStream::connect(addr).unwrap();
    let chunk = vec![0x5au8; BULK_WRITE_BYTES];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < BULK_BYTES {
        stream.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut done = [0u8; 1];
    stream.read_exact(&mut done).unwrap();
    BULK_BYTES as f64 / started.elapsed().as_secs_f64()
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn main() {
    let api = start_server();
    let echo = echo_server();
    let sink = sink_server();
    let echo_proxy = create_proxy(api, "echo", echo);
    let sink_proxy = create_proxy(api, "sink", sink);
    std::thread::sleep(Duration::from_millis(100));

    let direct = ping_pong(echo);
    let proxied = ping_pong(echo_proxy);
    // Interleaved best of 3: on a shared 2-core machine other load comes and goes, and the best
    // run is the one least disturbed by it.
    let (mut bulk_direct, mut bulk_proxied) = (0f64, 0f64);
    for _ in 0..3 {
        bulk_direct = bulk_direct.max(bulk(sink));
        bulk_proxied = bulk_proxied.max(bulk(sink_proxy));
    }

    println!("faultproxy overhead, no toxics ({ROUND_TRIPS} round trips of {MESSAGE_BYTES} B; 1 GiB bulk, best of 3)");
    println!(
        "{:<22} {:>12} {:>12} {:>12}",
        "", "direct", "proxied", "added"
    );
    for (label, quantile) in [("round trip p50 (µs)", 0.50), ("round trip p99 (µs)", 0.99)] {
        let (d, p) = (
            direct.value_at_quantile(quantile),
            proxied.value_at_quantile(quantile),
        );
        println!(
            "{label:<22} {:>12.1} {:>12.1} {:>12.1}",
            us(d),
            us(p),
            us(p) - us(d)
        );
    }
    println!(
        "{:<22} {:>12.0} {:>12.0} {:>11.2}x",
        "bulk (MiB/s)",
        bulk_direct / (1 << 20) as f64,
        bulk_proxied / (1 << 20) as f64,
        bulk_proxied / bulk_direct
    );
}
