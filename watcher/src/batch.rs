//! Batching of unschedulable pods, on a clock the caller passes in (tests drive it by hand).
//!
//! A batch opens with its first pod and closes 1 s after the last new pod arrived or 10 s after the
//! first, whichever comes first: a burst (a Deployment scaled up) becomes one decision, a trickle
//! still goes out within 10 s. A pod version (uid + resourceVersion) already sent within the
//! de-duplication window is dropped; so is any version of a pod sent within `resend_after`, because
//! the scheduler rewrites a pending pod's status on every retry and each rewrite is a new version.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nodewright_core::model::cluster_event::PendingPod;

/// Batching and de-duplication windows.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Close a batch this long after the last new pod.
    pub idle: Duration,
    /// Close a batch this long after its first pod, however busy.
    pub max: Duration,
    /// Never send the same pod version twice within this window.
    pub dedup: Duration,
    /// Do not send another version of a pod sooner than this after the last one.
    pub resend_after: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            idle: Duration::from_secs(1),
            max: Duration::from_secs(10),
            dedup: Duration::from_secs(600),
            resend_after: Duration::from_secs(60),
        }
    }
}

/// Collects pods into batches.
#[derive(Debug)]
pub struct Batcher {
    windows: Windows,
    pods: Vec<PendingPod>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// (uid, resourceVersion) -> when sent.
    sent_versions: HashMap<(String, String), Instant>,
    /// uid -> when any version was last sent.
    sent_pods: HashMap<String, Instant>,
}

/// What [`Batcher::offer`] did with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Added,
    /// Already in the open batch: its newer version replaced the old one (the deadline is unchanged).
    Updated,
    /// Sent recently (same version within the dedup window, or any version within resend_after).
    Duplicate,
}

impl Batcher {
    pub fn new(windows: Windows) -> Self {
        Batcher {
            windows,
            pods: Vec::new(),
            first_at: None,
            last_at: None,
            sent_versions: HashMap::new(),
            sent_pods: HashMap::new(),
        }
    }

    /// Offers an unschedulable pod seen at `now`.
    pub fn offer(&mut self, pod: PendingPod, now: Instant) -> Offer {
        let key = (pod.pod.uid.clone(), pod.resource_version.clone());
        if self
            .sent_versions
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < self.windows.dedup)
            || self
                .sent_pods
                .get(&pod.pod.uid)
                .is_some_and(|t| now.duration_since(*t) < self.windows.resend_after)
        {
            return Offer::Duplicate;
        }
        if let Some(existing) = self.pods.iter_mut().find(|p| p.pod.uid == pod.pod.uid) {
            *existing = pod;
            return Offer::Updated;
        }
        self.pods.push(pod);
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        Offer::Added
    }

    /// Drops a pod from the open batch (it was bound or deleted before the batch closed).
    pub fn retract(&mut self, uid: &str) {
        self.pods.retain(|p| p.pod.uid != uid);
        if self.pods.is_empty() {
            self.first_at = None;
            self.last_at = None;
        }
    }

    /// When the open batch closes, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        let first = self.first_at?;
        let last = self.last_at.unwrap_or(first);
        Some((last + self.windows.idle).min(first + self.windows.max))
    }

    /// The closed batch, if its deadline has passed at `now`; its pods count as sent from `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<PendingPod>> {
        if self.deadline()? > now {
            return None;
        }
        let pods = std::mem::take(&mut self.pods);
        self.first_at = None;
        self.last_at = None;
        for p in &pods {
            self.sent_versions
                .insert((p.pod.uid.clone(), p.resource_version.clone()), now);
            self.sent_pods.insert(p.pod.uid.clone(), now);
        }
        self.forget_before(now);
        Some(pods)
    }

    /// A batch whose send failed goes back to being unsent, so the next event for those pods is
    /// not dropped as a duplicate.
    pub fn unsend(&mut self, pods: &[PendingPod]) {
        for p in pods {
            self.sent_versions
                .remove(&(p.pod.uid.clone(), p.resource_version.clone()));
            self.sent_pods.remove(&p.pod.uid);
        }
    }

    /// Pods in the open batch.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Bounds memory: forget sends older than the windows.
    fn forget_before(&mut self, now: Instant) {
        let dedup = self.windows.dedup;
        let resend = self.windows.resend_after;
        self.sent_versions.retain(|_, t| now.duration_since(*t) < dedup);
        self.sent_pods.retain(|_, t| now.duration_since(*t) < resend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewright_core::Pod;

    fn pending(uid: &str, rv: &str) -> PendingPod {
        PendingPod {
            resource_version: rv.into(),
            created_at: 0,
            pod: Pod {
                uid: uid.into(),
                name: uid.into(),
                namespace: "default".into(),
                ..Default::default()
            },
        }
    }

    fn uids(pods: &[PendingPod]) -> Vec<&str> {
        pods.iter().map(|p| p.pod.uid.as_str()).collect()
    }

    #[test]
    fn batch_closes_one_second_after_the_last_pod() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = Batcher::new(Windows::default());
        assert_eq!(b.deadline(), None);
        assert_eq!(b.offer(pending("a", "1"), ms(0)), Offer::Added);
        assert_eq!(b.offer(pending("b", "1"), ms(600)), Offer::Added);
        assert_eq!(b.deadline(), Some(ms(1600)));
        assert!(b.take_due(ms(1599)).is_none());
        let batch = b.take_due(ms(1600)).expect("due");
        assert_eq!(uids(&batch), ["a", "b"]);
        assert!(b.is_empty() && b.deadline().is_none());
    }

    #[test]
    fn a_steady_trickle_still_closes_ten_seconds_after_the_first_pod() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = Batcher::new(Windows::default());
        // A new pod every 900 ms keeps the idle window open forever.
        for i in 0..20u64 {
            let now = ms(i * 900);
            if let Some(batch) = b.take_due(now) {
                assert_eq!(now, ms(10_800), "the first check past 10 s closes it");
                assert_eq!(batch.len(), 12, "pods offered at 0 .. 9.9 s");
                return;
            }
            b.offer(pending(&format!("p{i}"), "1"), now);
            assert!(b.deadline().expect("open") <= ms(10_000));
        }
        panic!("batch never closed");
    }

    #[test]
    fn a_sent_version_is_not_sent_again_and_a_new_version_waits() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut b = Batcher::new(Windows::default());
        b.offer(pending("a", "1"), s(0));
        assert_eq!(b.take_due(s(1)).map(|x| x.len()), Some(1));
        assert_eq!(b.offer(pending("a", "1"), s(2)), Offer::Duplicate);
        // The scheduler rewrote its status: a new version, still within resend_after.
        assert_eq!(b.offer(pending("a", "2"), s(30)), Offer::Duplicate);
        // Past resend_after a new version goes out; the old version stays suppressed for 10 min.
        assert_eq!(b.offer(pending("a", "3"), s(62)), Offer::Added);
        assert_eq!(b.take_due(s(63)).map(|x| x.len()), Some(1));
        assert_eq!(b.offer(pending("a", "1"), s(200)), Offer::Duplicate);
    }

    #[test]
    fn updates_replace_and_retracts_remove() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Windows::default());
        b.offer(pending("a", "1"), t0);
        assert_eq!(b.offer(pending("a", "2"), t0), Offer::Updated);
        b.offer(pending("b", "1"), t0);
        b.retract("b");
        let batch = b.take_due(t0 + Duration::from_secs(1)).expect("due");
        assert_eq!(batch[0].resource_version, "2");
        assert_eq!(batch.len(), 1);
        b.offer(pending("c", "1"), t0);
        b.retract("c");
        assert!(b.deadline().is_none(), "an emptied batch closes nothing");
    }

    #[test]
    fn a_failed_send_can_be_offered_again() {
        let t0 = Instant::now();
        let mut b = Batcher::new(Windows::default());
        b.offer(pending("a", "1"), t0);
        let batch = b.take_due(t0 + Duration::from_secs(1)).expect("due");
        b.unsend(&batch);
        assert_eq!(b.offer(pending("a", "1"), t0 + Duration::from_secs(2)), Offer::Added);
    }
}
