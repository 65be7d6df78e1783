//! Nodewright's hands on EC2 and Auto Scaling: fleet launches with capacity-error fallback, guarded
//! termination, discovery of instances by tag, launch templates from EC2NodeClasses, Auto Scaling
//! pools, and price refresh.

mod asg;
mod fleet;
mod instance_profile;
mod instances;
mod launch_bus;
mod launch_template;
mod pricing;

pub use asg::{AsgPool, GroupState, ScaleUp};
pub use fleet::{Fleet, LaunchOffering, LaunchRequest, is_capacity_error};
pub use instance_profile::{InstanceProfiles, TAG_NODE_CLASS, role_name};
pub use launch_bus::LaunchBus;
pub use launch_template::{AliasImage, LaunchTemplateSpec, NodeClassResolution, Variant, alias_parameters};
pub use nodewright_core::ports::capacity::{
    ClusterEndpoint, InstanceSummary, LaunchOutcome, TAG_CLAIM, TAG_CLUSTER, TAG_MANAGED_BY, TAG_POOL,
};
pub use nodewright_core::registration::user_data;
pub use pricing::PriceBook;
