//! The Kamailio pool's chaos scenarios as tests: every file in `scenarios/`, and one scenario built in Rust (a
//! registrar killed twice in a row, the second time before the pool has settled from the first). Each test runs
//! its scenario in containers and passes when the verdict is `valid`.
//!
//! `POOLCHAOS_SEED=N` replays a run; reports go to `target/kamailio-pool/<scenario>-<seed>/`.

use std::time::Duration;

use poolchaos::fault::Fault;
use poolchaos::testing::{CheckerSettings, ScenarioBuilder, Suite};

fn main() {
    // The image is made from the installed package's files: install it on first use (as root or with
    // password-less sudo; anywhere else this says the command to run).
    poolchaos_tests::ensure_tool("kamailio", "kamailio");
    let dir = env!("CARGO_MANIFEST_DIR");
    let kill = |target: &str| Fault::Kill {
        target: target.into(),
    };
    let twice = ScenarioBuilder::new("kamailio-kill-twice")
        .base_dir(dir)
        .topology("topology.toml")
        .claim(
            "Killing a registrar, and another one while the first restarts, signs out only the users connected \
             to each; they register again within the bound, no acknowledged IM is lost, and afterwards every \
             registrar holds exactly the bindings of the users registered.",
        )
        .ims_every(Duration::from_secs(2))
        .warmup(Duration::from_secs(5))
        .quiet(Duration::from_secs(8))
        .fault(Duration::ZERO, Some(Duration::from_secs(5)), kill("kam-3"))
        .fault(Duration::from_secs(4), Some(Duration::from_secs(5)), kill("kam-2"))
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
            "only the users connected to each killed registrar are signed out",
            &["registration"],
        )
        .part(
            "they register again within the bound",
            &["registration", "bound:reregister.p99", "bound:reregister.count"],
        )
        .part("no acknowledged IM is lost", &["im", "bound:ims_lost"])
        .part(
            "afterwards every registrar holds exactly the bindings of the users registered",
            &["bindings", "bound:bindings_converge.max"],
        )
        .build();
    Suite::folder(format!("{dir}/scenarios"))
        .with_scenario("kamailio-kill-twice", twice)
        .reports("kamailio-pool")
        .replay_with("cargo test -p kamailio-pool --test chaos")
        .run()
}
