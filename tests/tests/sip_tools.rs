//! Interoperability of the Front End with real SIP tools from Debian: SIPp (`sip-tester`) scenarios from
//! `tests/sipp/` and `sipsak`, over UDP and TCP, against a Front End running in-process on 127.0.0.1:0.
//!
//! Each test opens with its claim; the proof is the tool's own exit status (SIPp exits 0 only when every call followed
//! its scenario, including the header and body checks written there; sipsak exits 0 only on a 200) plus, where state
//! matters, the Front End's store read directly. sipsak's MESSAGE mode (`-M`) crashes in Debian's 0.9.8.1, so MESSAGE
//! is driven by SIPp only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use poolchaos_tests::ensure_tool;
use poolnode::frontend::{serve, Credentials, FrontEnd, FrontEndConfig};
use poolnode::sip::Listeners;
use tokio::process::Command;

/// Generous: a scenario takes milliseconds; a busy 2-core machine may stall for seconds.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

struct Server {
    addr: SocketAddr,
    frontend: Arc<FrontEnd>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    async fn start(credentials: Credentials) -> Self {
        let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listeners.local_addr().unwrap();
        let frontend = Arc::new(FrontEnd::new(FrontEndConfig {
            credentials,
            ..FrontEndConfig::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listeners, frontend.clone(), async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            frontend,
            stop: Some(stop),
        }
    }

    async fn open() -> Self {
        Self::start(Credentials::open()).await
    }

    async fn with_alice() -> Self {
        Self::start(Credentials::from_pairs([
            ("alice", "alice-secret"),
            ("bob", "bob-secret"),
        ]))
        .await
    }

    fn bindings(&self, user: &str) -> usize {
        self.frontend
            .store
            .bindings(user, poolnode::frontend::store::now_unix_ms())
            .len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn sipp(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }

    fn sipsak(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

fn scenario(name: &str) -> String {
    format!("{}/sipp/{name}.xml", env!("CARGO_MANIFEST_DIR"))
}

fn error_file(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!("poolchaos-sipp-{}-{label}.log", std::process::id()))
}

/// A SIPp command for one call of `scenario_name` against `server`.
fn sipp(
    server: SocketAddr,
    scenario_name: &str,
    transport: Transport,
    label: &str,
    extra: &[&str],
) -> Command {
    let binary = ensure_tool("sipp", "sip-tester");
    let mut command = Command::new(binary);
    command
        .arg(server.to_string())
        .args(["-sf", &scenario(scenario_name)])
        .args([
            "-m",
            "1",
            "-t",
            transport.sipp(),
            "-i",
            "127.0.0.1",
            "-nostdin",
        ])
        .args(["-timeout", "45", "-timeout_error", "-trace_err"])
        .arg("-error_file")
        .arg(error_file(label))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs a tool to its end and asserts success, showing its errors otherwise.
async fn succeeds(mut command: Command, label: &str) {
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot start: {e}"));
    let output = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{label}: did not finish in {TOOL_TIMEOUT:?}"))
        .unwrap();
    let errors = std::fs::read_to_string(error_file(label)).unwrap_or_default();
    assert!(
        output.status.success(),
        "{label} failed ({}):\n{}\n{}\n{errors}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free port on 127.0.0.1 for a SIPp server scenario (free for both TCP and UDP at the time of asking).
fn free_port() -> u16 {
    for _ in 0..32 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

/// Waits until something listens on a TCP port (a SIPp server scenario that has started), up to 30 s.
async fn listening(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on port {port}");
}

/// Starts a SIPp recipient of one MESSAGE on `port`, and registers `user` with that contact.
async fn recipient(
    server: &Server,
    user: &str,
    port: u16,
    transport: Transport,
    label: &str,
) -> tokio::process::Child {
    let port_text = port.to_string();
    let uas = sipp(
        server.addr,
        "message_uas",
        transport,
        &format!("{label}-uas"),
        &["-p", &port_text],
    )
    .spawn()
    .expect("start the SIPp recipient");
    if let Transport::Tcp = transport {
        listening(port).await;
    }
    succeeds(
        sipp(
            server.addr,
            "register_contact",
            transport,
            &format!("{label}-reg"),
            &["-s", user, "-key", "contact_port", &port_text],
        ),
        &format!("{label}-reg"),
    )
    .await;
    assert_eq!(server.bindings(user), 1, "{user} registered");
    uas
}

async fn finished(child: tokio::process::Child, label: &str) {
    let output = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{label}: did not finish"))
        .unwrap();
    let errors = std::fs::read_to_string(error_file(label)).unwrap_or_default();
    assert!(
        output.status.success(),
        "{label} failed ({}): {errors}",
        output.status
    );
}

// --- SIPp ---

/// Claim: SIPp registers without authentication and sees `register-action="added"` (checked in the scenario).
async fn sipp_register_open(transport: Transport) {
    let server = Server::open().await;
    let label = format!("register-{}", transport.name());
    succeeds(
        sipp(server.addr, "register", transport, &label, &["-s", "alice"]),
        &label,
    )
    .await;
    assert_eq!(server.bindings("alice"), 1);
}

/// Claim: SIPp answers our digest challenge and is registered; the store holds the binding.
async fn sipp_register_digest(transport: Transport) {
    let server = Server::with_alice().await;
    let label = format!("register-auth-{}", transport.name());
    succeeds(
        sipp(
            server.addr,
            "register_auth",
            transport,
            &label,
            &["-s", "alice", "-au", "alice", "-ap", "alice-secret"],
        ),
        &label,
    )
    .await;
    assert_eq!(server.bindings("alice"), 1);
}

/// Claim: OPTIONS gets 200 with an Allow header naming MESSAGE (checked in the scenario).
async fn sipp_options(transport: Transport) {
    let server = Server::open().await;
    let label = format!("options-{}", transport.name());
    succeeds(sipp(server.addr, "options", transport, &label, &[]), &label).await;
}

/// Claim: a MESSAGE between two registered users reaches the recipient's SIPp (which checks the body) and the
/// sender's SIPp gets its 200 only through the recipient's answer.
async fn sipp_message(transport: Transport) {
    let server = Server::open().await;
    let label = format!("message-{}", transport.name());
    succeeds(
        sipp(
            server.addr,
            "register",
            transport,
            &format!("{label}-sender"),
            &["-s", "sender"],
        ),
        &format!("{label}-sender"),
    )
    .await;
    let uas = recipient(&server, "bob", free_port(), transport, &label).await;
    succeeds(
        sipp(
            server.addr,
            "message_uac",
            transport,
            &format!("{label}-uac"),
            &["-s", "bob"],
        ),
        &format!("{label}-uac"),
    )
    .await;
    finished(uas, &format!("{label}-uas")).await;
}

/// Claim: a SIPp watcher subscribed to carol gets the current state, then a NOTIFY carrying the document carol's
/// SIPp PUBLISHed (the watcher's scenario waits for the published note).
async fn sipp_publish_subscribe(transport: Transport) {
    let server = Server::open().await;
    let label = format!("presence-{}", transport.name());
    let watcher = sipp(
        server.addr,
        "subscribe",
        transport,
        &format!("{label}-sub"),
        &["-s", "carol"],
    )
    .spawn()
    .unwrap();
    for _ in 0..300 {
        if server.frontend.subscription_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.frontend.subscription_count(),
        1,
        "the watcher subscribed"
    );
    succeeds(
        sipp(
            server.addr,
            "publish",
            transport,
            &format!("{label}-pub"),
            &["-s", "carol"],
        ),
        &format!("{label}-pub"),
    )
    .await;
    finished(watcher, &format!("{label}-sub")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_without_authentication_over_udp() {
    sipp_register_open(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_without_authentication_over_tcp() {
    sipp_register_open(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_with_digest_over_udp() {
    sipp_register_digest(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_registers_with_digest_over_tcp() {
    sipp_register_digest(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_options_over_udp() {
    sipp_options(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_options_over_tcp() {
    sipp_options(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_message_between_registered_users_over_udp() {
    sipp_message(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_message_between_registered_users_over_tcp() {
    sipp_message(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_publish_reaches_a_subscribed_watcher_over_udp() {
    sipp_publish_subscribe(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_publish_reaches_a_subscribed_watcher_over_tcp() {
    sipp_publish_subscribe(Transport::Tcp).await;
}

// --- sipsak ---

fn sipsak(transport: Transport, args: &[&str]) -> Command {
    let binary = ensure_tool("sipsak", "sipsak");
    let mut command = Command::new(binary);
    command
        .args(["-E", transport.sipsak()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Claim: sipsak's usrloc mode registers, with and without digest authentication, and a wrong password fails.
async fn sipsak_register(transport: Transport) {
    let open = Server::open().await;
    let uri = format!("sip:alice@{}", open.addr);
    // usrloc mode registers, then checks the binding with a second REGISTER and removes it.
    succeeds(
        sipsak(transport, &["-U", "-s", &uri, "-i"]),
        "sipsak-register-open",
    )
    .await;

    let guarded = Server::with_alice().await;
    let uri = format!("sip:alice@{}", guarded.addr);
    succeeds(
        sipsak(
            transport,
            &["-U", "-s", &uri, "-u", "alice", "-a", "alice-secret", "-i"],
        ),
        "sipsak-register-auth",
    )
    .await;
    let wrong = sipsak(
        transport,
        &["-U", "-s", &uri, "-u", "alice", "-a", "wrong", "-i"],
    )
    .output()
    .await
    .unwrap();
    assert!(!wrong.status.success(), "a wrong password registered");
}

/// Claim: sipsak's OPTIONS ping gets 200.
async fn sipsak_options(transport: Transport) {
    let server = Server::open().await;
    let uri = format!("sip:{}", server.addr);
    succeeds(sipsak(transport, &["-s", &uri]), "sipsak-options").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipsak_registers_with_and_without_authentication_over_udp() {
    sipsak_register(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipsak_registers_with_and_without_authentication_over_tcp() {
    sipsak_register(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipsak_options_over_udp() {
    sipsak_options(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipsak_options_over_tcp() {
    sipsak_options(Transport::Tcp).await;
}
