//! Digest authentication (RFC 2617 / RFC 8760, MD5, `qop=auth` or none) with stateless nonces.
//!
//! A nonce is its issue time plus a keyed hash of that time, so any Front End holding the same secret can check
//! it and nothing is stored per challenge. Nonce-count replay checks are not done: the pool's threat model is
//! failover, not an attacker on the wire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest as _, Md5};

/// The outcome of checking an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// The credentials are right; the authenticated user name.
    Valid { username: String },
    /// The credentials were right for a nonce that has expired: challenge again with `stale=true`.
    Stale,
    /// Wrong user, password, realm or a forged nonce.
    Invalid,
}

/// Issues challenges and checks answers for one realm.
#[derive(Debug, Clone)]
pub struct Digest {
    realm: String,
    secret: String,
    nonce_lifetime: Duration,
}

impl Digest {
    pub fn new(
        realm: impl Into<String>,
        secret: impl Into<String>,
        nonce_lifetime: Duration,
    ) -> Self {
        Self {
            realm: realm.into(),
            secret: secret.into(),
            nonce_lifetime,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The value of a `WWW-Authenticate` header for a fresh challenge.
    pub fn challenge(&self, stale: bool) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let nonce = format!("{now:x}{}", self.nonce_mac(now));
        let stale = if stale { ", stale=true" } else { "" };
        format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5{stale}",
            self.realm
        )
    }

    /// Checks an `Authorization` header value for `method`; `password` looks a user's password up.
    pub fn verify(
        &self,
        authorization: &str,
        method: &str,
        password: impl Fn(&str) -> Option<String>,
    ) -> Authentication {
        let Some(params) = authorization
            .trim()
            .strip_prefix("Digest")
            .map(parse_params)
        else {
            return Authentication::Invalid;
        };
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return Authentication::Invalid;
        };
        if realm != self.realm || get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return Authentication::Invalid;
        }
        let Some(issued_secs) = self.nonce_issued_secs(nonce) else {
            return Authentication::Invalid;
        };
        let Some(password) = password(username) else {
            return Authentication::Invalid;
        };
        let ha1 = md5_hex(&format!("{username}:{realm}:{password}"));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = match get("qop") {
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return Authentication::Invalid;
                };
                md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
            }
            Some(_) => return Authentication::Invalid,
            None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        };
        if !expected.eq_ignore_ascii_case(response) {
            return Authentication::Invalid;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if now.saturating_sub(issued_secs) > self.nonce_lifetime.as_secs() {
            return Authentication::Stale;
        }
        Authentication::Valid {
            username: username.to_owned(),
        }
    }

    fn nonce_mac(&self, issued_secs: u64) -> String {
        md5_hex(&format!("{}:{issued_secs:x}", self.secret))[..16].to_owned()
    }

    /// The issue time of a nonce we made, or `None` for a forged one.
    fn nonce_issued_secs(&self, nonce: &str) -> Option<u64> {
        let split = nonce.len().checked_sub(16)?;
        let issued = u64::from_str_radix(nonce.get(..split)?, 16).ok()?;
        (self.nonce_mac(issued) == nonce[split..]).then_some(issued)
    }
}

/// `a="x", b=y` → pairs, quotes removed; commas inside quotes are kept.
pub fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    // Bounded: every turn consumes at least one byte of `rest`.
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (quoted[..end].to_owned(), &quoted[end + 1..]),
                None => (quoted.to_owned(), ""),
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

/// The `Authorization` header value a client sends to answer `challenge` (used by tests and by roles that
/// authenticate onwards).
pub fn answer(challenge: &str, method: &str, uri: &str, username: &str, password: &str) -> String {
    let params = challenge
        .trim()
        .strip_prefix("Digest")
        .map(parse_params)
        .unwrap_or_default();
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    let realm = get("realm").unwrap_or_default();
    let nonce = get("nonce").unwrap_or_default();
    let ha1 = md5_hex(&format!("{username}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let (nc, cnonce) = ("00000001", "0a4f113b");
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    )
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::new("poolchaos", "secret", Duration::from_secs(300))
    }

    #[test]
    fn answer_to_own_challenge_is_valid() {
        let challenge = digest().challenge(false);
        let authorization = answer(&challenge, "REGISTER", "sip:127.0.0.1", "alice", "pw");
        let checked = digest().verify(&authorization, "REGISTER", |u| {
            (u == "alice").then(|| "pw".into())
        });
        assert_eq!(
            checked,
            Authentication::Valid {
                username: "alice".into()
            }
        );
    }

    #[test]
    fn wrong_password_or_forged_nonce_is_invalid() {
        let challenge = digest().challenge(false);
        let wrong = answer(&challenge, "REGISTER", "sip:127.0.0.1", "alice", "nope");
        assert_eq!(
            digest().verify(&wrong, "REGISTER", |_| Some("pw".into())),
            Authentication::Invalid
        );
        let forged = answer(
            "Digest realm=\"poolchaos\", nonce=\"00000000deadbeefdeadbeef\"",
            "REGISTER",
            "sip:h",
            "alice",
            "pw",
        );
        assert_eq!(
            digest().verify(&forged, "REGISTER", |_| Some("pw".into())),
            Authentication::Invalid
        );
    }

    #[test]
    fn rfc2617_example_without_qop_checks() {
        // RFC 2617 3.5's example, realm and nonce from the spec, qop dropped (RFC 2069 form).
        let d = Digest::new("testrealm@host.com", "s", Duration::from_secs(300));
        let nonce = format!("{:x}{}", 1u64, d.nonce_mac(1));
        let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        let header = format!(
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"{nonce}\", uri=\"/dir/index.html\", response=\"{response}\""
        );
        assert_eq!(
            d.verify(&header, "GET", |_| Some("Circle Of Life".into())),
            Authentication::Stale
        );
    }
}
