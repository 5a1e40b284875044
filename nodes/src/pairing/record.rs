//! [`PairRecord`]: what a pool must remember about its pair across restarts of all its Front Ends. It lives in
//! the pool's own Back End as a reserved account (`~pairing~<pool>`, pool `~pairing`), so it is mirrored like any
//! user data, and every Front End of the pool reads it every heartbeat: the record, not a Front End's memory, is
//! the pool's decision, and a command sent to any one Front End reaches the others within a heartbeat.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::UserRecord;

/// The `pool` column of the reserved records: no Front End pool has this name, so `load_all` never returns them.
pub const RECORD_POOL: &str = "~pairing";

/// An operation in progress: while one runs, the pair's users are refused (`503`) on every Front End of the
/// pool, so no write slips between the copy and the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transition {
    FailingOver,
    FailingBack,
}

/// A pool's durable state about its pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRecord {
    /// The pair was failed over to this pool: we serve its users at full service.
    pub pair_failed_over: bool,
    /// Bumped by every failover and failback of the pair.
    pub failover_epoch: u64,
    #[serde(default)]
    pub transition: Option<Transition>,
    /// The Front End pool the management store (the topology the pools run from) lives in.
    pub store_location: String,
    /// Bumped by every `store-failover`; between the two pools of a pair the higher version wins.
    pub store_version: u64,
    /// The pair's `failover_epoch` up to which this pool's own users were reloaded from its Back End: a pool whose
    /// users the pair held (failed over, then back) serves them again only once one of its Front Ends reloaded
    /// them for the whole pool. A failover that never completed leaves the epoch, and the users, as they were.
    #[serde(default)]
    pub home_reloaded_epoch: u64,
}

impl PairRecord {
    /// The state of a new cluster: nothing failed over, the store in `store_location`.
    pub fn new(store_location: &str) -> Self {
        PairRecord {
            pair_failed_over: false,
            failover_epoch: 0,
            transition: None,
            store_location: store_location.to_owned(),
            store_version: 0,
            home_reloaded_epoch: 0,
        }
    }

    /// The reserved account name of `pool`'s record.
    pub fn account(pool: &str) -> String {
        format!("~pairing~{pool}")
    }

    /// Whether the pair's users must stay away from their home pool (fenced there).
    pub fn fences_pair(&self) -> bool {
        self.pair_failed_over || self.transition.is_some()
    }

    pub fn to_user_record(&self, pool: &str) -> UserRecord {
        let mut settings = BTreeMap::new();
        settings.insert(
            "record".to_owned(),
            serde_json::to_string(self).expect("a record serializes"),
        );
        UserRecord {
            user: Self::account(pool),
            pool: RECORD_POOL.to_owned(),
            settings,
            ..UserRecord::default()
        }
    }

    pub fn from_user_record(record: &UserRecord) -> Option<Self> {
        serde_json::from_str(record.settings.get("record")?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_back_end_round_trip() {
        let mut record = PairRecord::new("pa");
        record.pair_failed_over = true;
        record.failover_epoch = 3;
        record.transition = Some(Transition::FailingBack);
        record.home_reloaded_epoch = 2;
        let stored = record.to_user_record("pb");
        assert_eq!(stored.user, "~pairing~pb");
        assert_eq!(stored.pool, RECORD_POOL);
        assert_eq!(PairRecord::from_user_record(&stored), Some(record));
    }

    #[test]
    fn a_record_written_before_the_reload_epoch_existed_reads_as_never_reloaded() {
        let old = r#"{"pair_failed_over":false,"failover_epoch":2,"store_location":"pa","store_version":0}"#;
        let record: PairRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.home_reloaded_epoch, 0);
    }
}
