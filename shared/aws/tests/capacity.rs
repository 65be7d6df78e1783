//! EC2 and Auto Scaling adapters against moto server: tagged fleet launches, adoption of a retried
//! launch, guarded termination, launch templates from an EC2NodeClass, ASG scale up/in.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod ec2_support;
mod support;

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, Tag};
use nodewright_aws::capacity::{
    AsgPool, ClusterEndpoint, Fleet, LaunchOffering, LaunchRequest, LaunchTemplateSpec, TAG_CLAIM, TAG_CLUSTER,
    TAG_MANAGED_BY, TAG_POOL, Variant,
};
use nodewright_core::CapacityType;
use nodewright_core::nodepool::{BlockDevice, Ec2NodeClass, SelectorTerm};

fn tag_of(instance: &aws_sdk_ec2::types::Instance, key: &str) -> Option<String> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(str::to_string))
}

#[tokio::test]
async fn fleet_launch_is_tagged_retry_safe_and_termination_is_guarded() {
    let clients = support::clients().await;
    let store = support::store(&clients, "fleet").await;
    let (ami, subnets) = ec2_support::ami_and_subnets(&clients.ec2).await;
    let lt = ec2_support::launch_template(&clients.ec2, &ami, "t3.micro").await;
    let fleet = Fleet::new(clients.ec2.clone(), store.cluster());
    let (subnet, zone) = subnets[0].clone();
    let request = LaunchRequest {
        claim_id: "claim-1".into(),
        pool: "general".into(),
        launch_template_id: lt,
        offerings: vec![LaunchOffering {
            instance_type: "m5.large".into(),
            zone: zone.clone(),
            subnet_id: subnet,
            capacity_type: CapacityType::OnDemand,
            price: 0.096,
        }],
        tags: BTreeMap::from([
            ("team".to_string(), "ml".to_string()),
            // The claim's chosen labels, as the capacity adapter tags them for adoption.
            (
                nodewright_core::ports::capacity::TAG_LABELS.to_string(),
                "karpenter.k8s.aws/instance-tenancy=default,tier=b".to_string(),
            ),
        ]),
    };
    let first = fleet.launch(&request).await.unwrap();
    assert!(!first.adopted);
    assert_eq!(first.instance_type, "m5.large");
    assert_eq!(first.capacity_type, CapacityType::OnDemand);
    assert_eq!(first.zone, zone);

    let described = clients
        .ec2
        .describe_instances()
        .instance_ids(&first.instance_id)
        .send()
        .await
        .unwrap();
    let instance = &described.reservations()[0].instances()[0];
    assert_eq!(instance.instance_type().map(|t| t.as_str()), Some("m5.large"));
    assert_eq!(tag_of(instance, TAG_CLUSTER).as_deref(), Some(store.cluster()));
    assert_eq!(tag_of(instance, TAG_POOL).as_deref(), Some("general"));
    assert_eq!(tag_of(instance, TAG_CLAIM).as_deref(), Some("claim-1"));
    assert_eq!(tag_of(instance, TAG_MANAGED_BY).as_deref(), Some("nodewright"));
    assert_eq!(tag_of(instance, "team").as_deref(), Some("ml"));

    // A retried launch (the invocation died before recording) adopts the same instance.
    let again = fleet.launch(&request).await.unwrap();
    assert!(again.adopted);
    assert_eq!(again.instance_id, first.instance_id);
    let ours = fleet.cluster_instances().await.unwrap();
    assert_eq!(ours.len(), 1, "no second instance: {ours:?}");
    assert_eq!(ours[0].claim_id.as_deref(), Some("claim-1"));
    assert_eq!(
        ours[0].labels.get("tier").map(String::as_str),
        Some("b"),
        "labels read back from EC2"
    );

    // An instance without our cluster tag is refused, and nothing is terminated.
    let foreign = ec2_support::foreign_instance(&clients.ec2, &ami).await;
    let err = fleet
        .terminate(&[first.instance_id.clone(), foreign.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, nodewright_aws::Error::Refused(ref m) if m.contains(&foreign)),
        "{err}"
    );
    assert_eq!(
        fleet.cluster_instances().await.unwrap().len(),
        1,
        "ours was not terminated either"
    );

    fleet.terminate(std::slice::from_ref(&first.instance_id)).await.unwrap();
    assert!(fleet.cluster_instances().await.unwrap().is_empty());
    let foreign_state = clients
        .ec2
        .describe_instances()
        .instance_ids(&foreign)
        .send()
        .await
        .unwrap();
    let state = foreign_state.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(state, "running", "the foreign instance is untouched");
}

#[tokio::test]
async fn launch_template_from_a_node_class_is_created_once_and_reused() {
    let clients = support::clients().await;
    let cluster = support::unique("lt-cluster");
    let fleet = Fleet::new(clients.ec2.clone(), &cluster);
    let (ami, subnets) = ec2_support::ami_and_subnets(&clients.ec2).await;
    let discovery = support::unique("discovery");
    // Tag two subnets and the AMI for discovery, as users tag for Karpenter.
    for (subnet, _) in subnets.iter().take(2) {
        clients
            .ec2
            .create_tags()
            .resources(subnet)
            .tags(Tag::builder().key("karpenter.sh/discovery").value(&discovery).build())
            .send()
            .await
            .unwrap();
    }
    clients
        .ec2
        .create_tags()
        .resources(&ami)
        .tags(Tag::builder().key("nodewright-test-ami").value(&discovery).build())
        .send()
        .await
        .unwrap();
    let vpc = clients.ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let sg = clients
        .ec2
        .create_security_group()
        .group_name(support::unique("nodes"))
        .description("nodes")
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    clients
        .ec2
        .create_tags()
        .resources(&sg)
        .tags(Tag::builder().key("karpenter.sh/discovery").value(&discovery).build())
        .send()
        .await
        .unwrap();

    let by_tag = |k: &str| SelectorTerm {
        tags: BTreeMap::from([(k.to_string(), discovery.clone())]),
        ..SelectorTerm::default()
    };
    let class = Ec2NodeClass {
        name: "default".into(),
        ami_family: Some("AL2023".into()),
        ami_selector_terms: vec![by_tag("nodewright-test-ami")],
        subnet_selector_terms: vec![by_tag("karpenter.sh/discovery")],
        security_group_selector_terms: vec![by_tag("karpenter.sh/discovery")],
        instance_profile: Some("KarpenterNodeInstanceProfile".into()),
        http_tokens_required: true,
        ..Ec2NodeClass::default()
    };
    let resolved = fleet.resolve_node_class(&class, None, None).await.unwrap();
    assert_eq!(resolved.amis.get("amd64"), Some(&ami));
    assert_eq!(resolved.subnets.len(), 2);
    assert_eq!(resolved.security_groups, vec![sg]);

    let endpoint = ClusterEndpoint {
        name: cluster.clone(),
        endpoint: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
        certificate_authority: "LS0tLS1CRUdJTg==".into(),
        service_cidr: Some("10.100.0.0/16".into()),
    };
    let labels = BTreeMap::from([("karpenter.sh/nodepool".to_string(), "general".to_string())]);
    let spec = LaunchTemplateSpec::new(
        &class,
        &resolved,
        "amd64",
        Variant::Standard,
        &endpoint,
        &labels,
        &[],
        class.instance_profile.clone(),
    )
    .unwrap();
    let first = fleet.ensure_launch_template(&spec).await.unwrap();
    let second = fleet.ensure_launch_template(&spec).await.unwrap();
    assert_eq!(first, second, "same content, same template");

    let stored = clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&first)
        .send()
        .await
        .unwrap();
    let data = stored.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(data.image_id(), Some(ami.as_str()));
    assert_eq!(
        data.metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str()),
        Some("required"),
        "IMDSv2 required"
    );
    // The class lists no volumes: the AMI family's root volume, encrypted (Karpenter's default).
    let volumes = data.block_device_mappings();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0].device_name(), Some("/dev/xvda"));
    let ebs = volumes[0].ebs().unwrap();
    assert_eq!((ebs.volume_size(), ebs.encrypted()), (Some(20), Some(true)));
    // Every EBS field the class sets reaches the template as EC2 stores it (the KMS key above all:
    // dropping it would launch volumes under the account's default key).
    let mut keyed = class.clone();
    keyed.block_device_mappings = vec![BlockDevice {
        device_name: "/dev/xvda".into(),
        volume_size_gib: Some(100),
        volume_type: Some("gp3".into()),
        encrypted: Some(true),
        root_volume: true,
        kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab".into()),
        iops: Some(4000),
        throughput: Some(250),
        snapshot_id: None,
        delete_on_termination: Some(false),
        volume_initialization_rate: None,
    }];
    let keyed_spec = LaunchTemplateSpec::new(
        &keyed,
        &resolved,
        "amd64",
        Variant::Standard,
        &endpoint,
        &labels,
        &[],
        keyed.instance_profile.clone(),
    )
    .unwrap();
    let keyed_id = fleet.ensure_launch_template(&keyed_spec).await.unwrap();
    assert_ne!(keyed_id, first, "other volumes, another template");
    let stored = clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&keyed_id)
        .send()
        .await
        .unwrap();
    let ebs = stored.launch_template_versions()[0]
        .launch_template_data()
        .unwrap()
        .block_device_mappings()[0]
        .ebs()
        .unwrap()
        .clone();
    assert_eq!(ebs.kms_key_id(), keyed.block_device_mappings[0].kms_key_id.as_deref());
    assert_eq!(
        (ebs.iops(), ebs.throughput(), ebs.volume_size()),
        (Some(4000), Some(250), Some(100))
    );
    assert_eq!(ebs.delete_on_termination(), Some(false));
    let user_data = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data.user_data().unwrap()).unwrap(),
    )
    .unwrap();
    assert!(user_data.contains("kind: NodeConfig"), "{user_data}");
    assert!(user_data.contains("apiServerEndpoint: https://ABC.gr7.us-east-1.eks.amazonaws.com"));
    assert!(user_data.contains("--node-labels=karpenter.sh/nodepool=general"));

    // Different labels, different template.
    let other = LaunchTemplateSpec::new(
        &class,
        &resolved,
        "amd64",
        Variant::Standard,
        &endpoint,
        &BTreeMap::new(),
        &[],
        class.instance_profile.clone(),
    )
    .unwrap();
    assert_ne!(fleet.ensure_launch_template(&other).await.unwrap(), first);

    // A claim that needs dedicated tenancy gets a template of its own that places it so; a
    // default-tenancy claim keeps the plain template (same name as before tenancy was known).
    let claim_labels =
        |t: &str| BTreeMap::from([(nodewright_core::labels::INSTANCE_TENANCY.to_string(), t.to_string())]);
    assert_eq!(spec.clone().with_tenancy_of(&claim_labels("default")), spec);
    let dedicated = spec.clone().with_tenancy_of(&claim_labels("dedicated"));
    let dedicated_id = fleet.ensure_launch_template(&dedicated).await.unwrap();
    assert_ne!(dedicated_id, first);
    let stored = clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&dedicated_id)
        .send()
        .await
        .unwrap();
    let placement = stored.launch_template_versions()[0]
        .launch_template_data()
        .unwrap()
        .placement()
        .cloned();
    assert_eq!(
        placement
            .and_then(|p| p.tenancy().map(|t| t.as_str().to_string()))
            .as_deref(),
        Some("dedicated"),
        "as EC2 stores it"
    );

    // A selector that matches nothing names the field.
    let mut broken = class.clone();
    broken.subnet_selector_terms = vec![by_tag("no-such-tag")];
    let err = fleet.resolve_node_class(&broken, None, None).await.unwrap_err();
    assert!(err.to_string().contains("subnetSelectorTerms"), "{err}");
    // No image for the architecture asked for names the field.
    let err = LaunchTemplateSpec::new(
        &class,
        &resolved,
        "arm64",
        Variant::Standard,
        &endpoint,
        &labels,
        &[],
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("amiSelectorTerms"), "{err}");

    // An ssmParameter term resolves through SSM (moto), then DescribeImages.
    let parameter = format!("/nodewright-test/{discovery}/ami");
    clients
        .ssm
        .put_parameter()
        .name(&parameter)
        .value(&ami)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let mut by_ssm = class.clone();
    by_ssm.ami_selector_terms = vec![SelectorTerm {
        ssm_parameter: Some(parameter),
        ..SelectorTerm::default()
    }];
    let resolved = fleet
        .resolve_node_class(&by_ssm, Some(&clients.ssm), None)
        .await
        .unwrap();
    assert_eq!(resolved.amis.get("amd64"), Some(&ami));
    // An alias without the Kubernetes version is a clear configuration error.
    by_ssm.ami_selector_terms = vec![SelectorTerm {
        alias: Some("al2023@latest".into()),
        ..SelectorTerm::default()
    }];
    let err = fleet
        .resolve_node_class(&by_ssm, Some(&clients.ssm), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NODEWRIGHT_KUBERNETES_VERSION"), "{err}");
}

/// An AL2 class (amiFamily AL2, as Karpenter's `al2-custom-ami.yaml` example writes it): the
/// template EC2 stores boots a node through bootstrap.sh with the pool's labels, taints and the
/// class's kubelet settings, read back from moto by the kubelet emulator.
#[tokio::test]
async fn an_al2_template_boots_its_node_through_bootstrap_sh() {
    let clients = support::clients().await;
    let cluster = support::unique("al2-cluster");
    let fleet = Fleet::new(clients.ec2.clone(), &cluster);
    let (ami, subnets) = ec2_support::ami_and_subnets(&clients.ec2).await;
    let vpc = clients.ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let sg = clients
        .ec2
        .create_security_group()
        .group_name(support::unique("al2-nodes"))
        .description("nodes")
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    let by_id = |id: &str| SelectorTerm {
        id: Some(id.to_string()),
        ..SelectorTerm::default()
    };
    let mut class = Ec2NodeClass {
        name: "al2".into(),
        ami_family: Some("AL2".into()),
        ami_selector_terms: vec![by_id(&ami)],
        subnet_selector_terms: vec![by_id(&subnets[0].0)],
        security_group_selector_terms: vec![by_id(&sg)],
        instance_profile: Some("KarpenterNodeInstanceProfile".into()),
        http_tokens_required: true,
        user_data: Some("#!/bin/bash\necho 'before the node joins'\n".into()),
        ..Ec2NodeClass::default()
    };
    class.kubelet.max_pods = Some(42);
    class.kubelet.system_reserved = BTreeMap::from([("memory".to_string(), "300Mi".to_string())]);
    let resolved = fleet.resolve_node_class(&class, None, None).await.unwrap();
    let endpoint = ClusterEndpoint {
        name: cluster.clone(),
        endpoint: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
        certificate_authority: "LS0tLS1CRUdJTg==".into(),
        service_cidr: Some("10.100.0.0/16".into()),
    };
    let labels = BTreeMap::from([
        ("karpenter.sh/nodepool".to_string(), "legacy".to_string()),
        ("team".to_string(), "batch".to_string()),
    ]);
    let taints = nodewright_core::registration::boot_taints(&nodewright_core::NodePool::new("legacy"));
    let spec = LaunchTemplateSpec::new(
        &class,
        &resolved,
        "amd64",
        Variant::Standard,
        &endpoint,
        &labels,
        &taints,
        class.instance_profile.clone(),
    )
    .unwrap();
    let id = fleet.ensure_launch_template(&spec).await.unwrap();
    let stored = clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&id)
        .send()
        .await
        .unwrap();
    let data = stored.launch_template_versions()[0].launch_template_data().unwrap();
    // AL2's root volume by default, as Karpenter's AL2 family: 20 GiB gp3, encrypted.
    let volumes = data.block_device_mappings();
    assert_eq!(volumes[0].device_name(), Some("/dev/xvda"));
    assert_eq!(volumes[0].ebs().unwrap().volume_size(), Some(20));
    let boot = nodewright_kubelet::read_user_data(data.user_data().unwrap()).unwrap();
    assert_eq!(boot.cluster_name.as_deref(), Some(cluster.as_str()));
    assert_eq!(boot.labels, labels);
    assert_eq!(boot.max_pods, Some(42));
    assert_eq!(boot.system_reserved["memory"], "300Mi");
    assert!(
        boot.taints
            .iter()
            .any(|t| t.key == "karpenter.sh/unregistered" && t.effect == "NoExecute"),
        "{:?}",
        boot.taints
    );
    let text = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data.user_data().unwrap()).unwrap(),
    )
    .unwrap();
    let mine = text.find("before the node joins").unwrap();
    let ours = text.find("/etc/eks/bootstrap.sh").unwrap();
    assert!(mine < ours, "the class's script runs before bootstrap.sh");
}

/// An alias resolves one image per architecture and variant, as Karpenter's: a GPU type boots the
/// `nvidia` image, a plain type the `standard` one, and a type whose variant is not published (no
/// Neuron image here) boots none rather than the wrong one. SSM answers through a mock, since the
/// `/aws/service/...` names are reserved (moto refuses to hold them); the images are moto's.
#[tokio::test]
async fn an_alias_gives_gpu_types_the_nvidia_image() {
    use aws_sdk_ssm::operation::get_parameter::{GetParameterError, GetParameterOutput};
    use aws_sdk_ssm::types::Parameter;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    let clients = support::clients().await;
    let fleet = Fleet::new(clients.ec2.clone(), support::unique("variants"));
    let (_, subnets) = ec2_support::ami_and_subnets(&clients.ec2).await;
    let images = clients
        .ec2
        .describe_images()
        .owners("amazon")
        .filters(Filter::builder().name("architecture").values("x86_64").build())
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .map(str::to_string)
        .collect();
    let (standard, nvidia) = (ids[0].clone(), ids[1].clone());
    let sg = clients
        .ec2
        .describe_security_groups()
        .send()
        .await
        .unwrap()
        .security_groups()[0]
        .group_id()
        .unwrap()
        .to_string();
    let path = |variant: &str| {
        format!("/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/{variant}/recommended/image_id")
    };
    let answer = |wanted: String, id: String| {
        mock!(aws_sdk_ssm::Client::get_parameter)
            .match_requests(move |r| r.name() == Some(wanted.as_str()))
            .then_output(move || {
                GetParameterOutput::builder()
                    .parameter(Parameter::builder().value(id.clone()).build())
                    .build()
            })
    };
    let not_published = mock!(aws_sdk_ssm::Client::get_parameter).then_error(|| {
        GetParameterError::ParameterNotFound(
            aws_sdk_ssm::types::error::ParameterNotFound::builder()
                .meta(
                    aws_sdk_ssm::error::ErrorMetadata::builder()
                        .code("ParameterNotFound")
                        .build(),
                )
                .build(),
        )
    });
    let std_rule = answer(path("standard"), standard.clone());
    let gpu_rule = answer(path("nvidia"), nvidia.clone());
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&std_rule, &gpu_rule, &not_published]);
    let class = Ec2NodeClass {
        name: "gpu".into(),
        ami_selector_terms: vec![SelectorTerm {
            alias: Some("al2023@latest".into()),
            ..SelectorTerm::default()
        }],
        subnet_selector_terms: vec![SelectorTerm {
            id: Some(subnets[0].0.clone()),
            ..SelectorTerm::default()
        }],
        security_group_selector_terms: vec![SelectorTerm {
            id: Some(sg),
            ..SelectorTerm::default()
        }],
        instance_profile: Some("KarpenterNodeInstanceProfile".into()),
        ..Ec2NodeClass::default()
    };
    let resolved = fleet
        .resolve_node_class(&class, Some(&ssm), Some("1.33"))
        .await
        .unwrap();
    assert_eq!(resolved.image("amd64", Variant::Standard), Some(&standard));
    assert_eq!(resolved.image("amd64", Variant::Nvidia), Some(&nvidia));
    assert_eq!(
        resolved.image("amd64", Variant::Neuron),
        None,
        "no Neuron image: no launch"
    );
    assert_eq!(resolved.image("arm64", Variant::Standard), None);
    let types = nodewright_core::Catalogue::embedded().instance_types("us-east-1", &Default::default());
    let labels_of = |name: &str| types.iter().find(|t| t.name == name).unwrap().labels.clone();
    assert_eq!(Variant::of(&labels_of("g5.xlarge")), Variant::Nvidia);
    assert_eq!(Variant::of(&labels_of("inf2.xlarge")), Variant::Neuron);
    assert_eq!(Variant::of(&labels_of("m5.large")), Variant::Standard);
    let endpoint = ClusterEndpoint {
        name: "variants".into(),
        endpoint: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
        certificate_authority: "LS0tLS1CRUdJTg==".into(),
        service_cidr: None,
    };
    let spec = |variant| {
        LaunchTemplateSpec::new(
            &class,
            &resolved,
            "amd64",
            variant,
            &endpoint,
            &BTreeMap::new(),
            &[],
            None,
        )
    };
    assert_eq!(spec(Variant::Nvidia).unwrap().ami_id, nvidia);
    assert_eq!(spec(Variant::Standard).unwrap().ami_id, standard);
    let err = spec(Variant::Neuron).unwrap_err();
    assert!(err.to_string().contains("neuron"), "{err}");
}

#[tokio::test]
async fn asg_scale_up_respects_max_and_scale_in_skips_protected_instances() {
    let clients = support::clients().await;
    let (ami, subnets) = ec2_support::ami_and_subnets(&clients.ec2).await;
    let lt = ec2_support::launch_template(&clients.ec2, &ami, "t3.micro").await;
    let group = support::unique("asg");
    clients
        .autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .min_size(0)
        .max_size(3)
        .desired_capacity(1)
        .vpc_zone_identifier(&subnets[0].0)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_id(lt)
                .version("$Latest")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let pool = AsgPool::new(clients.autoscaling.clone());

    let up = pool.scale_up(&group, 5).await.unwrap();
    assert_eq!((up.from, up.to, up.granted), (1, 3, 2), "clamped to max 3");
    let state = pool.group_state(&group).await.unwrap();
    assert_eq!(state.desired, 3);
    assert_eq!(state.instances.len(), 3);
    let at_max = pool.scale_up(&group, 1).await.unwrap();
    assert_eq!(at_max.granted, 0);

    let ids: Vec<String> = state.instances.iter().map(|(id, _, _)| id.clone()).collect();
    pool.set_protection(&group, &ids[..1], true).await.unwrap();
    let terminated = pool.scale_in(&group, &ids[..2]).await.unwrap();
    assert_eq!(terminated, vec![ids[1].clone()], "the protected instance was skipped");
    let after = pool.group_state(&group).await.unwrap();
    assert_eq!(after.desired, 2, "desired capacity decremented");
    assert!(after.instances.iter().any(|(id, _, p)| id == &ids[0] && *p));
    assert!(pool.scale_up(&group, -1).await.is_err());
}

const EC2_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

#[tokio::test]
async fn a_node_role_gets_an_instance_profile_under_our_path_once_and_repaired() {
    let clients = support::clients().await;
    let cluster = support::unique("profiles");
    let role = support::unique("KarpenterNodeRole");
    clients
        .iam
        .create_role()
        .role_name(&role)
        .assume_role_policy_document(EC2_TRUST)
        .send()
        .await
        .unwrap();
    let profiles = nodewright_aws::capacity::InstanceProfiles::new(clients.iam.clone(), &cluster, "us-east-1");
    let arn = format!("arn:aws:iam::123456789012:role/{role}");
    let name = profiles.ensure("default", &arn).await.unwrap();
    assert_eq!(
        name,
        profiles.ensure("default", &role).await.unwrap(),
        "a name or an ARN: one profile"
    );
    let got = clients
        .iam
        .get_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await
        .unwrap()
        .instance_profile
        .unwrap();
    assert_eq!(got.path, profiles.path());
    let roles: Vec<&str> = got.roles.iter().map(|r| r.role_name.as_str()).collect();
    assert_eq!(roles, [role.as_str()]);
    // (moto answers ListInstanceProfileTags with a 500; GetInstanceProfile carries the tags.)
    assert!(
        got.tags()
            .iter()
            .any(|t| t.key == "nodewright.io/cluster" && t.value == cluster),
        "{got:?}"
    );
    // Someone took the role off the profile: the next launch puts it back.
    clients
        .iam
        .remove_role_from_instance_profile()
        .instance_profile_name(&name)
        .role_name(&role)
        .send()
        .await
        .unwrap();
    profiles.ensure("default", &role).await.unwrap();
    let got = clients
        .iam
        .get_instance_profile()
        .instance_profile_name(&name)
        .send()
        .await
        .unwrap()
        .instance_profile
        .unwrap();
    assert_eq!(got.roles.len(), 1);
}

/// The launch bus on moto's EventBridge: requests go ten to a call (PutEvents' limit), each entry
/// answered on its own; a bus that does not exist fails the call, so the caller launches inline.
#[tokio::test]
async fn the_launch_bus_puts_one_claim_launch_per_request_in_calls_of_ten() {
    use nodewright_aws::capacity::LaunchBus;
    use nodewright_core::model::claim_launch::ClaimLaunchRequest;
    let clients = support::clients().await;
    let events = aws_sdk_eventbridge::Client::new(&clients.sdk);
    let bus = support::unique("launches");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let requests: Vec<ClaimLaunchRequest> = (0..12)
        .map(|i| ClaimLaunchRequest::new("demo", &format!("nc-{i:016x}"), 1_795_255_200_000 + i))
        .collect();
    let put = LaunchBus::new(events.clone(), &bus).put(&requests).await.unwrap();
    let want: Vec<String> = requests.iter().map(|r| r.claim.clone()).collect();
    assert_eq!(put, want);

    let missing = LaunchBus::new(events, support::unique("no-such-bus"))
        .put(&requests[..1])
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, nodewright_core::ports::AwsError::Aws { operation: "PutEvents", code, .. } if code == "ResourceNotFoundException"),
        "{missing}"
    );
}
