//! Scenario files: a topology, a workload, a fault schedule, the checkers and their bounds — one behaviour
//! of the pool as data, listed and run by name.
//!
//! ```toml
//! name = "fe-kill"
//! claim = "Killing a Front End signs its users out briefly and loses nothing acknowledged."
//! topology = "topologies/two-sites.toml"     # relative to this file
//! bounds = ['reregister.p99 <= "10s"', "reregister.count >= 1", "ims_lost == 0"]     # every run
//! nightly_bounds = ['reregister.p99 <= "2s"']              # the goal, asserted by the nightly profile
//!
//! [[claim_part]]                                 # each part names the checkers and bounds that judge it
//! says = "the killed server's users register again within the bound"
//! checked_by = ["registration", "bound:reregister.count", "bound:reregister.p99", "nightly:reregister.p99"]
//!
//! [workload]
//! im_interval_ms = 2000
//!
//! [schedule]
//! warmup_ms = 4000
//! quiet_ms = 6000
//! [[schedule.fault]]
//! at_ms = 0
//! for_ms = 5000
//! kind = "kill"
//! target = "fe1-1"
//!
//! [checkers]
//! registration = { reregister_bound_ms = 10000 }
//! im = {}
//! durability = {}
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::checker::{
    BackendClaims, BindingConvergence, CallsEnd, Composed, Durability, ImDelivery, MaySignOut,
    NoSplitBrain, Quorum, RegistrationContinuity, ResiliencyMode,
};
use crate::claims::part::{unchecked, ClaimPart};
use crate::report::Bound;
use crate::schedule::ScheduleSpec;
use crate::subject::Offer;
use crate::topology::{self, FileError, Topology};
use crate::workload;

/// A scenario as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub name: String,
    /// What the scenario proves, in a sentence: shown in reports and test output.
    #[serde(default)]
    pub claim: String,
    /// The claim in parts, each naming the checker or bound that judges it (see [`crate::claims`]).
    #[serde(default)]
    pub claim_part: Vec<ClaimPart>,
    /// The topology file, relative to the scenario file.
    pub topology: PathBuf,
    #[serde(default)]
    pub workload: WorkloadSpec,
    pub schedule: ScheduleSpec,
    #[serde(default)]
    pub checkers: CheckersSpec,
    #[serde(default)]
    pub bounds: Vec<String>,
    #[serde(default)]
    pub nightly_bounds: Vec<String>,
    /// Runs for the nightly profile, not the default `cargo test`: long ones, and those the default run leaves
    /// out to keep CI within its time budget (their behaviour is also covered by a default scenario).
    #[serde(default)]
    pub nightly_only: bool,
    /// A defect of the subject this scenario is known to show (a finding not fixed, in a system the project does
    /// not own): as a test it passes while `checker` keeps finding it (verdict `invalid` with a violation of
    /// that checker) and fails the day the subject no longer shows it, so the finding is never forgotten.
    pub known_defect: Option<KnownDefect>,
}

/// See [`ScenarioFile::known_defect`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownDefect {
    /// The checker that finds it.
    pub checker: String,
    /// Where it is written up (`docs/findings.md`, a section's title).
    pub finding: String,
}

/// The `[workload]` table: the users' settings (ms).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub im_interval_ms: Option<u64>,
    pub publish_interval_ms: Option<u64>,
    /// Each user adds a new contact once per interval.
    pub contact_interval_ms: Option<u64>,
    pub refresh_interval_ms: Option<u64>,
    pub keepalive_interval_ms: Option<u64>,
    pub dead_after_ms: Option<u64>,
    pub first_answer_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub start_spread_ms: Option<u64>,
    /// Users of a topology with a Mediation pool call a number once per interval.
    pub call_interval_ms: Option<u64>,
    /// How long the gateway holds each call.
    pub call_hold_ms: Option<u64>,
    /// No IMs at all (overrides `im_interval_ms`).
    #[serde(default)]
    pub no_ims: bool,
    /// This long after the users started, `sign_off_share` of them sign off (REGISTER `Expires: 0`) and stop.
    pub sign_off_at_ms: Option<u64>,
    /// The share of users that sign off (0.0–1.0; default 0.3 when `sign_off_at_ms` is set).
    pub sign_off_share: Option<f64>,
    /// Those users leave without a word instead (no unregister): their bindings must expire.
    #[serde(default)]
    pub sign_off_silently: bool,
    /// The `Expires` of the users' REGISTERs (default 60 s); keep `refresh_interval_ms` below it.
    pub register_expires_s: Option<u32>,
}

/// The `[checkers]` table: a key present turns that checker on, with its settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckersSpec {
    pub registration: Option<RegistrationSpec>,
    pub im: Option<ImSpec>,
    pub durability: Option<DurabilitySpec>,
    pub split_brain: Option<SplitBrainSpec>,
    pub quorum: Option<QuorumSpec>,
    pub resiliency: Option<Empty>,
    /// Every answered call ends at the caller within `end_bound_ms` of its answer.
    pub calls: Option<CallsSpec>,
    /// The Back End claims the scenario makes, each part a key (see `checker::backend`).
    pub backend: Option<BackendSpec>,
    /// After the faults every registrar holds exactly the registered users' bindings (a subject's bindings
    /// probe; see `checker::bindings`).
    pub bindings: Option<BindingsSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingsSpec {
    /// How long after a REGISTER's acknowledgement every registrar must hold its binding.
    pub settle_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// After the principal's loss, a serving principal within this.
    pub principal_within_ms: Option<u64>,
    /// Without a witness, no promotion but an operator's failover.
    #[serde(default)]
    pub no_self_promotion: bool,
    /// A principal cut from witness and partner stops serving within this.
    pub stops_within_ms: Option<u64>,
    /// A returning mirror has caught up when it first reports synchronized.
    #[serde(default)]
    pub mirror_catches_up: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallsSpec {
    pub end_bound_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSpec {
    pub reregister_bound_ms: u64,
    /// How long after a fault's undo (or an operator command's answer) a sign-out still belongs to it.
    #[serde(default = "default_aftermath_ms")]
    pub aftermath_ms: u64,
    /// Whom the faults may sign out: `nobody`, `attached` (only the users of what a fault hit) or `anyone`.
    #[serde(default)]
    pub may_sign_out: MaySignOut,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImSpec {
    pub delivery_grace_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilitySpec {
    pub rpo_bound_ms: Option<u64>,
    pub notify_lag_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBrainSpec {
    /// Also judge the pairing: never two paired pools serving one pool's users at full service at once; the
    /// topology must pair pools, each of which must be probed for it.
    #[serde(default)]
    pub pairing: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumSpec {
    /// How long a pool has to notice a Front End come or go before its probes are judged.
    pub notice_within_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

fn default_aftermath_ms() -> u64 {
    5_000
}

/// A loaded scenario: its file, its topology, and its parsed bounds.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub file: ScenarioFile,
    pub topology: Topology,
    pub bounds: Vec<Bound>,
    pub nightly_bounds: Vec<Bound>,
}

/// The Front End pools of `topology` that have a pair, in topology order.
fn paired_pools(topology: &Topology) -> Vec<String> {
    topology
        .pools
        .iter()
        .filter(|p| p.pool.role == topology::Role::Frontend && p.pool.pair.is_some())
        .map(|p| p.pool.name.clone())
        .collect()
}

impl Scenario {
    /// Reads a scenario and its topology; a mistake names the file, line and field.
    pub fn load(path: &Path) -> Result<Scenario, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            file: path.to_path_buf(),
            line: 0,
            field: "(file)".into(),
            expected: format!("a readable scenario file ({e})"),
        })?;
        Scenario::parse(path, &text)
    }

    /// Reads a scenario from `text` as if it were the file at `path` (which need not exist: the topology is
    /// found relative to it, and mistakes name it). [`crate::testing::ScenarioBuilder`] goes through here, so a
    /// scenario written in Rust is checked exactly as a file is.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, FileError> {
        let file: ScenarioFile =
            toml::from_str(text).map_err(|e| topology::toml_error(path, text, &e))?;
        let line_of = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map(|i| i + 1)
                .unwrap_or(0)
        };
        let parse = |texts: &[String], field: &str| {
            Bound::parse_all(texts).map_err(|e| FileError {
                file: path.to_path_buf(),
                line: line_of(field),
                field: field.into(),
                expected: e.to_string(),
            })
        };
        let bounds = parse(&file.bounds, "bounds")?;
        let nightly_bounds = parse(&file.nightly_bounds, "nightly_bounds")?;
        let topology_path = path.parent().unwrap_or(Path::new(".")).join(&file.topology);
        let topology = Topology::load(&topology_path)?;
        let pairing = file
            .checkers
            .split_brain
            .as_ref()
            .is_some_and(|s| s.pairing);
        if pairing && paired_pools(&topology).is_empty() {
            return Err(FileError {
                file: path.to_path_buf(),
                line: line_of("split_brain"),
                field: "checkers.split_brain.pairing".into(),
                expected: format!(
                    "a topology that pairs Front End pools ({} pairs none)",
                    file.topology.display()
                ),
            });
        }
        if let Err(e) = file.schedule.plan(0) {
            return Err(FileError {
                file: path.to_path_buf(),
                line: line_of("[schedule"),
                field: "schedule".into(),
                expected: e.to_string(),
            });
        }
        let scenario = Scenario {
            path: path.to_path_buf(),
            file,
            topology,
            bounds,
            nightly_bounds,
        };
        let checkers = scenario.checkers().names();
        for (i, part) in scenario.file.claim_part.iter().enumerate() {
            if let Some(why) =
                unchecked(part, &checkers, &scenario.bounds, &scenario.nightly_bounds)
            {
                // The line of this part's `checked_by`, after its `[[claim_part]]` header.
                let header = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| l.trim_start().starts_with("[[claim_part]]"))
                    .nth(i)
                    .map(|(n, _)| n);
                let line = header
                    .and_then(|h| {
                        text.lines()
                            .enumerate()
                            .skip(h + 1)
                            .take_while(|(_, l)| !l.trim_start().starts_with('['))
                            .find(|(_, l)| l.trim_start().starts_with("checked_by"))
                            .map(|(n, _)| n + 1)
                            .or(Some(h + 1))
                    })
                    .unwrap_or(0);
                return Err(FileError {
                    file: path.to_path_buf(),
                    line,
                    field: format!("claim_part[{i}].checked_by"),
                    expected: why,
                });
            }
        }
        Ok(scenario)
    }

    /// Draws as many random faults as fit in `length_ms` (the nightly run's `--duration`), keeping the
    /// scenario's own fault lengths and gaps.
    pub fn stretch_to(&mut self, length_ms: u64) -> Result<(), FileError> {
        let at = |expected: &str| FileError {
            file: self.path.clone(),
            line: 0,
            field: "schedule.random".into(),
            expected: expected.into(),
        };
        let random = self
            .file
            .schedule
            .random
            .as_mut()
            .ok_or_else(|| at("a [schedule.random] table to stretch over the duration"))?;
        let mean_ms =
            (random.for_ms[0] + random.for_ms[1] + random.gap_ms[0] + random.gap_ms[1]) / 2;
        random.count = (length_ms / mean_ms.max(1)).max(1) as usize;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.file.name
    }

    /// The users' settings.
    pub fn settings(&self) -> workload::Settings {
        let w = &self.file.workload;
        let d = workload::Settings::default();
        let ms =
            |v: Option<u64>, default| v.map(std::time::Duration::from_millis).unwrap_or(default);
        workload::Settings {
            refresh_interval: ms(w.refresh_interval_ms, d.refresh_interval),
            keepalive_interval: ms(w.keepalive_interval_ms, d.keepalive_interval),
            dead_after: ms(w.dead_after_ms, d.dead_after),
            first_answer: ms(w.first_answer_ms, d.first_answer),
            request_timeout: ms(w.request_timeout_ms, d.request_timeout),
            connect_timeout: ms(w.connect_timeout_ms, d.connect_timeout),
            start_spread: ms(w.start_spread_ms, d.start_spread),
            im_interval: if w.no_ims {
                None
            } else {
                Some(ms(w.im_interval_ms, d.im_interval.unwrap_or_default()))
            },
            publish_interval: w.publish_interval_ms.map(std::time::Duration::from_millis),
            contact_interval: w.contact_interval_ms.map(std::time::Duration::from_millis),
            call_interval: w.call_interval_ms.map(std::time::Duration::from_millis),
            call_hold: ms(w.call_hold_ms, d.call_hold),
            presence: self.topology.subject.offers(Offer::Presence),
            contacts: self.topology.subject.offers(Offer::Contacts),
            sign_off: w.sign_off_at_ms.map(|at| workload::SignOff {
                after: std::time::Duration::from_millis(at),
                share: w.sign_off_share.unwrap_or(0.3).clamp(0.0, 1.0),
                silently: w.sign_off_silently,
            }),
            register_expires_s: w.register_expires_s.unwrap_or(d.register_expires_s),
            ..d
        }
    }

    /// The checkers the scenario turned on. One that needs what the subject does not have (the reference pool's
    /// status probe, presence or contact lists) is [`crate::checker::Unsupported`]: its claim is unknown, never
    /// passed unseen.
    pub fn checkers(&self) -> Composed {
        let c = &self.file.checkers;
        let mut composed = Composed::new();

        if let Some(r) = &c.registration {
            composed = composed.with(RegistrationContinuity {
                reregister_bound_ms: r.reregister_bound_ms,
                aftermath_ms: r.aftermath_ms,
                may_sign_out: r.may_sign_out,
            });
        }
        if let Some(i) = &c.im {
            let mut im = ImDelivery::default();
            if let Some(g) = i.delivery_grace_ms {
                im.delivery_grace_ms = g;
            }
            composed = composed.with(im);
        }
        if let Some(d) = &c.durability {
            let mut durability = Durability {
                rpo_bound_ms: d.rpo_bound_ms,
                ..Durability::default()
            };
            if let Some(lag) = d.notify_lag_ms {
                durability.notify_lag_ms = lag;
            }
            composed = composed.with(durability);
        }
        if let Some(split_brain) = &c.split_brain {
            composed = composed.with(NoSplitBrain {
                paired_pools: if split_brain.pairing {
                    paired_pools(&self.topology)
                } else {
                    Vec::new()
                },
            });
        }
        if let Some(q) = &c.quorum {
            let mut quorum = Quorum::default();
            for node in self.topology.nodes() {
                let name = node.name.clone();
                quorum
                    .sites
                    .entry(node.site.clone())
                    .or_default()
                    .push(name.clone());
                quorum
                    .pools
                    .entry(node.pool.clone())
                    .or_default()
                    .push(name);
            }
            if let Some(notice_within) = q.notice_within_ms {
                quorum.notice_within_ms = notice_within;
            }
            composed = composed.with(quorum);
        }
        if c.resiliency.is_some() {
            composed = composed.with(ResiliencyMode);
        }
        if let Some(b) = &c.backend {
            composed = composed.with(BackendClaims {
                principal_within_ms: b.principal_within_ms,
                no_self_promotion: b.no_self_promotion,
                stops_within_ms: b.stops_within_ms,
                mirror_catches_up: b.mirror_catches_up,
            });
        }
        if let Some(b) = &c.bindings {
            let mut check = BindingConvergence {
                expires_s: self.settings().register_expires_s as u64,
                ..BindingConvergence::default()
            };
            if let Some(settle) = b.settle_ms {
                check.settle_ms = settle;
            }
            composed = composed.with(check);
        }
        if let Some(calls) = &c.calls {
            let mut check = CallsEnd::default();
            if let Some(bound) = calls.end_bound_ms {
                check.end_bound_ms = bound;
            }
            composed = composed.with(check);
        }
        let subject = &self.topology.subject;
        composed.unsupported_where(|checker| {
            let lacks = match checker {
                "split_brain" | "quorum" | "resiliency" | "backend" if !subject.probes.status => {
                    "the status probe of the reference pool"
                }
                "durability"
                    if !subject.offers(Offer::Presence) && !subject.offers(Offer::Contacts) =>
                {
                    "presence or contact lists"
                }
                "calls" if !subject.offers(Offer::Calls) => "calls",
                "im" if !subject.offers(Offer::Im) => "IM",
                _ => return None,
            };
            Some(format!(
                "the subject `{}` has no {lacks}: this claim cannot be judged on it",
                subject.name
            ))
        })
    }

    /// The aftermath the report attributes late events with: how long after a fault's undo an event still
    /// belongs to it (the registration checker's `aftermath_ms`).
    pub fn aftermath_ms(&self) -> u64 {
        self.file
            .checkers
            .registration
            .as_ref()
            .map(|r| r.aftermath_ms)
            .unwrap_or_else(default_aftermath_ms)
    }
}

/// Every scenario file (`*.toml`) directly in `dir`, sorted by name.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_bad_scenario_names_file_line_and_field() {
        let dir = std::env::temp_dir().join(format!("pc-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let topo = std::fs::canonicalize(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites/topologies/two-sites.toml"),
        )
        .unwrap();
        let good = format!(
            "name = \"x\"\ntopology = {:?}\n[schedule]\n[checkers]\nim = {{}}\n",
            topo.display().to_string()
        );
        let s = Scenario::load(&write(&dir, "good.toml", &good)).unwrap();
        assert_eq!(s.name(), "x");
        let typo = good.replace("im = {}", "imm = {}");
        let e = Scenario::load(&write(&dir, "typo.toml", &typo)).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "imm"), "{e}");
        let bad_bound = format!(
            "name = \"x\"\ntopology = {:?}\nbounds = ['reregister.p99 <= \"2 parsecs\"']\n[schedule]\n",
            topo.display().to_string()
        );
        let e = Scenario::load(&write(&dir, "bound.toml", &bad_bound)).unwrap_err();
        assert_eq!(e.field, "bounds", "{e}");
        assert!(e.to_string().contains("bound.toml:3: bounds"), "{e}");
        let parts = format!(
            "{}[[claim_part]]\nsays = \"IMs arrive\"\nchecked_by = [\"im\", \"bound:ims_lost\"]\n",
            good.replace("[schedule]", "bounds = [\"ims_lost == 0\"]\n[schedule]")
        );
        let s = Scenario::load(&write(&dir, "parts.toml", &parts)).unwrap();
        assert_eq!(s.file.claim_part[0].checked_by.len(), 2);
        let unrun = format!(
            "{parts}[[claim_part]]\nsays = \"nobody signed out\"\nchecked_by = [\"registration\"]\n"
        );
        let e = Scenario::load(&write(&dir, "unrun.toml", &unrun)).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (12, "claim_part[1].checked_by"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("checker `registration`, which the scenario does not run"),
            "{e}"
        );
        let unnamed = format!("{parts}[[claim_part]]\nsays = \"nobody signed out\"\n");
        let e = Scenario::load(&write(&dir, "unnamed.toml", &unnamed)).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (10, "claim_part[1].checked_by"),
            "{e}"
        );
        assert!(e.to_string().contains("names no checker or bound"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
