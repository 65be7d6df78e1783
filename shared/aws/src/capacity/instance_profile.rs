//! Instance profiles for EC2NodeClasses that name a `role:` (what most Karpenter v1 YAML does): EC2
//! launches with an instance profile, never a role, so one is found or created for the role, as
//! Karpenter's instance-profile provider does.
//!
//! The profile is ours by construction: its name is derived from the cluster, region and role
//! (`nodewright_<cluster>_<hash>`), it lives under the path `/nodewright/<region>/<cluster>/`, and
//! it is tagged `nodewright.io/cluster` and `nodewright.io/ec2nodeclass`. The template's IAM policy
//! allows the create/add/remove calls only on that path, and `iam:PassRole` only on node roles.
//! Calls are idempotent, so concurrent invocations converge on one profile.

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::Tag;
use sha2::{Digest, Sha256};

use super::TAG_CLUSTER;
use crate::error::FromSdk;
use crate::{Error, Result};

/// The tag naming the EC2NodeClass a profile was made for.
pub const TAG_NODE_CLASS: &str = "nodewright.io/ec2nodeclass";

/// Finds or creates instance profiles for node roles.
#[derive(Debug, Clone)]
pub struct InstanceProfiles {
    iam: aws_sdk_iam::Client,
    cluster: String,
    region: String,
}

/// The role name in `role` (a name, or an ARN whose last path segment is the name).
pub fn role_name(role: &str) -> &str {
    role.rsplit('/').next().unwrap_or(role)
}

impl InstanceProfiles {
    pub fn new(iam: aws_sdk_iam::Client, cluster: impl Into<String>, region: impl Into<String>) -> Self {
        InstanceProfiles {
            iam,
            cluster: cluster.into(),
            region: region.into(),
        }
    }

    /// `nodewright_<cluster>_<16 hex of sha256(region/role)>`, within IAM's 128 characters.
    pub fn profile_name(&self, role: &str) -> String {
        let digest = Sha256::digest(format!("{}/{}", self.region, role_name(role)).as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let cluster: String = self.cluster.chars().take(100).collect();
        format!("nodewright_{cluster}_{hex}")
    }

    /// `/nodewright/<region>/<cluster>/`: the path the IAM policy scopes profile writes to.
    pub fn path(&self) -> String {
        format!("/nodewright/{}/{}/", self.region, self.cluster)
    }

    /// The instance profile carrying `role`, created (or repaired) when needed; its name.
    pub async fn ensure(&self, node_class: &str, role: &str) -> Result<String> {
        let name = self.profile_name(role);
        let role = role_name(role);
        let existing = match self
            .iam
            .get_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await
        {
            Ok(out) => out.instance_profile,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => None,
            Err(e) => return Err(Error::aws("GetInstanceProfile", e)),
        };
        let roles: Vec<String> = match existing {
            Some(p) => p.roles.iter().map(|r| r.role_name.clone()).collect(),
            None => {
                self.create(&name, node_class).await?;
                Vec::new()
            }
        };
        if roles.iter().any(|r| r == role) {
            return Ok(name);
        }
        // A profile holds one role: a class whose role changed gets the old one swapped out.
        for other in &roles {
            self.iam
                .remove_role_from_instance_profile()
                .instance_profile_name(&name)
                .role_name(other)
                .send()
                .await
                .map_err(|e| Error::aws("RemoveRoleFromInstanceProfile", e))?;
        }
        match self
            .iam
            .add_role_to_instance_profile()
            .instance_profile_name(&name)
            .role_name(role)
            .send()
            .await
        {
            Ok(_) => {}
            // A concurrent invocation added it first.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_limit_exceeded_exception()) => {}
            Err(e) => return Err(Error::aws("AddRoleToInstanceProfile", e)),
        }
        tracing::info!(profile = %name, role, node_class, "instance profile ready for the node role");
        Ok(name)
    }

    async fn create(&self, name: &str, node_class: &str) -> Result<()> {
        let tags = [
            (TAG_CLUSTER, self.cluster.as_str()),
            (TAG_NODE_CLASS, node_class),
            ("topology.kubernetes.io/region", self.region.as_str()),
        ];
        let mut call = self
            .iam
            .create_instance_profile()
            .instance_profile_name(name)
            .path(self.path());
        for (k, v) in tags {
            call = call.tags(
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| Error::invalid("instance profile tag", e.to_string()))?,
            );
        }
        match call.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("EntityAlreadyExists") => Ok(()),
            Err(e) => Err(Error::aws("CreateInstanceProfile", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_from_names_and_arns() {
        assert_eq!(role_name("KarpenterNodeRole-prod"), "KarpenterNodeRole-prod");
        assert_eq!(
            role_name("arn:aws:iam::111122223333:role/nodes/KarpenterNodeRole-prod"),
            "KarpenterNodeRole-prod"
        );
    }
}
