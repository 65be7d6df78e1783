//! Launch templates from EC2NodeClasses: the class's selectors resolved against EC2 (AMI, subnets,
//! security groups), user data for AL2023 (nodeadm) or Bottlerocket with the cluster's endpoint and
//! CA, IMDSv2 required, block devices and instance profile. A template is named by the hash of its
//! content, created once and reused by every launch with the same content.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Filter, LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataOptionsRequest, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
    VolumeType,
};
use base64::Engine;
use nodewright_core::model::Taint;
use nodewright_core::nodepool::{BlockDevice, Ec2NodeClass, SelectorTerm};
use sha2::{Digest, Sha256};

use super::user_data::{self, Bootstrap};
use super::{ClusterEndpoint, Fleet, TAG_CLUSTER, TAG_MANAGED_BY};
use crate::error::FromSdk;
use crate::{Error, Result};

/// A node class's selectors, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeClassResolution {
    /// The newest matching image per Kubernetes architecture (`amd64`, `arm64`).
    pub amis: BTreeMap<String, String>,
    /// (subnet id, availability zone)
    pub subnets: Vec<(String, String)>,
    pub security_groups: Vec<String>,
}

/// The AMI family's volumes when a class lists none, as Karpenter's: AL2023 a 20 GiB root
/// (`/dev/xvda`); Bottlerocket a 4 GiB OS volume and a 20 GiB data volume (`/dev/xvdb`). gp3,
/// encrypted.
fn default_block_devices(bottlerocket: bool) -> Vec<BlockDevice> {
    let volume = |device: &str, gib: u64| BlockDevice {
        device_name: device.into(),
        volume_size_gib: Some(gib),
        volume_type: Some("gp3".into()),
        encrypted: Some(true),
        root_volume: false,
        kms_key_id: None,
        iops: None,
        throughput: None,
        snapshot_id: None,
        delete_on_termination: Some(true),
        volume_initialization_rate: None,
    };
    if bottlerocket {
        vec![volume("/dev/xvda", 4), volume("/dev/xvdb", 20)]
    } else {
        vec![volume("/dev/xvda", 20)]
    }
}

/// Everything a launch template holds; its hash names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LaunchTemplateSpec {
    pub ami_id: String,
    pub security_groups: Vec<String>,
    pub user_data: String,
    pub instance_profile: Option<String>,
    /// The class's mappings, or the AMI family's defaults when it has none.
    pub block_devices: Vec<BlockDevice>,
    pub http_tokens_required: bool,
    pub tags: BTreeMap<String, String>,
}

impl LaunchTemplateSpec {
    /// The template spec for a node class, one architecture, and the labels and taints a pool's
    /// nodes boot with ([`nodewright_core::registration`]). `instance_profile` is the class's
    /// `instanceProfile`, or the one resolved for its `role`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        class: &Ec2NodeClass,
        resolution: &NodeClassResolution,
        arch: &str,
        cluster: &ClusterEndpoint,
        labels: &BTreeMap<String, String>,
        taints: &[Taint],
        instance_profile: Option<String>,
    ) -> Result<Self> {
        let family = ami_family(class);
        let boot = Bootstrap {
            cluster,
            labels,
            taints,
            kubelet: &class.kubelet,
            instance_store_raid0: class.instance_store_raid0,
        };
        let field = format!("EC2NodeClass {}: spec.userData", class.name);
        let user_data = match family.as_str() {
            "bottlerocket" => user_data::bottlerocket(&boot, class.user_data.as_deref(), &field)?,
            "al2023" => user_data::nodeadm(&boot, class.user_data.as_deref(), &field)?,
            other => {
                return Err(Error::invalid(
                    format!("EC2NodeClass {}: amiFamily", class.name),
                    format!("{other:?} is not supported; use AL2023 or Bottlerocket"),
                ));
            }
        };
        let ami_id = resolution.amis.get(arch).cloned().ok_or_else(|| {
            Error::invalid(
                format!("EC2NodeClass {}: spec.amiSelectorTerms", class.name),
                format!("no image for architecture {arch}"),
            )
        })?;
        Ok(LaunchTemplateSpec {
            ami_id,
            security_groups: resolution.security_groups.clone(),
            user_data: base64::engine::general_purpose::STANDARD.encode(user_data),
            instance_profile,
            block_devices: if class.block_device_mappings.is_empty() {
                default_block_devices(class.is_bottlerocket())
            } else {
                class.block_device_mappings.clone()
            },
            http_tokens_required: class.http_tokens_required,
            tags: class.tags.clone(),
        })
    }

    /// `nodewright-{cluster}-{first 16 hex of the content hash}`.
    pub fn name(&self, cluster: &str) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        let digest = Sha256::digest(json.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("nodewright-{cluster}-{hex}")
    }
}

fn ami_family(class: &Ec2NodeClass) -> String {
    if let Some(f) = &class.ami_family {
        return f.to_ascii_lowercase();
    }
    class
        .ami_selector_terms
        .iter()
        .find_map(|t| t.alias.as_ref())
        .and_then(|a| a.split('@').next())
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| "al2023".into())
}

/// The SSM parameters an AMI alias (`al2023@latest`, `bottlerocket@v1.20.0`) names, per
/// architecture, as Karpenter resolves them. GPU (nvidia) variants are not resolved yet.
pub fn alias_parameters(alias: &str, kubernetes_version: &str) -> Result<Vec<(String, String)>> {
    let field = "spec.amiSelectorTerms.alias";
    let (family, version) = alias
        .split_once('@')
        .ok_or_else(|| Error::invalid(field, format!("{alias:?} must be family@version, e.g. al2023@latest")))?;
    let ok_version = version == "latest" || (version.starts_with('v') && version.len() > 1);
    if !ok_version {
        return Err(Error::invalid(
            field,
            format!("{alias:?}: version must be latest or vX (e.g. v20240807)"),
        ));
    }
    let k8s = kubernetes_version;
    let mut out = Vec::new();
    for (arch, ec2_arch) in [("amd64", "x86_64"), ("arm64", "arm64")] {
        let path = match family.to_ascii_lowercase().as_str() {
            "al2023" if version == "latest" => {
                format!(
                    "/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{ec2_arch}/standard/recommended/image_id"
                )
            }
            "al2023" => format!(
                "/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{ec2_arch}/standard/amazon-eks-node-al2023-{ec2_arch}-standard-{k8s}-{version}/image_id"
            ),
            "bottlerocket" if version == "latest" => {
                format!("/aws/service/bottlerocket/aws-k8s-{k8s}/{ec2_arch}/latest/image_id")
            }
            "bottlerocket" => format!(
                "/aws/service/bottlerocket/aws-k8s-{k8s}/{ec2_arch}/{}/image_id",
                version.trim_start_matches('v')
            ),
            other => {
                return Err(Error::invalid(
                    field,
                    format!("family {other:?} is not supported; use al2023 or bottlerocket"),
                ));
            }
        };
        out.push((arch.to_string(), path));
    }
    Ok(out)
}

fn kube_arch(ec2_arch: &str) -> &str {
    match ec2_arch {
        "x86_64" => "amd64",
        other => other,
    }
}

/// EC2 filters for one selector term (tags with value `*` match on the key alone).
fn tag_filters(term: &SelectorTerm) -> Vec<Filter> {
    term.tags
        .iter()
        .map(|(k, v)| {
            if v == "*" {
                Filter::builder().name("tag-key").values(k).build()
            } else {
                Filter::builder().name(format!("tag:{k}")).values(v).build()
            }
        })
        .collect()
}

impl Fleet {
    /// Resolves a node class's AMI, subnet and security-group selectors against EC2 (and SSM for
    /// `alias` and `ssmParameter` AMI terms, which need the cluster's Kubernetes version).
    pub async fn resolve_node_class(
        &self,
        class: &Ec2NodeClass,
        ssm: Option<&aws_sdk_ssm::Client>,
        kubernetes_version: Option<&str>,
    ) -> Result<NodeClassResolution> {
        let field = |f: &str| format!("EC2NodeClass {}: spec.{f}", class.name);
        if class.ami_selector_terms.is_empty() {
            return Err(Error::invalid(
                field("amiSelectorTerms"),
                "at least one term is required",
            ));
        }
        // Subnets: every term ORed, a term's tags ANDed.
        let mut subnets = Vec::new();
        for term in &class.subnet_selector_terms {
            let mut filters = tag_filters(term);
            if let Some(id) = &term.id {
                filters.push(Filter::builder().name("subnet-id").values(id).build());
            }
            let out = self
                .ec2
                .describe_subnets()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| Error::aws("DescribeSubnets", e))?;
            for s in out.subnets() {
                if let (Some(id), Some(zone)) = (s.subnet_id(), s.availability_zone()) {
                    subnets.push((id.to_string(), zone.to_string()));
                }
            }
        }
        subnets.sort();
        subnets.dedup();
        if subnets.is_empty() {
            return Err(Error::invalid(field("subnetSelectorTerms"), "no subnet matches"));
        }
        let mut security_groups = Vec::new();
        for term in &class.security_group_selector_terms {
            let mut filters = tag_filters(term);
            if let Some(id) = &term.id {
                filters.push(Filter::builder().name("group-id").values(id).build());
            }
            if let Some(name) = &term.name {
                filters.push(Filter::builder().name("group-name").values(name).build());
            }
            let out = self
                .ec2
                .describe_security_groups()
                .set_filters(Some(filters))
                .send()
                .await
                .map_err(|e| Error::aws("DescribeSecurityGroups", e))?;
            security_groups.extend(
                out.security_groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string)),
            );
        }
        security_groups.sort();
        security_groups.dedup();
        if security_groups.is_empty() {
            return Err(Error::invalid(
                field("securityGroupSelectorTerms"),
                "no security group matches",
            ));
        }
        // AMIs: per architecture, the newest image matching any term.
        let mut images: Vec<(String, String, String)> = Vec::new(); // (arch, creation date, id)
        let mut by_parameter: Vec<String> = Vec::new();
        for term in &class.ami_selector_terms {
            if let Some(alias) = &term.alias {
                let version = kubernetes_version.ok_or_else(|| {
                    Error::invalid(
                        field("amiSelectorTerms.alias"),
                        "resolving an alias needs the cluster's Kubernetes version (NODEWRIGHT_KUBERNETES_VERSION)",
                    )
                })?;
                for (_, parameter) in alias_parameters(alias, version)? {
                    by_parameter.push(parameter);
                }
                continue;
            }
            if let Some(parameter) = &term.ssm_parameter {
                by_parameter.push(parameter.clone());
                continue;
            }
            let mut request = self.ec2.describe_images().set_filters(Some(tag_filters(term)));
            if let Some(id) = &term.id {
                request = request.image_ids(id);
            }
            if let Some(name) = &term.name {
                request = request.filters(Filter::builder().name("name").values(name).build());
            }
            if let Some(owner) = &term.owner {
                request = request.owners(owner);
            }
            let out = request.send().await.map_err(|e| Error::aws("DescribeImages", e))?;
            images.extend(out.images().iter().filter_map(|i| {
                Some((
                    kube_arch(i.architecture().map(|a| a.as_str()).unwrap_or("x86_64")).to_string(),
                    i.creation_date().unwrap_or_default().to_string(),
                    i.image_id()?.to_string(),
                ))
            }));
        }
        if !by_parameter.is_empty() {
            let ssm = ssm.ok_or_else(|| {
                Error::invalid(
                    field("amiSelectorTerms"),
                    "alias and ssmParameter terms need an SSM client",
                )
            })?;
            let mut ids = Vec::new();
            for parameter in &by_parameter {
                match ssm.get_parameter().name(parameter).send().await {
                    Ok(out) => {
                        if let Some(v) = out.parameter().and_then(|p| p.value()) {
                            ids.push(v.to_string());
                        }
                    }
                    Err(e) => {
                        let err = Error::aws("GetParameter", e);
                        // An alias names both architectures; one may not be published.
                        if err.aws_code() != Some("ParameterNotFound") {
                            return Err(err);
                        }
                    }
                }
            }
            if !ids.is_empty() {
                let out = self
                    .ec2
                    .describe_images()
                    .set_image_ids(Some(ids))
                    .send()
                    .await
                    .map_err(|e| Error::aws("DescribeImages", e))?;
                images.extend(out.images().iter().filter_map(|i| {
                    Some((
                        kube_arch(i.architecture().map(|a| a.as_str()).unwrap_or("x86_64")).to_string(),
                        i.creation_date().unwrap_or_default().to_string(),
                        i.image_id()?.to_string(),
                    ))
                }));
            }
        }
        images.sort();
        let mut amis = BTreeMap::new();
        for (arch, _, id) in images {
            amis.insert(arch, id); // sorted by date: the newest wins
        }
        if amis.is_empty() {
            return Err(Error::invalid(field("amiSelectorTerms"), "no image matches"));
        }
        Ok(NodeClassResolution {
            amis,
            subnets,
            security_groups,
        })
    }

    /// The id of the launch template for `spec`, creating it on first use. Concurrent creators
    /// converge on the same template (the name is the content hash).
    pub async fn ensure_launch_template(&self, spec: &LaunchTemplateSpec) -> Result<String> {
        let name = spec.name(&self.cluster);
        if let Some(id) = self.launch_template_id(&name).await? {
            return Ok(id);
        }
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(&spec.ami_id)
            .set_security_group_ids(Some(spec.security_groups.clone()))
            .user_data(&spec.user_data)
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(if spec.http_tokens_required {
                        LaunchTemplateHttpTokensState::Required
                    } else {
                        LaunchTemplateHttpTokensState::Optional
                    })
                    .http_put_response_hop_limit(1)
                    .build(),
            );
        if let Some(profile) = &spec.instance_profile {
            data = data.iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(profile)
                    .build(),
            );
        }
        for b in &spec.block_devices {
            // Encrypted unless the class says otherwise (Karpenter's default), with the class's
            // KMS key when it names one.
            let ebs = LaunchTemplateEbsBlockDeviceRequest::builder()
                .encrypted(b.encrypted.unwrap_or(true))
                .delete_on_termination(b.delete_on_termination.unwrap_or(true))
                .set_volume_size(b.volume_size_gib.map(|s| i32::try_from(s).unwrap_or(i32::MAX)))
                .set_volume_type(b.volume_type.as_deref().map(VolumeType::from))
                .set_kms_key_id(b.kms_key_id.clone())
                .set_snapshot_id(b.snapshot_id.clone())
                .set_iops(b.iops.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
                .set_throughput(b.throughput.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
                .set_volume_initialization_rate(
                    b.volume_initialization_rate
                        .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                );
            data = data.block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(&b.device_name)
                    .ebs(ebs.build())
                    .build(),
            );
        }
        let result = self
            .ec2
            .create_launch_template()
            .launch_template_name(&name)
            .launch_template_data(data.build())
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .tags(Tag::builder().key(TAG_CLUSTER).value(&self.cluster).build())
                    .tags(Tag::builder().key(TAG_MANAGED_BY).value("nodewright").build())
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(out) => out
                .launch_template()
                .and_then(|t| t.launch_template_id())
                .map(str::to_string)
                .ok_or_else(|| Error::invalid("CreateLaunchTemplate", "response has no template id")),
            Err(e) => {
                let err = Error::aws("CreateLaunchTemplate", e);
                if err.aws_code().is_some_and(|c| c.contains("AlreadyExists")) {
                    self.launch_template_id(&name)
                        .await?
                        .ok_or_else(|| Error::invalid("launch template", format!("{name} vanished after a race")))
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn launch_template_id(&self, name: &str) -> Result<Option<String>> {
        let result = self
            .ec2
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out
                .launch_templates()
                .first()
                .and_then(|t| t.launch_template_id())
                .map(str::to_string)),
            Err(e) => {
                let err = Error::aws("DescribeLaunchTemplates", e);
                if err.aws_code().is_some_and(|c| c.contains("NotFound")) {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_name_karpenters_ssm_parameters() {
        let p = alias_parameters("al2023@latest", "1.33").unwrap();
        assert_eq!(
            p[0],
            (
                "amd64".to_string(),
                "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"
                    .to_string()
            )
        );
        assert_eq!(p[1].0, "arm64");
        let pinned = alias_parameters("al2023@v20240807", "1.30").unwrap();
        assert!(
            pinned[1]
                .1
                .ends_with("amazon-eks-node-al2023-arm64-standard-1.30-v20240807/image_id")
        );
        let br = alias_parameters("bottlerocket@v1.20.3", "1.31").unwrap();
        assert_eq!(br[0].1, "/aws/service/bottlerocket/aws-k8s-1.31/x86_64/1.20.3/image_id");
        let err = alias_parameters("windows2022@latest", "1.31").unwrap_err();
        assert!(err.to_string().contains("spec.amiSelectorTerms.alias"), "{err}");
        assert!(alias_parameters("al2023", "1.31").is_err());
        assert!(alias_parameters("al2023@yesterday", "1.31").is_err());
    }
}
