//! Reads and writes against one cluster. Every list paginates (`limit` + `continue`), every call runs
//! under a timeout, and every error is classified ([`crate::Error`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use nodewright_core::disruption::Pdb;
use nodewright_core::model::cluster_event::PendingPod;
use nodewright_core::model::{self, Effect, Pod};
use nodewright_core::registration::{NodeRegistration, UNREGISTERED_TAINT};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::FromKube;
use crate::{ClusterNode, Error, Listed, Rejected, Result, cluster_node};

/// Items per list page: large enough for few round trips, small enough to bound each response.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Default timeout of one API call.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a read-modify-write that lost a race (HTTP 409).
const CONFLICT_RETRIES: usize = 3;

/// One cluster, reached through a kube client.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) client: kube::Client,
    pub(crate) timeout: Duration,
    page_size: u32,
}

impl Cluster {
    pub fn new(client: kube::Client) -> Self {
        Cluster {
            client,
            timeout: DEFAULT_TIMEOUT,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }

    /// Overrides the per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Overrides the list page size.
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Runs one API call under the timeout.
    pub(crate) async fn timed<T>(&self, operation: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                operation: operation.to_string(),
                seconds: self.timeout.as_secs(),
            }),
        }
    }

    /// Lists every page of `api` with `params`.
    pub(crate) async fn list_all<K>(
        &self,
        api: &Api<K>,
        params: ListParams,
        operation: &str,
        kind: &'static str,
    ) -> Result<Vec<K>>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let mut out = Vec::new();
        self.list_pages(api, params, operation, kind, |page| out.extend(page))
            .await?;
        Ok(out)
    }

    /// Lists every page of `api` with `params` and converts each page as it arrives, so at most
    /// one page of Kubernetes objects is held (a pod object is kilobytes; its model, a fraction):
    /// listing 100,000 pods holds 500 objects at a time, not 100,000.
    async fn list_converted<K, T>(
        &self,
        api: &Api<K>,
        params: ListParams,
        (operation, kind): (&str, &'static str),
        keep: impl Fn(&K) -> bool,
        name: impl Fn(&K) -> String,
        f: impl Fn(&K, String) -> nodewright_core::Result<T>,
    ) -> Result<Listed<T>>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let mut listed = Listed::default();
        self.list_pages(api, params, operation, kind, |page| {
            listed.append(convert(page.iter().filter(|o| keep(o)), &name, &f));
        })
        .await?;
        Ok(listed)
    }

    /// Lists every page of `api` with `params`, handing each page to `each` and dropping it.
    async fn list_pages<K>(
        &self,
        api: &Api<K>,
        params: ListParams,
        operation: &str,
        kind: &'static str,
        mut each: impl FnMut(Vec<K>),
    ) -> Result<()>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let mut params = params.limit(self.page_size);
        loop {
            let page = self
                .timed(operation, async {
                    api.list(&params)
                        .await
                        .map_err(|e| Error::from_kube(e, operation, kind, ""))
                })
                .await?;
            each(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params.continue_token = Some(token),
                None => return Ok(()),
            }
        }
    }

    /// Pods the scheduler marked Unschedulable (PodScheduled=False, reason Unschedulable), converted.
    pub async fn unschedulable_pods(&self) -> Result<Listed<PendingPod>> {
        let api: Api<k8s::Pod> = Api::all(self.client.clone());
        // The server narrows to unbound Pending pods; the condition is checked here.
        let params = ListParams::default().fields("spec.nodeName=,status.phase=Pending");
        self.list_converted(
            &api,
            params,
            ("list unschedulable pods", "Pod"),
            model::is_unschedulable,
            pod_path,
            |p, path| {
                Ok(PendingPod {
                    resource_version: p.metadata.resource_version.clone().unwrap_or_default(),
                    created_at: p
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map_or(0, |t| t.0.as_millisecond()),
                    pod: model::pod_from_k8s(p, &path)?,
                })
            },
        )
        .await
    }

    /// The unfinished pods bound to `nodes`, converted: one field-selected List per node.
    pub async fn pods_bound_to(&self, nodes: &[String]) -> Result<Listed<Pod>> {
        use futures::StreamExt;
        let api: Api<k8s::Pod> = Api::all(self.client.clone());
        let lists: Vec<_> = nodes
            .iter()
            .map(|node| {
                let params = ListParams::default().fields(&format!(
                    "spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed"
                ));
                self.list_converted(
                    &api,
                    params,
                    ("list pods on node", "Pod"),
                    |_| true,
                    pod_path,
                    |p, path| model::pod_from_k8s(p, &path),
                )
            })
            .collect();
        // In node order; the first error ends the listing (the caller retries the invocation).
        let mut parts = futures::stream::iter(lists).buffered(nodewright_core::ports::NODE_LISTS_IN_FLIGHT);
        let mut listed = Listed::default();
        while let Some(part) = parts.next().await {
            listed.append(part?);
        }
        Ok(listed)
    }

    /// The pods on one node, as Kubernetes objects (drain needs owners and annotations).
    pub async fn pods_on_node(&self, node: &str) -> Result<Vec<k8s::Pod>> {
        let api: Api<k8s::Pod> = Api::all(self.client.clone());
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        self.list_all(&api, params, "list pods on node", "Pod").await
    }

    /// All nodes, converted.
    pub async fn nodes(&self) -> Result<Listed<ClusterNode>> {
        let api: Api<k8s::Node> = Api::all(self.client.clone());
        self.list_converted(
            &api,
            ListParams::default(),
            ("list nodes", "Node"),
            |_| true,
            |n| n.metadata.name.clone().unwrap_or_default(),
            |n, path| cluster_node(n, &path),
        )
        .await
    }

    /// One node by name, converted; None when there is no such node.
    pub async fn node_named(&self, name: &str) -> Result<Option<ClusterNode>> {
        let api: Api<k8s::Node> = Api::all(self.client.clone());
        let operation = "get node";
        let node = self
            .timed(operation, async {
                api.get_opt(name)
                    .await
                    .map_err(|e| Error::from_kube(e, operation, "Node", name))
            })
            .await?;
        match node {
            Some(n) => cluster_node(&n, name).map(Some).map_err(|e| Error::Invalid {
                field: format!("Node {name}"),
                reason: e.to_string(),
            }),
            None => Ok(None),
        }
    }

    /// One pod template per DaemonSet: the per-node overhead every new node carries.
    pub async fn daemonsets(&self) -> Result<Listed<Pod>> {
        let api: Api<DaemonSet> = Api::all(self.client.clone());
        let sets = self
            .list_all(&api, ListParams::default(), "list daemonsets", "DaemonSet")
            .await?;
        Ok(convert(
            sets.iter(),
            |d| object_path(&d.metadata),
            |d, path| model::daemonset_pod_from_k8s(d, &path),
        ))
    }

    /// PodDisruptionBudgets with their current `disruptionsAllowed`.
    pub async fn pdbs(&self) -> Result<Vec<Pdb>> {
        let api: Api<PodDisruptionBudget> = Api::all(self.client.clone());
        let pdbs = self
            .list_all(
                &api,
                ListParams::default(),
                "list poddisruptionbudgets",
                "PodDisruptionBudget",
            )
            .await?;
        Ok(pdbs.iter().map(model::pdb_from_k8s).collect())
    }

    /// Cordons the node and adds `taint` (NoSchedule), in one patch conditional on the node's
    /// resourceVersion; re-reads and retries when another writer got there first. A node already
    /// cordoned and tainted is left untouched (no write).
    pub async fn cordon_and_taint(&self, node: &str, taint_key: &str) -> Result<()> {
        let api: Api<k8s::Node> = Api::all(self.client.clone());
        let operation = "cordon and taint node";
        for attempt in 0..=CONFLICT_RETRIES {
            let current = self
                .timed(operation, async {
                    api.get(node)
                        .await
                        .map_err(|e| Error::from_kube(e, operation, "Node", node))
                })
                .await?;
            let spec = current.spec.clone().unwrap_or_default();
            let mut taints = spec.taints.clone().unwrap_or_default();
            let tainted = taints
                .iter()
                .any(|t| t.key == taint_key && t.effect == Effect::NoSchedule.as_str());
            if tainted && spec.unschedulable == Some(true) {
                return Ok(());
            }
            if !tainted {
                taints.push(k8s::Taint {
                    key: taint_key.to_string(),
                    effect: Effect::NoSchedule.as_str().to_string(),
                    ..Default::default()
                });
            }
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "spec": {"unschedulable": true, "taints": taints},
            });
            let result = self
                .timed(operation, async {
                    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| Error::from_kube(e, operation, "Node", node))
                })
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(Error::Conflict { .. }) if attempt < CONFLICT_RETRIES => {
                    tracing::debug!(node, attempt, "node changed under us; re-reading");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            kind: "Node",
            name: node.to_string(),
            message: format!("still conflicting after {CONFLICT_RETRIES} retries"),
        })
    }

    /// Registers a node Nodewright launched: writes the labels and taints it lacks (labels merged
    /// over the node's own; startup taints only while it still carries the unregistered taint) and
    /// removes the unregistered taint, in one patch conditional on the node's resourceVersion
    /// (re-read and retried on conflict). Returns false when there was nothing to write (already
    /// registered: a replayed event or a second reconcile).
    pub async fn register_node(&self, node: &str, registration: &NodeRegistration) -> Result<bool> {
        let api: Api<k8s::Node> = Api::all(self.client.clone());
        let operation = "register node";
        for attempt in 0..=CONFLICT_RETRIES {
            let current = self
                .timed(operation, async {
                    api.get(node)
                        .await
                        .map_err(|e| Error::from_kube(e, operation, "Node", node))
                })
                .await?;
            let have = current.metadata.labels.clone().unwrap_or_default();
            let missing: BTreeMap<&String, &String> = registration
                .labels
                .iter()
                .filter(|(k, v)| have.get(*k) != Some(*v))
                .collect();
            let taints = current.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
            let pairs: Vec<(&str, &str)> = taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect();
            let added: Vec<k8s::Taint> = registration
                .missing_taints(&pairs)
                .into_iter()
                .map(|t| k8s::Taint {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: t.effect.as_str().to_string(),
                    time_added: None,
                })
                .collect();
            let mut kept: Vec<k8s::Taint> = taints.iter().filter(|t| t.key != UNREGISTERED_TAINT).cloned().collect();
            if missing.is_empty() && kept.len() == taints.len() && added.is_empty() {
                return Ok(false);
            }
            let changed_taints = kept.len() != taints.len() || !added.is_empty();
            kept.extend(added);
            let mut patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version, "labels": missing},
            });
            if changed_taints {
                patch["spec"] = json!({"taints": kept});
            }
            let result = self
                .timed(operation, async {
                    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| Error::from_kube(e, operation, "Node", node))
                })
                .await;
            match result {
                Ok(_) => return Ok(true),
                Err(Error::Conflict { .. }) if attempt < CONFLICT_RETRIES => {
                    tracing::debug!(node, attempt, "node changed under us; re-reading");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            kind: "Node",
            name: node.to_string(),
            message: format!("still conflicting after {CONFLICT_RETRIES} retries"),
        })
    }

    /// Deletes the Node object (after its instance is gone). Returns false when it was already gone.
    pub async fn delete_node(&self, node: &str) -> Result<bool> {
        let api: Api<k8s::Node> = Api::all(self.client.clone());
        let operation = "delete node";
        let result = self
            .timed(operation, async {
                api.delete(node, &DeleteParams::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::from_kube(e, operation, "Node", node))
            })
            .await;
        match result {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `namespace/name` of a namespaced object, for errors, logs and reports.
pub(crate) fn object_path(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

fn pod_path(p: &k8s::Pod) -> String {
    object_path(&p.metadata)
}

fn convert<'a, K: 'a, T>(
    objects: impl Iterator<Item = &'a K>,
    name: impl Fn(&K) -> String,
    f: impl Fn(&K, String) -> nodewright_core::Result<T>,
) -> Listed<T> {
    let mut out = Listed::default();
    for o in objects {
        let n = name(o);
        match f(o, n.clone()) {
            Ok(t) => out.items.push(t),
            Err(e) => {
                tracing::warn!(object = %n, error = %e, "skipping object the core model cannot take");
                out.rejected.push(Rejected {
                    name: n,
                    reason: e.to_string(),
                });
            }
        }
    }
    out
}
