//! A read-only view of one cluster's state, for `nodewright avail`: the live claims, live
//! reservations, every pool's usage counters and the unavailable offerings.
//!
//! The view is also a file format: its JSON form is what `--state DIR` reads, written by the
//! simulator and by `nodewright invoke --state DIR`, so one renderer serves live and local state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClaimRecord, PoolUsage, Reservation, UnavailableOffering};
use crate::ports::EpochMillis;
use crate::{Error, Result};

/// The `format` field of a state file; bumped when the file's shape changes incompatibly.
pub const STATE_VIEW_FORMAT: &str = "nodewright-state/v1";

/// What reads cost, as DynamoDB reported it (`ReturnConsumedCapacity: TOTAL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadCost {
    pub requests: u32,
    pub read_units: f64,
}

/// One cluster's state at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateView {
    /// Always [`STATE_VIEW_FORMAT`].
    pub format: String,
    pub cluster: String,
    /// When the view was taken (epoch ms): "now" for waits and expiries.
    pub at: EpochMillis,
    /// Claims not ended (not terminated, not failed).
    pub claims: Vec<ClaimRecord>,
    /// Unexpired reservations.
    pub reservations: Vec<Reservation>,
    /// Usage counters by pool.
    pub usage: BTreeMap<String, PoolUsage>,
    /// Offerings unavailable at `at`.
    pub offerings: Vec<UnavailableOffering>,
}

impl StateView {
    pub fn new(cluster: &str, at: EpochMillis) -> StateView {
        StateView {
            format: STATE_VIEW_FORMAT.into(),
            cluster: cluster.into(),
            at,
            claims: Vec::new(),
            reservations: Vec::new(),
            usage: BTreeMap::new(),
            offerings: Vec::new(),
        }
    }

    /// Parses a state file, naming what is wrong with it.
    pub fn from_json(text: &str) -> Result<StateView> {
        let view: StateView =
            serde_json::from_str(text).map_err(|e| Error::invalid("state file", format!("not a state view: {e}")))?;
        if view.format != STATE_VIEW_FORMAT {
            return Err(Error::invalid(
                "format",
                format!("{:?} is not {STATE_VIEW_FORMAT:?}", view.format),
            ));
        }
        Ok(view)
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
