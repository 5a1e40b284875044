//! One simulated user: a SIP client that behaves as a client of the pool would.
//!
//! It finds its pool by name (every address the name resolves to, tried in turn, then its backup registrar),
//! registers with digest authentication, refreshes before expiry, sends `CRLF CRLF` keep-alives, and
//! notices loss — a closed connection, silence past `dead_after`, a request without answer, a refresh
//! answered `register-action="added"` — and then registers again. Registered, it adds a contact, subscribes to
//! that contact's presence, publishes its own, and sends IMs at the workload's rate. Every operation goes
//! into the history as invoke → ok / fail / timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use super::sip::{self, Challenge, Frame, Framer, Message};
use super::{Settings, Stage};
use crate::history::{Attachment, CallEndedBy, Op, Pending, Recorder};
use crate::runtime::tunnel;

/// Who a user is and whom it talks to.
#[derive(Debug, Clone)]
pub struct UserSpec {
    pub name: String,
    pub password: String,
    /// The home pool's name.
    pub home: String,
    /// The home pool's pair: the backup registrar tried when no server of the home pool answers.
    pub backup: Option<String>,
    /// Users this one sends IMs to.
    pub im_targets: Vec<String>,
    /// The contact it adds to its list and whose presence it watches.
    pub contact: Option<String>,
    /// Seeds the user's own random draws (which address first, IM targets, timer phases).
    pub seed: u64,
    /// The Director pool the user asks first for its registrar (`301`: home pool `q=0.7`, backup `q=0.3`).
    pub director: Option<String>,
    /// Remote users only: the Edge pools to come in through, by priority (own site's first, as DNS SRV
    /// gives them). A remote user reaches nothing else.
    pub edges: Vec<String>,
    /// Whether the user places calls to telephone numbers (the topology has a Mediation pool).
    pub calls: bool,
    /// A link through the fault proxy to the home pool (`toxiproxy:<port>`), when the topology has one:
    /// the user then connects there, and the proxy picks a server of the pool for each connection.
    pub via: Option<(String, u16)>,
}

/// What the user is doing with each outstanding request.
enum Kind {
    Register,
    Refresh,
    Im,
    Publish,
    Subscribe,
    ContactAdd,
    ContactList,
    /// An INVITE to a telephone number, answered by the PSTN gateway through Mediation.
    Call,
}

struct Outstanding {
    kind: Kind,
    pending: Pending,
    /// The operation as invoked (its value is completed from the answer).
    pending_op: Op,
    deadline: Instant,
    /// The request as sent, to send again with credentials after a 401.
    request: Message,
    authorized: bool,
}

/// Why a session ended.
enum End {
    Lost(String),
    /// Lost to a server that went silent (keep-alives or a REGISTER unanswered): paused or cut off, it may still
    /// complete TCP handshakes in its kernel, so its address goes to the back of the list.
    Silent(String),
    /// The server told the client to register at its home pool (the resiliency NOTIFY's `register-at`):
    /// it goes there at once, as a client does, without the back-off of a loss.
    SentHome {
        pool: String,
        reason: String,
    },
    Finished,
}

/// State that outlives one connection.
struct Life {
    rng: ChaCha8Rng,
    cseq: u32,
    im_seq: u64,
    publish_seq: u64,
    contact_added: bool,
    /// Contacts added by the contact interval so far (each a new one: `sip:<user>-n<k>@<domain>`).
    contacts_added: u64,
    /// The last sign-in was answered in resiliency mode: the user tries its contact change again, as a user does
    /// who edits a list the client shows, and the pool must refuse it.
    signed_in_resiliency: bool,
    nc: u32,
    /// The registrars the Director named (primary, backup), kept across sessions as a client keeps them.
    registrars: Option<(String, Option<String>)>,
    /// Addresses that did not accept a connection lately, and when: tried only after every other address failed
    /// too, as SIP clients keep a short list of unreachable targets (RFC 3263 section 4.3), instead of waiting for a
    /// connect timeout on each again. Forgotten after [`SUSPECT_FOR`], and when the pool sends the user home.
    suspect: HashMap<String, Instant>,
    /// The address the current session's connection was dialled to (`None` through a fault-proxy link).
    dialled: Option<String>,
    /// Every node's name by its addresses, to say which node the connection went to.
    nodes: Arc<HashMap<String, String>>,
    /// The last addresses each name resolved to, and when it was last asked: a client keeps a DNS answer for a
    /// while, and uses it when the name stops resolving (every server of the pool gone).
    resolved: HashMap<String, (Vec<String>, Instant)>,
    /// The last digest challenge, answered on every REGISTER until the server asks again.
    challenge: Option<Challenge>,
    /// A remote user whose last REGISTER at the primary registrar failed tries the backup next.
    use_backup: bool,
    /// Calls answered and not yet ended (by the gateway's BYE, or by losing the connection).
    calls_up: std::collections::BTreeSet<String>,
}

/// Runs the user until the stage says stop. Returns only then.
pub async fn run(
    spec: UserSpec,
    tunnel: SocketAddr,
    recorder: Recorder,
    settings: Settings,
    nodes: Arc<HashMap<String, String>>,
    mut stage: watch::Receiver<Stage>,
) {
    let mut life = Life {
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        cseq: 1,
        im_seq: 0,
        publish_seq: 0,
        contact_added: false,
        contacts_added: 0,
        signed_in_resiliency: false,
        nc: 0,
        registrars: None,
        suspect: HashMap::new(),
        dialled: None,
        nodes,
        resolved: HashMap::new(),
        challenge: None,
        use_backup: false,
        calls_up: Default::default(),
    };
    // Spread the start so thousands of users do not register in the same millisecond.
    let spread_ms = life
        .rng
        .gen_range(0..settings.start_spread.as_millis().max(1) as u64);
    sleep(Duration::from_millis(spread_ms)).await;
    loop {
        if *stage.borrow() == Stage::Stop {
            return;
        }
        let Some((stream, registrar, register_uri)) =
            connect(&spec, tunnel, &settings, &mut life).await
        else {
            back_off(&settings, &mut life, &mut stage).await;
            continue;
        };
        match session(
            &spec,
            stream,
            &registrar,
            &register_uri,
            &recorder,
            &settings,
            &mut life,
            &mut stage,
        )
        .await
        {
            End::Finished => return,
            End::SentHome { pool, reason } => {
                end_calls(&spec, &recorder, &mut life);
                let _ = recorder.observe(&spec.name, Op::RegistrationLost { reason });
                let backup = if pool == spec.home {
                    spec.backup.clone()
                } else {
                    Some(spec.home.clone())
                };
                life.registrars = Some((pool, backup));
                life.use_backup = false;
                life.suspect.clear();
            }
            End::Silent(reason) => {
                // A silent server may still complete TCP handshakes: the next attempt may well dial it again.
                if let Some(ip) = life.dialled.take() {
                    life.suspect.insert(ip, Instant::now());
                }
                after_loss(&spec, &recorder, &settings, &mut life, &mut stage, reason).await;
            }
            End::Lost(reason) => {
                after_loss(&spec, &recorder, &settings, &mut life, &mut stage, reason).await;
            }
        }
    }
}

/// A lost registration: its calls are over, the loss is recorded, and the client backs off before trying again
/// (it does not hammer a pool that just refused or dropped it).
async fn after_loss(
    spec: &UserSpec,
    recorder: &Recorder,
    settings: &Settings,
    life: &mut Life,
    stage: &mut watch::Receiver<Stage>,
    reason: String,
) {
    end_calls(spec, recorder, life);
    let _ = recorder.observe(&spec.name, Op::RegistrationLost { reason });
    back_off(settings, life, stage).await;
}

/// Waits between half the retry back-off and all of it (drawn from the user's own random stream), or until
/// the stage changes.
async fn back_off(settings: &Settings, life: &mut Life, stage: &mut watch::Receiver<Stage>) {
    let most = settings.retry_backoff.as_millis() as u64;
    let backoff = life.rng.gen_range(most / 2..=most);
    tokio::select! {
        _ = sleep(Duration::from_millis(backoff)) => {}
        _ = stage.changed() => {}
    }
}

/// Calls up on a lost connection are over for the caller: it noticed the loss.
fn end_calls(spec: &UserSpec, recorder: &Recorder, life: &mut Life) {
    for call_id in std::mem::take(&mut life.calls_up) {
        let _ = recorder.observe(
            &spec.name,
            Op::CallEnd {
                call_id,
                by: Some(CallEndedBy::CallerLost),
            },
        );
    }
}

/// How long a name's addresses are used without asking DNS again.
const RESOLVED_FOR: Duration = Duration::from_secs(1);
/// How long a client waits for DNS before it uses the addresses it had.
const RESOLVE_TIMEOUT: Duration = Duration::from_millis(500);

/// How soon a publication whose outcome the pool did not know is sent again.
const PUBLISH_RETRY: Duration = Duration::from_secs(2);

/// How long an address that refused a connection stays at the back of the list.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// Whether a connection attempt tries the addresses not suspected of being down, or (when none of those
/// answered) the suspected ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Fresh,
    Suspect,
}

/// Where a REGISTER's `200` shows the user attached: the node dialled, and the Front End and routing group the
/// answer names.
fn attachment(answer: &Message, life: &Life) -> Attachment {
    let (server, group) = sip::server_of(answer);
    Attachment {
        entry: life
            .dialled
            .as_ref()
            .and_then(|ip| life.nodes.get(ip))
            .cloned(),
        server,
        group,
    }
}

/// Finds a registrar and connects to it: first through addresses not recently unreachable, then through those.
async fn connect(
    spec: &UserSpec,
    tunnel: SocketAddr,
    settings: &Settings,
    life: &mut Life,
) -> Option<(tokio::net::TcpStream, String, String)> {
    let now = Instant::now();
    life.suspect
        .retain(|_, since| now.duration_since(*since) < SUSPECT_FOR);
    for pass in [Pass::Fresh, Pass::Suspect] {
        if let Some(found) = connect_pass(spec, tunnel, settings, life, pass).await {
            return Some(found);
        }
    }
    None
}

/// Connects to `ip` through the tunnel, keeping the suspect list.
async fn dial(
    tunnel: SocketAddr,
    ip: &str,
    settings: &Settings,
    life: &mut Life,
) -> Option<tokio::net::TcpStream> {
    match tunnel::connect(tunnel, ip, settings.sip_port, settings.connect_timeout).await {
        Ok(stream) => {
            life.suspect.remove(ip);
            life.dialled = Some(ip.to_string());
            Some(stream)
        }
        Err(_) => {
            life.suspect.insert(ip.to_string(), Instant::now());
            None
        }
    }
}

/// Finds a registrar and connects to it. Returns the stream, the registrar pool and the REGISTER
/// Request-URI to use on it.
///
/// - A remote user connects to an Edge server (its Edge pools by priority, every address in turn), asks the
///   Director through it, and registers through the same connection with the Request-URI naming the
///   registrar (`sip:fe1:5060;transport=tcp`), then the backup registrar if the first refuses.
/// - A local user asks the Director (when the topology has one) for its registrars, then tries every address
///   of the primary, then of the backup; without a Director its home pool and the pool's pair.
async fn connect_pass(
    spec: &UserSpec,
    tunnel: SocketAddr,
    settings: &Settings,
    life: &mut Life,
    pass: Pass,
) -> Option<(tokio::net::TcpStream, String, String)> {
    let plain_uri = format!("sip:{}", sip::DOMAIN);
    if !spec.edges.is_empty() {
        for edge in &spec.edges {
            for ip in addresses(tunnel, edge, life, pass).await {
                let Some(mut stream) = dial(tunnel, &ip, settings, life).await else {
                    continue;
                };
                let Some((primary, backup)) = redirect(&mut stream, spec, settings, life).await
                else {
                    continue;
                };
                life.registrars = Some((primary.clone(), backup.clone()));
                // The primary first; after a session that could not register there, the backup.
                let target = match (life.use_backup, backup) {
                    (true, Some(backup)) => backup,
                    _ => primary,
                };
                let uri = format!("sip:{target}:{};transport=tcp", settings.sip_port);
                return Some((stream, target, uri));
            }
        }
        return None;
    }
    if let (Some((host, port)), Pass::Fresh) = (&spec.via, pass) {
        if let Ok(stream) = tunnel::connect(tunnel, host, *port, settings.connect_timeout).await {
            // Through the fault proxy: the node behind it is the one the answer names.
            life.dialled = None;
            return Some((stream, spec.home.clone(), plain_uri));
        }
    }
    if let (Some(director), None) = (&spec.director, &life.registrars) {
        'ask: for ip in addresses(tunnel, director, life, pass).await {
            if let Some(mut stream) = dial(tunnel, &ip, settings, life).await {
                if let Some(found) = redirect(&mut stream, spec, settings, life).await {
                    life.registrars = Some(found);
                    break 'ask;
                }
            }
        }
    }
    let (primary, backup) = life
        .registrars
        .clone()
        .unwrap_or_else(|| (spec.home.clone(), spec.backup.clone()));
    let mut order: Vec<String> = std::iter::once(primary).chain(backup).collect();
    if life.use_backup {
        order.reverse();
    }
    // A redirect may name one registrar only: the home pool and its pair stay the fallbacks a client keeps.
    for fallback in std::iter::once(&spec.home).chain(spec.backup.iter()) {
        if !order.contains(fallback) {
            order.push(fallback.clone());
        }
    }
    for pool in order {
        for ip in addresses(tunnel, &pool, life, pass).await {
            if let Some(stream) = dial(tunnel, &ip, settings, life).await {
                return Some((stream, pool, plain_uri));
            }
        }
    }
    None
}

/// The addresses of a name inside the networks for this pass (not suspected, or suspected), in a random order
/// of the user's own.
async fn addresses(tunnel: SocketAddr, name: &str, life: &mut Life, pass: Pass) -> Vec<String> {
    let fresh = life
        .resolved
        .get(name)
        .is_some_and(|(_, asked)| asked.elapsed() < RESOLVED_FOR);
    if !fresh {
        let asked = Instant::now();
        let answer = tunnel::resolve_within(tunnel, name, RESOLVE_TIMEOUT).await;
        let entry = life
            .resolved
            .entry(name.to_string())
            .or_insert_with(|| (Vec::new(), asked));
        entry.1 = asked;
        match answer {
            Ok(found) if !found.is_empty() => {
                entry.0 = found.into_iter().map(|ip| ip.to_string()).collect();
            }
            // No answer: the last one stands (its addresses are suspects by now if they do not connect).
            _ => {}
        }
    }
    let mut found: Vec<String> = life
        .resolved
        .get(name)
        .map(|(ips, _)| ips.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|ip| (pass == Pass::Suspect) == life.suspect.contains_key(ip))
        .collect();
    found.sort();
    found.shuffle(&mut life.rng);
    found
}

/// Asks a Director (directly, or through an Edge server) for the user's registrars: REGISTER, answer the
/// digest challenge, read the `301`'s Contacts by `q` (primary first). `None` if it does not redirect.
async fn redirect(
    stream: &mut tokio::net::TcpStream,
    spec: &UserSpec,
    settings: &Settings,
    life: &mut Life,
) -> Option<(String, Option<String>)> {
    let call_id = format!("dir-{}-{}", spec.name, life.rng.gen::<u32>());
    let from_tag = format!("d{}", life.rng.gen::<u32>());
    let mut framer = Framer::default();
    // At most: credentials for another server's challenge refused, a fresh challenge, the redirect.
    for _attempt in 0..3 {
        let req = register_request(
            spec,
            &sip::domain_uri(),
            &call_id,
            &from_tag,
            life,
            settings,
        );
        let challenge = life.challenge.clone();
        let sent_credentials = challenge.is_some();
        let req = with_auth(req, &challenge, spec, life);
        let answer = transact(stream, &mut framer, &req, settings.request_timeout).await?;
        tracing::debug!(user = %spec.name, answer = %answer.start, "registrar lookup");
        match answer.status()? {
            401 | 407 => {
                let header = answer
                    .header("WWW-Authenticate")
                    .or_else(|| answer.header("Proxy-Authenticate"))?;
                life.challenge = Some(Challenge::parse(header)?);
            }
            403 if sent_credentials => life.challenge = None,
            301 | 302 => return registrars_of(&answer),
            _ => return None,
        }
    }
    None
}

/// The pools a `301` names, by falling `q`: `<sip:fe1:5060;transport=tcp>;q=0.7, <sip:fe2…>;q=0.3`.
fn registrars_of(answer: &Message) -> Option<(String, Option<String>)> {
    let contacts: Vec<&str> = answer
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Contact"))
        .flat_map(|(_, v)| v.split(','))
        .collect();
    let mut found: Vec<(f32, String)> = contacts
        .iter()
        .filter_map(|c| {
            let host = c
                .split("sip:")
                .nth(1)?
                .split([':', ';', '>'])
                .next()?
                .to_string();
            let q = c
                .split(";q=")
                .nth(1)
                .and_then(|q| q.trim().trim_end_matches('>').parse().ok())
                .unwrap_or(1.0);
            Some((q, host))
        })
        .collect();
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut hosts = found.into_iter().map(|(_, h)| h);
    let primary = hosts.next()?;
    Some((primary, hosts.next()))
}

/// Sends one request on a stream that has no session yet and waits for its final answer.
async fn transact(
    stream: &mut tokio::net::TcpStream,
    framer: &mut Framer,
    req: &Message,
    timeout: Duration,
) -> Option<Message> {
    stream.write_all(&req.to_bytes()).await.ok()?;
    let cseq = req.cseq();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    loop {
        while let Ok(Some(frame)) = framer.next_frame() {
            if let Frame::Message(m) = frame {
                if m.status().is_some_and(|s| s >= 200) && m.cseq() == cseq {
                    return Some(m);
                }
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        framer.push(&buf[..n]);
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    spec: &UserSpec,
    stream: tokio::net::TcpStream,
    registrar: &str,
    register_uri: &str,
    recorder: &Recorder,
    settings: &Settings,
    life: &mut Life,
    stage: &mut watch::Receiver<Stage>,
) -> End {
    let (mut read, mut write) = stream.into_split();
    let mut framer = Framer::default();
    let mut outstanding: HashMap<u32, Outstanding> = HashMap::new();
    let mut registered = false;
    let mut last_rx = Instant::now();
    // Nothing heard yet on this connection: a server that answers neither the REGISTER nor a keep-alive within
    // `first_answer` is given up on sooner than a registered one (RFC 5626's pong, on a fresh flow).
    let mut heard = false;
    let reg_call_id = format!("reg-{}", spec.name);
    let from_tag = format!("t{}", life.rng.gen::<u32>());
    let mut next_refresh = Instant::now() + Duration::from_secs(3600);
    let mut next_im = Instant::now() + jitter(&mut life.rng, settings.im_interval);
    let mut next_publish = Instant::now() + jitter(&mut life.rng, settings.publish_interval);
    let mut next_contact = Instant::now() + jitter(&mut life.rng, settings.contact_interval);
    let call_every = settings.call_interval.filter(|_| spec.calls);
    let mut next_call = Instant::now() + jitter(&mut life.rng, call_every);
    let mut keepalive = tokio::time::interval(settings.keepalive_interval);
    let mut final_list_sent = false;
    let mut buf = vec![0u8; 4096];

    let op = Op::Register {
        registrar: Some(registrar.to_string()),
        resiliency: false,
        attachment: Default::default(),
    };
    let Ok(pending) = recorder.invoke(&spec.name, op.clone()) else {
        return End::Lost("history unavailable".into());
    };
    let register = register_request(spec, register_uri, &reg_call_id, &from_tag, life, settings);
    let challenge = life.challenge.clone();
    let register = with_auth(register, &challenge, spec, life);
    if send(&mut write, &register).await.is_err() {
        let _ = pending.fail("connection closed before REGISTER");
        return End::Lost("connection closed".into());
    }
    outstanding.insert(
        register.cseq().unwrap_or_default(),
        Outstanding {
            kind: Kind::Register,
            pending,
            pending_op: op,
            deadline: Instant::now() + settings.request_timeout,
            request: register,
            authorized: false,
        },
    );

    loop {
        let stage_now = *stage.borrow();
        if stage_now == Stage::Stop {
            return End::Finished;
        }
        if stage_now == Stage::Final && registered && !final_list_sent {
            final_list_sent = true;
            let body = b"list\r\n".to_vec();
            if let Err(e) = start(
                spec,
                &mut write,
                recorder,
                &mut outstanding,
                life,
                settings,
                &from_tag,
                Kind::ContactList,
                Op::ContactList { contacts: None },
                body,
            )
            .await
            {
                return End::Lost(e);
            }
        }
        // At the end a user also waits for its calls in progress to be hung up by the gateway.
        if final_list_sent && outstanding.is_empty() && life.calls_up.is_empty() {
            return End::Finished;
        }
        let wake = [next_refresh, next_im, next_publish, next_call, next_contact]
            .into_iter()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            read = read.read(&mut buf) => {
                let n = match read {
                    Ok(0) => return fail_all(outstanding, "connection closed by the server"),
                    Ok(n) => n,
                    Err(e) => return fail_all(outstanding, &format!("connection error: {e}")),
                };
                last_rx = Instant::now();
                heard = true;
                framer.push(&buf[..n]);
                loop {
                    let frame = match framer.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => return fail_all(outstanding, &e.to_string()),
                    };
                    let Frame::Message(msg) = frame else { continue };
                    if msg.status().is_some() {
                        let action = on_response(spec, msg, &mut outstanding, &mut write, life, recorder, settings).await;
                        match action {
                            Ok(Some(Event::Registered { granted })) => {
                                registered = true;
                                next_refresh = Instant::now() + refresh_after(settings, granted);
                                if let Err(e) = after_register(spec, &mut write, recorder, &mut outstanding, life, settings, &from_tag).await {
                                    return End::Lost(e);
                                }
                            }
                            Ok(Some(Event::Refreshed { granted })) => next_refresh = Instant::now() + refresh_after(settings, granted),
                            Ok(Some(Event::Published { expires })) => {
                                next_publish = next_publish.min(Instant::now() + expires * 3 / 4);
                            }
                            Ok(Some(Event::PublishAgain { after })) => {
                                next_publish = next_publish.min(Instant::now() + after);
                            }
                            Ok(Some(Event::Lost(reason))) => return fail_all(outstanding, &reason),
                            Ok(None) => {}
                            Err(e) => return fail_all(outstanding, &e),
                        }
                    } else {
                        match on_request(spec, &msg, &mut write, recorder, &mut life.calls_up).await {
                            Ok(Heard::Nothing) => {}
                            // Out of resiliency mode: publish the presence the pool could not take meanwhile.
                            Ok(Heard::FullService) => next_publish = Instant::now(),
                            Ok(Heard::SentHome(pool)) => {
                                let reason = format!("sent home: register at {pool}");
                                // What is in flight may still have been served: indeterminate, as on a loss.
                                let _ = fail_all(outstanding, &reason);
                                return End::SentHome { pool, reason };
                            }
                            Err(e) => return fail_all(outstanding, &e),
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake), if registered && stage_now == Stage::Running => {
                let now = Instant::now();
                if now >= next_refresh {
                    next_refresh = now + Duration::from_secs(3600);
                    let req =
                        register_request(spec, register_uri, &reg_call_id, &from_tag, life, settings);
                    let challenge = life.challenge.clone();
                    let req = with_auth(req, &challenge, spec, life);
                    let op = Op::Refresh { action: None, resiliency: false, attachment: Default::default() };
                    if let Err(e) = send_tracked(spec, &mut write, recorder, &mut outstanding, settings, Kind::Refresh, op, req, false).await {
                        return End::Lost(e);
                    }
                }
                if now >= next_im {
                    next_im = now + settings.im_interval.unwrap_or(Duration::from_secs(3600));
                    if let Some(to) = spec.im_targets.choose(&mut life.rng).cloned() {
                        life.im_seq += 1;
                        let seq = life.im_seq;
                        let body = format!("im {} {seq}", spec.name).into_bytes();
                        let op = Op::ImSend { to: to.clone(), seq };
                        let mut req = new_request(spec, "MESSAGE", &sip::aor(&to), &sip::aor(&to), life, &from_tag);
                        req.headers.push(("Content-Type".into(), "text/plain".into()));
                        req.body = body;
                        if let Err(e) = send_tracked(spec, &mut write, recorder, &mut outstanding, settings, Kind::Im, op, req, false).await {
                            return End::Lost(e);
                        }
                    }
                }
                if now >= next_call {
                    next_call = now + call_every.unwrap_or(Duration::from_secs(3600));
                    let number = format!("+1555{:07}", life.rng.gen_range(0..10_000_000u32));
                    let uri = format!("sip:{number}@{};user=phone", sip::DOMAIN);
                    let mut req = new_request(spec, "INVITE", &uri, &uri, life, &from_tag);
                    req.headers.push(("Contact".into(), format!("<sip:{}@{}.invalid;transport=tcp>", spec.name, spec.name)));
                    req.headers.push(("X-Hold-Ms".into(), settings.call_hold.as_millis().to_string()));
                    let call_id = req.header("Call-ID").unwrap_or_default().to_string();
                    let op = Op::CallSetup { to: number, call_id };
                    if let Err(e) = send_tracked(spec, &mut write, recorder, &mut outstanding, settings, Kind::Call, op, req, false).await {
                        return End::Lost(e);
                    }
                }
                if now >= next_contact {
                    next_contact = now + settings.contact_interval.unwrap_or(Duration::from_secs(3600));
                    // Not in resiliency mode: persistent changes are refused there, by design.
                    if !life.signed_in_resiliency {
                        life.contacts_added += 1;
                        let contact = format!("{}-n{}", spec.name, life.contacts_added);
                        let body = format!("add {}\r\n", sip::aor(&contact)).into_bytes();
                        let op = Op::ContactAdd { contact };
                        if let Err(e) = start(spec, &mut write, recorder, &mut outstanding, life, settings, &from_tag, Kind::ContactAdd, op, body).await {
                            return End::Lost(e);
                        }
                    }
                }
                if now >= next_publish {
                    next_publish = now + settings.publish_interval.unwrap_or(Duration::from_secs(3600));
                    if let Err(e) = publish(spec, &mut write, recorder, &mut outstanding, life, settings, &from_tag).await {
                        return End::Lost(e);
                    }
                }
            }
            _ = keepalive.tick() => {
                if !heard && last_rx.elapsed() > settings.first_answer {
                    return fail_silent(outstanding, "no answer: a new connection stayed silent");
                }
                if last_rx.elapsed() > settings.dead_after {
                    return fail_silent(outstanding, "no answer: the server went silent");
                }
                if write.write_all(b"\r\n\r\n").await.is_err() {
                    return fail_all(outstanding, "keep-alive: write failed");
                }
                let now = Instant::now();
                let expired: Vec<u32> = outstanding.iter().filter(|(_, o)| o.deadline <= now).map(|(c, _)| *c).collect();
                let mut lost = false;
                for cseq in expired {
                    if let Some(o) = outstanding.remove(&cseq) {
                        lost |= matches!(o.kind, Kind::Register | Kind::Refresh);
                        let _ = o.pending.timeout();
                    }
                }
                if lost {
                    return fail_silent(outstanding, "no answer: REGISTER without answer");
                }
            }
            _ = stage.changed() => {}
        }
    }
}

/// When a user refreshes its registration: at its refresh interval, but at the latest at three quarters of the
/// time the registrar granted, as a client does (a refresh due at the binding's very expiry races it, and the
/// registrar rightly answers `added`: the binding had expired).
fn refresh_after(settings: &Settings, granted: Option<Duration>) -> Duration {
    granted.map_or(settings.refresh_interval, |g| {
        settings.refresh_interval.min(g * 3 / 4)
    })
}

/// What a response meant for the session.
enum Event {
    /// Signed in; the binding lasts `granted` (if the answer said).
    Registered {
        granted: Option<Duration>,
    },
    /// The registration refreshed; the binding lasts `granted` (if the answer said).
    Refreshed {
        granted: Option<Duration>,
    },
    Lost(String),
    /// A presence publication accepted for this long (the pool may grant less than asked, RFC 3903 section 4.1):
    /// the client publishes again before it runs out.
    Published {
        expires: Duration,
    },
    /// A publication the pool did not take (or whose outcome it does not know): published again after the
    /// `Retry-After` the pool names, or a few seconds, as a client does, so a refresh that met a fault does not
    /// leave the presence to lapse.
    PublishAgain {
        after: Duration,
    },
}

#[allow(clippy::too_many_arguments)]
async fn on_response(
    spec: &UserSpec,
    msg: Message,
    outstanding: &mut HashMap<u32, Outstanding>,
    write: &mut OwnedWriteHalf,
    life: &mut Life,
    recorder: &Recorder,
    settings: &Settings,
) -> Result<Option<Event>, String> {
    let Some(cseq) = msg.cseq() else {
        return Ok(None);
    };
    let status = msg.status().unwrap_or(0);
    if status < 200 {
        return Ok(None);
    }
    let Some(mut o) = outstanding.remove(&cseq) else {
        return Ok(None);
    };
    if (status == 401 || status == 407) && !o.authorized {
        let header = msg
            .header("WWW-Authenticate")
            .or_else(|| msg.header("Proxy-Authenticate"));
        if let Some(c) = header.and_then(Challenge::parse) {
            life.challenge = Some(c);
            life.cseq += 1;
            let mut again = o.request.clone();
            set_cseq(&mut again, life.cseq);
            let challenge = life.challenge.clone();
            let again = with_auth(again, &challenge, spec, life);
            send(write, &again).await.map_err(|e| e.to_string())?;
            o.request = again;
            o.authorized = true;
            o.deadline = Instant::now() + settings.request_timeout;
            outstanding.insert(life.cseq, o);
            return Ok(None);
        }
    }
    // Credentials answering another server's challenge (a nonce of another pool) may be refused outright:
    // forget the challenge and ask again without them, once.
    let sent_credentials = o.request.header("Authorization").is_some();
    if status == 403
        && !o.authorized
        && sent_credentials
        && matches!(o.kind, Kind::Register | Kind::Refresh)
    {
        life.challenge = None;
        life.cseq += 1;
        let mut again = o.request.clone();
        again
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Authorization"));
        set_cseq(&mut again, life.cseq);
        send(write, &again).await.map_err(|e| e.to_string())?;
        o.request = again;
        o.deadline = Instant::now() + settings.request_timeout;
        outstanding.insert(life.cseq, o);
        return Ok(None);
    }
    let reason = msg.start.trim_start_matches("SIP/2.0 ").to_string();
    let ok = (200..300).contains(&status);
    match o.kind {
        Kind::Register if ok => {
            let registrar = match &o.pending_op {
                Op::Register { registrar, .. } => registrar.clone(),
                _ => None,
            };
            life.signed_in_resiliency = sip::resiliency(&msg);
            o.pending
                .ok_with(Op::Register {
                    registrar,
                    resiliency: life.signed_in_resiliency,
                    attachment: attachment(&msg, life),
                })
                .map_err(|e| e.to_string())?;
            Ok(Some(Event::Registered {
                granted: sip::granted_expires(&msg),
            }))
        }
        Kind::Refresh if ok => {
            let action = sip::register_action(&msg);
            let added = action.as_deref() == Some("added");
            o.pending
                .ok_with(Op::Refresh {
                    action,
                    resiliency: sip::resiliency(&msg),
                    attachment: attachment(&msg, life),
                })
                .map_err(|e| e.to_string())?;
            // The server lost the binding: drop everything and register again.
            Ok(Some(if added {
                Event::Lost("refresh answered register-action=added".into())
            } else {
                Event::Refreshed {
                    granted: sip::granted_expires(&msg),
                }
            }))
        }
        Kind::Register | Kind::Refresh if (300..400).contains(&status) => {
            // A registrar that sends us elsewhere (its pool failed over, or we are not homed there): follow
            // it as a client does, keeping the backup it names.
            let _ = o.pending.fail(reason.clone());
            if let Some(found) = registrars_of(&msg) {
                life.registrars = Some(found);
                life.use_backup = false;
            }
            Ok(Some(Event::Lost(format!("REGISTER redirected: {reason}"))))
        }
        Kind::Register | Kind::Refresh => {
            if matches!(o.kind, Kind::Register) && status != 408 {
                // This registrar would not take us: the next attempt goes to the other one.
                life.use_backup = !life.use_backup;
            }
            // A 408 says the outcome is unknown (the binding may have been written): indeterminate.
            let _ = if status == 408 {
                o.pending.timeout()
            } else {
                o.pending.fail(reason.clone())
            };
            Ok(Some(Event::Lost(format!("REGISTER refused: {reason}"))))
        }
        Kind::Call if ok => {
            // The 2xx of an INVITE is acknowledged end to end with an ACK in the same dialog.
            let mut ack = o.request.clone();
            ack.start = ack.start.replacen("INVITE", "ACK", 1);
            let cseq = o.request.cseq().unwrap_or_default();
            ack.headers.retain(|(n, _)| {
                !["To", "CSeq", "X-Hold-Ms", "Contact"]
                    .iter()
                    .any(|h| n.eq_ignore_ascii_case(h))
            });
            ack.headers.push((
                "To".into(),
                msg.header("To").unwrap_or_default().to_string(),
            ));
            ack.headers.push(("CSeq".into(), format!("{cseq} ACK")));
            send(write, &ack).await.map_err(|e| e.to_string())?;
            if let Op::CallSetup { call_id, .. } = &o.pending_op {
                life.calls_up.insert(call_id.clone());
            }
            o.pending.ok().map_err(|e| e.to_string())?;
            Ok(None)
        }
        Kind::ContactList if ok => {
            let contacts: Vec<String> = String::from_utf8_lossy(&msg.body)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| sip::user_of(l).unwrap_or(l).to_string())
                .collect();
            o.pending
                .ok_with(Op::ContactList {
                    contacts: Some(contacts),
                })
                .map_err(|e| e.to_string())?;
            let _ = recorder;
            Ok(None)
        }
        Kind::Publish if ok => {
            let granted = msg
                .header("Expires")
                .and_then(|v| v.trim().parse::<u64>().ok());
            let state = match &o.pending_op {
                Op::Publish { state, .. } => state.clone(),
                _ => String::new(),
            };
            o.pending
                .ok_with(Op::Publish {
                    state,
                    granted_s: granted,
                })
                .map_err(|e| e.to_string())?;
            Ok(granted.map(|secs| Event::Published {
                expires: Duration::from_secs(secs),
            }))
        }
        // The pool's 408 means it could not learn the outcome: an IM's recipient may have got it, a write may
        // have been applied at its primary without a confirmed replica. Indeterminate, never a refusal.
        _ if status == 408 && !matches!(o.kind, Kind::Publish) => {
            o.pending.timeout().map_err(|e| e.to_string())?;
            Ok(None)
        }
        _ if ok => {
            o.pending.ok().map_err(|e| e.to_string())?;
            Ok(None)
        }
        Kind::Publish => {
            // Again after the pool's Retry-After, or soon after an unknown outcome; a refusal without one (resiliency
            // mode) waits for the pool's notice instead.
            let retry_after = msg
                .header("Retry-After")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let after = if status == 408 {
                o.pending.timeout().map_err(|e| e.to_string())?;
                Some(retry_after.unwrap_or(PUBLISH_RETRY))
            } else {
                o.pending.fail(reason).map_err(|e| e.to_string())?;
                retry_after
            };
            Ok(after.map(|after| Event::PublishAgain { after }))
        }
        _ => {
            o.pending.fail(reason).map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}

/// What a request from the server means for the session.
enum Heard {
    Nothing,
    /// Resiliency mode ended here: full service again.
    FullService,
    /// Register at this pool instead.
    SentHome(String),
}

/// Answers a request from the server: an IM or a presence notice to record, anything else acknowledged.
async fn on_request(
    spec: &UserSpec,
    msg: &Message,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    calls_up: &mut std::collections::BTreeSet<String>,
) -> Result<Heard, String> {
    let mut register_at = None;
    let mut heard = Heard::Nothing;
    match msg.method() {
        // An ACK is never answered.
        Some("ACK") => return Ok(Heard::Nothing),
        Some("BYE") => {
            let call_id = msg.header("Call-ID").unwrap_or_default().to_string();
            calls_up.remove(&call_id);
            let _ = recorder.observe(
                &spec.name,
                Op::CallEnd {
                    call_id,
                    by: Some(CallEndedBy::Bye),
                },
            );
        }
        Some("INVITE") => {
            // A call from the gateway: answer at once (no media), in a dialog of our own tag.
            let mut ok = msg.response(200, "OK");
            for (n, v) in ok.headers.iter_mut() {
                if n.eq_ignore_ascii_case("To") && !v.contains(";tag=") {
                    v.push_str(&format!(";tag=in{}", msg.cseq().unwrap_or_default()));
                }
            }
            ok.headers.push((
                "Contact".into(),
                format!("<sip:{}@{}.invalid;transport=tcp>", spec.name, spec.name),
            ));
            return send(write, &ok)
                .await
                .map(|()| Heard::Nothing)
                .map_err(|e| format!("answer the server: {e}"));
        }
        Some("MESSAGE") => {
            let text = String::from_utf8_lossy(&msg.body);
            let mut words = text.split_whitespace();
            if let (Some("im"), Some(from), Some(seq)) = (words.next(), words.next(), words.next())
            {
                if let Ok(seq) = seq.parse() {
                    let _ = recorder.observe(
                        &spec.name,
                        Op::ImReceived {
                            from: from.to_string(),
                            seq,
                        },
                    );
                }
            }
        }
        Some("NOTIFY")
            if msg
                .header("Event")
                .is_some_and(|e| e.trim().eq_ignore_ascii_case(sip::RESILIENCY_EVENT)) =>
        {
            // `resiliency-mode: on|off`, `home: <pool>`, and `register-at: <pool>` when the client must go there.
            let body = String::from_utf8_lossy(&msg.body);
            let field = |wanted: &str| {
                body.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    (name.trim().eq_ignore_ascii_case(wanted) && !value.trim().is_empty())
                        .then(|| value.trim().to_string())
                })
            };
            register_at = field("register-at");
            // Sent elsewhere: recorded as the loss it is (by the caller), not as a change of mode here.
            if register_at.is_none() {
                if let Some(mode) = field("resiliency-mode") {
                    let on = mode.eq_ignore_ascii_case("on");
                    let _ = recorder.observe(&spec.name, Op::ResiliencyNotice { on });
                    if !on {
                        heard = Heard::FullService;
                    }
                }
            }
        }
        Some("NOTIFY") => {
            let target = msg
                .header("From")
                .and_then(sip::user_of)
                .unwrap_or_default()
                .to_string();
            let body = String::from_utf8_lossy(&msg.body);
            // A presentity in resiliency mode shows as unknown (`<note>unknown</note>`): that is no state.
            let state = between(&body, "<note>", "</note>")
                .or_else(|| between(&body, "<basic>", "</basic>"))
                .filter(|s| *s != "unknown")
                .map(String::from);
            let _ = recorder.observe(&spec.name, Op::NotifyReceived { target, state });
        }
        _ => {}
    }
    send(write, &msg.response(200, "OK"))
        .await
        .map(|()| register_at.map_or(heard, Heard::SentHome))
        .map_err(|e| format!("answer the server: {e}"))
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].trim())
}

/// Once registered: add the contact (first time only), watch its presence, publish our own.
async fn after_register(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
) -> Result<(), String> {
    if let Some(contact) = spec.contact.clone() {
        if !life.contact_added || life.signed_in_resiliency {
            // Added once served by a pool that may change it; tried again at every sign-in in resiliency mode.
            life.contact_added = !life.signed_in_resiliency;
            let body = format!("add {}\r\n", sip::aor(&contact)).into_bytes();
            start(
                spec,
                write,
                recorder,
                outstanding,
                life,
                settings,
                from_tag,
                Kind::ContactAdd,
                Op::ContactAdd {
                    contact: contact.clone(),
                },
                body,
            )
            .await?;
        }
        let mut req = new_request(
            spec,
            "SUBSCRIBE",
            &sip::aor(&contact),
            &sip::aor(&contact),
            life,
            from_tag,
        );
        req.headers.push(("Event".into(), "presence".into()));
        req.headers.push(("Expires".into(), "3600".into()));
        req.headers.push((
            "Contact".into(),
            format!("<sip:{}@{}.invalid;transport=tcp>", spec.name, spec.name),
        ));
        let op = Op::Subscribe { target: contact };
        send_tracked(
            spec,
            write,
            recorder,
            outstanding,
            settings,
            Kind::Subscribe,
            op,
            req,
            false,
        )
        .await?;
    }
    publish(spec, write, recorder, outstanding, life, settings, from_tag).await
}

async fn publish(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
) -> Result<(), String> {
    life.publish_seq += 1;
    let state = format!("online#{}", life.publish_seq);
    let me = sip::aor(&spec.name);
    let mut req = new_request(spec, "PUBLISH", &me, &me, life, from_tag);
    req.headers.push(("Event".into(), "presence".into()));
    req.headers.push(("Expires".into(), "3600".into()));
    req.headers
        .push(("Content-Type".into(), "application/pidf+xml".into()));
    req.body = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{me}\"><tuple id=\"t1\"><status><basic>open</basic></status><note>{state}</note></tuple></presence>"
    )
    .into_bytes();
    send_tracked(
        spec,
        write,
        recorder,
        outstanding,
        settings,
        Kind::Publish,
        Op::Publish {
            state,
            granted_s: None,
        },
        req,
        false,
    )
    .await
}

/// Starts a contact-list operation: PUBLISH `Event: vnd-poolchaos-contacts` to oneself.
#[allow(clippy::too_many_arguments)]
async fn start(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    life: &mut Life,
    settings: &Settings,
    from_tag: &str,
    kind: Kind,
    op: Op,
    body: Vec<u8>,
) -> Result<(), String> {
    let me = sip::aor(&spec.name);
    let mut req = new_request(spec, "PUBLISH", &me, &me, life, from_tag);
    req.headers
        .push(("Event".into(), "vnd-poolchaos-contacts".into()));
    req.headers
        .push(("Content-Type".into(), "text/plain".into()));
    req.body = body;
    send_tracked(
        spec,
        write,
        recorder,
        outstanding,
        settings,
        kind,
        op,
        req,
        false,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn send_tracked(
    spec: &UserSpec,
    write: &mut OwnedWriteHalf,
    recorder: &Recorder,
    outstanding: &mut HashMap<u32, Outstanding>,
    settings: &Settings,
    kind: Kind,
    op: Op,
    req: Message,
    authorized: bool,
) -> Result<(), String> {
    let pending = recorder
        .invoke(&spec.name, op.clone())
        .map_err(|e| e.to_string())?;
    if let Err(e) = send(write, &req).await {
        let _ = pending.fail(format!("write failed: {e}"));
        return Err("connection closed".into());
    }
    let timeout = match kind {
        // The Front End answers an IM only after the recipient did (or 408 after 10 s).
        Kind::Im => settings.request_timeout + Duration::from_secs(10),
        _ => settings.request_timeout,
    };
    outstanding.insert(
        req.cseq().unwrap_or_default(),
        Outstanding {
            kind,
            pending,
            pending_op: op,
            deadline: Instant::now() + timeout,
            request: req,
            authorized,
        },
    );
    Ok(())
}

/// Ends a session: requests still waiting are indeterminate (they may have taken effect).
fn fail_all(outstanding: HashMap<u32, Outstanding>, reason: &str) -> End {
    time_out_all(outstanding);
    End::Lost(reason.to_string())
}

/// [`fail_all`] for a server that went silent.
fn fail_silent(outstanding: HashMap<u32, Outstanding>, reason: &str) -> End {
    time_out_all(outstanding);
    End::Silent(reason.to_string())
}

fn time_out_all(outstanding: HashMap<u32, Outstanding>) {
    for (_, o) in outstanding {
        let _ = o.pending.timeout();
    }
}

fn new_request(
    spec: &UserSpec,
    method: &str,
    uri: &str,
    to: &str,
    life: &mut Life,
    from_tag: &str,
) -> Message {
    life.cseq += 1;
    let call_id = format!(
        "{}-{}-{}",
        spec.name,
        method.to_ascii_lowercase(),
        life.rng.gen::<u64>()
    );
    sip::request(
        method,
        uri,
        &spec.name,
        to,
        &call_id,
        from_tag,
        life.cseq,
        &format!("{:x}", life.rng.gen::<u64>()),
    )
}

fn register_request(
    spec: &UserSpec,
    uri: &str,
    call_id: &str,
    from_tag: &str,
    life: &mut Life,
    settings: &Settings,
) -> Message {
    life.cseq += 1;
    let me = sip::aor(&spec.name);
    let mut req = sip::request(
        "REGISTER",
        uri,
        &spec.name,
        &me,
        call_id,
        from_tag,
        life.cseq,
        &format!("{:x}", life.rng.gen::<u64>()),
    );
    req.headers.push((
        "Contact".into(),
        format!("<sip:{}@{}.invalid;transport=tcp>", spec.name, spec.name),
    ));
    req.headers
        .push(("Expires".into(), settings.register_expires_s.to_string()));
    req
}

fn with_auth(
    mut req: Message,
    challenge: &Option<Challenge>,
    spec: &UserSpec,
    life: &mut Life,
) -> Message {
    if let Some(c) = challenge {
        life.nc += 1;
        let uri = req.start.split(' ').nth(1).unwrap_or_default().to_string();
        let method = req.method().unwrap_or("REGISTER").to_string();
        let cnonce = format!("{:x}", life.rng.gen::<u32>());
        req.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Authorization"));
        req.headers.push((
            "Authorization".into(),
            c.authorization(&spec.name, &spec.password, &method, &uri, life.nc, &cnonce),
        ));
    }
    req
}

fn set_cseq(req: &mut Message, cseq: u32) {
    let method = req.method().unwrap_or("REGISTER").to_string();
    for (n, v) in req.headers.iter_mut() {
        if n.eq_ignore_ascii_case("CSeq") {
            *v = format!("{cseq} {method}");
        }
    }
}

async fn send(write: &mut OwnedWriteHalf, msg: &Message) -> std::io::Result<()> {
    write.write_all(&msg.to_bytes()).await
}

/// A random first delay within `every`, so timers of many users do not fire together.
fn jitter(rng: &mut ChaCha8Rng, every: Option<Duration>) -> Duration {
    match every {
        Some(d) => Duration::from_millis(rng.gen_range(0..d.as_millis().max(1) as u64)),
        None => Duration::from_secs(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client refreshes well before the binding it was granted runs out, never at its very expiry.
    #[test]
    fn a_refresh_comes_by_three_quarters_of_the_granted_expiry() {
        let lync = Settings {
            refresh_interval: Duration::from_secs(60),
            register_expires_s: 60,
            ..Settings::default()
        };
        // Granted the 60 s asked: refreshed at 45 s, not at the expiry.
        assert_eq!(
            refresh_after(&lync, Some(Duration::from_secs(60))),
            Duration::from_secs(45)
        );
        // Granted more than the interval: the interval.
        assert_eq!(
            refresh_after(&lync, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        // The answer said nothing: the interval.
        assert_eq!(refresh_after(&lync, None), Duration::from_secs(60));
    }
}
