//! The unavailable-offerings cache (Karpenter's ICE cache): an offering (capacity type, instance
//! type, zone) that just failed with a capacity error is skipped by every invocation for 3 minutes.

use crate::CapacityType;

/// How long an offering stays unavailable after a capacity error (Karpenter uses 3 minutes).
pub const OFFERING_UNAVAILABLE_SECS: i64 = 180;

/// An offering that recently failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnavailableOffering {
    pub capacity_type: CapacityType,
    pub instance_type: String,
    pub zone: String,
    /// The AWS error code (or interruption) that made it unavailable.
    pub reason: String,
    /// Epoch seconds.
    pub expires_at: i64,
}
