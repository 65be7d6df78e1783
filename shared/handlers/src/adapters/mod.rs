//! In-process adapters behind the core's ports, and fault injection around any adapter. The real
//! ones live beside their SDKs (`nodewright_aws::AwsCapacity` and the DynamoDB `StateStore`,
//! `nodewright_kube::KubeCluster`).

pub mod faults;
pub mod memory;
