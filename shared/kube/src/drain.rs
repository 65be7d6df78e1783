//! Draining a node through the Eviction API, so PodDisruptionBudgets are honoured.
//!
//! DaemonSet pods, mirror (static) pods, finished pods and pods already terminating are skipped.
//! Evictions refused with HTTP 429 (a PDB allows no disruption now) are retried with exponential
//! backoff until the deadline, then reported as [`Error::PdbBlocked`]. Any other failed eviction is
//! logged and retried the same way, then reported in [`DrainReport::failed`]: one bad pod never
//! stops the others. A drain can be re-run at any time: evicted pods are terminating and are
//! skipped the next time.
//!
//! `karpenter.sh/do-not-disrupt` pods: a voluntary drain (consolidation, drift) refuses to start
//! ([`Error::DoNotDisrupt`]); a forced drain (interruption: the instance is going away regardless)
//! leaves them alone to run until the end. Once the pool's `terminationGracePeriod` has run out, the
//! drain deletes remaining pods directly, PDB or not, as Karpenter does.

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use nodewright_core::labels;
use nodewright_core::model;
use tokio::time::Instant;

use crate::cluster::object_path;
use crate::error::FromKube;
use crate::{Cluster, DrainMode, DrainOptions, DrainReport, Error, Result};

enum Evicted {
    Done,
    Blocked,
}

fn name_of(p: &k8s::Pod) -> String {
    object_path(&p.metadata)
}

fn do_not_disrupt(p: &k8s::Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::DO_NOT_DISRUPT))
        .is_some_and(|v| v == "true")
}

impl Cluster {
    /// Evicts the node's pods; see the module docs for the rules.
    pub async fn drain(&self, node: &str, options: &DrainOptions) -> Result<DrainReport> {
        let started = Instant::now();
        let pods = self.pods_on_node(node).await?;
        let mut report = DrainReport::default();
        let mut to_evict = Vec::new();
        let mut vetoes = Vec::new();
        for p in pods {
            let skip = model::is_daemonset_pod(&p)
                || model::is_mirror_pod(&p)
                || model::is_terminal(&p)
                || p.metadata.deletion_timestamp.is_some();
            if skip {
                report.skipped.push(name_of(&p));
            } else if do_not_disrupt(&p) && !options.grace_expired {
                match options.mode {
                    DrainMode::Voluntary => vetoes.push(name_of(&p)),
                    DrainMode::Forced => report.skipped.push(name_of(&p)),
                }
            } else {
                to_evict.push(p);
            }
        }
        if !vetoes.is_empty() {
            return Err(Error::DoNotDisrupt {
                node: node.to_string(),
                pods: vetoes,
            });
        }
        // Lowest priority first, so critical pods keep running longest.
        to_evict.sort_by_key(|p| (p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0), name_of(p)));

        if options.grace_expired {
            for p in &to_evict {
                match self.delete_pod(p).await {
                    Ok(()) => report.deleted.push(name_of(p)),
                    Err(e) => {
                        tracing::warn!(node, pod = %name_of(p), error = %e, "deleting a pod failed; the next drain retries it");
                        report.failed.push((name_of(p), e.to_string()));
                    }
                }
            }
            return Ok(report);
        }

        let mut backoff = options.backoff_initial;
        loop {
            let mut blocked = Vec::new();
            let mut failed = Vec::new();
            for p in to_evict {
                match self.evict(&p).await {
                    Ok(Evicted::Done) => report.evicted.push(name_of(&p)),
                    Ok(Evicted::Blocked) => {
                        report.pdb_retries += 1;
                        blocked.push(p);
                    }
                    Err(e) => {
                        tracing::warn!(node, pod = %name_of(&p), error = %e, "eviction failed; retrying");
                        failed.push((p, e.to_string()));
                    }
                }
            }
            if blocked.is_empty() && failed.is_empty() {
                return Ok(report);
            }
            let elapsed = started.elapsed();
            if elapsed + backoff > options.deadline {
                report.failed = failed.iter().map(|(p, e)| (name_of(p), e.clone())).collect();
                if blocked.is_empty() {
                    return Ok(report);
                }
                return Err(Error::PdbBlocked {
                    node: node.to_string(),
                    pods: blocked.iter().map(name_of).collect(),
                });
            }
            tracing::info!(
                node,
                blocked = blocked.len(),
                wait_ms = backoff.as_millis() as u64,
                "evictions blocked by PDB; retrying"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(options.backoff_max);
            to_evict = blocked;
            to_evict.extend(failed.into_iter().map(|(p, _)| p));
        }
    }

    /// The pod's namespaced API, namespace and name.
    fn pod_api<'p>(&self, p: &'p k8s::Pod) -> (Api<k8s::Pod>, &'p str, &'p str) {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let name = p.metadata.name.as_deref().unwrap_or("");
        (Api::namespaced(self.client.clone(), ns), ns, name)
    }

    async fn evict(&self, p: &k8s::Pod) -> Result<Evicted> {
        let (api, ns, name) = self.pod_api(p);
        let operation = "evict pod";
        // policy/v1 Eviction, written out in full (kube's `evict` helper omits apiVersion and kind).
        let body = Eviction {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            delete_options: None,
        };
        let result = self
            .timed(operation, async {
                api.create_subresource::<_, serde_json::Value>("eviction", name, &PostParams::default(), &body)
                    .await
                    .map_err(|e| Error::from_kube(e, operation, "Pod", name))
            })
            .await;
        match result {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(Evicted::Done),
            Err(e) if e.status() == Some(429) => Ok(Evicted::Blocked),
            Err(e) => Err(e),
        }
    }

    async fn delete_pod(&self, p: &k8s::Pod) -> Result<()> {
        let (api, _, name) = self.pod_api(p);
        let operation = "delete pod";
        let result = self
            .timed(operation, async {
                api.delete(name, &DeleteParams::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::from_kube(e, operation, "Pod", name))
            })
            .await;
        match result {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
