//! A user's life across connections: [`run`], the loop that finds a server, holds a session on it, and then
//! goes where the pool sent it, or records the loss and backs off before trying again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use super::locate::connect;
use super::session::{session, End};
use super::state::{Life, UserSpec};
use crate::history::{CallEndedBy, Op, Recorder};
use crate::workload::{Directive, Settings};

/// Runs the user until it is told to stop. Returns only then.
pub async fn run(
    spec: UserSpec,
    tunnel: SocketAddr,
    recorder: Recorder,
    settings: Settings,
    nodes: Arc<HashMap<String, String>>,
    mut directive: watch::Receiver<Directive>,
) {
    let mut life = Life::new(spec.seed, nodes);
    // Spread the start so thousands of users do not register in the same millisecond.
    let spread_ms = life
        .rng
        .gen_range(0..settings.start_spread.as_millis().max(1) as u64);
    sleep(Duration::from_millis(spread_ms)).await;
    loop {
        if *directive.borrow() == Directive::Stop {
            return;
        }
        let Some((way, registrar, register_uri)) =
            connect(&spec, tunnel, &settings, &mut life).await
        else {
            back_off(&settings, &mut life, &mut directive).await;
            continue;
        };
        match session(
            &spec,
            way,
            &registrar,
            &register_uri,
            &recorder,
            &settings,
            &mut life,
            &mut directive,
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
                after_loss(
                    &spec,
                    &recorder,
                    &settings,
                    &mut life,
                    &mut directive,
                    reason,
                )
                .await;
            }
            End::Lost(reason) => {
                after_loss(
                    &spec,
                    &recorder,
                    &settings,
                    &mut life,
                    &mut directive,
                    reason,
                )
                .await;
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
    directive: &mut watch::Receiver<Directive>,
    reason: String,
) {
    end_calls(spec, recorder, life);
    let _ = recorder.observe(&spec.name, Op::RegistrationLost { reason });
    back_off(settings, life, directive).await;
}

/// Waits between half the retry back-off and all of it (drawn from the user's own random stream), or until
/// the user is told something new.
async fn back_off(
    settings: &Settings,
    life: &mut Life,
    directive: &mut watch::Receiver<Directive>,
) {
    let most = settings.retry_backoff.as_millis() as u64;
    let backoff = life.rng.gen_range(most / 2..=most);
    tokio::select! {
        _ = sleep(Duration::from_millis(backoff)) => {}
        _ = directive.changed() => {}
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
