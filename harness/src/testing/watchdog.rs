//! The last resort against a hung scenario test.

use std::sync::mpsc;
use std::time::Duration;

use libtest_mimic::Failed;

use crate::runner;
use crate::scenario::Scenario;

/// The last resort against a hang the run's own (tokio) watchdog cannot end, such as a runtime whose threads
/// are all blocked: a thread that, past the run's budget and a minute more, removes this process's containers
/// and networks and exits with a failure that names the scenario and its replay, so a CI run ends with a reason
/// instead of at its own time limit. Dropping it (the run returned) stops it.
pub(super) struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    pub(super) fn start(scenario: &Scenario, seed: u64, replay: &str) -> Result<Watchdog, Failed> {
        let limit = runner::run_budget(scenario, seed).map_err(|e| Failed::from(e.to_string()))?
            + Duration::from_secs(60);
        let (done, wait) = mpsc::channel::<()>();
        let name = scenario.name().to_string();
        let replay = replay.to_string();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                eprintln!(
                    "{name}: hung: still running after {} s, past its watchdog; removing this process's \
                     containers and exiting\nreplay: {replay}",
                    limit.as_secs()
                );
                crate::runtime::remove_own_blocking();
                std::process::exit(101);
            }
        });
        Ok(Watchdog(Some(done)))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let _ = done.send(());
        }
    }
}
