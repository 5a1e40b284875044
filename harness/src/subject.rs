//! Subjects: the systems the harness judges, as data. A subject says how each of its roles is started (image,
//! command, ports, the line it prints when ready), how a node learns its own name and its peers' (placeholders
//! in its command), what it serves over SIP, and which probes exist to look inside it.
//!
//! The reference pool is the built-in subject ([`Subject::reference`]); any other is a TOML file a topology names
//! with `subject = "…"` (relative to the topology file):
//!
//! ```toml
//! name = "my-registrar"
//! offers = ["registration", "im"]        # what it serves over SIP: registration, im, presence, contacts, calls
//!
//! [image]                                # built here, FROM scratch, from files of installed packages
//! repository = "poolchaos/my-registrar"
//! packages = ["my-registrar"]            # Debian packages that must be installed on the host
//! binaries = ["/usr/sbin/registrar"]     # copied with every library in their `ldd` closure
//! libraries = ["/usr/lib/registrar/modules/usrloc.so"]   # loaded at run time: copied with their closure
//! host_files = ["/etc/protocols"]        # copied as they are
//! files = { "/etc/registrar.cfg" = "registrar.cfg" }     # path in the image = file relative to this one
//! directories = ["/var/run/registrar"]   # empty directories it needs at run time
//!
//! [role.frontend]                        # the harness role its nodes play (users register with it)
//! command = ["/usr/sbin/registrar", "--name", "{node}", "--peers", "{pool}"]   # also {site}, {index}
//! ready = "registrar ready"              # a log line containing this says the node is ready
//! sip_port = 5060
//! probe_port = 2046                      # a TCP port it always listens on: network faults prove a cut by it
//! wan = false                            # joins only its site's network (default: also the WAN)
//!
//! [probe.bindings]                       # the bindings a node holds, read with `docker exec`
//! exec = ["/usr/sbin/registrarctl", "dump"]
//! aor_after = "AoR:"                     # each line with this holds one address of record after it
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::file_error::{line_of, toml_error, FileError};
use crate::role::Role;

/// What a subject serves over SIP; checkers that need something a subject does not offer answer `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Offer {
    /// REGISTER with digest authentication, refreshes, `CRLF CRLF` keep-alives.
    Registration,
    /// Pager-mode MESSAGE between registered users, answered 200 only after the recipient's 200.
    Im,
    /// PUBLISH and SUBSCRIBE/NOTIFY of presence.
    Presence,
    /// The contact list a user keeps on the pool (PUBLISH `vnd-poolchaos-contacts`).
    Contacts,
    /// INVITE through a Mediation pool to a PSTN gateway.
    Calls,
}

impl Offer {
    pub fn as_str(self) -> &'static str {
        match self {
            Offer::Registration => "registration",
            Offer::Im => "im",
            Offer::Presence => "presence",
            Offer::Contacts => "contacts",
            Offer::Calls => "calls",
        }
    }
}

impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A system the harness can start and judge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subject {
    pub name: String,
    /// The file it was read from; `None` for the reference pool.
    pub file: Option<PathBuf>,
    pub offers: BTreeSet<Offer>,
    pub image: SubjectImage,
    /// How each role it plays is started. The reference pool's launches are `roles::node`'s.
    pub roles: BTreeMap<Role, RoleLaunch>,
    pub probes: Probes,
}

/// Where a subject's image comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SubjectImage {
    /// The workspace's own static binaries (the reference pool).
    Workspace,
    /// Files of packages installed on the host, put into a `FROM scratch` image.
    Packaged(PackagedImage),
}

/// An image made of installed packages' files: binaries and run-time libraries with their `ldd` closure.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackagedImage {
    pub repository: String,
    /// Debian packages the files come from: named in the error when a file is missing.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Executables, copied with every library `ldd` lists for them and the dynamic loader.
    pub binaries: Vec<PathBuf>,
    /// Libraries loaded at run time (plug-in modules), copied with their own closure.
    #[serde(default)]
    pub libraries: Vec<PathBuf>,
    /// Host files copied to the same path.
    #[serde(default)]
    pub host_files: Vec<PathBuf>,
    /// Path in the image → file of the project (relative to the subject file when read; absolute once loaded).
    #[serde(default)]
    pub files: BTreeMap<PathBuf, PathBuf>,
    /// Empty directories the subject needs at run time (a runtime directory under `/var/run`).
    #[serde(default)]
    pub directories: Vec<PathBuf>,
}

/// How one role of a subject is started.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleLaunch {
    /// The container's command; `{node}`, `{pool}` and `{site}` are replaced by the node's names, `{index}` by its
    /// number in its pool (`kam-2` → `2`).
    pub command: Vec<String>,
    /// A log line (stdout or stderr) containing this says the node is ready.
    pub ready: String,
    #[serde(default = "default_sip_port")]
    pub sip_port: u16,
    /// A TCP port the node always listens on: network faults prove a cut (or a heal) by dialling it.
    pub probe_port: u16,
    /// Whether its nodes also join the WAN (the reference pool's do, for cross-site traffic).
    #[serde(default = "yes")]
    pub wan: bool,
}

/// SIP's registered port, where a role's launch does not say otherwise.
pub const DEFAULT_SIP_PORT: u16 = 5060;

fn default_sip_port() -> u16 {
    DEFAULT_SIP_PORT
}

fn yes() -> bool {
    true
}

/// The probes a subject has for looking inside a node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probes {
    /// The reference pool's admin API (`GET /status`): roles, quorum, pairing, the Back End's state. Only the
    /// built-in subject has it; a file cannot claim it.
    #[serde(skip)]
    pub status: bool,
    /// The bindings a node holds.
    pub bindings: Option<BindingsProbe>,
}

/// Reads the bindings a node holds by running a command in its container.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindingsProbe {
    pub exec: Vec<String>,
    /// Each output line containing this names one address of record after it (`sip:` and `@domain` dropped).
    pub aor_after: String,
}

impl BindingsProbe {
    /// The users whose addresses of record the probe's output lists.
    pub fn users(&self, output: &str) -> BTreeSet<String> {
        output
            .lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once(&self.aor_after)?;
                let aor = rest.trim().trim_matches(|c| c == '"' || c == ',').trim();
                let aor = aor.strip_prefix("sip:").unwrap_or(aor);
                let user = aor.split('@').next().unwrap_or(aor);
                (!user.is_empty()).then(|| user.to_string())
            })
            .collect()
    }
}

/// A subject file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectFile {
    name: String,
    offers: Vec<Offer>,
    image: PackagedImage,
    #[serde(rename = "role")]
    roles: BTreeMap<Role, RoleLaunch>,
    #[serde(default)]
    probe: Probes,
}

impl Subject {
    /// The reference pool: every role, the workspace's `poolnode` image, its `/status` probe, everything offered.
    pub fn reference() -> Subject {
        Subject {
            name: "poolchaos-reference".into(),
            file: None,
            offers: [
                Offer::Registration,
                Offer::Im,
                Offer::Presence,
                Offer::Contacts,
                Offer::Calls,
            ]
            .into_iter()
            .collect(),
            image: SubjectImage::Workspace,
            roles: BTreeMap::new(),
            probes: Probes {
                status: true,
                bindings: None,
            },
        }
    }

    /// Whether this is the reference pool.
    pub fn is_reference(&self) -> bool {
        self.image == SubjectImage::Workspace
    }

    pub fn offers(&self, offer: Offer) -> bool {
        self.offers.contains(&offer)
    }

    /// Whether the subject can play `role`.
    pub fn plays(&self, role: Role) -> bool {
        self.is_reference() || self.roles.contains_key(&role)
    }

    /// Reads a subject file; every mistake names the file, the line and the field.
    pub fn load(path: &Path) -> Result<Subject, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            file: path.to_path_buf(),
            line: 0,
            field: "(file)".into(),
            expected: format!("a readable subject file ({e})"),
        })?;
        let file: SubjectFile = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
        let line_with = |needle: &str| {
            text.find(needle)
                .map(|offset| line_of(&text, offset))
                .unwrap_or(0)
        };
        let err = |needle: &str, field: &str, expected: String| FileError {
            file: path.to_path_buf(),
            line: line_with(needle),
            field: field.to_string(),
            expected,
        };
        if file.roles.is_empty() {
            return Err(err(
                "name",
                "role",
                "at least one [role.<role>] table".into(),
            ));
        }
        for (role, launch) in &file.roles {
            if launch.command.is_empty() {
                return Err(err(
                    &format!("[role.{role}]"),
                    &format!("role.{role}.command"),
                    "a command of at least one word".into(),
                ));
            }
            if launch.ready.trim().is_empty() {
                return Err(err(
                    &format!("[role.{role}]"),
                    &format!("role.{role}.ready"),
                    "a non-empty ready line".into(),
                ));
            }
        }
        if file.image.binaries.is_empty() {
            return Err(err(
                "[image]",
                "image.binaries",
                "at least one binary".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut image = file.image;
        for (inside, local) in image.files.iter_mut() {
            let resolved = base.join(&*local);
            if !resolved.is_file() {
                return Err(err(
                    &local.to_string_lossy(),
                    &format!("image.files.\"{}\"", inside.display()),
                    format!(
                        "a file of the project (relative to the subject file); {} is not one",
                        resolved.display()
                    ),
                ));
            }
            *local = resolved;
        }
        Ok(Subject {
            name: file.name,
            file: Some(path.to_path_buf()),
            offers: file.offers.into_iter().collect(),
            image: SubjectImage::Packaged(image),
            roles: file.roles,
            probes: file.probe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "poolchaos-subject-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const GOOD: &str = r#"
name = "registrar"
offers = ["registration", "im"]

[image]
repository = "poolchaos/registrar"
binaries = ["/usr/sbin/registrar"]
files = { "/etc/registrar.cfg" = "registrar.cfg" }

[role.frontend]
command = ["/usr/sbin/registrar", "{node}"]
ready = "registrar ready"
probe_port = 2046
wan = false

[probe.bindings]
exec = ["dump"]
aor_after = "AoR:"
"#;

    #[test]
    fn a_subject_file_reads_with_its_files_resolved() {
        let dir = scratch();
        write(&dir, "registrar.cfg", "cfg");
        let path = write(&dir, "good.toml", GOOD);
        let subject = Subject::load(&path).unwrap();
        assert_eq!(subject.name, "registrar");
        assert!(subject.offers(Offer::Im) && !subject.offers(Offer::Presence));
        assert!(subject.plays(Role::Frontend) && !subject.plays(Role::Backend));
        assert!(
            !subject.probes.status,
            "a file cannot claim the status probe"
        );
        let launch = &subject.roles[&Role::Frontend];
        assert_eq!(launch.sip_port, 5060);
        assert!(!launch.wan);
        let SubjectImage::Packaged(image) = &subject.image else {
            panic!("a file's subject is packaged");
        };
        assert_eq!(
            image.files[Path::new("/etc/registrar.cfg")],
            dir.join("registrar.cfg")
        );
        assert!(Subject::reference().is_reference() && Subject::reference().plays(Role::Backend));
    }

    #[test]
    fn a_mistake_in_a_subject_file_names_file_line_and_field() {
        let dir = scratch();
        let path = write(&dir, "missing.toml", GOOD);
        let e = Subject::load(&path).unwrap_err();
        assert_eq!(e.field, "image.files.\"/etc/registrar.cfg\"");
        assert_eq!(e.line, 8, "{e}");
        assert!(e.to_string().contains("missing.toml:8"), "{e}");

        let path = write(
            &dir,
            "typo.toml",
            &GOOD.replace("probe_port = 2046", "probe_prot = 2046"),
        );
        let e = Subject::load(&path).unwrap_err();
        assert_eq!(e.field, "probe_prot", "{e}");
        assert_eq!(e.line, 13, "{e}");

        let path = write(
            &dir,
            "offer.toml",
            &GOOD.replace("\"im\"]", "\"telepathy\"]"),
        );
        let e = Subject::load(&path).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn the_bindings_probe_reads_the_users_of_each_address_of_record() {
        let probe = BindingsProbe {
            exec: vec![],
            aor_after: "AoR:".into(),
        };
        let dump = "{\n\tDomain: location\n\t\tAoR: fe1-u0001\n\t\t\tContact: sip:x@1.2.3.4\n\t\tAoR: sip:fe1-u0002@kam\n}\n";
        let users = probe.users(dump);
        assert_eq!(
            users.into_iter().collect::<Vec<_>>(),
            vec!["fe1-u0001".to_string(), "fe1-u0002".to_string()]
        );
        assert!(probe.users("Domain: location\n").is_empty());
    }
}
