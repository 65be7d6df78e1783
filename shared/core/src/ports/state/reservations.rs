//! Pod reservations: which invocation, claim or node a pending pod has been promised to. A pod is
//! reserved by exactly one holder at a time (the state store's conditional write decides), and
//! reservations expire (TTL) so that a holder that died half-way does not keep a pod forever.

use crate::ports::EpochMillis;

/// How long a reservation lives without being renewed: long enough for a launch and registration,
/// short enough that a pod whose claim died is retried by the next sweep.
pub const RESERVATION_TTL_SECS: i64 = 20 * 60;

/// Who holds a pod. Serialized as `kind:id`, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Holder {
    /// An invocation that is deciding (holds the pod while it schedules and launches).
    Invocation(String),
    /// A node claim that will run the pod.
    Claim(String),
    /// An existing node the pod is expected to bind to.
    Node(String),
}

impl Holder {
    pub fn encode(&self) -> String {
        match self {
            Holder::Invocation(id) => format!("invocation:{id}"),
            Holder::Claim(id) => format!("claim:{id}"),
            Holder::Node(name) => format!("node:{name}"),
        }
    }

    pub fn decode(s: &str) -> Option<Holder> {
        let (kind, id) = s.split_once(':')?;
        match kind {
            "invocation" => Some(Holder::Invocation(id.into())),
            "claim" => Some(Holder::Claim(id.into())),
            "node" => Some(Holder::Node(id.into())),
            _ => None,
        }
    }
}

impl From<Holder> for String {
    fn from(h: Holder) -> String {
        h.encode()
    }
}

impl TryFrom<String> for Holder {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Holder, String> {
        Holder::decode(&s).ok_or_else(|| format!("holder {s:?} is not invocation:ID, claim:ID or node:NAME"))
    }
}

/// One live reservation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub pod_uid: String,
    pub holder: Holder,
    pub created_at: EpochMillis,
    /// Epoch seconds (the DynamoDB TTL attribute).
    pub expires_at: i64,
}
