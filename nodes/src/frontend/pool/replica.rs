//! A routing group on this Front End: its [`Slot`] (the promise it made and the [`Replica`], if it holds one) and
//! what a secondary does with the primary's calls (promise, fetch, install, apply, resync). The primary's side of
//! replication is in `replication`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use super::member::{GroupConfig, Member};
use super::placement::GroupId;
use super::wire::Answer;
use crate::frontend::store::{UserStore, Write};

/// This Front End's copy of one routing group.
pub struct Replica {
    pub config: GroupConfig,
    /// Number of the last write batch applied.
    pub seq: u64,
    pub store: UserStore,
    /// When this configuration was adopted: members get one failure timeout to report it.
    pub adopted_at: Instant,
}

/// A group's slot on this Front End: the promise it made (kept even without a replica) and the replica, if any.
#[derive(Default)]
pub struct SlotState {
    pub promised_epoch: u64,
    pub promised_to: Option<Member>,
    pub replica: Option<Replica>,
}

impl SlotState {
    /// This Front End is the group's primary at the epoch it promised.
    pub fn acting_primary(&self, me: &Member) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|r| r.config.primary() == me && r.config.epoch == self.promised_epoch)
    }
}

/// One routing group on this Front End.
pub struct Slot {
    pub group: GroupId,
    /// Held while a batch is numbered and sent, and through a reconfiguration: writes reach secondaries in order.
    pub order: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
    /// Secondaries being resynchronized now (one resync at a time each).
    pub(super) resyncing: Mutex<HashSet<String>>,
}

impl Slot {
    pub fn new(group: GroupId) -> Self {
        Self {
            group,
            order: tokio::sync::Mutex::new(()),
            state: Mutex::new(SlotState::default()),
            resyncing: Mutex::new(HashSet::new()),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A promise for `epoch` to coordinator `from`. `primary_healthy` says whether this replica's primary still
    /// runs and holds the group: then only the primary itself may reconfigure (its lease has not run out).
    pub fn promise(&self, epoch: u64, from: &Member, primary_healthy: bool) -> Answer {
        let mut state = self.lock();
        let floor = state
            .promised_epoch
            .max(state.replica.as_ref().map_or(0, |r| r.config.epoch));
        if epoch <= floor {
            return Answer::Refused {
                epoch: floor,
                reason: "epoch already promised".into(),
            };
        }
        if let Some(replica) = &state.replica {
            if replica.config.primary() != from && primary_healthy {
                return Answer::Refused {
                    epoch: floor,
                    reason: format!(
                        "primary {} still holds the group",
                        replica.config.primary().node
                    ),
                };
            }
        }
        state.promised_epoch = epoch;
        state.promised_to = Some(from.clone());
        let (config_epoch, seq) = state
            .replica
            .as_ref()
            .map_or((0, 0), |r| (r.config.epoch, r.seq));
        Answer::Promised {
            config_epoch,
            seq,
            has_replica: state.replica.is_some(),
        }
    }

    /// The state, for the coordinator this replica promised `epoch` to (frozen since: it refuses older writes).
    pub fn fetch(&self, epoch: u64, from: &Member) -> Answer {
        let state = self.lock();
        match &state.replica {
            Some(replica)
                if state.promised_epoch == epoch && state.promised_to.as_ref() == Some(from) =>
            {
                Answer::Snapshot {
                    seq: replica.seq,
                    writes: replica.store.snapshot(),
                }
            }
            _ => Answer::Refused {
                epoch: state.promised_epoch,
                reason: "not promised to you".into(),
            },
        }
    }

    /// Adopts `config` with this state, when the epoch is new or was promised to this coordinator.
    pub fn install(
        &self,
        config: GroupConfig,
        seq: u64,
        snapshot: &[Write],
        from: &Member,
        me: &Member,
    ) -> Answer {
        let mut state = self.lock();
        let fresh = config.epoch > state.promised_epoch
            || (config.epoch == state.promised_epoch && state.promised_to.as_ref() == Some(from));
        if !fresh
            || state
                .replica
                .as_ref()
                .is_some_and(|r| r.config.epoch >= config.epoch)
        {
            return Answer::Refused {
                epoch: state.promised_epoch,
                reason: "stale configuration".into(),
            };
        }
        state.promised_epoch = config.epoch;
        state.promised_to = Some(from.clone());
        state.replica = config.has(me).then(|| Replica {
            store: UserStore::from_snapshot(snapshot),
            seq,
            config,
            adopted_at: Instant::now(),
        });
        Answer::Done
    }

    /// Applies batch `seq` from the primary of `epoch`, in order.
    pub fn replicate(
        &self,
        epoch: u64,
        seq: u64,
        writes: &[Write],
        now_unix_ms: u64,
        from: &Member,
    ) -> Answer {
        let mut state = self.lock();
        let promised = state.promised_epoch;
        let Some(replica) = state
            .replica
            .as_mut()
            .filter(|r| r.config.epoch == epoch && promised == epoch && r.config.primary() == from)
        else {
            return Answer::Refused {
                epoch: promised,
                reason: "not a secondary of that epoch's primary".into(),
            };
        };
        if seq <= replica.seq {
            // Already in the state (a resync overtook it).
            return Answer::Done;
        }
        if seq != replica.seq + 1 {
            return Answer::Gap;
        }
        for write in writes {
            replica.store.apply(write, now_unix_ms);
        }
        replica.seq = seq;
        Answer::Done
    }

    /// Replaces the state with the primary's, same epoch.
    pub fn resync(&self, epoch: u64, seq: u64, snapshot: &[Write], from: &Member) -> Answer {
        let mut state = self.lock();
        let promised = state.promised_epoch;
        let Some(replica) = state
            .replica
            .as_mut()
            .filter(|r| r.config.epoch == epoch && promised == epoch && r.config.primary() == from)
        else {
            return Answer::Refused {
                epoch: promised,
                reason: "not a secondary of that epoch's primary".into(),
            };
        };
        replica.store = UserStore::from_snapshot(snapshot);
        replica.seq = seq;
        Answer::Done
    }
}
