//! Auto Scaling pools: NodePools backed by an existing Auto Scaling group. Nodewright sets the
//! desired capacity itself (validated against the group's max, which moto does not enforce),
//! protects busy instances from scale-in, and scales in by terminating chosen idle instances with a
//! desired-capacity decrement.

use crate::error::FromSdk;
use crate::{Error, Result};

/// A group's current shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    /// (instance id, lifecycle state, protected from scale-in)
    pub instances: Vec<(String, String, bool)>,
}

/// The result of a scale-up request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleUp {
    pub from: i32,
    pub to: i32,
    /// How many of the requested instances the group's max left room for.
    pub granted: i32,
}

/// Auto Scaling access.
#[derive(Debug, Clone)]
pub struct AsgPool {
    client: aws_sdk_autoscaling::Client,
}

impl AsgPool {
    pub fn new(client: aws_sdk_autoscaling::Client) -> Self {
        AsgPool { client }
    }

    pub async fn group_state(&self, group: &str) -> Result<GroupState> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| Error::aws("DescribeAutoScalingGroups", e))?;
        let g = out
            .auto_scaling_groups()
            .first()
            .ok_or_else(|| Error::invalid("autoScalingGroup", format!("group {group:?} does not exist")))?;
        Ok(GroupState {
            name: group.to_string(),
            min: g.min_size().unwrap_or(0),
            max: g.max_size().unwrap_or(0),
            desired: g.desired_capacity().unwrap_or(0),
            instances: g
                .instances()
                .iter()
                .map(|i| {
                    (
                        i.instance_id().unwrap_or_default().to_string(),
                        i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                        i.protected_from_scale_in().unwrap_or(false),
                    )
                })
                .collect(),
        })
    }

    /// Raises desired capacity by up to `by`, never past the group's max.
    pub async fn scale_up(&self, group: &str, by: i32) -> Result<ScaleUp> {
        if by < 0 {
            return Err(Error::invalid(
                "by",
                format!("scale-up count must be positive, got {by}"),
            ));
        }
        let state = self.group_state(group).await?;
        let to = (state.desired + by).min(state.max);
        let granted = to - state.desired;
        if granted > 0 {
            self.client
                .set_desired_capacity()
                .auto_scaling_group_name(group)
                .desired_capacity(to)
                .honor_cooldown(false)
                .send()
                .await
                .map_err(|e| Error::aws("SetDesiredCapacity", e))?;
        }
        Ok(ScaleUp {
            from: state.desired,
            to: state.desired + granted,
            granted,
        })
    }

    /// Protects (or unprotects) instances from the group's own scale-in.
    pub async fn set_protection(&self, group: &str, instance_ids: &[String], protect: bool) -> Result<()> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        self.client
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .set_instance_ids(Some(instance_ids.to_vec()))
            .protected_from_scale_in(protect)
            .send()
            .await
            .map_err(|e| Error::aws("SetInstanceProtection", e))?;
        Ok(())
    }

    /// Terminates the given instances with a desired-capacity decrement, skipping protected ones and
    /// ones not in the group. Returns the instances terminated.
    pub async fn scale_in(&self, group: &str, instance_ids: &[String]) -> Result<Vec<String>> {
        let state = self.group_state(group).await?;
        let mut terminated = Vec::new();
        for id in instance_ids {
            match state.instances.iter().find(|(i, _, _)| i == id) {
                Some((_, _, false)) => {}
                Some((_, _, true)) => {
                    tracing::info!(group, instance = %id, "skipping scale-in of a protected instance");
                    continue;
                }
                None => {
                    tracing::warn!(group, instance = %id, "instance is not in the group; not terminating it");
                    continue;
                }
            }
            self.client
                .terminate_instance_in_auto_scaling_group()
                .instance_id(id)
                .should_decrement_desired_capacity(true)
                .send()
                .await
                .map_err(|e| Error::aws("TerminateInstanceInAutoScalingGroup", e))?;
            terminated.push(id.clone());
        }
        Ok(terminated)
    }
}
