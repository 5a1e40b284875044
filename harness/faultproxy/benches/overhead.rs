//! What the proxy costs when no toxic is active, side by side with the tools it replaces, on
//! loopback in one run. Run with `cargo bench -p faultproxy --bench overhead`.
//!
//! TCP, against HAProxy in TCP mode (Debian package `haproxy`, started here with a generated
//! config, killed at the end):
//! - bulk throughput ours / HAProxy, median of five interleaved rounds (goal ≥ 1.1×);
//! - round trip p50 and p99 of 64-byte ping-pong, direct vs HAProxy vs ours, interleaved round
//!   trip by round trip (goal: ours no worse than HAProxy at p50 and p99).
//!
//! UDP, against a plain `socat` relay (Debian package `socat`), one flow of 200-byte datagrams:
//! - datagrams per second one way through our proxy, the server acknowledging directly so the
//!   sender never overruns a socket buffer (goal ≥ 100,000/s); echo round trips per second too;
//! - added round trip at p99 vs direct (goal ≤ 100 µs);
//! - throughput ours / socat, median of interleaved rounds (goal ≥ 1.0×).
//!
//! A missing tool skips its comparison with a message naming the package to install.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const ROUND_TRIPS: u64 = 20_000;
const WARMUP_ROUND_TRIPS: u64 = 2_000;
const MESSAGE_BYTES: usize = 64;
const BULK_BYTES: u64 = 512 << 20;
const BULK_WRITE_BYTES: usize = 256 * 1024;
const BULK_ROUNDS: usize = 5;
const DATAGRAM_BYTES: usize = 200;
/// Datagrams in flight in the UDP throughput run: enough to keep the relay busy, few enough that
/// no socket buffer overflows.
const DATAGRAM_WINDOW: usize = 64;
const UDP_RUN: Duration = Duration::from_millis(1500);
const UDP_ROUNDS: usize = 5;

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
fn create_proxy(api: SocketAddr, name: &str, upstream: SocketAddr, protocol: &str) -> SocketAddr {
    let body = format!(
        r#"{{"name":"{name}","listen":"127.0.0.1:0","upstream":"{upstream}","protocol":"{protocol}"}}"#
    );
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
            let Ok(mut stream) = stream else { break };
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
            let Ok(mut stream) = stream else { break };
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; BULK_WRITE_BYTES];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                // A readiness probe sends nothing and gets nothing.
                if total > 0 {
                    assert_eq!(total, BULK_BYTES, "every byte arrived");
                    let _ = stream.write_all(&[1]);
                }
            });
        }
    });
    addr
}

/// Marks a datagram of a one-way stream: counted, not echoed; bytes 1..3 carry the port that
/// takes the acknowledgements (sent directly, not through the relay).
const STREAM_MARK: u8 = 0x17;
/// The server acknowledges every this many stream datagrams with the count so far.
const ACK_EVERY: u64 = 16;

/// Echoes datagrams back to their sender; counts stream datagrams per acknowledgement port.
fn udp_echo_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 65_535];
        let mut counts = std::collections::HashMap::<u16, u64>::new();
        while let Ok((n, from)) = socket.recv_from(&mut buffer) {
            if n >= 3 && buffer[0] == STREAM_MARK {
                let port = u16::from_be_bytes([buffer[1], buffer[2]]);
                let count = counts.entry(port).or_default();
                *count += 1;
                if count.is_multiple_of(ACK_EVERY) {
                    let _ = socket.send_to(&count.to_be_bytes(), ("127.0.0.1", port));
                }
            } else {
                let _ = socket.send_to(&buffer[..n], from);
            }
        }
    });
    addr
}

/// Datagrams per second of a one-way stream on one flow through `data` (a connected socket),
/// at most `DATAGRAM_WINDOW` unacknowledged, for `UDP_RUN`; the server acknowledges directly.
fn udp_stream(data: &UdpSocket) -> f64 {
    let acks = UdpSocket::bind("127.0.0.1:0").unwrap();
    acks.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let port = acks.local_addr().unwrap().port().to_be_bytes();
    let mut message = [0u8; DATAGRAM_BYTES];
    message[..3].copy_from_slice(&[STREAM_MARK, port[0], port[1]]);
    let mut ack = [0u8; 8];
    // `counted`: what the server has acknowledged; `lost`: sent but never to be acknowledged.
    let (mut sent, mut counted, mut lost) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < UDP_RUN {
        while sent - counted - lost < DATAGRAM_WINDOW as u64 {
            data.send(&message).unwrap();
            sent += 1;
        }
        match acks.recv(&mut ack) {
            Ok(_) => counted = counted.max(u64::from_be_bytes(ack)),
            // Lost datagrams are never acknowledged: open the window again.
            Err(_) => lost = sent - counted,
        }
    }
    counted as f64 / started.elapsed().as_secs_f64()
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap()
}

/// Ping-pong on each of `addrs` in turn, one round trip each per step, so every path sees the
/// same background load; one histogram per address.
fn ping_pong(addrs: &[SocketAddr]) -> Vec<Histogram<u64>> {
    let mut streams: Vec<TcpStream> = addrs
        .iter()
        .map(|addr| {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_nodelay(true).unwrap();
            stream
        })
        .collect();
    let message = [0x42u8; MESSAGE_BYTES];
    let mut back = [0u8; MESSAGE_BYTES];
    let mut histograms: Vec<_> = addrs.iter().map(|_| histogram()).collect();
    for i in 0..WARMUP_ROUND_TRIPS + ROUND_TRIPS {
        for (stream, histogram) in streams.iter_mut().zip(&mut histograms) {
            let started = Instant::now();
            stream.write_all(&message).unwrap();
            stream.read_exact(&mut back).unwrap();
            if i >= WARMUP_ROUND_TRIPS {
                histogram
                    .record(started.elapsed().as_nanos() as u64)
                    .unwrap();
            }
        }
    }
    histograms
}

/// Bytes per second of a one-way transfer of `BULK_BYTES`.
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

/// One datagram at a time on each of `addrs` in turn, `ROUND_TRIPS` times; a lost one is sent
/// again (and not recorded). One histogram per address.
fn udp_ping_pong(addrs: &[SocketAddr]) -> Vec<Histogram<u64>> {
    let sockets: Vec<UdpSocket> = addrs
        .iter()
        .map(|addr| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(addr).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            socket
        })
        .collect();
    let message = [0x42u8; DATAGRAM_BYTES];
    let mut back = [0u8; 2048];
    let mut histograms: Vec<_> = addrs.iter().map(|_| histogram()).collect();
    for i in 0..WARMUP_ROUND_TRIPS + ROUND_TRIPS {
        for (socket, histogram) in sockets.iter().zip(&mut histograms) {
            loop {
                let started = Instant::now();
                socket.send(&message).unwrap();
                if socket.recv(&mut back).is_ok() {
                    if i >= WARMUP_ROUND_TRIPS {
                        histogram
                            .record(started.elapsed().as_nanos() as u64)
                            .unwrap();
                    }
                    break;
                }
            }
        }
    }
    histograms
}

/// A client socket connected to `addr`: one flow, kept across rounds (a plain socat relay serves
/// only the first client it hears from).
fn flow_socket(addr: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    socket
}

/// Round trips per second on one flow (each a datagram both ways), `DATAGRAM_WINDOW` in flight,
/// for `UDP_RUN`.
fn udp_throughput(socket: &UdpSocket) -> f64 {
    let message = [0x42u8; DATAGRAM_BYTES];
    let mut back = [0u8; 2048];
    // Warm up the flow (the relay opens its upstream socket on the first datagram).
    for _ in 0..100 {
        socket.send(&message).unwrap();
        let _ = socket.recv(&mut back);
    }
    while socket.recv(&mut back).is_ok() {}
    for _ in 0..DATAGRAM_WINDOW {
        socket.send(&message).unwrap();
    }
    let started = Instant::now();
    let mut received = 0u64;
    while started.elapsed() < UDP_RUN {
        match socket.recv(&mut back) {
            Ok(_) => {
                received += 1;
                socket.send(&message).unwrap();
            }
            // Losses shrink the window: fill it again.
            Err(_) => {
                for _ in 0..DATAGRAM_WINDOW {
                    socket.send(&message).unwrap();
                }
            }
        }
    }
    let rate = received as f64 / started.elapsed().as_secs_f64();
    while socket.recv(&mut back).is_ok() {}
    rate
}

/// A child process killed (and reaped) on drop.
struct Tool(Child);

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `program`, or says which package to install when it is missing.
fn spawn(program: &str, package: &str, args: &[&str]) -> Option<Tool> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => Some(Tool(child)),
        Err(err) => {
            println!(
                "SKIPPED: {program} cannot run ({err}); install the Debian package `{package}` \
                 (apt-get install -y --no-install-recommends {package}) to compare with it"
            );
            None
        }
    }
}

/// HAProxy in TCP mode in front of `echo` and `sink`: (its process, echo port, sink port).
fn start_haproxy(echo: SocketAddr, sink: SocketAddr) -> Option<(Tool, SocketAddr, SocketAddr)> {
    let dir = std::env::temp_dir().join(format!("faultproxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (echo_front, sink_front) = (free_port(), free_port());
    let config = format!(
        "global\n  maxconn 1000\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
         listen echo\n  bind 127.0.0.1:{echo_front}\n  server echo {echo}\n\
         listen sink\n  bind 127.0.0.1:{sink_front}\n  server sink {sink}\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let tool = spawn("haproxy", "haproxy", &["-db", "-f", path.to_str().unwrap()])?;
    let echo_addr: SocketAddr = ([127, 0, 0, 1], echo_front).into();
    let sink_addr: SocketAddr = ([127, 0, 0, 1], sink_front).into();
    let started = Instant::now();
    while TcpStream::connect(echo_addr).is_err() || TcpStream::connect(sink_addr).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            println!("SKIPPED: haproxy did not listen within 10 s");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((tool, echo_addr, sink_addr))
}

/// A plain socat relay for one UDP flow in front of `echo`.
fn start_socat(echo: SocketAddr) -> Option<(Tool, SocketAddr)> {
    let port = free_udp_port();
    let listen = format!("UDP4-LISTEN:{port},reuseaddr,bind=127.0.0.1");
    let upstream = format!("UDP4:{echo}");
    let tool = spawn("socat", "socat", &["-T", "30", &listen, &upstream])?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // The relay connects to the first sender: probe from the socket the runs will not use, so
    // wait until the port is bound instead.
    let started = Instant::now();
    while UdpSocket::bind(addr).is_ok() {
        if started.elapsed() > Duration::from_secs(10) {
            println!("SKIPPED: socat did not bind within 10 s");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((tool, addr))
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT MET"
    }
}

fn tcp(api: SocketAddr) {
    let echo = echo_server();
    let sink = sink_server();
    let echo_proxy = create_proxy(api, "echo", echo, "tcp");
    let sink_proxy = create_proxy(api, "sink", sink, "tcp");
    let haproxy = start_haproxy(echo, sink);
    std::thread::sleep(Duration::from_millis(100));

    println!("\nTCP, no toxic: {ROUND_TRIPS} round trips of {MESSAGE_BYTES} B; bulk {} MiB × {BULK_ROUNDS} interleaved rounds", BULK_BYTES >> 20);
    let mut paths = vec![echo, echo_proxy];
    if let Some((_, haproxy_echo, _)) = &haproxy {
        paths.push(*haproxy_echo);
    }
    let mut histograms = ping_pong(&paths).into_iter();
    let (direct, ours) = (histograms.next().unwrap(), histograms.next().unwrap());
    let theirs = histograms.next();
    println!(
        "{:<26} {:>10} {:>10} {:>12}",
        "round trip (µs)", "direct", "HAProxy", "faultproxy"
    );
    for (label, quantile) in [("p50", 0.50), ("p99", 0.99)] {
        let d = direct.value_at_quantile(quantile);
        let o = ours.value_at_quantile(quantile);
        let h = theirs.as_ref().map(|h| h.value_at_quantile(quantile));
        println!(
            "{label:<26} {:>10.1} {:>10} {:>12.1}",
            us(d),
            h.map_or("-".into(), |h| format!("{:.1}", us(h))),
            us(o)
        );
        if let Some(h) = h {
            println!(
                "  goal: ours {label} ≤ HAProxy {label}: {:.1} vs {:.1} µs: {}",
                us(o),
                us(h),
                verdict(o <= h)
            );
        }
    }
    let mut ratios = Vec::new();
    let (mut ours_rates, mut their_rates, mut direct_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..BULK_ROUNDS {
        direct_rates.push(bulk(sink));
        let o = bulk(sink_proxy);
        ours_rates.push(o);
        if let Some((_, _, haproxy_sink)) = &haproxy {
            let h = bulk(*haproxy_sink);
            their_rates.push(h);
            ratios.push(o / h);
        }
    }
    let mib = |rate: f64| rate / (1 << 20) as f64;
    println!(
        "{:<26} {:>10.0} {:>10} {:>12.0}",
        "bulk median (MiB/s)",
        mib(median(direct_rates)),
        if their_rates.is_empty() {
            "-".into()
        } else {
            format!("{:.0}", mib(median(their_rates)))
        },
        mib(median(ours_rates))
    );
    if !ratios.is_empty() {
        let ratio = median(ratios.clone());
        let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "  goal: bulk ours/HAProxy ≥ 1.10×: median {ratio:.2}× (rounds {}): {}",
            rounds.join(" "),
            verdict(ratio >= 1.1)
        );
    }
}

fn udp(api: SocketAddr) {
    let echo = udp_echo_server();
    let ours = create_proxy(api, "udp-echo", echo, "udp");
    let socat = start_socat(echo);
    std::thread::sleep(Duration::from_millis(100));

    println!("\nUDP, no toxic, one flow of {DATAGRAM_BYTES} B datagrams");
    let mut histograms = udp_ping_pong(&[echo, ours]).into_iter();
    let (direct, proxied) = (histograms.next().unwrap(), histograms.next().unwrap());
    println!(
        "{:<26} {:>10} {:>10} {:>12}",
        "round trip (µs)", "direct", "faultproxy", "added"
    );
    for (label, quantile) in [("p50", 0.50), ("p99", 0.99)] {
        let d = direct.value_at_quantile(quantile);
        let p = proxied.value_at_quantile(quantile);
        println!(
            "{label:<26} {:>10.1} {:>10.1} {:>12.1}",
            us(d),
            us(p),
            us(p) - us(d)
        );
    }
    let added_p99 = us(proxied.value_at_quantile(0.99)) - us(direct.value_at_quantile(0.99));
    println!(
        "  goal: added p99 ≤ 100 µs: {added_p99:.1} µs: {}",
        verdict(added_p99 <= 100.0)
    );

    let (mut ours_rates, mut socat_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut direct_rates, mut echo_rates) = (Vec::new(), Vec::new());
    let direct_flow = flow_socket(echo);
    let our_flow = flow_socket(ours);
    let socat_flow = socat.as_ref().map(|(_, relay)| flow_socket(*relay));
    for _ in 0..UDP_ROUNDS {
        direct_rates.push(udp_stream(&direct_flow));
        let o = udp_stream(&our_flow);
        ours_rates.push(o);
        if let Some(flow) = &socat_flow {
            let s = udp_stream(flow);
            socat_rates.push(s);
            ratios.push(o / s);
        }
        echo_rates.push(udp_throughput(&our_flow));
    }
    let rate = median(ours_rates);
    println!(
        "one-way datagrams/s, {DATAGRAM_WINDOW} unacknowledged, median of {UDP_ROUNDS}: direct {:.0}, faultproxy {rate:.0}{}",
        median(direct_rates),
        if socat_rates.is_empty() {
            String::new()
        } else {
            format!(", socat {:.0}", median(socat_rates))
        }
    );
    println!(
        "echo through faultproxy, {DATAGRAM_WINDOW} in flight: {:.0} round trips/s (each a datagram both ways)",
        median(echo_rates)
    );
    println!(
        "  goal: ≥ 100000 datagrams/s one way: {rate:.0}: {}",
        verdict(rate >= 100_000.0)
    );
    if !ratios.is_empty() {
        let ratio = median(ratios.clone());
        let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "  goal: throughput ours/socat ≥ 1.00×: median {ratio:.2}× (rounds {}): {}",
            rounds.join(" "),
            verdict(ratio >= 1.0)
        );
    }
}

fn main() {
    let api = start_server();
    println!("faultproxy overhead vs HAProxy (TCP) and socat (UDP), loopback, no toxics");
    tcp(api);
    udp(api);
}
