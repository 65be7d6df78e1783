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
    assert!(
        diags
            .warnings
            .iter()
            .any(|w| w.contains("spec.template.spec.colour: unknown field"))
    );
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

/// A misspelt field is named with the field it most likely meant; a word near nothing is not.
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
    let (_, d) = Config::parse(text, "f.yaml");
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
