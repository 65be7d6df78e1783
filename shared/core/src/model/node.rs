//! A node that exists (or is in flight): capacity the scheduler uses before it buys more.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalogue::CapacityType;
use crate::labels;
use crate::model::{Pod, Taint};
use crate::requirements::LabelSource;
use crate::resources::Resources;

/// An existing node or an in-flight node claim, as input to the scheduler and the disruption
/// planner. Serialized, this is the `--existing` file format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub instance_type: String,
    /// The NodePool that owns the node; None for nodes Nodewright does not manage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub zone: String,
    #[serde(default)]
    pub capacity_type: CapacityType,
    /// Labels beyond the ones derived from the instance type, zone and pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Allocatable capacity; defaults to the catalogue's value for the instance type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Resources>,
    /// Pods bound to (or reserved onto) the node, daemonset pods included.
    #[serde(default)]
    pub pods: Vec<Pod>,
    /// Launched but not yet registered and ready.
    #[serde(default)]
    pub in_flight: bool,
    /// Cordoned: takes no new pods.
    #[serde(default)]
    pub unschedulable: bool,
    /// Price per hour; defaults to the catalogue's price for the capacity type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
}

impl Node {
    pub fn new(name: &str, instance_type: &str, zone: &str) -> Self {
        Node {
            name: name.into(),
            instance_type: instance_type.into(),
            pool: None,
            zone: zone.into(),
            capacity_type: CapacityType::OnDemand,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            allocatable: None,
            pods: Vec::new(),
            in_flight: false,
            unschedulable: false,
            price: None,
        }
    }

    /// Sum of the requests of the pods on the node.
    pub fn requested(&self) -> Resources {
        let mut r = Resources::new();
        for p in &self.pods {
            r.add(&p.requests);
        }
        r
    }

    /// The labels the node carries, as a view (no copies): its own labels, then the well-known
    /// zone, capacity-type, hostname, instance-type and nodepool labels, then its instance type's
    /// (`type_labels`), then `pool_labels` for keys none of those set.
    pub fn label_view<'a>(
        &'a self,
        type_labels: Option<&'a BTreeMap<String, String>>,
        pool_labels: Option<Arc<BTreeMap<String, String>>>,
    ) -> NodeLabels<'a> {
        NodeLabels {
            node: self,
            type_labels,
            pool_labels,
        }
    }
}

/// A node's labels, looked up in layers instead of merged: the scheduler asks a few keys of every
/// node on every call, and merging copied whole maps each time.
#[derive(Debug, Clone)]
pub struct NodeLabels<'a> {
    node: &'a Node,
    type_labels: Option<&'a BTreeMap<String, String>>,
    pool_labels: Option<Arc<BTreeMap<String, String>>>,
}

impl LabelSource for NodeLabels<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.node.labels.get(key) {
            return Some(v);
        }
        let well_known = match key {
            labels::ZONE => Some(self.node.zone.as_str()),
            labels::CAPACITY_TYPE => Some(self.node.capacity_type.as_str()),
            labels::HOSTNAME => Some(self.node.name.as_str()),
            labels::INSTANCE_TYPE => Some(self.node.instance_type.as_str()),
            labels::NODEPOOL => self.node.pool.as_deref(),
            _ => None,
        };
        well_known
            .or_else(|| self.type_labels.and_then(|l| l.label(key)))
            .or_else(|| self.pool_labels.as_deref().and_then(|l| l.label(key)))
    }
}
