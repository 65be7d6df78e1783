//! Launch templates from EC2NodeClasses: the class's selectors resolved against EC2 (AMI, subnets,
//! security groups; an alias per architecture and GPU / Neuron variant), user data for AL2023
//! (nodeadm), Bottlerocket or AL2 (bootstrap.sh) with the cluster's endpoint and CA, IMDSv2
//! required, block devices and instance profile. A template is named by the hash of its
//! content, created once and reused by every launch with the same content.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    Filter, LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplatePlacementRequest, RequestLaunchTemplateData,
    ResourceType, Tag, TagSpecification, Tenancy, VolumeType,
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
    /// The newest matching image per Kubernetes architecture (`amd64`, `arm64`), or, for an
    /// alias, per architecture and variant (`amd64/nvidia`).
    pub amis: BTreeMap<String, String>,
    /// (subnet id, availability zone)
    pub subnets: Vec<(String, String)>,
    pub security_groups: Vec<String>,
}

impl NodeClassResolution {
    /// The image an instance type of `arch` and `variant` boots: an alias's image for that
    /// variant, else the class's own image for the architecture (id, name, tags or ssmParameter
    /// terms, which Karpenter also gives every type of the architecture). None: no image boots it.
    pub fn image(&self, arch: &str, variant: Variant) -> Option<&String> {
        self.amis
            .get(&format!("{arch}/{}", variant.as_str()))
            .or_else(|| self.amis.get(arch))
    }
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
    /// `dedicated` for a claim that needs dedicated tenancy (the template's placement, as
    /// Karpenter sets it); None: EC2's default. Left out of the name's hash when None, so the
    /// templates of default-tenancy claims keep their names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<String>,
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
        variant: Variant,
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
            "al2" => user_data::al2(&boot, class.user_data.as_deref(), &field)?,
            // As given: the class's user data joins the node (validation requires it).
            "custom" => class.user_data.clone().unwrap_or_default(),
            other => {
                return Err(Error::invalid(
                    format!("EC2NodeClass {}: amiFamily", class.name),
                    format!("{other:?} is not supported; use AL2023, Bottlerocket, AL2 or Custom"),
                ));
            }
        };
        let ami_id = resolution.image(arch, variant).cloned().ok_or_else(|| {
            Error::invalid(
                format!("EC2NodeClass {}: spec.amiSelectorTerms", class.name),
                format!("no image for architecture {arch} ({} instance types)", variant.as_str()),
            )
        })?;
        Ok(LaunchTemplateSpec {
            ami_id,
            security_groups: resolution.security_groups.clone(),
            user_data: base64::engine::general_purpose::STANDARD.encode(user_data),
            instance_profile,
            // Custom: none, so EC2 uses the AMI's own (Karpenter's Custom family has no defaults).
            block_devices: if class.block_device_mappings.is_empty() && family != "custom" {
                default_block_devices(class.is_bottlerocket())
            } else {
                class.block_device_mappings.clone()
            },
            http_tokens_required: class.http_tokens_required,
            tags: class.tags.clone(),
            tenancy: None,
        })
    }

    /// The same template launching into dedicated tenancy when `labels` (a claim's) require it.
    pub fn with_tenancy_of(mut self, labels: &BTreeMap<String, String>) -> Self {
        self.tenancy = labels
            .get(nodewright_core::labels::INSTANCE_TENANCY)
            .filter(|t| *t == "dedicated")
            .cloned();
        self
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

/// Which of an alias family's images an instance type boots, told apart as Karpenter tells them:
/// NVIDIA GPUs need the driver in the `nvidia` image, Inferentia and Trainium the Neuron driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    Standard,
    Nvidia,
    Neuron,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Standard => "standard",
            Variant::Nvidia => "nvidia",
            Variant::Neuron => "neuron",
        }
    }

    /// From an instance type's labels: a GPU count means nvidia (the catalogue's GPUs are
    /// NVIDIA's), an accelerator count neuron, neither standard.
    pub fn of(labels: &BTreeMap<String, String>) -> Variant {
        if labels.contains_key(nodewright_core::labels::INSTANCE_GPU_COUNT) {
            Variant::Nvidia
        } else if labels.contains_key(nodewright_core::labels::INSTANCE_ACCELERATOR_COUNT) {
            Variant::Neuron
        } else {
            Variant::Standard
        }
    }
}

/// One image an alias names: the SSM parameter holding its id, its architecture, and the
/// instance types it boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasImage {
    pub arch: &'static str,
    pub variants: Vec<Variant>,
    pub parameter: String,
}

/// The SSM parameters an AMI alias (`al2023@latest`, `bottlerocket@v1.20.0`, `al2@v20240807`)
/// names, per architecture and variant, as Karpenter resolves them (aws/karpenter-provider-aws
/// `pkg/providers/amifamily`). EKS publishes no AL2 images for Kubernetes 1.33 and later: there
/// the parameters are missing and resolution fails saying so.
pub fn alias_parameters(alias: &str, kubernetes_version: &str) -> Result<Vec<AliasImage>> {
    use Variant::{Neuron, Nvidia, Standard};
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
    let latest = version == "latest";
    let image = |arch, variants: &[Variant], parameter: String| AliasImage {
        arch,
        variants: variants.to_vec(),
        parameter,
    };
    let out = match family.to_ascii_lowercase().as_str() {
        "al2023" => {
            let path = |ec2_arch: &str, variant: Variant| {
                let v = variant.as_str();
                let release = if latest {
                    "recommended".to_string()
                } else {
                    format!("amazon-eks-node-al2023-{ec2_arch}-{v}-{k8s}-{version}")
                };
                format!("/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{ec2_arch}/{v}/{release}/image_id")
            };
            vec![
                image("amd64", &[Standard], path("x86_64", Standard)),
                image("amd64", &[Nvidia], path("x86_64", Nvidia)),
                image("amd64", &[Neuron], path("x86_64", Neuron)),
                image("arm64", &[Standard], path("arm64", Standard)),
                image("arm64", &[Nvidia], path("arm64", Nvidia)),
            ]
        }
        "al2" => {
            let path = |dir: &str, node: &str| {
                let release = if latest {
                    "recommended".to_string()
                } else {
                    format!("{node}-{k8s}-{version}")
                };
                format!("/aws/service/eks/optimized-ami/{k8s}/{dir}/{release}/image_id")
            };
            vec![
                image("amd64", &[Standard], path("amazon-linux-2", "amazon-eks-node")),
                image(
                    "arm64",
                    &[Standard],
                    path("amazon-linux-2-arm64", "amazon-eks-arm64-node"),
                ),
                image(
                    "amd64",
                    &[Neuron, Nvidia],
                    path("amazon-linux-2-gpu", "amazon-eks-gpu-node"),
                ),
            ]
        }
        "bottlerocket" => {
            let release = version.trim_start_matches('v');
            let path = |flavour: &str, ec2_arch: &str| {
                format!("/aws/service/bottlerocket/aws-k8s-{k8s}{flavour}/{ec2_arch}/{release}/image_id")
            };
            vec![
                image("amd64", &[Standard, Neuron], path("", "x86_64")),
                image("arm64", &[Standard], path("", "arm64")),
                image("amd64", &[Nvidia], path("-nvidia", "x86_64")),
                image("arm64", &[Nvidia], path("-nvidia", "arm64")),
            ]
        }
        other => {
            return Err(Error::invalid(
                field,
                format!("family {other:?} is not supported; use al2023, bottlerocket or al2"),
            ));
        }
    };
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
        let mut by_alias: Vec<AliasImage> = Vec::new();
        for term in &class.ami_selector_terms {
            if let Some(alias) = &term.alias {
                let version = kubernetes_version.ok_or_else(|| {
                    Error::invalid(
                        field("amiSelectorTerms.alias"),
                        "resolving an alias needs the cluster's Kubernetes version (NODEWRIGHT_KUBERNETES_VERSION)",
                    )
                })?;
                by_alias.extend(alias_parameters(alias, version)?);
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
        if !by_parameter.is_empty() || !by_alias.is_empty() {
            let ssm = ssm.ok_or_else(|| {
                Error::invalid(
                    field("amiSelectorTerms"),
                    "alias and ssmParameter terms need an SSM client",
                )
            })?;
            // Each parameter's image id, with the keys it serves: an alias's image serves its
            // architecture and variants; an ssmParameter's its architecture, told by EC2.
            let mut served: Vec<(String, Option<Vec<String>>)> = Vec::new();
            let wanted = by_parameter
                .iter()
                .map(|p| (p.clone(), None))
                .chain(by_alias.iter().map(|a| {
                    let keys = a
                        .variants
                        .iter()
                        .map(|v| format!("{}/{}", a.arch, v.as_str()))
                        .collect();
                    (a.parameter.clone(), Some(keys))
                }));
            for (parameter, keys) in wanted {
                match ssm.get_parameter().name(&parameter).send().await {
                    Ok(out) => {
                        if let Some(v) = out.parameter().and_then(|p| p.value()) {
                            served.push((v.to_string(), keys));
                        }
                    }
                    Err(e) => {
                        let err = Error::aws("GetParameter", e);
                        // An alias names every architecture and variant; some are not published.
                        if err.aws_code() != Some("ParameterNotFound") {
                            return Err(err);
                        }
                    }
                }
            }
            if !served.is_empty() {
                let mut ids: Vec<String> = served.iter().map(|(id, _)| id.clone()).collect();
                ids.sort();
                ids.dedup();
                let out = self
                    .ec2
                    .describe_images()
                    .set_image_ids(Some(ids))
                    .send()
                    .await
                    .map_err(|e| Error::aws("DescribeImages", e))?;
                for i in out.images() {
                    let Some(id) = i.image_id() else { continue };
                    let arch = kube_arch(i.architecture().map(|a| a.as_str()).unwrap_or("x86_64")).to_string();
                    let created = i.creation_date().unwrap_or_default().to_string();
                    for (_, keys) in served.iter().filter(|(s, _)| s == id) {
                        match keys {
                            Some(keys) => {
                                images.extend(keys.iter().map(|k| (k.clone(), created.clone(), id.to_string())))
                            }
                            None => images.push((arch.clone(), created.clone(), id.to_string())),
                        }
                    }
                }
            }
        }
        images.sort();
        let mut amis = BTreeMap::new();
        for (key, _, id) in images {
            amis.insert(key, id); // sorted by date: the newest wins
        }
        if amis.is_empty() {
            let al2 = class
                .ami_selector_terms
                .iter()
                .filter_map(|t| t.alias.as_deref())
                .any(|a| a.to_ascii_lowercase().starts_with("al2@"));
            let why = if al2 {
                format!(
                    "no image matches: EKS publishes no AL2 images for Kubernetes {} (none after 1.32); use al2023@latest",
                    kubernetes_version.unwrap_or("?")
                )
            } else {
                "no image matches".to_string()
            };
            return Err(Error::invalid(field("amiSelectorTerms"), why));
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
        if let Some(tenancy) = &spec.tenancy {
            data = data.placement(
                LaunchTemplatePlacementRequest::builder()
                    .tenancy(Tenancy::from(tenancy.as_str()))
                    .build(),
            );
        }
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
        let find = |images: &[AliasImage], arch: &str, variant: Variant| -> String {
            images
                .iter()
                .find(|i| i.arch == arch && i.variants.contains(&variant))
                .map(|i| i.parameter.clone())
                .unwrap_or_default()
        };
        let p = alias_parameters("al2023@latest", "1.33").unwrap();
        assert_eq!(
            find(&p, "amd64", Variant::Standard),
            "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id"
        );
        assert_eq!(
            find(&p, "arm64", Variant::Nvidia),
            "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/arm64/nvidia/recommended/image_id"
        );
        assert_eq!(
            find(&p, "amd64", Variant::Neuron),
            "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/neuron/recommended/image_id"
        );
        assert_eq!(find(&p, "arm64", Variant::Neuron), "", "no arm64 Neuron image");
        let pinned = alias_parameters("al2023@v20240807", "1.30").unwrap();
        assert!(
            find(&pinned, "arm64", Variant::Standard)
                .ends_with("amazon-eks-node-al2023-arm64-standard-1.30-v20240807/image_id")
        );
        let br = alias_parameters("bottlerocket@v1.20.3", "1.31").unwrap();
        assert_eq!(
            find(&br, "amd64", Variant::Standard),
            "/aws/service/bottlerocket/aws-k8s-1.31/x86_64/1.20.3/image_id"
        );
        assert_eq!(
            find(&br, "amd64", Variant::Neuron),
            "/aws/service/bottlerocket/aws-k8s-1.31/x86_64/1.20.3/image_id",
            "Bottlerocket's standard image runs Neuron"
        );
        assert_eq!(
            find(&br, "arm64", Variant::Nvidia),
            "/aws/service/bottlerocket/aws-k8s-1.31-nvidia/arm64/1.20.3/image_id"
        );
        let al2 = alias_parameters("al2@latest", "1.32").unwrap();
        assert_eq!(
            find(&al2, "amd64", Variant::Standard),
            "/aws/service/eks/optimized-ami/1.32/amazon-linux-2/recommended/image_id"
        );
        assert_eq!(
            find(&al2, "arm64", Variant::Standard),
            "/aws/service/eks/optimized-ami/1.32/amazon-linux-2-arm64/recommended/image_id"
        );
        assert_eq!(
            find(&al2, "amd64", Variant::Nvidia),
            find(&al2, "amd64", Variant::Neuron),
            "AL2's GPU image serves both"
        );
        let al2 = alias_parameters("al2@v20240807", "1.30").unwrap();
        assert_eq!(
            find(&al2, "amd64", Variant::Standard),
            "/aws/service/eks/optimized-ami/1.30/amazon-linux-2/amazon-eks-node-1.30-v20240807/image_id"
        );
        assert!(find(&al2, "arm64", Variant::Standard).ends_with("amazon-eks-arm64-node-1.30-v20240807/image_id"));
        assert!(
            find(&al2, "amd64", Variant::Nvidia)
                .ends_with("amazon-linux-2-gpu/amazon-eks-gpu-node-1.30-v20240807/image_id")
        );
        let err = alias_parameters("windows2022@latest", "1.31").unwrap_err();
        assert!(err.to_string().contains("spec.amiSelectorTerms.alias"), "{err}");
        assert!(alias_parameters("al2023", "1.31").is_err());
        assert!(alias_parameters("al2023@yesterday", "1.31").is_err());
    }
}
