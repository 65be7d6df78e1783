//! The events the in-cluster watcher sends to EventBridge (source `nodewright.cluster`): the wire
//! schema shared by the watcher (producer) and the `pod-pending` / `state-change` functions
//! (consumers). Versioned by `schemaVersion`; consumers reject versions they do not know rather than
//! guess. Documented in docs/events.md.

use serde::{Deserialize, Serialize};

use crate::model::Pod;
use crate::{Error, Result};

/// EventBridge `source` of every watcher event.
pub const SOURCE: &str = "nodewright.cluster";
/// `detail-type` of a batch of unschedulable pods.
pub const POD_PENDING: &str = "Pod Pending";
/// `detail-type` of a Nodewright node turning Ready.
pub const NODE_READY: &str = "Node Ready";
/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Most pods one batch may carry; bounds memory and decision time per invocation.
pub const MAX_PODS_PER_BATCH: usize = 5_000;

/// `detail` of a `Pod Pending` event: pods the cluster's scheduler marked Unschedulable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodPending {
    pub schema_version: u32,
    pub cluster: String,
    /// Unique per batch (and per part when a batch is split): the idempotency key's basis.
    pub batch_id: String,
    /// `part`/`parts` when a batch was split to fit EventBridge's entry size limit.
    #[serde(default = "one")]
    pub part: u32,
    #[serde(default = "one")]
    pub parts: u32,
    /// When the watcher closed the batch (Unix milliseconds).
    pub sent_at: i64,
    /// The pods, in the core's compact form (effective requests already computed).
    pub pods: Vec<PendingPod>,
}

fn one() -> u32 {
    1
}

/// One pending pod plus the version the watcher saw (so replays of an old version are recognised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPod {
    pub resource_version: String,
    /// When the pod was created (Unix milliseconds); pending time is measured from it.
    #[serde(default)]
    pub created_at: i64,
    #[serde(flatten)]
    pub pod: Pod,
}

/// `detail` of a `Node Ready` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeReady {
    pub schema_version: u32,
    pub cluster: String,
    pub node: String,
    /// The `nodewright.io/claim` label of the node.
    pub claim: String,
    /// From the node's providerID, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// When the Ready condition last turned True (Unix milliseconds).
    pub ready_at: i64,
}

impl PodPending {
    /// Checks what serde cannot: version, bounds, non-empty identifiers.
    pub fn validate(&self) -> Result<()> {
        check_version(self.schema_version)?;
        non_empty("detail.cluster", &self.cluster)?;
        non_empty("detail.batchId", &self.batch_id)?;
        if self.part == 0 || self.part > self.parts {
            return Err(Error::invalid(
                "detail.part",
                format!("part {} of {} is out of range", self.part, self.parts),
            ));
        }
        if self.pods.len() > MAX_PODS_PER_BATCH {
            return Err(Error::invalid(
                "detail.pods",
                format!(
                    "{} pods is over the {MAX_PODS_PER_BATCH} per batch limit",
                    self.pods.len()
                ),
            ));
        }
        for (i, p) in self.pods.iter().enumerate() {
            non_empty(&format!("detail.pods[{i}].name"), &p.pod.name)?;
            non_empty(&format!("detail.pods[{i}].uid"), &p.pod.uid)?;
        }
        Ok(())
    }
}

impl NodeReady {
    pub fn validate(&self) -> Result<()> {
        check_version(self.schema_version)?;
        non_empty("detail.cluster", &self.cluster)?;
        non_empty("detail.node", &self.node)?;
        non_empty("detail.claim", &self.claim)
    }
}

fn check_version(v: u32) -> Result<()> {
    if v != SCHEMA_VERSION {
        return Err(Error::invalid(
            "detail.schemaVersion",
            format!("version {v} is not supported (this build reads {SCHEMA_VERSION})"),
        ));
    }
    Ok(())
}

fn non_empty(field: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_pending_round_trips_and_validates() {
        let pod = Pod {
            uid: "u1".into(),
            name: "web-0".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let detail = PodPending {
            schema_version: SCHEMA_VERSION,
            cluster: "prod".into(),
            batch_id: "b1".into(),
            part: 1,
            parts: 1,
            sent_at: 1,
            pods: vec![PendingPod {
                resource_version: "42".into(),
                created_at: 0,
                pod,
            }],
        };
        let json = serde_json::to_value(&detail).expect("serialize");
        assert_eq!(json["schemaVersion"], 1);
        assert_eq!(json["pods"][0]["resourceVersion"], "42");
        assert_eq!(json["pods"][0]["name"], "web-0");
        let back: PodPending = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, detail);
        back.validate().expect("valid");

        let mut bad = detail.clone();
        bad.schema_version = 2;
        assert!(
            bad.validate()
                .expect_err("v2")
                .to_string()
                .starts_with("detail.schemaVersion")
        );
        let mut bad = detail;
        bad.pods[0].pod.uid.clear();
        assert!(
            bad.validate()
                .expect_err("uid")
                .to_string()
                .starts_with("detail.pods[0].uid")
        );
    }
}
