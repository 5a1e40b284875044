//! Finding a server: whom to ask (the registrars a Director names, directly or through an Edge server; else the
//! home pool and its pair), which addresses of a pool to dial (DNS answers kept a while, addresses that refused
//! lately tried only after the others), and the connection through the tunnel.

use std::net::SocketAddr;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

use super::request::{register_request, with_auth};
use super::state::{Life, UserSpec};
use super::wire::{self, transact, Reader, Writer};
use crate::runtime::tunnel;
use crate::workload::sip::{self, Challenge, Message, Transport};
use crate::workload::Settings;

/// How long a name's addresses are used without asking DNS again.
const RESOLVED_FOR: Duration = Duration::from_secs(1);
/// How long a client waits for DNS before it uses the addresses it had.
const RESOLVE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an address that refused a connection stays at the back of the list.
pub(super) const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// Whether a connection attempt tries the addresses not suspected of being down, or (when none of those
/// answered) the suspected ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Fresh,
    Suspect,
}

/// Finds a registrar and connects to it: first through addresses not recently unreachable, then through those.
pub(super) async fn connect(
    spec: &UserSpec,
    tunnel: SocketAddr,
    settings: &Settings,
    life: &mut Life,
) -> Option<((Reader, Writer), String, String)> {
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

/// Connects to `ip` through the tunnel (over UDP: opens a datagram flow to it), keeping the suspect list. A UDP
/// flow opens whether a server listens or not: a silent one is found out by the session's first answer timeout.
async fn dial(
    tunnel: SocketAddr,
    ip: &str,
    transport: Transport,
    settings: &Settings,
    life: &mut Life,
) -> Option<(Reader, Writer)> {
    match wire::open(
        tunnel,
        ip,
        settings.sip_port,
        settings.connect_timeout,
        transport,
    )
    .await
    {
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
) -> Option<((Reader, Writer), String, String)> {
    let plain_uri = format!("sip:{}", sip::DOMAIN);
    if !spec.edges.is_empty() {
        for edge in &spec.edges {
            for ip in addresses(tunnel, edge, life, pass).await {
                let Some(mut way) = dial(tunnel, &ip, Transport::Tcp, settings, life).await else {
                    continue;
                };
                let Some((primary, backup)) = redirect(&mut way, spec, settings, life).await else {
                    continue;
                };
                life.registrars = Some((primary.clone(), backup.clone()));
                // The primary first; after a session that could not register there, the backup.
                let target = match (life.use_backup, backup) {
                    (true, Some(backup)) => backup,
                    _ => primary,
                };
                let uri = format!("sip:{target}:{};transport=tcp", settings.sip_port);
                return Some((way, target, uri));
            }
        }
        return None;
    }
    if let (Some((host, port)), Pass::Fresh) = (&spec.via, pass) {
        if let Ok(way) = wire::open(
            tunnel,
            host,
            *port,
            settings.connect_timeout,
            Transport::Tcp,
        )
        .await
        {
            // Through the fault proxy: the node behind it is the one the answer names.
            life.dialled = None;
            return Some((way, spec.home.clone(), plain_uri));
        }
    }
    if let (Some(director), None) = (&spec.director, &life.registrars) {
        'ask: for ip in addresses(tunnel, director, life, pass).await {
            if let Some(mut way) = dial(tunnel, &ip, spec.transport, settings, life).await {
                if let Some(found) = redirect(&mut way, spec, settings, life).await {
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
            if let Some(way) = dial(tunnel, &ip, spec.transport, settings, life).await {
                return Some((way, pool, plain_uri));
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
    (reader, writer): &mut (Reader, Writer),
    spec: &UserSpec,
    settings: &Settings,
    life: &mut Life,
) -> Option<(String, Option<String>)> {
    let call_id = format!("dir-{}-{}", spec.name, life.rng.gen::<u32>());
    let from_tag = format!("d{}", life.rng.gen::<u32>());
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
        let answer = transact(reader, writer, &req, settings.request_timeout).await?;
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
pub(super) fn registrars_of(answer: &Message) -> Option<(String, Option<String>)> {
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
