//! A node that exists (or is in flight): capacity the scheduler uses before it buys more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalogue::CapacityType;
use crate::labels;
use crate::model::{Pod, Taint};
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

    /// The labels the node carries: its instance type's (`type_labels`), the well-known zone,
    /// capacity-type, hostname, instance-type and nodepool labels, then its own labels on top.
    pub fn labels_with(&self, type_labels: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
        let mut l = type_labels.cloned().unwrap_or_default();
        l.insert(labels::ZONE.into(), self.zone.clone());
        l.insert(labels::CAPACITY_TYPE.into(), self.capacity_type.as_str().into());
        l.insert(labels::HOSTNAME.into(), self.name.clone());
        l.insert(labels::INSTANCE_TYPE.into(), self.instance_type.clone());
        if let Some(p) = &self.pool {
            l.insert(labels::NODEPOOL.into(), p.clone());
        }
        l.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        l
    }
}
