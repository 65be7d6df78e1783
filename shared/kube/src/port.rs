//! The core's cluster port over the Kubernetes API, with a client that keeps its EKS
//! token fresh.

use crate::{Cluster, ClusterNode, Connection, DrainOptions, DrainReport, Listed, Result};
use nodewright_core::Pod;
use nodewright_core::disruption::Pdb;
use nodewright_core::model::cluster_event::PendingPod;
use nodewright_core::ports::cluster::{ConfigKind, ConfigObjects, ObjectEvent};

use nodewright_core::ports::ClusterApi;

/// A cluster reached through a [`Connection`].
pub struct KubeCluster {
    pub connection: Connection,
}

impl KubeCluster {
    async fn cluster(&self) -> Result<Cluster> {
        Ok(Cluster::new(self.connection.client().await?))
    }
}

impl ClusterApi for KubeCluster {
    async fn unschedulable_pods(&self) -> Result<Listed<PendingPod>> {
        self.cluster().await?.unschedulable_pods().await
    }
    async fn pods_on_nodes(&self, nodes: &[String]) -> Result<Listed<Pod>> {
        self.cluster().await?.pods_bound_to(nodes).await
    }
    async fn nodes(&self) -> Result<Listed<ClusterNode>> {
        self.cluster().await?.nodes().await
    }
    async fn node_named(&self, name: &str) -> Result<Option<ClusterNode>> {
        self.cluster().await?.node_named(name).await
    }
    async fn daemonsets(&self) -> Result<Listed<Pod>> {
        self.cluster().await?.daemonsets().await
    }
    async fn pdbs(&self) -> Result<Vec<Pdb>> {
        self.cluster().await?.pdbs().await
    }
    async fn cordon_and_taint(&self, node: &str, taint_key: &str) -> Result<()> {
        self.cluster().await?.cordon_and_taint(node, taint_key).await
    }
    async fn drain(&self, node: &str, options: &DrainOptions) -> Result<DrainReport> {
        self.cluster().await?.drain(node, options).await
    }
    async fn delete_node(&self, node: &str) -> Result<bool> {
        self.cluster().await?.delete_node(node).await
    }
    async fn register_node(
        &self,
        node: &str,
        registration: &nodewright_core::registration::NodeRegistration,
    ) -> Result<bool> {
        self.cluster().await?.register_node(node, registration).await
    }
    async fn config_objects(&self) -> Result<ConfigObjects> {
        self.cluster().await?.config_objects().await
    }
    async fn write_status(&self, kind: ConfigKind, name: &str, status: &serde_json::Value) -> Result<bool> {
        self.cluster().await?.write_status(kind, name, status).await
    }
    async fn record_events(&self, events: &[ObjectEvent]) -> Result<usize> {
        self.cluster().await?.record_events(events).await
    }
}
