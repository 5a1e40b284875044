//! The Back End's durable store on SQLite: user accounts and credentials, contact lists, published presence,
//! settings, plus the commit log the principal ships to its mirror and the node's durable role and epoch.
//!
//! Why SQLite (through `rusqlite`, `bundled`): its durability knobs are explicit and documented (WAL with
//! `synchronous=FULL` fsyncs the log at every commit, so a commit that returned survives a power cut), a
//! transaction covers the data, the log entry and the meta row at once, it compiles from source into the static
//! binary, and an operator can open the file with the `sqlite3` shell. `redb` would do as well; SQLite's SQL
//! makes the per-pool reload (`load_pool`) and the snapshot one query each.
//!
//! Every change goes through [`Store::append`]: one [`LogEntry`] (a [`Batch`] with its log sequence number `lsn`
//! and the epoch of the principal that created it), applied and logged in one durable transaction. A mirror
//! applies the same entries in the same order, so equal `(lsn, epoch)` means equal data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// The database file inside the node's data directory.
pub const DB_FILE: &str = "backend.sqlite3";

/// Log entries kept for catch-up; a mirror further behind gets a snapshot instead.
pub const LOG_RETAINED_ENTRIES: u64 = 20_000;

/// One published presence document (RFC 3903), named by its entity tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceDoc {
    pub etag: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub expires_at_unix_ms: u64,
}

/// Everything the Back End holds for one user: what a restarted Front End reloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user: String,
    /// The user's home Front End pool.
    pub pool: String,
    /// The credential (digest password); `None` in a [`Op::PutUser`] leaves the stored one as it is.
    #[serde(default)]
    pub password: Option<String>,
    /// Ordered, so a reload is stable.
    #[serde(default)]
    pub contacts: Vec<String>,
    #[serde(default)]
    pub presence: Vec<PresenceDoc>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// One change. A batch of them commits atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Replaces the user's contacts, presence and settings (and password when given): idempotent, so a Front End
    /// may resend it after a failover without doubling anything.
    PutUser(UserRecord),
    /// Creates or changes an account's credential and home pool, leaving its data alone.
    PutAccount {
        user: String,
        pool: String,
        password: String,
    },
    /// Sets one setting (`None` removes it).
    PutSetting {
        user: String,
        key: String,
        value: Option<String>,
    },
    /// Removes the user and everything it owns.
    DeleteUser { user: String },
}

/// What commits atomically: one transaction on the principal and one on the mirror.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new(ops: Vec<Op>) -> Self {
        Batch { ops }
    }
}

/// A committed batch in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Log sequence number: 1, 2, 3, … with no gaps.
    pub lsn: u64,
    /// The epoch of the principal that created the entry: the same `(lsn, epoch)` on two nodes is the same entry.
    pub epoch: u64,
    pub batch: Batch,
}

/// The durable role a node restarts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurableRole {
    Principal,
    Mirror,
}

/// The node's durable role, epoch and log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub role: DurableRole,
    pub epoch: u64,
    pub last_lsn: u64,
    /// The epoch of the entry at `last_lsn` (0 when the log is empty).
    pub last_entry_epoch: u64,
    /// Entries at or below this were pruned (or came in a snapshot); `base_epoch` is the epoch of the entry at it.
    pub base_lsn: u64,
    pub base_epoch: u64,
}

/// The whole data set at one log position: what a mirror too far behind (or with a diverged log) installs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub lsn: u64,
    pub entry_epoch: u64,
    pub users: Vec<UserRecord>,
}

/// The SQLite store of one Back End node.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    meta: Meta,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    user TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    password TEXT
);
CREATE INDEX IF NOT EXISTS users_by_pool ON users(pool);
CREATE TABLE IF NOT EXISTS contacts (
    user TEXT NOT NULL,
    contact TEXT NOT NULL,
    PRIMARY KEY (user, contact)
);
CREATE TABLE IF NOT EXISTS presence (
    user TEXT NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    expires_at_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (user, etag)
);
CREATE TABLE IF NOT EXISTS settings (
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user, key)
);
CREATE TABLE IF NOT EXISTS log (
    lsn INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    batch TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

impl Store {
    /// Opens (creating the directory and the database if needed) the store in `dir`. A new store starts in
    /// `initial_role` at epoch 1.
    pub fn open(dir: &Path, initial_role: DurableRole) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        // WAL plus synchronous=FULL: every commit fsyncs the WAL before returning, so an acknowledged commit
        // survives a crash or power cut (NORMAL would only fsync at checkpoints).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let mut store = Store {
            conn,
            path,
            meta: Meta {
                role: initial_role,
                epoch: 1,
                last_lsn: 0,
                last_entry_epoch: 0,
                base_lsn: 0,
                base_epoch: 0,
            },
        };
        match store.read_meta()? {
            Some(meta) => store.meta = meta,
            None => {
                let tx = store.conn.transaction()?;
                write_meta(&tx, &store.meta)?;
                tx.commit()?;
            }
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    fn read_meta(&self) -> Result<Option<Meta>, StoreError> {
        let get = |key: &str| -> Result<Option<String>, StoreError> {
            Ok(self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?)
        };
        let Some(role) = get("role")? else {
            return Ok(None);
        };
        let num = |key: &str| -> Result<u64, StoreError> {
            get(key)?
                .unwrap_or_else(|| "0".into())
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("meta `{key}` is not a number")))
        };
        let role = match role.as_str() {
            "principal" => DurableRole::Principal,
            "mirror" => DurableRole::Mirror,
            other => return Err(StoreError::Corrupt(format!("meta role `{other}`"))),
        };
        Ok(Some(Meta {
            role,
            epoch: num("epoch")?,
            last_lsn: num("last_lsn")?,
            last_entry_epoch: num("last_entry_epoch")?,
            base_lsn: num("base_lsn")?,
            base_epoch: num("base_epoch")?,
        }))
    }

    /// Durably records a new role and epoch (a promotion, or a step-down after being fenced).
    pub fn set_role(&mut self, role: DurableRole, epoch: u64) -> Result<(), StoreError> {
        let mut meta = self.meta;
        meta.role = role;
        meta.epoch = epoch;
        let tx = self.conn.transaction()?;
        write_meta(&tx, &meta)?;
        tx.commit()?;
        self.meta = meta;
        Ok(())
    }

    /// Applies and logs `entries` in one durable transaction. They must continue the log exactly
    /// (`entries[0].lsn == last_lsn + 1`, no gaps).
    pub fn append(&mut self, entries: &[LogEntry]) -> Result<Meta, StoreError> {
        let mut meta = self.meta;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for entry in entries {
            if entry.lsn != meta.last_lsn + 1 {
                return Err(StoreError::Gap {
                    expected: meta.last_lsn + 1,
                    got: entry.lsn,
                });
            }
            let text = serde_json::to_string(&entry.batch)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO log (lsn, epoch, batch) VALUES (?1, ?2, ?3)",
                params![entry.lsn as i64, entry.epoch as i64, text],
            )?;
            for op in &entry.batch.ops {
                apply_op(&tx, op)?;
            }
            meta.last_lsn = entry.lsn;
            meta.last_entry_epoch = entry.epoch;
        }
        // Prune the log to a bounded tail; a mirror older than that gets a snapshot.
        if meta.last_lsn > meta.base_lsn + LOG_RETAINED_ENTRIES + LOG_RETAINED_ENTRIES / 4 {
            let new_base = meta.last_lsn - LOG_RETAINED_ENTRIES;
            let base_epoch: i64 = tx.query_row(
                "SELECT epoch FROM log WHERE lsn = ?1",
                [new_base as i64],
                |r| r.get(0),
            )?;
            tx.execute("DELETE FROM log WHERE lsn <= ?1", [new_base as i64])?;
            meta.base_lsn = new_base;
            meta.base_epoch = base_epoch as u64;
        }
        write_meta(&tx, &meta)?;
        tx.commit()?;
        self.meta = meta;
        Ok(meta)
    }

    /// The epoch of the entry at `lsn`, if this store knows it (0 for lsn 0, the empty log).
    pub fn entry_epoch(&self, lsn: u64) -> Result<Option<u64>, StoreError> {
        if lsn == 0 {
            return Ok(Some(0));
        }
        if lsn == self.meta.base_lsn {
            return Ok(Some(self.meta.base_epoch));
        }
        if lsn < self.meta.base_lsn || lsn > self.meta.last_lsn {
            return Ok(None);
        }
        let epoch: Option<i64> = self
            .conn
            .query_row("SELECT epoch FROM log WHERE lsn = ?1", [lsn as i64], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(epoch.map(|e| e as u64))
    }

    /// Up to `max` entries after `lsn`, or `None` when they were pruned (the caller sends a snapshot).
    pub fn entries_after(&self, lsn: u64, max: usize) -> Result<Option<Vec<LogEntry>>, StoreError> {
        if lsn < self.meta.base_lsn {
            return Ok(None);
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT lsn, epoch, batch FROM log WHERE lsn > ?1 ORDER BY lsn LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![lsn as i64, max as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (lsn, epoch, text) = row?;
            let batch =
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(LogEntry {
                lsn: lsn as u64,
                epoch: epoch as u64,
                batch,
            });
        }
        Ok(Some(out))
    }

    /// The whole data set at the current log position.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            lsn: self.meta.last_lsn,
            entry_epoch: self.meta.last_entry_epoch,
            users: self.load_where(None)?,
        })
    }

    /// Replaces everything with `snapshot` in one durable transaction; the log restarts after it.
    pub fn install(&mut self, snapshot: &Snapshot) -> Result<Meta, StoreError> {
        let mut meta = self.meta;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "DELETE FROM users; DELETE FROM contacts; DELETE FROM presence; DELETE FROM settings; DELETE FROM log;",
        )?;
        for user in &snapshot.users {
            apply_op(&tx, &Op::PutUser(user.clone()))?;
        }
        meta.last_lsn = snapshot.lsn;
        meta.last_entry_epoch = snapshot.entry_epoch;
        meta.base_lsn = snapshot.lsn;
        meta.base_epoch = snapshot.entry_epoch;
        write_meta(&tx, &meta)?;
        tx.commit()?;
        self.meta = meta;
        Ok(meta)
    }

    /// One user's record.
    pub fn load_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.load_where(Some(("user", user)))?.into_iter().next())
    }

    /// Every user homed on `pool`.
    pub fn load_pool(&self, pool: &str) -> Result<Vec<UserRecord>, StoreError> {
        self.load_where(Some(("pool", pool)))
    }

    fn load_where(&self, filter: Option<(&str, &str)>) -> Result<Vec<UserRecord>, StoreError> {
        let (sql, arg) = match filter {
            Some(("user", v)) => (
                "SELECT user, pool, password FROM users WHERE user = ?1 ORDER BY user",
                v,
            ),
            Some((_, v)) => (
                "SELECT user, pool, password FROM users WHERE pool = ?1 ORDER BY user",
                v,
            ),
            None => (
                "SELECT user, pool, password FROM users WHERE ?1 = ?1 ORDER BY user",
                "",
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let heads = stmt
            .query_map([arg], |r| {
                Ok(UserRecord {
                    user: r.get(0)?,
                    pool: r.get(1)?,
                    password: r.get(2)?,
                    ..UserRecord::default()
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(heads.len());
        for mut rec in heads {
            let mut c = self
                .conn
                .prepare_cached("SELECT contact FROM contacts WHERE user = ?1 ORDER BY contact")?;
            rec.contacts = c
                .query_map([&rec.user], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            // In the order they were written (a record's order, oldest first): a user's presence is their
            // latest publication, so an order by tag would make a random older one current.
            let mut p = self.conn.prepare_cached(
                "SELECT etag, content_type, body, expires_at_unix_ms FROM presence WHERE user = ?1 ORDER BY rowid",
            )?;
            rec.presence = p
                .query_map([&rec.user], |r| {
                    Ok(PresenceDoc {
                        etag: r.get(0)?,
                        content_type: r.get(1)?,
                        body: r.get(2)?,
                        expires_at_unix_ms: r.get::<_, i64>(3)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut s = self
                .conn
                .prepare_cached("SELECT key, value FROM settings WHERE user = ?1 ORDER BY key")?;
            rec.settings = s
                .query_map([&rec.user], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Caps the database at about `bytes` (SQLite's `max_page_count`; at least its size now), as a full disk
    /// would: a write that needs more space fails with `SQLITE_FULL` and changes nothing. `None` lifts the cap.
    pub fn limit_size(&mut self, bytes: Option<u64>) -> Result<(), StoreError> {
        let page_size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = match bytes {
            Some(b) => (b / page_size.max(1) as u64).max(1) as i64,
            // SQLite's own limit.
            None => 0xFFFF_FFFE,
        };
        // SQLite never sets the cap below the pages in use; it answers with the cap it set.
        let _set: i64 =
            self.conn
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                    r.get(0)
                })?;
        Ok(())
    }

    /// How many users the store holds.
    pub fn user_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}

fn write_meta(tx: &rusqlite::Transaction<'_>, meta: &Meta) -> Result<(), StoreError> {
    let role = match meta.role {
        DurableRole::Principal => "principal",
        DurableRole::Mirror => "mirror",
    };
    let rows: [(&str, String); 6] = [
        ("role", role.to_string()),
        ("epoch", meta.epoch.to_string()),
        ("last_lsn", meta.last_lsn.to_string()),
        ("last_entry_epoch", meta.last_entry_epoch.to_string()),
        ("base_lsn", meta.base_lsn.to_string()),
        ("base_epoch", meta.base_epoch.to_string()),
    ];
    let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    for (k, v) in rows {
        stmt.execute(params![k, v])?;
    }
    Ok(())
}

fn apply_op(tx: &rusqlite::Transaction<'_>, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::PutUser(rec) => {
            tx.execute(
                "INSERT INTO users (user, pool, password) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user) DO UPDATE SET pool = excluded.pool,
                     password = COALESCE(excluded.password, users.password)",
                params![rec.user, rec.pool, rec.password],
            )?;
            for table in ["contacts", "presence", "settings"] {
                tx.execute(&format!("DELETE FROM {table} WHERE user = ?1"), [&rec.user])?;
            }
            for contact in &rec.contacts {
                tx.execute(
                    "INSERT OR IGNORE INTO contacts (user, contact) VALUES (?1, ?2)",
                    params![rec.user, contact],
                )?;
            }
            for doc in &rec.presence {
                tx.execute(
                    "INSERT OR REPLACE INTO presence (user, etag, content_type, body, expires_at_unix_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        rec.user,
                        doc.etag,
                        doc.content_type,
                        doc.body,
                        doc.expires_at_unix_ms as i64
                    ],
                )?;
            }
            for (k, v) in &rec.settings {
                tx.execute(
                    "INSERT OR REPLACE INTO settings (user, key, value) VALUES (?1, ?2, ?3)",
                    params![rec.user, k, v],
                )?;
            }
        }
        Op::PutAccount {
            user,
            pool,
            password,
        } => {
            tx.execute(
                "INSERT INTO users (user, pool, password) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user) DO UPDATE SET pool = excluded.pool, password = excluded.password",
                params![user, pool, password],
            )?;
        }
        Op::PutSetting { user, key, value } => match value {
            Some(v) => {
                tx.execute(
                    "INSERT OR REPLACE INTO settings (user, key, value) VALUES (?1, ?2, ?3)",
                    params![user, key, v],
                )?;
            }
            None => {
                tx.execute(
                    "DELETE FROM settings WHERE user = ?1 AND key = ?2",
                    params![user, key],
                )?;
            }
        },
        Op::DeleteUser { user } => {
            for table in ["users", "contacts", "presence", "settings"] {
                tx.execute(&format!("DELETE FROM {table} WHERE user = ?1"), [user])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "poolnode-store-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn put(user: &str, contacts: &[&str]) -> Batch {
        Batch::new(vec![Op::PutUser(UserRecord {
            user: user.into(),
            pool: "fe1".into(),
            password: Some(format!("{user}-pw")),
            contacts: contacts.iter().map(|c| c.to_string()).collect(),
            presence: vec![PresenceDoc {
                etag: "e1".into(),
                content_type: "application/pidf+xml".into(),
                body: b"<open/>".to_vec(),
                expires_at_unix_ms: 42,
            }],
            settings: [("lang".to_string(), "de".to_string())].into(),
        })])
    }

    #[test]
    fn a_reopened_store_holds_every_committed_entry_and_its_role() {
        let dir = tmp("reopen");
        {
            let mut s = Store::open(&dir, DurableRole::Principal).unwrap();
            s.append(&[LogEntry {
                lsn: 1,
                epoch: 1,
                batch: put("alice", &["bob"]),
            }])
            .unwrap();
            s.append(&[LogEntry {
                lsn: 2,
                epoch: 1,
                batch: put("bob", &[]),
            }])
            .unwrap();
            s.set_role(DurableRole::Mirror, 3).unwrap();
        }
        let s = Store::open(&dir, DurableRole::Principal).unwrap();
        let m = s.meta();
        assert_eq!(
            (m.role, m.epoch, m.last_lsn, m.last_entry_epoch),
            (DurableRole::Mirror, 3, 2, 1)
        );
        let alice = s.load_user("alice").unwrap().unwrap();
        assert_eq!(alice.contacts, vec!["bob".to_string()]);
        assert_eq!(alice.password.as_deref(), Some("alice-pw"));
        assert_eq!(alice.settings["lang"], "de");
        assert_eq!(s.load_pool("fe1").unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A user's publications come back in the order the record had them (oldest first, the current one last),
    /// not in the order of their random tags.
    #[test]
    fn publications_load_in_the_order_they_were_written() {
        let dir = tmp("presence-order");
        let mut s = Store::open(&dir, DurableRole::Principal).unwrap();
        let doc = |etag: &str| PresenceDoc {
            etag: etag.into(),
            content_type: "application/pidf+xml".into(),
            body: etag.as_bytes().to_vec(),
            expires_at_unix_ms: 42,
        };
        let record = |etags: &[&str]| UserRecord {
            user: "alice".into(),
            pool: "fe1".into(),
            presence: etags.iter().map(|e| doc(e)).collect(),
            ..UserRecord::default()
        };
        let etags = |s: &Store| -> Vec<String> {
            s.load_user("alice")
                .unwrap()
                .unwrap()
                .presence
                .into_iter()
                .map(|d| d.etag)
                .collect()
        };
        for (lsn, written) in [
            (1, vec!["zz", "mm", "aa"]),
            (2, vec!["mm", "aa", "qq", "bb"]),
        ] {
            s.append(&[LogEntry {
                lsn,
                epoch: 1,
                batch: Batch::new(vec![Op::PutUser(record(&written))]),
            }])
            .unwrap();
            assert_eq!(etags(&s), written);
        }
        assert_eq!(
            s.load_pool("fe1").unwrap()[0].presence.last().unwrap().etag,
            "bb"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A full store refuses a commit without a trace (position and data unchanged, reads served) and takes it
    /// once space returns, on the same connection.
    #[test]
    fn a_full_store_refuses_a_commit_unchanged_and_takes_it_once_space_returns() {
        let dir = tmp("full");
        let mut s = Store::open(&dir, DurableRole::Principal).unwrap();
        s.append(&[LogEntry {
            lsn: 1,
            epoch: 1,
            batch: put("alice", &["bob"]),
        }])
        .unwrap();
        let before = s.meta();
        s.limit_size(Some(0)).unwrap();
        let mut big = UserRecord {
            user: "bob".into(),
            pool: "fe1".into(),
            ..UserRecord::default()
        };
        big.settings.insert("blob".into(), "x".repeat(256 * 1024));
        let entry = LogEntry {
            lsn: 2,
            epoch: 1,
            batch: Batch::new(vec![Op::PutUser(big)]),
        };
        let err = s.append(std::slice::from_ref(&entry)).unwrap_err();
        assert!(
            matches!(&err, StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull),
            "{err}"
        );
        assert_eq!(s.meta(), before);
        assert!(s.load_user("bob").unwrap().is_none());
        assert_eq!(s.load_user("alice").unwrap().unwrap().contacts, ["bob"]);
        s.limit_size(None).unwrap();
        assert_eq!(s.append(&[entry]).unwrap().last_lsn, 2);
        drop(s);
        let s = Store::open(&dir, DurableRole::Principal).unwrap();
        assert_eq!(s.meta().last_lsn, 2);
        assert!(s.load_user("bob").unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_entry_that_skips_an_lsn_is_refused_and_changes_nothing() {
        let dir = tmp("gap");
        let mut s = Store::open(&dir, DurableRole::Mirror).unwrap();
        let err = s
            .append(&[LogEntry {
                lsn: 2,
                epoch: 1,
                batch: put("alice", &[]),
            }])
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Gap {
                    expected: 1,
                    got: 2
                }
            ),
            "{err}"
        );
        assert!(s.load_user("alice").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_snapshot_installed_elsewhere_gives_the_same_data_and_position() {
        let (a, b) = (tmp("snap-a"), tmp("snap-b"));
        let mut src = Store::open(&a, DurableRole::Principal).unwrap();
        src.append(&[
            LogEntry {
                lsn: 1,
                epoch: 1,
                batch: put("alice", &["bob"]),
            },
            LogEntry {
                lsn: 2,
                epoch: 2,
                batch: Batch::new(vec![Op::PutSetting {
                    user: "alice".into(),
                    key: "lang".into(),
                    value: None,
                }]),
            },
        ])
        .unwrap();
        let mut dst = Store::open(&b, DurableRole::Mirror).unwrap();
        dst.append(&[LogEntry {
            lsn: 1,
            epoch: 1,
            batch: put("mallory", &[]),
        }])
        .unwrap();
        dst.install(&src.snapshot().unwrap()).unwrap();
        assert_eq!(dst.load_pool("fe1").unwrap(), src.load_pool("fe1").unwrap());
        assert_eq!(dst.meta().last_lsn, 2);
        assert_eq!(dst.entry_epoch(2).unwrap(), Some(2));
        assert_eq!(
            dst.entries_after(1, 10).unwrap(),
            None,
            "pruned below the snapshot"
        );
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }
}
