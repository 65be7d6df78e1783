use super::*;
use crate::labels;
use crate::requirements::Operator;

const SEEDS: &[(&str, &str)] = &[
    (
        "gpu-workloads-nodepool.yaml",
        include_str!("../../../../examples/seeds/gpu-workloads-nodepool.yaml"),
    ),
    (
        "default-provisioner.yaml",
        include_str!("../../../../examples/seeds/default-provisioner.yaml"),
    ),
    (
        "migration-provisioner.yaml",
        include_str!("../../../../examples/seeds/migration-provisioner.yaml"),
    ),
];

#[test]
fn every_seed_validates() {
    for (name, text) in SEEDS {
        let (config, diags) = Config::parse(text, name);
        assert!(diags.errors.is_empty(), "{name}: {:#?}", diags.errors);
        assert!(!config.unwrap().node_pools.is_empty(), "{name}");
    }
}

#[test]
fn provisioner_converts_with_warnings() {
    let (config, diags) = Config::parse(SEEDS[1].1, "p.yaml");
    let config = config.unwrap();
    let pool = config.pool("default").unwrap();
    assert_eq!(pool.limits.resources.cpu_milli(), 1_000_000);
    assert_eq!(pool.expire_after_secs, Some(604_800));
    assert_eq!(
        pool.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
    assert_eq!(pool.disruption.consolidate_after_secs, Some(30));
    assert_eq!(pool.requirements[3].operator, Operator::Gt);
    let class = &config.node_classes[0];
    assert_eq!(
        class.subnet_selector_terms[0].tags["karpenter.sh/discovery"],
        "datamigrate-ai-dev-eks"
    );
    assert_eq!(class.block_device_mappings[0].volume_size_gib, Some(50));
    assert!(
        diags
            .warnings
            .iter()
            .any(|w| w.contains("v1alpha5 Provisioner converted"))
    );
    assert!(diags.warnings.iter().any(|w| w.contains("ttlSecondsAfterEmpty")));
}

const BROKEN: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: broken}
spec:
  weight: 500
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot, cheap]}
        - {key: karpenter.k8s.aws/instance-family, operator: Inn, values: [m5]}
        - {key: karpenter.k8s.aws/instance-cpu, operator: Gt, values: ["four"]}
        - {key: node.kubernetes.io/instance-type, operator: Exists, minValues: 80}
      taints:
        - {key: dedicated, effect: Sometimes}
      expireAfter: 30d
      colour: blue
  limits: {cpu: lots}
  disruption:
    consolidationPolicy: Aggressive
    budgets:
      - nodes: "110%"
      - nodes: "1"
        schedule: "0 25 * * *"
        duration: 1h
"#;

#[test]
fn broken_nodepool_lists_every_error_with_its_path() {
    let (config, diags) = Config::parse(BROKEN, "broken.yaml");
    assert!(config.is_none());
    let expect = [
        "spec.weight: 500 must be an integer from 1 to 100",
        "spec.limits.cpu: invalid quantity \"lots\"",
        "spec.template.spec.requirements[1].values: unknown capacity type \"cheap\"",
        "spec.template.spec.requirements[2].operator: unknown operator \"Inn\"",
        "spec.template.spec.requirements[3]: operator Gt needs an integer value, got \"four\"",
        "spec.template.spec.requirements[4].minValues: 80 must be an integer from 1 to 50",
        "spec.template.spec.taints[0].effect: unknown effect \"Sometimes\"",
        "spec.template.spec.expireAfter: \"30d\": unknown unit \"d\"",
        "spec.disruption.consolidationPolicy: unknown policy \"Aggressive\"",
        "spec.disruption.budgets[0].nodes: \"110%\" must be a count",
        "spec.disruption.budgets[1].schedule: \"0 25 * * *\": hour 25 is outside 0-23",
        "spec.template.spec.colour: unknown field (--allow-unknown-fields",
    ];
    for e in expect {
        assert!(
            diags
                .errors
                .iter()
                .any(|x| x.contains(e) && x.starts_with("broken.yaml: NodePool broken: ")),
            "missing {e:?} in {:#?}",
            diags.errors
        );
    }
    assert_eq!(diags.errors.len(), expect.len(), "{:#?}", diags.errors);
}

/// Karpenter v1 reserves only its own label domains (`karpenter.sh`, and the AWS provider's
/// `karpenter.k8s.aws`) for well-known keys; labels and requirements in the Kubernetes domains
/// are the user's (their nodes get them at registration when the kubelet may not set them).
#[test]
fn only_karpenters_label_domains_are_reserved() {
    let pool = |labels: &str, key: &str| {
        format!(
            "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {{name: p}}\nspec:\n  template:\n    metadata: {{labels: {{{labels}}}}}\n    spec:\n      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}\n      requirements: [{{key: {key}, operator: In, values: [x]}}]\n"
        )
    };
    for (labels, key) in [
        ("kubernetes.io/test: v", "k8s.io/test"),
        ("sub.k8s.io/test: v", "sub.kubernetes.io/test"),
        ("kubernetes.io: v", "team"),
    ] {
        let (config, diags) = Config::parse(&pool(labels, key), "p.yaml");
        assert!(
            config.is_some() && diags.errors.is_empty(),
            "{labels} / {key}: {:#?}",
            diags.errors
        );
    }
    for (labels, key, field) in [
        ("team: a", "karpenter.k8s.aws/custom", "requirements[0].key"),
        ("team: a", "sub.karpenter.sh/custom", "requirements[0].key"),
        ("karpenter.sh/custom: v", "team", "labels.karpenter.sh/custom"),
    ] {
        let (config, diags) = Config::parse(&pool(labels, key), "p.yaml");
        assert!(config.is_none(), "{labels} / {key} was accepted");
        assert!(
            diags.errors.iter().any(|e| e.contains(field)),
            "{field}: {:#?}",
            diags.errors
        );
    }
}

#[test]
fn full_v1_nodepool_and_nodeclass() {
    let text = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  weight: 10
  template:
    metadata: {labels: {team: web}}
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.k8s.aws/instance-family, operator: Exists, minValues: 5}
        - {key: karpenter.k8s.aws/instance-cpu, operator: Lte, values: ["32"]}
      taints: [{key: team, value: web, effect: NoSchedule}]
      startupTaints: [{key: node.cilium.io/agent-not-ready, effect: NoExecute}]
      expireAfter: Never
      terminationGracePeriod: 48h
  limits: {cpu: "1000", memory: 1000Gi, nvidia.com/gpu: 8, nodes: 50}
  disruption:
    consolidationPolicy: WhenEmpty
    consolidateAfter: 5m
    budgets:
      - {nodes: "20%", reasons: [Empty, Drifted]}
      - {nodes: "0", schedule: "0 9 * * mon-fri", duration: 8h}
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: KarpenterNodeRole-demo
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  kubelet: {maxPods: 58}
---
apiVersion: nodewright.io/v1alpha1
kind: AutoScalingPool
metadata: {name: gpu-a10g}
spec:
  autoScalingGroupName: eks-gpu-a10g
  instanceTypes: [g5.xlarge, g5.2xlarge]
  capacityType: on-demand
  minSize: 0
  maxSize: 10
  weight: 50
  template:
    spec:
      taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
"#;
    // Weekday names, as Karpenter's own budget examples write them, read as cron reads them.
    let (config, diags) = Config::parse(text, "f.yaml");
    assert!(diags.errors.is_empty(), "{:#?}", diags.errors);
    let numeric = text.replace("mon-fri", "1-5");
    let (config2, diags2) = Config::parse(&numeric, "f.yaml");
    assert!(diags2.errors.is_empty(), "{:#?}", diags2.errors);
    let (named, c2) = (config.unwrap(), config2.as_ref().unwrap());
    assert_eq!(
        named.pool("general").unwrap().disruption.budgets,
        c2.pool("general")
            .unwrap()
            .disruption
            .budgets
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.schedule = b.schedule.map(|s| s.replace("1-5", "mon-fri"));
                b
            })
            .collect::<Vec<_>>()
    );
    let c = config2.unwrap();
    let p = c.pool("general").unwrap();
    assert_eq!(p.weight, 10);
    assert_eq!(p.requirements[0].min_values, Some(5));
    assert_eq!(p.expire_after_secs, None);
    assert_eq!(p.termination_grace_period_secs, Some(48 * 3600));
    assert_eq!(p.limits.nodes, Some(50));
    assert_eq!(p.limits.resources.get(crate::Resource::NvidiaGpu), 8);
    assert_eq!(p.disruption.budgets[0].nodes.allowed(11), 3, "20% of 11 rounds up");
    assert_eq!(p.startup_taints.len(), 1);
    assert_eq!(c.node_classes[0].kubelet.max_pods, Some(58));
    let asg = c.pool("gpu-a10g").unwrap();
    assert!(
        matches!(&asg.backing, PoolBacking::AutoScalingGroup { group_name, max_size: 10, .. } if group_name == "eks-gpu-a10g")
    );
    assert_eq!(asg.requirements[0].key, labels::INSTANCE_TYPE);
    assert_eq!(asg.limits.nodes, Some(10));
}

#[test]
fn not_yaml_is_one_clear_error() {
    let (c, d) = Config::parse("kind: [unclosed", "bad.yaml");
    assert!(c.is_none());
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].starts_with("bad.yaml:"), "{:?}", d.errors);
}

#[test]
fn node_class_drift_hash_is_stable_and_follows_the_launch_settings() {
    let class = |subnet_tag: &str| {
        let text = format!(
            "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {{name: default}}
spec:
  amiSelectorTerms: [{{alias: al2023@latest}}]
  role: NodeRole
  subnetSelectorTerms: [{{tags: {{karpenter.sh/discovery: {subnet_tag}}}}}]
  securityGroupSelectorTerms: [{{tags: {{karpenter.sh/discovery: demo}}}}]
"
        );
        let (config, _) = Config::parse_strict(&text, "class.yaml").unwrap();
        config.node_class_hashes()
    };
    let a = class("demo");
    assert_eq!(a.len(), 1);
    assert_eq!(a["default"].len(), 16, "{a:?}");
    assert_eq!(a, class("demo"), "the same class hashes the same");
    assert_ne!(a["default"], class("other")["default"], "new subnets drift");
}

/// A release that reads more of the class must not drift every node launched before it: a class
/// that sets none of the new fields hashes as it did (digests taken before the kubelet's eviction,
/// reserved and instance-store settings were read).
#[test]
fn node_class_drift_hash_of_an_unchanged_class_survives_an_upgrade() {
    let text = "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: NodeRole
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  kubelet: {maxPods: 58}
  blockDeviceMappings:
    - {deviceName: /dev/xvda, rootVolume: true, ebs: {volumeSize: 100Gi, volumeType: gp3, encrypted: true}}
";
    let (config, _) = Config::parse_strict(text, "class.yaml").unwrap();
    assert_eq!(config.node_class_hashes()["default"], "92288bb4ab121c83");
}

#[test]
fn node_class_refs_resolve_across_the_files_of_one_call() {
    let pool = |class: &str| {
        format!(
            "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: general}}
spec:
  template:
    spec:
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: {class}}}
"
        )
    };
    let class = "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: NodeRole
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
"
    .to_string();
    let undefined = |d: &Diagnostics| d.warnings.iter().filter(|w| w.contains("is not defined")).count();

    // Alone, the pool's file warns: its class is nowhere.
    let (_, d) = Config::parse(&pool("default"), "pools.yaml");
    assert_eq!(undefined(&d), 1, "{:?}", d.warnings);

    // With the class in another file of the same call: no warning, one merged configuration.
    let files = [
        (pool("default"), "pools.yaml".to_string()),
        (class.clone(), "classes.yaml".to_string()),
    ];
    let (config, d) = Config::parse_all(&files);
    assert_eq!(undefined(&d), 0, "{:?}", d.warnings);
    let config = config.unwrap();
    assert_eq!((config.node_pools.len(), config.node_classes.len()), (1, 1));

    // A name in two files: one definition (the later), and a warning naming both files.
    let later = class.replace("role: NodeRole", "role: LaterRole");
    let files = [
        (pool("default"), "pools.yaml".to_string()),
        (class.clone(), "classes.yaml".to_string()),
        (later.clone(), "more.yaml".to_string()),
    ];
    let (config, d) = Config::parse_all(&files);
    let config = config.unwrap();
    assert_eq!(config.node_classes.len(), 1, "lookups by name must agree");
    assert_eq!(
        config.node_classes[0].role.as_deref(),
        Some("LaterRole"),
        "the later file's wins"
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.starts_with("more.yaml: EC2NodeClass default: also defined in classes.yaml")),
        "{:?}",
        d.warnings
    );

    // A class no file declares still warns, naming the pool's file.
    let files = [
        (pool("gpu"), "pools.yaml".to_string()),
        (class, "classes.yaml".to_string()),
    ];
    let (_, d) = Config::parse_all(&files);
    assert_eq!(undefined(&d), 1, "{:?}", d.warnings);
    assert!(
        d.warnings[0].starts_with("pools.yaml: NodePool general: nodeClassRef \"gpu\""),
        "{:?}",
        d.warnings
    );

    // An error in any file: no configuration, every file's errors.
    let files = [
        (pool("default"), "pools.yaml".to_string()),
        ("kind: [unclosed".to_string(), "bad.yaml".to_string()),
    ];
    let (config, d) = Config::parse_all(&files);
    assert!(config.is_none());
    assert!(d.errors[0].starts_with("bad.yaml:"), "{:?}", d.errors);
}

/// A misspelt field is named with the field it most likely meant; a word near nothing is not. An
/// unknown field is an error, as the API server's strict field validation makes it (a field
/// silently ignored is a setting that does not happen); allowed, it is a warning.
#[test]
fn unknown_fields_suggest_the_field_meant() {
    let text = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: a}
spec:
  template:
    spec:
      requirments: []
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      colour: blue
  disruption: {consolidateafter: 1m}
"#;
    let (config, strict) = Config::parse(text, "f.yaml");
    assert!(config.is_none());
    assert!(
        strict.errors.iter().any(|e| e.contains(
            r#"spec.template.spec.requirments: unknown field; did you mean "requirements"? (--allow-unknown-fields"#
        )),
        "{:#?}",
        strict.errors
    );
    assert_eq!(strict.errors.len(), 3, "{:#?}", strict.errors);
    let (config, d) = Config::parse_all_with(&[(text.to_string(), "f.yaml".into())], UnknownFields::Warn);
    assert!(config.is_some(), "{:?}", d.errors);
    let says = |needle: &str| d.warnings.iter().any(|w| w.contains(needle));
    assert!(
        says(r#"spec.template.spec.requirments: unknown field (ignored); did you mean "requirements"?"#),
        "{:#?}",
        d.warnings
    );
    assert!(
        says(r#"spec.disruption.consolidateafter: unknown field (ignored); did you mean "consolidateAfter"?"#),
        "{:#?}",
        d.warnings
    );
    assert!(
        says("spec.template.spec.colour: unknown field (ignored)") && !says("colour: unknown field (ignored); did")
    );
}

/// An EC2NodeClass document: the required fields, then `extra` (YAML lines under `spec:`, indented
/// two spaces).
fn class_text(extra: &str) -> String {
    format!(
        "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {{name: default}}
spec:
  amiSelectorTerms: [{{alias: al2023@latest}}]
  role: NodeRole
  subnetSelectorTerms: [{{tags: {{karpenter.sh/discovery: demo}}}}]
  securityGroupSelectorTerms: [{{tags: {{karpenter.sh/discovery: demo}}}}]
{extra}"
    )
}

/// The class [`class_text`] writes, which must be valid.
fn class_with(extra: &str) -> Ec2NodeClass {
    let (config, d) = Config::parse(&class_text(extra), "class.yaml");
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    config.unwrap().node_classes.remove(0)
}

/// The errors of the class [`class_text`] writes, one per line.
fn class_errors(extra: &str) -> String {
    Config::parse(&class_text(extra), "c.yaml").1.errors.join("\n")
}

fn catalogue_type(name: &str) -> crate::InstanceType {
    crate::Catalogue::embedded()
        .instance_types("us-east-1", &crate::catalogue::OverheadConfig::default())
        .into_iter()
        .find(|t| t.name == name)
        .unwrap()
}

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;

/// Upstream: instancetype suite_test.go "Kube Reserved Resources / should use defaults when no
/// kubelet is specified" (m5.xlarge: 80m CPU, 893Mi memory = 11 x 58 pods + 255, 1Gi storage).
#[test]
fn a_class_without_kubelet_settings_keeps_the_catalogues_allocatable() {
    let class = class_with("");
    let o = class.overhead();
    assert_eq!(o, crate::catalogue::OverheadConfig::default());
    let t = catalogue_type("m5.xlarge");
    let (cap, alloc) = t.resources_under(&o);
    assert_eq!((cap, alloc.clone()), (t.capacity.clone(), t.allocatable.clone()));
    assert_eq!(alloc.cpu_milli(), 4000 - 80);
    assert_eq!(alloc.memory(), t.capacity.memory() - 893 * MI - 100 * MI);
}

/// Upstream: "should override kube reserved when specified" and "should override system reserved
/// cpus when specified": each named resource replaces the computed reservation; system-reserved is
/// kept back on top.
#[test]
fn kube_and_system_reserved_are_kept_back_as_the_class_names_them() {
    let class = class_with(
        "  kubelet:
    kubeReserved: {cpu: \"2\", memory: 10Gi, ephemeral-storage: 2Gi}
    systemReserved: {cpu: \"1\", memory: 20Gi, ephemeral-storage: 1Gi}
",
    );
    let t = catalogue_type("m5.8xlarge");
    let (cap, alloc) = t.resources_under(&class.overhead());
    assert_eq!(alloc.cpu_milli(), 32_000 - 2_000 - 1_000);
    assert_eq!(alloc.memory(), cap.memory() - 10 * GI - 20 * GI - 100 * MI);
    assert_eq!(
        alloc.get(crate::Resource::EphemeralStorage),
        20 * GI - 2 * GI - GI - 2 * GI,
        "20Gi root, 10% nodefs eviction"
    );
    // Only memory named: CPU keeps the computed reservation (m5.8xlarge: 32 cores, 150m).
    let memory_only = class_with("  kubelet: {kubeReserved: {memory: 1Gi}}\n");
    let (_, alloc) = t.resources_under(&memory_only.overhead());
    assert_eq!(alloc.cpu_milli(), 32_000 - 150);
    assert_eq!(alloc.memory(), cap.memory() - GI - 100 * MI);
}

/// Upstream: "Eviction Hard": a quantity, a percentage of memory, 100% as disabled, evictionSoft
/// alone leaving the default, and only evictionHard counted when both are set.
#[test]
fn hard_eviction_thresholds_change_allocatable_and_soft_ones_do_not() {
    let t = catalogue_type("m5.xlarge");
    let memory = |extra: &str| {
        let (cap, alloc) = t.resources_under(&class_with(extra).overhead());
        cap.memory() - 893 * MI - alloc.memory()
    };
    let cap = t.capacity.memory();
    assert_eq!(
        memory("  kubelet: {evictionHard: {memory.available: 500Mi}}\n"),
        500 * MI
    );
    assert_eq!(
        memory("  kubelet: {evictionHard: {memory.available: 10%}}\n"),
        (cap as f64 / 10.0).ceil() as u64
    );
    assert_eq!(memory("  kubelet: {evictionHard: {memory.available: 100%}}\n"), 0);
    assert_eq!(
        memory("  kubelet: {evictionSoft: {memory.available: 1Gi}, evictionSoftGracePeriod: {memory.available: 1m}}\n"),
        100 * MI
    );
    assert_eq!(
        memory(
            "  kubelet: {evictionHard: {memory.available: 5%}, evictionSoft: {memory.available: 10%}, evictionSoftGracePeriod: {memory.available: 1m}}\n"
        ),
        (cap as f64 * 5.0 / 100.0).ceil() as u64
    );
    let nodefs = class_with("  kubelet: {evictionHard: {nodefs.available: 1Gi}}\n");
    let (_, alloc) = t.resources_under(&nodefs.overhead());
    assert_eq!(alloc.get(crate::Resource::EphemeralStorage), 20 * GI - GI - GI);
}

/// Upstream: "should override max-pods value", "should take the minimum of pods-per-core and
/// max-pods" (over every type of the catalogue) and "should ignore pods-per-core when using
/// Bottlerocket AMI". Kube-reserved memory follows the pods the node will hold.
#[test]
fn max_pods_and_pods_per_core_set_the_pods_and_the_reserved_memory() {
    let class = class_with("  kubelet: {maxPods: 20, podsPerCore: 4}\n");
    let o = class.overhead();
    for t in crate::Catalogue::embedded().instance_types("us-east-1", &crate::catalogue::OverheadConfig::default()) {
        let (cap, alloc) = t.resources_under(&o);
        let want = 20.min(4 * u64::from(t.hardware.vcpu));
        assert_eq!(cap.get(crate::Resource::Pods), want, "{}", t.name);
        assert_eq!(alloc.get(crate::Resource::Pods), want, "{}", t.name);
    }
    let t = catalogue_type("m5.xlarge");
    let (cap, alloc) = t.resources_under(&class_with("  kubelet: {maxPods: 10}\n").overhead());
    assert_eq!(alloc.memory(), cap.memory() - (11 * 10 + 255) * MI - 100 * MI);
    let bottlerocket = class_with("  kubelet: {podsPerCore: 1}\n").clone();
    let mut bottlerocket = bottlerocket;
    bottlerocket.ami_selector_terms[0].alias = Some("bottlerocket@latest".into());
    let (cap, _) = t.resources_under(&bottlerocket.overhead());
    assert_eq!(
        cap.get(crate::Resource::Pods),
        58,
        "the ENI formula, pods per core ignored"
    );
}

/// Upstream: "should default to EBS defaults when volumeSize is not defined in blockDeviceMappings
/// for AL2023 / Bottlerocket Root volume" and the instance-store cases ("should launch instances w/
/// instance storage for ephemeral storage resource requests when disks are mounted for
/// ephemeral-storage"): the root volume marked `rootVolume`, else the family's data device, else
/// 20Gi; under RAID0 the instance store, where the type has one.
#[test]
fn ephemeral_storage_comes_from_the_volume_the_kubelet_uses() {
    let storage = |class: &Ec2NodeClass, ty: &str| {
        catalogue_type(ty)
            .resources_under(&class.overhead())
            .0
            .get(crate::Resource::EphemeralStorage)
    };
    assert_eq!(storage(&class_with(""), "m5.xlarge"), 20 * GI);
    let root = class_with(
        "  blockDeviceMappings:
    - {deviceName: /dev/sdb, ebs: {volumeSize: 500Gi}}
    - {deviceName: /dev/xvda, rootVolume: true, ebs: {volumeSize: 100Gi}}
",
    );
    assert_eq!(storage(&root, "m5.xlarge"), 100 * GI);
    let xvda = class_with("  blockDeviceMappings: [{deviceName: /dev/xvda, ebs: {volumeSize: 50Gi}}]\n");
    assert_eq!(storage(&xvda, "m5.xlarge"), 50 * GI);
    let mut bottlerocket = class_with(
        "  blockDeviceMappings:
    - {deviceName: /dev/xvda, ebs: {volumeSize: 4Gi}}
    - {deviceName: /dev/xvdb, ebs: {volumeSize: 60Gi}}
",
    );
    bottlerocket.ami_selector_terms[0].alias = Some("bottlerocket@latest".into());
    assert_eq!(
        storage(&bottlerocket, "m5.xlarge"),
        60 * GI,
        "Bottlerocket's data volume"
    );
    let raid0 = class_with("  instanceStorePolicy: RAID0\n");
    assert_eq!(
        storage(&raid0, "m5d.xlarge"),
        150 * 1_000_000_000,
        "the NVMe instance store"
    );
    assert_eq!(
        storage(&raid0, "m5.xlarge"),
        20 * GI,
        "no instance store: the root volume"
    );
}

/// Every kubelet field is read; what the kubelet would refuse, Karpenter's CRD refuses, and so do
/// we, naming the field.
#[test]
fn bad_kubelet_settings_are_refused_by_field() {
    let errors = class_errors;
    for (extra, want) in [
        (
            "  kubelet: {kubeReserved: {gpu: \"1\"}}\n",
            "spec.kubelet.kubeReserved.gpu: unknown",
        ),
        (
            "  kubelet: {systemReserved: {memory: lots}}\n",
            "spec.kubelet.systemReserved.memory",
        ),
        (
            "  kubelet: {evictionHard: {memory.available: 120%}}\n",
            "spec.kubelet.evictionHard.memory.available",
        ),
        (
            "  kubelet: {evictionHard: {memory.free: 1Gi}}\n",
            "spec.kubelet.evictionHard.memory.free: unknown",
        ),
        (
            "  kubelet: {evictionSoft: {memory.available: 1Gi}}\n",
            "spec.kubelet.evictionSoft.memory.available: has no matching evictionSoftGracePeriod",
        ),
        (
            "  kubelet: {imageGCHighThresholdPercent: 50, imageGCLowThresholdPercent: 60}\n",
            "spec.kubelet.imageGCHighThresholdPercent",
        ),
        ("  kubelet: {clusterDNS: [not-an-ip]}\n", "spec.kubelet.clusterDNS[0]"),
        ("  kubelet: {podsPerCore: -1}\n", "spec.kubelet.podsPerCore"),
        ("  kubelet: {maxPods: 0}\n", "spec.kubelet.maxPods"),
        ("  instanceStorePolicy: RAID1\n", "spec.instanceStorePolicy"),
    ] {
        let e = errors(extra);
        assert!(e.contains(want), "{extra}: {e}");
    }
    let all = class_with(
        "  kubelet:
    evictionSoft: {memory.available: 500Mi}
    evictionSoftGracePeriod: {memory.available: 1m30s}
    evictionMaxPodGracePeriod: 60
    imageGCHighThresholdPercent: 85
    imageGCLowThresholdPercent: 80
    cpuCFSQuota: false
    clusterDNS: [10.100.0.10]
",
    );
    assert_eq!(all.kubelet.eviction_soft_grace_period["memory.available"], "1m30s");
    assert_eq!(all.kubelet.cluster_dns, vec!["10.100.0.10".to_string()]);
    assert_eq!(all.kubelet.cpu_cfs_quota, Some(false));
}

/// The class's settings reach its pools through every way a configuration is assembled.
#[test]
fn pools_take_their_own_classes_settings() {
    let text = "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: dense}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: dense}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: plain}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: plain}
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: dense}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: NodeRole
  subnetSelectorTerms: [{tags: {a: b}}]
  securityGroupSelectorTerms: [{tags: {a: b}}]
  kubelet: {maxPods: 10}
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: plain}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: NodeRole
  subnetSelectorTerms: [{tags: {a: b}}]
  securityGroupSelectorTerms: [{tags: {a: b}}]
";
    let (config, _) = Config::parse_strict(text, "f.yaml").unwrap();
    assert_eq!(
        config.pool("dense").unwrap().node_overhead.as_ref().unwrap().max_pods,
        Some(10)
    );
    assert!(config.pool("plain").unwrap().node_overhead.is_none());
    // Split over two files, the class in the other one.
    let (pools, classes) = text.split_at(text.find("---\napiVersion: karpenter.k8s.aws/v1").unwrap());
    let (config, d) = Config::parse_all(&[
        (pools.to_string(), "pools.yaml".into()),
        (classes.to_string(), "classes.yaml".into()),
    ]);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(
        config
            .unwrap()
            .pool("dense")
            .unwrap()
            .node_overhead
            .as_ref()
            .unwrap()
            .max_pods,
        Some(10)
    );
}

/// Every EBS field Karpenter v1 has is read (before, `kmsKeyID`, `iops`, `throughput` and
/// `snapshotID` were dropped without a word); what EBS would refuse is refused, naming the field.
#[test]
fn block_device_mappings_keep_every_ebs_field_and_refuse_what_ebs_would() {
    let class = class_with(
        "  blockDeviceMappings:
    - deviceName: /dev/xvda
      rootVolume: true
      ebs: {volumeSize: 100Gi, volumeType: gp3, encrypted: true, kmsKeyID: alias/nodes, iops: 4000, throughput: 250, deleteOnTermination: false}
    - deviceName: /dev/xvdc
      ebs: {snapshotID: snap-0123456789abcdef0, volumeInitializationRate: 200, volumeType: io2, iops: 10000}
",
    );
    let [root, data] = &class.block_device_mappings[..] else {
        panic!("two mappings")
    };
    assert_eq!(root.kms_key_id.as_deref(), Some("alias/nodes"));
    assert_eq!(
        (root.iops, root.throughput, root.delete_on_termination),
        (Some(4000), Some(250), Some(false))
    );
    assert_eq!(data.snapshot_id.as_deref(), Some("snap-0123456789abcdef0"));
    assert_eq!(data.volume_initialization_rate, Some(200));
    let errors = |ebs: &str| {
        class_errors(&format!(
            "  blockDeviceMappings: [{{deviceName: /dev/xvda, ebs: {ebs}}}]\n"
        ))
    };
    for (ebs, want) in [
        (
            "{volumeType: gp2, throughput: 300}",
            "ebs.throughput: is only for gp3 volumes",
        ),
        (
            "{volumeType: gp2, iops: 3000}",
            "ebs.iops: is only for io1, io2, gp3 volumes",
        ),
        (
            "{throughput: 5000}",
            "ebs.throughput: 5000 must be an integer from 125 to 2000",
        ),
        ("{volumeType: gp9}", "ebs.volumeType: \"gp9\" is not an EBS volume type"),
        ("{volumeSize: 100Ti}", "ebs.volumeSize"),
        ("{snapshotID: vol-1}", "ebs.snapshotID"),
        (
            "{volumeInitializationRate: 200}",
            "applies only to a volume created from a snapshot",
        ),
        ("{encrypted: maybe}", "ebs.encrypted"),
    ] {
        let e = errors(ebs);
        assert!(e.contains(want), "{ebs}: {e}");
    }
    // A misspelt field is named with the one meant.
    let errors = errors("{kmsKeyId: alias/x}");
    assert!(
        errors.contains("ebs.kmsKeyId: unknown field; did you mean \"kmsKeyID\"?"),
        "{errors}"
    );
}

/// A v1beta1 NodePool and EC2NodeClass as Karpenter v0.3x documented them convert as Karpenter's
/// v1 migration maps them, instead of being half-read as v1 (a v1beta1 nodeClassRef has
/// `apiVersion`, not `group`; `WhenUnderutilized`; `expireAfter` under disruption; `amiFamily`
/// without `amiSelectorTerms`).
#[test]
fn v1beta1_objects_convert_as_karpenters_migration_maps_them() {
    let text = "apiVersion: karpenter.sh/v1beta1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}
      nodeClassRef: {apiVersion: karpenter.k8s.aws/v1beta1, kind: EC2NodeClass, name: default}
  limits: {cpu: 1000}
  disruption:
    consolidationPolicy: WhenUnderutilized
    expireAfter: 720h
---
apiVersion: karpenter.k8s.aws/v1beta1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiFamily: Bottlerocket
  role: KarpenterNodeRole-demo
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
";
    let (config, d) = Config::parse(text, "v1beta1.yaml");
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let config = config.unwrap();
    let pool = config.pool("default").unwrap();
    assert_eq!(
        pool.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
    assert_eq!(pool.expire_after_secs, Some(720 * 3600));
    assert_eq!(pool.node_class.as_deref(), Some("default"));
    let class = &config.node_classes[0];
    assert_eq!(
        class.ami_selector_terms[0].alias.as_deref(),
        Some("bottlerocket@latest")
    );
    assert!(class.is_bottlerocket());
    let warnings = d.warnings.join("\n");
    assert!(warnings.contains("v1beta1 NodePool converted"), "{warnings}");
    assert!(!warnings.contains("unknown field"), "{warnings}");

    // Kubelet settings on a v1beta1 NodePool would be dropped: an error saying where they go.
    let with_kubelet = text.replace(
        "      nodeClassRef:",
        "      kubelet: {maxPods: 110}\n      nodeClassRef:",
    );
    let errors = Config::parse(&with_kubelet, "v1beta1.yaml").1.errors.join("\n");
    assert!(
        errors.contains("spec.template.spec.kubelet: v1 keeps kubelet settings in the EC2NodeClass"),
        "{errors}"
    );
    // A family with no v1 alias names the way out.
    let ubuntu = text.replace("amiFamily: Bottlerocket", "amiFamily: Ubuntu");
    let errors = Config::parse(&ubuntu, "v1beta1.yaml").1.errors.join("\n");
    assert!(errors.contains("spec.amiFamily: Ubuntu has no v1 alias"), "{errors}");
}

/// Karpenter's v1alpha5 defaulting (amd64, linux, on-demand, c/m/r newer than generation 2 when
/// nothing names the types) is written out in the converted NodePool: a v1 NodePool has no such
/// defaults and would launch arm64 or any family. A Windows template keeps its family.
#[test]
fn a_converted_provisioner_keeps_the_v1alpha5_defaults() {
    let text = "apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata: {name: bare}
spec:
  providerRef: {name: win}
---
apiVersion: karpenter.k8s.aws/v1alpha1
kind: AWSNodeTemplate
metadata: {name: win}
spec:
  amiFamily: Bottlerocket
  subnetSelector: {karpenter.sh/discovery: demo}
  securityGroupSelector: {karpenter.sh/discovery: demo}
  instanceProfile: KarpenterNodeInstanceProfile
";
    let (config, d) = Config::parse(text, "old.yaml");
    let config = config.unwrap_or_else(|| panic!("{:?}", d.errors));
    let pool = config.pool("bare").unwrap();
    let req = |key: &str| {
        pool.requirements
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.values.clone())
    };
    assert_eq!(req("kubernetes.io/arch"), Some(vec!["amd64".to_string()]));
    assert_eq!(req("kubernetes.io/os"), Some(vec!["linux".to_string()]));
    assert_eq!(req("karpenter.sh/capacity-type"), Some(vec!["on-demand".to_string()]));
    assert_eq!(
        req("karpenter.k8s.aws/instance-category"),
        Some(vec!["c".to_string(), "m".to_string(), "r".to_string()])
    );
    assert!(
        d.warnings.iter().any(|w| w.contains("v1alpha5 defaults written out")),
        "{:?}",
        d.warnings
    );
    assert_eq!(
        config.node_classes[0].ami_selector_terms[0].alias.as_deref(),
        Some("bottlerocket@latest"),
        "not al2@latest"
    );

    // The old default (no amiFamily) is AL2, as Karpenter's migration maps it, with its end of life.
    let bare = text.replace("  amiFamily: Bottlerocket\n", "");
    let (config, d) = Config::parse(&bare, "old.yaml");
    let config = config.unwrap_or_else(|| panic!("{:?}", d.errors));
    assert_eq!(
        config.node_classes[0].ami_selector_terms[0].alias.as_deref(),
        Some("al2@latest")
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("spec.amiFamily: not set: the old default, AL2") && w.contains("end of life")),
        "{:?}",
        d.warnings
    );
    // A family the user wrote is honoured or refused, never swapped.
    for (family, says) in [
        ("Windows2022", "Windows nodes are not supported"),
        ("Custom", "a Custom family needs amiSelector"),
    ] {
        let text = text.replace("amiFamily: Bottlerocket", &format!("amiFamily: {family}"));
        let (config, d) = Config::parse(&text, "old.yaml");
        assert!(config.is_none(), "{family}");
        assert!(
            d.errors
                .iter()
                .any(|e| e.contains("AWSNodeTemplate win: spec.amiFamily") && e.contains(says)),
            "{family}: {:?}",
            d.errors
        );
    }
}
