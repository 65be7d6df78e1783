//! Batches into EventBridge entries. An entry (source + detail-type + detail + resources) may be at
//! most 256 KB; a batch too big for one entry is split into parts that share the batch id and carry
//! `part`/`parts`, each with whole pods.

use nodewright_core::model::cluster_event::{self, NodeReady, PendingPod, PodPending};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// EventBridge's limit on one entry (and on one PutEvents request).
pub const ENTRY_LIMIT: usize = 256 * 1024;
/// What we allow ourselves: headroom for the envelope and for EventBridge's own accounting.
pub const ENTRY_BUDGET: usize = ENTRY_LIMIT - 2 * 1024;

/// One PutEvents entry, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub source: String,
    pub detail_type: String,
    pub detail: String,
}

impl Entry {
    /// Size as EventBridge counts it (UTF-8 bytes of source, detail-type and detail).
    pub fn size(&self) -> usize {
        self.source.len() + self.detail_type.len() + self.detail.len()
    }
}

/// A batch id that is the same for the same pods (uid + version): a re-sent batch carries the same
/// id, so the function's idempotency check recognises it.
pub fn batch_id(pods: &[PendingPod]) -> String {
    let mut h = Sha256::new();
    let mut keys: Vec<_> = pods.iter().map(|p| (&p.pod.uid, &p.resource_version)).collect();
    keys.sort();
    for (uid, rv) in keys {
        h.update(uid.as_bytes());
        h.update([0]);
        h.update(rv.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Pod Pending` entries for one batch, split to fit `budget` bytes each.
pub fn pod_pending_entries(cluster: &str, pods: Vec<PendingPod>, sent_at: i64, budget: usize) -> Result<Vec<Entry>> {
    let id = batch_id(&pods);
    let envelope = |pods: Vec<PendingPod>, part: u32, parts: u32| PodPending {
        schema_version: cluster_event::SCHEMA_VERSION,
        cluster: cluster.to_string(),
        batch_id: id.clone(),
        part,
        parts,
        sent_at,
        pods,
    };
    // Size of the detail with no pods (with wide part numbers), plus each pod's own size.
    let fixed = cluster_event::SOURCE.len()
        + cluster_event::POD_PENDING.len()
        + serde_json::to_string(&envelope(Vec::new(), 9999, 9999))?.len();
    let mut groups: Vec<Vec<PendingPod>> = Vec::new();
    let mut size = fixed;
    for pod in pods {
        let own = serde_json::to_string(&pod)?.len() + 1; // the separating comma
        if fixed + own > budget {
            return Err(Error::PodTooLarge {
                pod: format!("{}/{}", pod.pod.namespace, pod.pod.name),
                bytes: fixed + own,
                limit: budget,
            });
        }
        let full = groups
            .last()
            .is_none_or(|g| size + own > budget || g.len() >= cluster_event::MAX_PODS_PER_BATCH);
        if full {
            groups.push(Vec::new());
            size = fixed;
        }
        size += own;
        if let Some(g) = groups.last_mut() {
            g.push(pod);
        }
    }
    let parts = groups.len() as u32;
    groups
        .into_iter()
        .enumerate()
        .map(|(i, pods)| {
            Ok(Entry {
                source: cluster_event::SOURCE.into(),
                detail_type: cluster_event::POD_PENDING.into(),
                detail: serde_json::to_string(&envelope(pods, i as u32 + 1, parts))?,
            })
        })
        .collect()
}

/// The `Node Ready` entry.
pub fn node_ready_entry(ready: &NodeReady) -> Result<Entry> {
    Ok(Entry {
        source: cluster_event::SOURCE.into(),
        detail_type: cluster_event::NODE_READY.into(),
        detail: serde_json::to_string(ready)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewright_core::Pod;

    fn pending(i: usize, label_bytes: usize) -> PendingPod {
        PendingPod {
            resource_version: "1".into(),
            created_at: 0,
            pod: Pod {
                uid: format!("uid-{i}"),
                name: format!("pod-{i}"),
                namespace: "default".into(),
                labels: [("blob".to_string(), "x".repeat(label_bytes))].into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn small_batches_are_one_entry() {
        let pods: Vec<_> = (0..10).map(|i| pending(i, 10)).collect();
        let entries = pod_pending_entries("prod", pods, 1, ENTRY_BUDGET).expect("entries");
        assert_eq!(entries.len(), 1);
        let d: PodPending = serde_json::from_str(&entries[0].detail).expect("detail");
        assert_eq!((d.part, d.parts, d.pods.len()), (1, 1, 10));
        d.validate().expect("valid");
    }

    #[test]
    fn big_batches_split_under_the_limit_keeping_every_pod_once() {
        // ~2 KB per pod, 400 pods: ~800 KB, so at least 4 entries.
        let pods: Vec<_> = (0..400).map(|i| pending(i, 2000)).collect();
        let entries = pod_pending_entries("prod", pods, 1, ENTRY_BUDGET).expect("entries");
        assert!(entries.len() >= 4, "{} entries", entries.len());
        let mut seen = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        for (i, e) in entries.iter().enumerate() {
            assert!(e.size() <= ENTRY_BUDGET, "entry {i} is {} bytes", e.size());
            let d: PodPending = serde_json::from_str(&e.detail).expect("detail");
            assert_eq!((d.part, d.parts), (i as u32 + 1, entries.len() as u32));
            ids.insert(d.batch_id.clone());
            seen.extend(d.pods.into_iter().map(|p| p.pod.uid));
        }
        assert_eq!(ids.len(), 1, "parts share the batch id");
        let expected: Vec<_> = (0..400).map(|i| format!("uid-{i}")).collect();
        assert_eq!(seen, expected);
        // Splits are tight: every part but the last could not take the next pod.
        let first = entries[0].size();
        assert!(first + 2100 > ENTRY_BUDGET, "first part only {first} bytes");
    }

    #[test]
    fn a_pod_bigger_than_an_entry_is_a_clear_error() {
        let err = pod_pending_entries("prod", vec![pending(0, 300_000)], 1, ENTRY_BUDGET).expect_err("too big");
        assert!(err.to_string().contains("default/pod-0"), "{err}");
    }

    #[test]
    fn batch_id_depends_on_pods_not_order() {
        let a = vec![pending(1, 1), pending(2, 1)];
        let b = vec![pending(2, 1), pending(1, 1)];
        assert_eq!(batch_id(&a), batch_id(&b));
        assert_ne!(batch_id(&a), batch_id(&a[..1]));
    }
}
