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
/// The `Pod Pending` schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The `Node Ready` schema version this build writes and reads. Version 2 identifies the node by
/// its instance id (from `spec.providerID`); version 1 carried a node label no real node has.
pub const NODE_READY_SCHEMA_VERSION: u32 = 2;
/// How far an event's own time (`sentAt`, `readyAt`, the envelope's `time`) may be from the
/// receiver's clock: EventBridge and SQS deliver within minutes, Lambda retries within hours, and
/// the DLQ redrive within a day. Anything further is a broken clock or a forged event, and would
/// poison latencies and lifecycle ordering.
pub const EVENT_TIME_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
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
    /// From the node's `spec.providerID` (`aws:///<zone>/<instance-id>`): what links a Node to
    /// its claim, for fleet and Auto Scaling pool nodes alike.
    pub instance_id: String,
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
            p.pod.validate(&format!("detail.pods[{i}]"))?;
        }
        Ok(())
    }

    /// Fills each pod's defaults exactly as file input does ([`Pod::normalize`]: namespace, one
    /// `pods` slot so max-pods holds). Call before [`PodPending::validate`].
    pub fn normalize(&mut self) {
        for p in &mut self.pods {
            if !p.pod.uid.is_empty() {
                p.pod.normalize();
            }
        }
    }

    /// Checks the batch's own time against the receiver's clock.
    pub fn check_times(&self, now: i64) -> Result<()> {
        check_event_time("detail.sentAt", self.sent_at, now)
    }
}

impl NodeReady {
    pub fn validate(&self) -> Result<()> {
        check_version_of(self.schema_version, NODE_READY_SCHEMA_VERSION)?;
        non_empty("detail.cluster", &self.cluster)?;
        non_empty("detail.node", &self.node)?;
        if !crate::model::is_instance_id(&self.instance_id) {
            return Err(Error::invalid(
                "detail.instanceId",
                format!(
                    "{:?} is not an EC2 instance id (i- and 8 or 17 hex digits)",
                    self.instance_id.chars().take(64).collect::<String>()
                ),
            ));
        }
        Ok(())
    }

    /// Checks `readyAt` against the receiver's clock.
    pub fn check_times(&self, now: i64) -> Result<()> {
        check_event_time("detail.readyAt", self.ready_at, now)
    }
}

/// `at` (Unix ms) must lie within [`EVENT_TIME_WINDOW_MS`] of `now`.
pub fn check_event_time(field: &str, at: i64, now: i64) -> Result<()> {
    if at.abs_diff(now) > EVENT_TIME_WINDOW_MS.unsigned_abs() {
        return Err(Error::invalid(
            field,
            format!(
                "{at} ms is {} h from the receiver's clock ({now} ms); events more than 24 h away are refused",
                (at - now) / 3_600_000
            ),
        ));
    }
    Ok(())
}

fn check_version(v: u32) -> Result<()> {
    check_version_of(v, SCHEMA_VERSION)
}

fn check_version_of(v: u32, supported: u32) -> Result<()> {
    if v != supported {
        return Err(Error::invalid(
            "detail.schemaVersion",
            format!("version {v} is not supported (this build reads {supported})"),
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
        let mut bad = detail.clone();
        bad.pods[0].pod.uid.clear();
        assert!(
            bad.validate()
                .expect_err("uid")
                .to_string()
                .starts_with("detail.pods[0].uid")
        );

        // The watcher's form omits defaults: normalized like file input, so max-pods holds.
        let mut sparse = detail.clone();
        sparse.pods[0].pod.namespace.clear();
        sparse.pods[0].pod.requests = crate::Resources::new();
        sparse.normalize();
        assert_eq!(sparse.pods[0].pod.namespace, "default");
        assert_eq!(sparse.pods[0].pod.requests.get(crate::Resource::Pods), 1);
        let mut skew = detail;
        skew.pods[0].pod.topology_spread.push(crate::model::SpreadConstraint {
            topology_key: crate::labels::ZONE.into(),
            max_skew: 0,
            when_unsatisfiable: Default::default(),
            selector: Default::default(),
            min_domains: None,
            node_affinity_policy: Default::default(),
            node_taints_policy: crate::model::NodeInclusionPolicy::Ignore,
        });
        assert!(
            skew.validate()
                .expect_err("maxSkew 0")
                .to_string()
                .starts_with("detail.pods[0].topologySpread[0].maxSkew")
        );
    }

    #[test]
    fn node_ready_names_its_instance_and_times_are_bounded() {
        let ready = NodeReady {
            schema_version: NODE_READY_SCHEMA_VERSION,
            cluster: "prod".into(),
            node: "ip-10-0-1-7.ec2.internal".into(),
            instance_id: "i-0123456789abcdef0".into(),
            ready_at: 1_700_000_000_000,
        };
        ready.validate().expect("valid");
        let json = serde_json::to_value(&ready).expect("serialize");
        assert_eq!(json["instanceId"], "i-0123456789abcdef0");
        let mut bad = ready.clone();
        bad.instance_id = "ip-10-0-1-7".into();
        assert!(
            bad.validate()
                .expect_err("id")
                .to_string()
                .starts_with("detail.instanceId")
        );
        let mut old = json.clone();
        old["schemaVersion"] = 1.into();
        let old: NodeReady = serde_json::from_value(old).expect("shape");
        assert!(
            old.validate()
                .expect_err("v1")
                .to_string()
                .starts_with("detail.schemaVersion")
        );

        let now = ready.ready_at;
        ready.check_times(now + 3_600_000).expect("an hour late is fine");
        let far = NodeReady {
            ready_at: 253_402_300_799_000, // 9999-12-31
            ..ready.clone()
        };
        assert!(
            far.check_times(now)
                .expect_err("9999")
                .to_string()
                .starts_with("detail.readyAt")
        );
        let past = NodeReady {
            ready_at: -1_000,
            ..ready
        };
        assert!(
            past.check_times(now)
                .expect_err("1969")
                .to_string()
                .starts_with("detail.readyAt")
        );
    }
}
