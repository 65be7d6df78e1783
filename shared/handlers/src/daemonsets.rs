//! DaemonSet overhead for every plan: the cluster's DaemonSets as per-node pod templates, listed
//! from the cluster and cached per execution environment for [`DAEMONSET_TTL_MS`], so a burst of
//! events lists them once and a DaemonSet added to the cluster counts within a minute. Without
//! cluster access the configured templates stand in.

use std::sync::{Arc, Mutex};

use nodewright_core::Pod;
use nodewright_core::ports::EpochMillis;

use crate::Result;
use crate::ports::ClusterApi;

/// How long a listing of DaemonSets is reused.
pub const DAEMONSET_TTL_MS: i64 = 60_000;

/// The DaemonSets new nodes must make room for. Clones share the cache (one execution
/// environment).
#[derive(Debug, Default, Clone)]
pub struct DaemonSets {
    /// Used when there is no cluster access (local runs, `NODEWRIGHT_CLUSTER_ACCESS=none`).
    fallback: Arc<Vec<Pod>>,
    cached: Arc<Mutex<Option<Listing>>>,
}

/// The templates and when they were listed.
type Listing = (EpochMillis, Arc<Vec<Pod>>);

impl DaemonSets {
    pub fn new(fallback: Vec<Pod>) -> Self {
        DaemonSets {
            fallback: Arc::new(fallback),
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The templates as of `now`: cached within the TTL, else listed. A failed listing falls back
    /// to the last one seen (stale overhead beats none); with nothing seen yet it is an error, so
    /// the event is retried rather than planned without overhead.
    pub async fn current<K: ClusterApi>(&self, cluster: Option<&K>, now: EpochMillis) -> Result<Arc<Vec<Pod>>> {
        let Some(cluster) = cluster else {
            return Ok(Arc::clone(&self.fallback));
        };
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((at, pods)) = &cached
            && (0..DAEMONSET_TTL_MS).contains(&(now - at))
        {
            return Ok(Arc::clone(pods));
        }
        match cluster.daemonsets().await {
            Ok(listed) => {
                let pods = Arc::new(listed.items);
                *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, Arc::clone(&pods)));
                Ok(pods)
            }
            Err(e) => match cached {
                Some((_, pods)) => {
                    tracing::warn!(error = %e, "listing DaemonSets failed; planning with the last listing");
                    Ok(pods)
                }
                None => Err(e.into()),
            },
        }
    }
}
