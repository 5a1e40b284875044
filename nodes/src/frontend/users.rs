//! Who may register: a table of users and passwords, or open registration for SIP tools and benchmarks.
//!
//! The users file holds one `user:password` per line; blank lines and lines starting with `#` are ignored and
//! surrounding spaces are trimmed. The user is the user part of the AOR (`alice` for `sip:alice@pool.example`):
//! one Front End serves one domain, so the host part is not compared.

use std::collections::HashMap;
use std::path::Path;

use super::error::UsersFileError;

/// Credentials of the users a Front End serves.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// No authentication: any user may register and send.
    open: bool,
    passwords: HashMap<String, String>,
}

impl Credentials {
    /// Anyone may register, without a challenge.
    pub fn open() -> Self {
        Self {
            open: true,
            passwords: HashMap::new(),
        }
    }

    /// Exactly these users, each with a password (from a topology, or a test).
    pub fn from_pairs<U: Into<String>, P: Into<String>>(
        pairs: impl IntoIterator<Item = (U, P)>,
    ) -> Self {
        Self {
            open: false,
            passwords: pairs
                .into_iter()
                .map(|(u, p)| (u.into(), p.into()))
                .collect(),
        }
    }

    /// Reads a users file (see the module doc for its format).
    pub fn load(path: &Path) -> Result<Self, UsersFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|line| UsersFileError::Line {
            path: path.to_owned(),
            line,
        })
    }

    /// Parses users file text; the error is the 1-based number of the first bad line.
    pub fn parse(text: &str) -> Result<Self, usize> {
        let mut passwords = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, password)) if !user.trim().is_empty() => {
                    passwords.insert(user.trim().to_owned(), password.trim().to_owned());
                }
                _ => return Err(i + 1),
            }
        }
        Ok(Self {
            open: false,
            passwords,
        })
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The user's password, for digest checks.
    pub fn password(&self, user: &str) -> Option<String> {
        self.passwords.get(user).cloned()
    }

    /// Whether this user may be served at all (open mode serves everyone).
    pub fn knows(&self, user: &str) -> bool {
        self.open || self.passwords.contains_key(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_lines_comments_and_errors() {
        let credentials =
            Credentials::parse("# pool users\nalice:secret\n\n bob : pw with spaces \n").unwrap();
        assert_eq!(credentials.password("alice").as_deref(), Some("secret"));
        assert_eq!(
            credentials.password("bob").as_deref(),
            Some("pw with spaces")
        );
        assert!(!credentials.knows("carol"));
        assert_eq!(
            Credentials::parse("alice:x\nno colon here\n").unwrap_err(),
            2
        );
    }
}
