//! The handlers' state-keeping run on the DynamoDB store (moto), not only on the memory store the
//! handler tests use: the usage reconciler's read, check and conditional correction, as the
//! consolidation function runs them (#19).
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_aws::state::StateStore;
use nodewright_core::Config;
use nodewright_core::ports::state::{Holder, UsageDelta};
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster};
use nodewright_handlers::consolidation::{USAGE_STABLE_MS, usage_of_claims};
use nodewright_handlers::{Action, Deps, Function, Outcome, Settings};

/// 2026-11-21T10:00:00Z.
const NOW: i64 = 1_795_255_200_000;

const POOLS: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [m]}
  limits: {cpu: "64"}
  disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 1h}
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiFamily: AL2023
  amiSelectorTerms: [{id: ami-0123456789abcdef0}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  role: KarpenterNodeRole-demo
"#;

fn scheduled(at: i64) -> nodewright_handlers::Parsed {
    let event = serde_json::json!({
        "version": "0",
        "id": format!("tick-{at}"),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": nodewright_core::time::format_rfc3339(at),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/nodewright-consolidation"],
        "detail": {}
    });
    nodewright_handlers::event::parse_value(&event).unwrap()
}

/// A release applied twice (its response lost, the call retried) takes DynamoDB's counters below
/// zero; the consolidation function's reconciler sees the difference from the live claims stay
/// for three minutes and writes the claims' sum back, conditional on the counters' version.
#[tokio::test]
async fn the_reconciler_corrects_dynamodb_counters_taken_below_zero() {
    let clients = support::clients().await;
    let store: StateStore = support::store(&clients, "reconciler").await;
    let (config, _) = Config::parse_strict(POOLS, "test").unwrap();
    let settings = Settings::new(store.cluster(), "us-east-1", config).unwrap();
    let deps = Deps {
        capacity: MemoryCapacity::new(store.cluster()),
        state: store.clone(),
        cluster: Some(MemoryCluster::new()),
        settings,
        daemonsets: Default::default(),
        consolidated: Default::default(),
    };
    let mut pods = Vec::new();
    for i in 0..3 {
        let mut p = nodewright_core::Pod::new(&format!("web-{i}"), 1500, 3 << 30);
        p.uid = format!("u-web-{i}");
        p.normalize();
        pods.push(p);
    }
    let mut out = Outcome::new("pod-pending", "batch-1");
    nodewright_handlers::provision::provision(&deps, pods, &Holder::Invocation("batch-1".into()), &[], NOW, &mut out)
        .await
        .unwrap();
    assert!(
        out.actions.iter().any(|a| matches!(a, Action::Launched { .. })),
        "{out:#?}"
    );
    let types = &deps.settings.pools().instance_types;
    let truth = usage_of_claims(&store.claims().await.unwrap(), "general", types).unwrap();
    assert!(truth.nodes >= 1);
    assert_eq!(store.pool_usage("general").await.unwrap(), truth, "charged as decided");

    let all = UsageDelta {
        cpu_milli: truth.cpu_milli,
        memory_bytes: truth.memory_bytes,
        gpus: truth.gpus,
        nodes: truth.nodes,
    };
    store.release_usage("general", &all, true).await.unwrap();
    store.release_usage("general", &all, true).await.unwrap();
    let snapshot = store.usage_snapshot("general").await.unwrap();
    assert!(snapshot.negative, "{snapshot:?}");

    let t0 = NOW + 60_000;
    let first = nodewright_handlers::handle(Function::Consolidation, &deps, scheduled(t0), t0)
        .await
        .unwrap();
    assert!(
        !first.actions.iter().any(|a| matches!(a, Action::UsageCorrected { .. })),
        "not before the difference has stayed: {first:#?}"
    );
    let t1 = t0 + USAGE_STABLE_MS;
    let second = nodewright_handlers::handle(Function::Consolidation, &deps, scheduled(t1), t1)
        .await
        .unwrap();
    assert!(
        second
            .actions
            .iter()
            .any(|a| matches!(a, Action::UsageCorrected { .. })),
        "{second:#?}"
    );
    assert_eq!(store.pool_usage("general").await.unwrap(), truth);
    assert!(!store.usage_snapshot("general").await.unwrap().negative);
}

/// Live prices through the real refresh code: the Pricing API (GetProducts, a real-shaped price
/// list) and DescribeSpotPriceHistory served by the SDK's mock layer, the sheet stored in DynamoDB
/// (moto) by the scheduled function's refresh and read back by every function's load, which then
/// plans at it.
#[tokio::test]
async fn live_prices_are_refreshed_into_dynamodb_and_planned_at() {
    use aws_sdk_ec2::operation::describe_spot_price_history::DescribeSpotPriceHistoryOutput;
    use aws_sdk_ec2::types::SpotPrice;
    use aws_sdk_pricing::operation::get_products::GetProductsOutput;
    use aws_smithy_mocks::{mock, mock_client};
    use nodewright_aws::AwsCapacity;
    use nodewright_aws::capacity::{AsgPool, ClusterEndpoint, Fleet};
    use nodewright_core::CapacityType;
    use nodewright_core::ports::state::PriceSheet;

    let clients = support::clients().await;
    let store: StateStore = support::store(&clients, "prices").await;
    assert!(store.prices(NOW).await.unwrap().is_none());

    // A sheet of several chunks round-trips through DynamoDB's 400 KB item limit.
    let mut big = PriceSheet {
        region: "us-east-1".into(),
        refreshed_at: NOW - 2 * 3_600_000,
        ..Default::default()
    };
    for i in 0..8000 {
        big.spot
            .insert((format!("t{i}.large"), "us-east-1a".into()), 0.01 + f64::from(i) / 1e5);
    }
    assert!(big.encode().len() > 2);
    store.put_prices(&big).await.unwrap();
    let read = store.prices(NOW).await.unwrap().expect("stored");
    assert!(
        read == big,
        "{} prices read back as {}",
        big.spot.len(),
        read.spot.len()
    );
    let expired = NOW - 2 * 3_600_000 + nodewright_core::ports::state::PRICES_TTL_SECS * 1000;
    assert!(store.prices(expired).await.unwrap().is_none(), "expired");

    let doc = r#"{"product":{"productFamily":"Compute Instance","attributes":{"instanceType":"m5.large","regionCode":"us-east-1","operatingSystem":"Linux"}},"terms":{"OnDemand":{"X.JRTCKXETXF":{"priceDimensions":{"X.JRTCKXETXF.6YS6EN2CT7":{"unit":"Hrs","pricePerUnit":{"USD":"0.0777000000"}}}}}}}"#;
    let products = mock!(aws_sdk_pricing::Client::get_products)
        .then_output(move || GetProductsOutput::builder().price_list(doc).build());
    // One request per 100 types; the m5.large price in the answer to the request that asks for it.
    let history = mock!(aws_sdk_ec2::Client::describe_spot_price_history)
        .sequence()
        .output(|| DescribeSpotPriceHistoryOutput::builder().build())
        .repeatedly()
        .build();
    let m5_history = mock!(aws_sdk_ec2::Client::describe_spot_price_history)
        .match_requests(|r| r.instance_types().iter().any(|t| t.as_str() == "m5.large"))
        .then_output(|| {
            DescribeSpotPriceHistoryOutput::builder()
                .spot_price_history(
                    SpotPrice::builder()
                        .instance_type(aws_sdk_ec2::types::InstanceType::from("m5.large"))
                        .availability_zone("us-east-1a")
                        .spot_price("0.0123")
                        .build(),
                )
                .build()
        });
    // The account's zone IDs, as DescribeAvailabilityZones answers (moto's mapping for us-east-1).
    let zones = mock!(aws_sdk_ec2::Client::describe_availability_zones).then_output(|| {
        use aws_sdk_ec2::operation::describe_availability_zones::DescribeAvailabilityZonesOutput;
        use aws_sdk_ec2::types::AvailabilityZone;
        let zone = |name: &str, id: &str| {
            AvailabilityZone::builder()
                .zone_name(name)
                .zone_id(id)
                .region_name("us-east-1")
                .build()
        };
        DescribeAvailabilityZonesOutput::builder()
            .availability_zones(zone("us-east-1a", "use1-az6"))
            .availability_zones(zone("us-east-1b", "use1-az1"))
            .build()
    });
    let ec2 = mock_client!(
        aws_sdk_ec2,
        aws_smithy_mocks::RuleMode::MatchAny,
        [&m5_history, &zones, &history]
    );
    let (config, _) = Config::parse_strict(POOLS, "test").unwrap();
    let settings = Settings::new(store.cluster(), "us-east-1", config.clone()).unwrap();
    let mut capacity = AwsCapacity::new(
        Fleet::new(ec2, store.cluster()),
        AsgPool::new(clients.autoscaling.clone()),
        store.clone(),
        None,
        None,
        ClusterEndpoint {
            name: store.cluster().into(),
            endpoint: "https://example.eks.amazonaws.com".into(),
            certificate_authority: "LS0t".into(),
            service_cidr: None,
        },
        None,
        config.node_classes.clone(),
        &settings.pools().instance_types,
    );
    capacity.pricing = Some(mock_client!(aws_sdk_pricing, [&products]));
    capacity.region = "us-east-1".into();
    let deps = Deps {
        capacity,
        state: store.clone(),
        cluster: Some(MemoryCluster::new()),
        settings,
        daemonsets: Default::default(),
        consolidated: Default::default(),
    };
    // The stored sheet is two hours old: the scheduled run refreshes it.
    assert!(nodewright_handlers::prices::refresh(&deps, NOW).await);
    let stored = store.prices(NOW).await.unwrap().unwrap();
    assert_eq!(stored.refreshed_at, NOW);
    assert_eq!(stored.on_demand.get("m5.large"), Some(&0.0777));
    assert_eq!(
        stored.spot.get(&("m5.large".into(), "us-east-1a".into())),
        Some(&0.0123)
    );
    assert!(products.num_calls() == 1 && m5_history.num_calls() == 1 && history.num_calls() > 1);
    assert_eq!(stored.zone_ids.get("us-east-1b").map(String::as_str), Some("use1-az1"));

    nodewright_handlers::prices::load(&deps.settings, &deps.state, NOW).await;
    let pools = deps.settings.pools();
    let m5 = pools.type_by_name("m5.large").unwrap();
    let price = |ct: CapacityType, zone: &str| {
        m5.offerings
            .iter()
            .find(|o| o.capacity_type == ct && (zone.is_empty() || o.zone == zone))
            .unwrap()
            .price
    };
    assert_eq!(price(CapacityType::OnDemand, ""), 0.0777);
    assert_eq!(price(CapacityType::Spot, "us-east-1a"), 0.0123);
    // The zone IDs came with the sheet: a pod asking for use1-az1 is planned into us-east-1b.
    let zone_of = |id: &str| {
        m5.offerings
            .iter()
            .find(|o| o.zone_id.as_deref() == Some(id))
            .map(|o| o.zone.clone())
    };
    assert_eq!(zone_of("use1-az1").as_deref(), Some("us-east-1b"));
    // Fresh: the next run neither reads nor refreshes.
    assert!(!nodewright_handlers::prices::refresh(&deps, NOW + 60_000).await);
}
