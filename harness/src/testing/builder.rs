//! Scenarios written in Rust, where a file does not fit (a scenario computed from a parameter, a family of
//! scenarios from a loop): the builder writes the scenario file's table and reads it back through
//! [`Scenario::parse`], so a built scenario is checked exactly as a file is — its topology loaded, its bounds
//! parsed, every claim part judged by a checker or bound it names — and a mistake names the field.
//!
//! ```no_run
//! use std::time::Duration;
//! use poolchaos::fault::Fault;
//! use poolchaos::testing::{CheckerSettings, ScenarioBuilder};
//!
//! let scenario = ScenarioBuilder::new("registrar-kill")
//!     .base_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/chaos"))
//!     .topology("topologies/registrars.toml")
//!     .claim("Killing one registrar loses no user for longer than 10 s.")
//!     .ims_every(Duration::from_secs(2))
//!     .warmup(Duration::from_secs(4))
//!     .fault(Duration::ZERO, Some(Duration::from_secs(5)), Fault::Kill { target: "reg-1".into() })
//!     .checker(CheckerSettings::Registration { reregister_within: Duration::from_secs(10), aftermath: None })
//!     .checker(CheckerSettings::Im { delivery_grace: None })
//!     .bound(r#"reregister.p99 <= "10s""#)
//!     .part("its users register again within 10 s", &["registration", "bound:reregister.p99"])
//!     .build()
//!     .expect("the scenario is well formed");
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::fault::Fault;
use crate::scenario::Scenario;
use crate::topology::FileError;

/// A checker a built scenario turns on, with its settings (the `[checkers]` table of a scenario file).
#[derive(Debug, Clone, PartialEq)]
pub enum CheckerSettings {
    /// Registration continuity: whoever a fault signs out registers again within `reregister_within`; a
    /// sign-out up to `aftermath` (default 5 s) after a fault's undo still belongs to it.
    Registration {
        reregister_within: Duration,
        aftermath: Option<Duration>,
    },
    /// As [`CheckerSettings::Registration`], and only the users attached to what a fault hit may be signed out.
    RegistrationAttachedOnly { reregister_within: Duration },
    /// Every acknowledged IM is delivered (within `delivery_grace` of a fault's end).
    Im { delivery_grace: Option<Duration> },
    /// Every acknowledged write stays visible; with `rpo`, a write acknowledged at most that long before a
    /// fault may be lost (measured, not a violation).
    Durability { rpo: Option<Duration> },
    /// Never two primaries (with `pairing`, never two paired pools serving one pool's users).
    SplitBrain { pairing: bool },
    /// A pool serves only with its quorum, noticing a change within `notice_within`.
    Quorum { notice_within: Option<Duration> },
    /// Users of a lost pool are served in resiliency mode as the pool model says.
    Resiliency,
    /// Every answered call ends at the caller within `end_within` of its answer.
    Calls { end_within: Option<Duration> },
    /// After the faults every registrar holds exactly the registered users' bindings (a subject's bindings
    /// probe); a REGISTER acknowledged less than `settle` (default 2 s) before a reading may not be everywhere yet.
    BindingConvergence { settle: Option<Duration> },
}

impl CheckerSettings {
    fn entry(&self) -> (&'static str, Table) {
        let mut t = Table::new();
        let mut ms = |key: &str, d: &Option<Duration>| {
            if let Some(d) = d {
                t.insert(key.into(), Value::Integer(millis(*d)));
            }
        };
        let name = match self {
            CheckerSettings::Registration {
                reregister_within,
                aftermath,
            } => {
                ms("reregister_bound_ms", &Some(*reregister_within));
                ms("aftermath_ms", aftermath);
                "registration"
            }
            CheckerSettings::RegistrationAttachedOnly { reregister_within } => {
                ms("reregister_bound_ms", &Some(*reregister_within));
                t.insert("may_sign_out".into(), Value::String("attached".into()));
                "registration"
            }
            CheckerSettings::Im { delivery_grace } => {
                ms("delivery_grace_ms", delivery_grace);
                "im"
            }
            CheckerSettings::Durability { rpo } => {
                ms("rpo_bound_ms", rpo);
                "durability"
            }
            CheckerSettings::SplitBrain { pairing } => {
                t.insert("pairing".into(), Value::Boolean(*pairing));
                "split_brain"
            }
            CheckerSettings::Quorum { notice_within } => {
                ms("notice_within_ms", notice_within);
                "quorum"
            }
            CheckerSettings::Resiliency => "resiliency",
            CheckerSettings::Calls { end_within } => {
                ms("end_bound_ms", end_within);
                "calls"
            }
            CheckerSettings::BindingConvergence { settle } => {
                ms("settle_ms", settle);
                "bindings"
            }
        };
        (name, t)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Builds a scenario in Rust; [`ScenarioBuilder::build`] checks it as [`Scenario::load`] checks a file.
#[derive(Debug, Clone)]
pub struct ScenarioBuilder {
    base: PathBuf,
    top: Table,
    workload: Table,
    schedule: Table,
    faults: Vec<Value>,
    checkers: Table,
    parts: Vec<Value>,
    bounds: Vec<Value>,
    nightly_bounds: Vec<Value>,
}

impl ScenarioBuilder {
    /// A scenario named `name` (its test's name and its report's).
    pub fn new(name: &str) -> ScenarioBuilder {
        let mut top = Table::new();
        top.insert("name".into(), Value::String(name.into()));
        ScenarioBuilder {
            base: PathBuf::from("."),
            top,
            workload: Table::new(),
            schedule: Table::new(),
            faults: Vec::new(),
            checkers: Table::new(),
            parts: Vec::new(),
            bounds: Vec::new(),
            nightly_bounds: Vec::new(),
        }
    }

    /// The folder the topology path is relative to, as a scenario file's own folder is (default: the working
    /// directory, which `cargo test` sets to the package's root).
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base = dir.into();
        self
    }

    /// The topology file, relative to [`ScenarioBuilder::base_dir`] unless absolute.
    pub fn topology(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_string_lossy().to_string();
        self.top.insert("topology".into(), Value::String(path));
        self
    }

    /// What the scenario proves, in a sentence.
    pub fn claim(mut self, claim: &str) -> Self {
        self.top.insert("claim".into(), Value::String(claim.into()));
        self
    }

    /// A part of the claim and the checkers (`registration`) and bounds (`bound:reregister.p99`,
    /// `nightly:…`) that judge it.
    pub fn part(mut self, says: &str, checked_by: &[&str]) -> Self {
        let mut t = Table::new();
        t.insert("says".into(), Value::String(says.into()));
        t.insert(
            "checked_by".into(),
            Value::Array(
                checked_by
                    .iter()
                    .map(|c| Value::String((*c).into()))
                    .collect(),
            ),
        );
        self.parts.push(Value::Table(t));
        self
    }

    /// A bound every run must meet, as in a file: `reregister.p99 <= "10s"`, `ims_lost == 0`.
    pub fn bound(mut self, bound: &str) -> Self {
        self.bounds.push(Value::String(bound.into()));
        self
    }

    /// A bound only the nightly profile asserts (the goal figure).
    pub fn nightly_bound(mut self, bound: &str) -> Self {
        self.nightly_bounds.push(Value::String(bound.into()));
        self
    }

    fn every(mut self, key: &str, d: Duration) -> Self {
        self.workload.insert(key.into(), Value::Integer(millis(d)));
        self
    }

    /// Each user sends an IM this often.
    pub fn ims_every(self, d: Duration) -> Self {
        self.every("im_interval_ms", d)
    }

    /// Each user publishes its presence this often.
    pub fn publish_every(self, d: Duration) -> Self {
        self.every("publish_interval_ms", d)
    }

    /// Each user adds a new contact this often.
    pub fn contact_every(self, d: Duration) -> Self {
        self.every("contact_interval_ms", d)
    }

    /// Each user refreshes its registration this often.
    pub fn refresh_every(self, d: Duration) -> Self {
        self.every("refresh_interval_ms", d)
    }

    /// No IMs at all.
    pub fn no_ims(mut self) -> Self {
        self.workload.insert("no_ims".into(), Value::Boolean(true));
        self
    }

    /// Users work this long before the first fault.
    pub fn warmup(mut self, d: Duration) -> Self {
        self.schedule
            .insert("warmup_ms".into(), Value::Integer(millis(d)));
        self
    }

    /// Nothing happens for this long after the last undo, before the final reads.
    pub fn quiet(mut self, d: Duration) -> Self {
        self.schedule
            .insert("quiet_ms".into(), Value::Integer(millis(d)));
        self
    }

    /// `fault` at `at` after the warm-up, undone `lasting` later (never, when `None`).
    pub fn fault(mut self, at: Duration, lasting: Option<Duration>, fault: Fault) -> Self {
        let mut t = match Value::try_from(&fault) {
            Ok(Value::Table(t)) => t,
            _ => Table::new(),
        };
        t.insert("at_ms".into(), Value::Integer(millis(at)));
        if let Some(d) = lasting {
            t.insert("for_ms".into(), Value::Integer(millis(d)));
        }
        self.faults.push(Value::Table(t));
        self
    }

    /// Turns a checker on with its settings.
    pub fn checker(mut self, checker: CheckerSettings) -> Self {
        let (name, settings) = checker.entry();
        self.checkers.insert(name.into(), Value::Table(settings));
        self
    }

    /// The scenario as a file would say it.
    pub fn to_toml(&self) -> String {
        let mut top = self.top.clone();
        let mut put = |key: &str, v: &[Value]| {
            if !v.is_empty() {
                top.insert(key.into(), Value::Array(v.to_vec()));
            }
        };
        put("bounds", &self.bounds);
        put("nightly_bounds", &self.nightly_bounds);
        put("claim_part", &self.parts);
        if !self.workload.is_empty() {
            top.insert("workload".into(), Value::Table(self.workload.clone()));
        }
        let mut schedule = self.schedule.clone();
        if !self.faults.is_empty() {
            schedule.insert("fault".into(), Value::Array(self.faults.clone()));
        }
        top.insert("schedule".into(), Value::Table(schedule));
        top.insert("checkers".into(), Value::Table(self.checkers.clone()));
        toml::to_string(&top).unwrap_or_default()
    }

    /// The scenario, checked as a file is; a mistake names the field (the file is `<base_dir>/<name>.toml`,
    /// which need not exist).
    pub fn build(self) -> Result<Scenario, FileError> {
        let name = self
            .top
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("scenario")
            .to_owned();
        let path = self.base.join(format!("{name}.toml"));
        Scenario::parse(&path, &self.to_toml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites/scenarios")
    }

    /// `fe-kill` as the suites' file says it, written with the builder.
    fn fe_kill() -> ScenarioBuilder {
        ScenarioBuilder::new("fe-kill")
            .base_dir(suites())
            .topology("../topologies/two-sites-direct.toml")
            .claim("Killing the primary Front End of a routing group loses nothing.")
            .bound(r#"reregister.p99 <= "10s""#)
            .bound("ims_lost == 0")
            .bound("writes_lost == 0")
            .bound("reregister.count >= 1")
            .nightly_bound(r#"reregister.p99 <= "2s""#)
            .part("only its own users", &["registration"])
            .part(
                "they register again",
                &[
                    "registration",
                    "bound:reregister.count",
                    "bound:reregister.p99",
                    "nightly:reregister.p99",
                ],
            )
            .part("never two primaries", &["split_brain"])
            .part(
                "nothing lost",
                &["im", "durability", "bound:ims_lost", "bound:writes_lost"],
            )
            .ims_every(Duration::from_secs(2))
            .publish_every(Duration::from_secs(1))
            .contact_every(Duration::from_secs(1))
            .warmup(Duration::from_secs(5))
            .quiet(Duration::from_secs(6))
            .fault(
                Duration::ZERO,
                Some(Duration::from_secs(6)),
                Fault::Kill {
                    target: "primary-of:fe1/rg-1".into(),
                },
            )
            .checker(CheckerSettings::RegistrationAttachedOnly {
                reregister_within: Duration::from_secs(10),
            })
            .checker(CheckerSettings::Im {
                delivery_grace: None,
            })
            .checker(CheckerSettings::Durability { rpo: None })
            .checker(CheckerSettings::SplitBrain { pairing: false })
    }

    #[test]
    fn a_built_scenario_is_the_one_its_file_says() {
        let built = fe_kill().build().expect("the built fe-kill is well formed");
        let file = Scenario::load(&suites().join("fe-kill.toml")).unwrap();
        assert_eq!(built.name(), file.name());
        assert_eq!(built.topology.name, file.topology.name);
        assert_eq!(built.bounds, file.bounds);
        assert_eq!(built.nightly_bounds, file.nightly_bounds);
        assert_eq!(built.checkers().names(), file.checkers().names());
        assert_eq!(
            format!("{:?}", built.file.schedule.plan(7).unwrap()),
            format!("{:?}", file.file.schedule.plan(7).unwrap())
        );
        assert_eq!(
            format!("{:?}", built.settings()),
            format!("{:?}", file.settings())
        );
    }

    #[test]
    fn a_claim_part_no_checker_judges_is_refused_with_its_field() {
        let e = fe_kill()
            .part("calls end", &["calls"])
            .build()
            .expect_err("no calls checker is on");
        assert_eq!(e.field, "claim_part[4].checked_by");
        assert!(e.file.ends_with("fe-kill.toml"), "{e}");
    }

    #[test]
    fn a_missing_topology_is_refused_with_its_field() {
        let e = ScenarioBuilder::new("nothing")
            .checker(CheckerSettings::Im {
                delivery_grace: None,
            })
            .build()
            .expect_err("no topology");
        assert!(e.to_string().contains("topology"), "{e}");
    }

    #[test]
    fn a_bad_bound_is_refused_with_its_field() {
        let e = fe_kill()
            .bound("reregister.p99 <= soon")
            .build()
            .expect_err("not a bound");
        assert_eq!(e.field, "bounds");
    }
}
