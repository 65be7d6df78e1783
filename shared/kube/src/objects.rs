//! NodePools and EC2NodeClasses (listed as untyped objects: the core validates them), their status
//! subresource, and Events (events.k8s.io/v1, created under a deterministic name so a duplicate
//! is refused by the API server rather than posted twice).

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use nodewright_core::ports::cluster::{ConfigKind, ConfigObject, ConfigObjects, EventType, ObjectEvent};
use serde_json::json;

use crate::error::FromKube;
use crate::{Cluster, Error, Result};

/// Who posts the Events (`kubectl describe` shows it as the source).
pub const REPORTING_CONTROLLER: &str = "nodewright.io/nodewright";

fn resource(kind: ConfigKind) -> ApiResource {
    match kind {
        ConfigKind::NodePool => {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("karpenter.sh", "v1", "NodePool"), "nodepools")
        }
        ConfigKind::Ec2NodeClass => ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("karpenter.k8s.aws", "v1", "EC2NodeClass"),
            "ec2nodeclasses",
        ),
    }
}

impl Cluster {
    /// Lists one kind; None when the API does not serve it (404: no CRD).
    async fn list_kind(&self, kind: ConfigKind) -> Result<Option<Vec<ConfigObject>>> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource(kind));
        let listed = self
            .list_all(&api, ListParams::default(), "list config objects", kind.kind())
            .await;
        let objects = match listed {
            Ok(o) => o,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(objects.len());
        for o in objects {
            let name = o.metadata.name.clone().unwrap_or_default();
            let generation = o.metadata.generation.unwrap_or(1);
            let mut object = serde_json::to_value(&o).map_err(|e| Error::Client {
                operation: "list config objects".into(),
                message: e.to_string(),
            })?;
            // A list's items carry no apiVersion/kind; the parser wants them.
            object["apiVersion"] = kind.api_version().into();
            object["kind"] = kind.kind().into();
            out.push(ConfigObject {
                kind,
                name,
                generation,
                object,
            });
        }
        Ok(Some(out))
    }

    /// Every NodePool and EC2NodeClass.
    pub async fn config_objects(&self) -> Result<ConfigObjects> {
        let pools = self.list_kind(ConfigKind::NodePool).await?;
        let classes = self.list_kind(ConfigKind::Ec2NodeClass).await?;
        Ok(ConfigObjects {
            served: pools.is_some(),
            node_pools: pools.unwrap_or_default(),
            node_classes: classes.unwrap_or_default(),
        })
    }

    /// Merge-patches the object's status subresource; false when the object is gone.
    pub async fn write_status(&self, kind: ConfigKind, name: &str, status: &serde_json::Value) -> Result<bool> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource(kind));
        let operation = "write status";
        let patch = json!({ "status": status });
        let result = self
            .timed(operation, async {
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::from_kube(e, operation, kind.kind(), name))
            })
            .await;
        match result {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates the Events; a name that exists (409) is a duplicate and skipped. An Event the API
    /// server refuses (another 4xx: its namespace is being deleted, say) is skipped and logged;
    /// a timeout, an authorization failure or a server error stops the rest.
    pub async fn record_events(&self, events: &[ObjectEvent]) -> Result<usize> {
        let operation = "create event";
        let mut created = 0;
        for e in events {
            let event = to_event(e)?;
            let namespace = event.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            let name = event.metadata.name.clone().unwrap_or_default();
            let result = self
                .timed(operation, async {
                    api.create(&PostParams::default(), &event)
                        .await
                        .map(|_| ())
                        .map_err(|err| Error::from_kube(err, operation, "Event", &name))
                })
                .await;
            match result {
                Ok(()) => created += 1,
                Err(Error::Conflict { .. }) => {}
                Err(Error::NotFound { .. }) => {
                    tracing::debug!(event = %name, "event refused: its namespace is gone");
                }
                Err(Error::Api { code, message, .. }) if (400..500).contains(&code) && code != 429 => {
                    tracing::warn!(event = %name, code, %message, "event refused; skipping it");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(created)
    }
}

/// The events.k8s.io/v1 Event for `e`.
pub fn to_event(e: &ObjectEvent) -> Result<Event> {
    let namespace = if e.regarding.namespace.is_empty() {
        "default"
    } else {
        e.regarding.namespace.as_str()
    };
    let mut regarding = json!({
        "apiVersion": "v1",
        "kind": e.regarding.kind,
        "name": e.regarding.name,
    });
    if !e.regarding.namespace.is_empty() {
        regarding["namespace"] = e.regarding.namespace.clone().into();
    }
    if let Some(uid) = &e.regarding.uid {
        regarding["uid"] = uid.clone().into();
    }
    let stamp = nodewright_core::time::format_rfc3339(e.time);
    serde_json::from_value(json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": e.name(), "namespace": namespace},
        "eventTime": stamp,
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": REPORTING_CONTROLLER,
        "action": e.action,
        "reason": e.reason,
        "note": e.note,
        "type": match e.event_type {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        },
        "regarding": regarding,
    }))
    .map_err(|err| Error::Client {
        operation: "create event".into(),
        message: err.to_string(),
    })
}
