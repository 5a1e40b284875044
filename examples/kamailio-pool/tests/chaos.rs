//! The Kamailio pool's chaos scenarios as tests: every file in `scenarios/`, and one scenario built in Rust (a
//! registrar killed and restarted while another is frozen, so the restarted one must get its bindings from the
//! one peer left). Each test runs its scenario in containers and passes when the verdict is `valid`.
//!
//! `POOLCHAOS_SEED=N` replays a run; reports go to `target/kamailio-pool/<scenario>-<seed>/`.

use std::time::Duration;

use poolchaos::fault::Fault;
use poolchaos::testing::{CheckerSettings, ScenarioBuilder, Suite};

fn main() {
    // The image is made from the installed package's files: install it on first use (as root or with
    // password-less sudo; anywhere else this says the command to run).
    poolchaos_tests::ensure_tool("kamailio", "kamailio");
    // The Kamailio pool's subject, topology and scenarios live with the project's other suites.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../suites/kamailio");
    let kill_during_pause = ScenarioBuilder::new("kamailio-kill-during-pause")
        .base_dir(dir)
        .topology("topologies/kamailio-pool.toml")
        .claim(
            "Killing a registrar while another is frozen signs out only the users connected to those two; they \
             register again with the third within the bound, no acknowledged IM is lost, and afterwards every \
             registrar holds exactly the bindings of the users registered.",
        )
        .ims_every(Duration::from_secs(2))
        .warmup(Duration::from_secs(5))
        .quiet(Duration::from_secs(8))
        .fault(
            Duration::ZERO,
            Some(Duration::from_secs(9)),
            Fault::Pause {
                target: "kam-1".into(),
            },
        )
        .fault(
            Duration::from_secs(2),
            Some(Duration::from_secs(4)),
            Fault::Kill {
                target: "kam-3".into(),
            },
        )
        .checker(CheckerSettings::RegistrationAttachedOnly {
            reregister_within: Duration::from_secs(10),
        })
        .checker(CheckerSettings::Im {
            delivery_grace: None,
        })
        .checker(CheckerSettings::BindingConvergence { settle: None })
        .bound(r#"reregister.p99 <= "10s""#)
        .bound("reregister.count >= 2")
        .bound("ims_lost == 0")
        .bound(r#"bindings_converge.max <= "10s""#)
        .part(
            "only the users connected to the frozen and the killed registrar are signed out",
            &["registration"],
        )
        .part(
            "they register again with the third within the bound",
            &["registration", "bound:reregister.p99", "bound:reregister.count"],
        )
        .part("no acknowledged IM is lost", &["im", "bound:ims_lost"])
        .part(
            "afterwards every registrar holds exactly the bindings of the users registered",
            &["bindings", "bound:bindings_converge.max"],
        )
        .build();
    Suite::folder(format!("{dir}/scenarios"))
        .with_scenario("kamailio-kill-during-pause", kill_during_pause)
        .reports("kamailio-pool")
        .replay_with("cargo test -p kamailio-pool --test chaos")
        .run()
}
