//! Faults moto cannot produce, injected with aws-smithy-mocks (the SDK's own test utility) on the
//! EC2 client: insufficient capacity in the CreateFleet Errors list and as a call error, and
//! throttling. The ICE cache these tests check lives in DynamoDB on moto server.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::operation::create_fleet::{CreateFleetError, CreateFleetInput, CreateFleetOutput};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::types::{
    CreateFleetError as FleetErrorEntry, CreateFleetInstance, DefaultTargetCapacityType, FleetLaunchTemplateOverrides,
    InstanceType, LaunchTemplateAndOverridesResponse,
};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;
use nodewright_aws::capacity::{Fleet, LaunchOffering, LaunchRequest};
use nodewright_core::CapacityType;

const NOW: i64 = 1_790_000_000_000;

fn offering(instance_type: &str, zone: &str, capacity_type: CapacityType, price: f64) -> LaunchOffering {
    LaunchOffering {
        instance_type: instance_type.into(),
        zone: zone.into(),
        subnet_id: format!("subnet-{zone}"),
        capacity_type,
        price,
    }
}

fn request(offerings: Vec<LaunchOffering>) -> LaunchRequest {
    LaunchRequest {
        claim_id: "claim-ice".into(),
        pool: "general".into(),
        launch_template_id: "lt-0123".into(),
        offerings,
        tags: BTreeMap::new(),
    }
}

fn no_instances() -> Rule {
    mock!(Client::describe_instances).then_output(|| DescribeInstancesOutput::builder().build())
}

fn is_spot(input: &CreateFleetInput) -> bool {
    input
        .target_capacity_specification()
        .and_then(|t| t.default_target_capacity_type())
        == Some(&DefaultTargetCapacityType::Spot)
}

/// The first override of a request (the cheapest offering in it).
fn first_override(input: &CreateFleetInput) -> (String, String) {
    let o = &input.launch_template_configs()[0].overrides()[0];
    (
        o.instance_type().unwrap().as_str().to_string(),
        o.availability_zone().unwrap_or_default().to_string(),
    )
}

/// The offering a fleet response (instance or error) names.
fn offering_response(instance_type: &str, zone: &str) -> LaunchTemplateAndOverridesResponse {
    LaunchTemplateAndOverridesResponse::builder()
        .overrides(
            FleetLaunchTemplateOverrides::builder()
                .instance_type(InstanceType::from(instance_type))
                .availability_zone(zone)
                .build(),
        )
        .build()
}

fn launched(instance_type: &str, zone: &str) -> CreateFleetOutput {
    CreateFleetOutput::builder()
        .instances(
            CreateFleetInstance::builder()
                .instance_ids("i-0fault")
                .instance_type(InstanceType::from(instance_type))
                .launch_template_and_overrides(offering_response(instance_type, zone))
                .build(),
        )
        .build()
}

/// CreateFleet whose spot requests fail with the call error `code` (naming no offering) and whose
/// on-demand requests launch their first override.
fn spot_fails_with(
    code: &'static str,
    message: &'static str,
) -> impl Fn(&CreateFleetInput) -> MockResponse<CreateFleetOutput, CreateFleetError> + Send + Sync + 'static {
    move |input| {
        if is_spot(input) {
            MockResponse::Error(CreateFleetError::generic(
                ErrorMetadata::builder().code(code).message(message).build(),
            ))
        } else {
            let (itype, zone) = first_override(input);
            MockResponse::Output(launched(&itype, &zone))
        }
    }
}

fn ice_entry(instance_type: &str, zone: &str) -> FleetErrorEntry {
    FleetErrorEntry::builder()
        .error_code("InsufficientInstanceCapacity")
        .error_message("We currently do not have sufficient capacity in the Availability Zone you requested.")
        .launch_template_and_overrides(offering_response(instance_type, zone))
        .build()
}

#[tokio::test]
async fn ice_on_the_cheapest_spot_offering_uses_the_next_and_reports_the_first() {
    let clients = support::clients().await;
    let store = support::store(&clients, "ice-one").await;
    // Fault: the cheapest spot offering (m5.large in us-east-1a) has no capacity, as a fleet Errors entry.
    let create_fleet = mock!(Client::create_fleet).then_compute_output(|input| {
        let (itype, zone) = first_override(input);
        if is_spot(input) && itype == "m5.large" && zone == "us-east-1a" {
            CreateFleetOutput::builder().errors(ice_entry(&itype, &zone)).build()
        } else {
            launched(&itype, &zone)
        }
    });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&no_instances(), &create_fleet]);
    let fleet = Fleet::new(ec2, store.cluster());
    let offerings = vec![
        offering("m5.large", "us-east-1a", CapacityType::Spot, 0.030),
        offering("m5a.large", "us-east-1a", CapacityType::Spot, 0.031),
        offering("m5.large", "us-east-1a", CapacityType::OnDemand, 0.096),
    ];
    let outcome = fleet.launch(&request(offerings.clone())).await.unwrap();
    assert_eq!(outcome.instance_type, "m5a.large", "the next offering was used");
    assert_eq!(outcome.capacity_type, CapacityType::Spot);
    assert!(!outcome.fell_back_to_on_demand);
    assert_eq!(outcome.price, Some(0.031));
    assert_eq!(
        outcome.unavailable,
        vec![(
            CapacityType::Spot,
            "m5.large".into(),
            "us-east-1a".into(),
            "InsufficientInstanceCapacity".into()
        )]
    );
    assert_eq!(create_fleet.num_calls(), 2);
    // The adapter keeps no cache of its own (the handler records what it reports, and leaves
    // cached offerings out of the next launch: handlers' tests): nothing was written.
    assert!(store.unavailable_offerings(NOW + 60_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn ice_on_every_spot_offering_falls_back_to_on_demand_when_the_pool_allows_it() {
    let clients = support::clients().await;
    let store = support::store(&clients, "ice-all").await;
    // Fault: every spot request fails as a call error (no offering named).
    let create_fleet = mock!(Client::create_fleet)
        .then_compute_response(spot_fails_with("InsufficientInstanceCapacity", "no spot capacity"));
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&no_instances(), &create_fleet]);
    let fleet = Fleet::new(ec2, store.cluster());
    let allowed = vec![
        offering("m5.large", "us-east-1a", CapacityType::Spot, 0.030),
        offering("m5.large", "us-east-1b", CapacityType::Spot, 0.032),
        offering("m5.large", "us-east-1a", CapacityType::OnDemand, 0.096),
    ];
    let outcome = fleet.launch(&request(allowed)).await.unwrap();
    assert_eq!(outcome.capacity_type, CapacityType::OnDemand);
    assert!(outcome.fell_back_to_on_demand, "the outcome says what happened");
    assert_eq!(
        outcome.unavailable.len(),
        2,
        "both spot offerings were marked: {:?}",
        outcome.unavailable
    );

    // A spot-only pool gets a clear failure naming the capacity error and the offerings.
    let spot_only = vec![
        offering("m5.large", "us-east-1a", CapacityType::Spot, 0.030),
        offering("c5.large", "us-east-1a", CapacityType::Spot, 0.031),
    ];
    let err = fleet.launch(&request(spot_only)).await.unwrap_err();
    match &err {
        nodewright_aws::Error::NoCapacity {
            claim,
            tried,
            unavailable,
        } => {
            assert_eq!(claim, "claim-ice");
            assert!(
                tried.iter().all(|t| t.contains("InsufficientInstanceCapacity")),
                "{tried:?}"
            );
            assert_eq!(unavailable.len(), 2, "{unavailable:?}");
        }
        other => panic!("expected NoCapacity, got {other}"),
    }
    assert!(err.to_string().contains("no capacity for claim claim-ice"));
}

fn throttled() -> aws_smithy_runtime_api::http::Response {
    aws_smithy_runtime_api::http::Response::new(
        aws_smithy_runtime_api::http::StatusCode::try_from(503).unwrap(),
        aws_smithy_types::body::SdkBody::from(
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>\
             </Error></Errors><RequestID>f00</RequestID></Response>",
        ),
    )
}

fn retrying(config: aws_sdk_ec2::config::Builder) -> aws_sdk_ec2::config::Builder {
    config
        .retry_config(
            aws_sdk_ec2::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(5))
                .with_max_backoff(Duration::from_millis(20)),
        )
        .sleep_impl(aws_sdk_ec2::config::SharedAsyncSleep::new(
            aws_smithy_async::rt::sleep::TokioSleep::new(),
        ))
}

#[tokio::test]
async fn throttling_is_retried_then_surfaced() {
    let clients = support::clients().await;
    let store = support::store(&clients, "throttle").await;
    let offerings = vec![offering("m5.large", "us-east-1a", CapacityType::OnDemand, 0.096)];

    // Two throttled responses, then success: the SDK's retry absorbs them.
    let flaky = mock!(Client::create_fleet)
        .sequence()
        .http_response(throttled)
        .times(2)
        .output(|| launched("m5.large", "us-east-1a"))
        .build();
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&no_instances(), &flaky], retrying);
    let outcome = Fleet::new(ec2, store.cluster())
        .launch(&request(offerings.clone()))
        .await
        .unwrap();
    assert_eq!(outcome.instance_id, "i-0fault");
    assert_eq!(flaky.num_calls(), 3);

    // Always throttled: surfaced after the bounded attempts, with the AWS code.
    let stuck = mock!(Client::create_fleet)
        .sequence()
        .http_response(throttled)
        .repeatedly()
        .build();
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&no_instances(), &stuck], retrying);
    let err = Fleet::new(ec2, store.cluster())
        .launch(&request(offerings))
        .await
        .unwrap_err();
    assert_eq!(err.aws_code(), Some("RequestLimitExceeded"), "{err}");
    assert_eq!(stuck.num_calls(), 3, "bounded: max_attempts");
    assert!(
        !matches!(err, nodewright_aws::Error::NoCapacity { .. }),
        "throttling is not a capacity error"
    );
}

/// Prices: a reachable EC2 refreshes spot prices (mocked DescribeSpotPriceHistory); an unreachable
/// one leaves the embedded catalogue's prices in place, silently.
#[tokio::test]
async fn spot_prices_refresh_when_reachable_and_fall_back_to_the_catalogue() {
    use aws_sdk_ec2::operation::describe_spot_price_history::DescribeSpotPriceHistoryOutput;
    use aws_sdk_ec2::types::SpotPrice;
    use nodewright_aws::capacity::PriceBook;
    use nodewright_core::Catalogue;
    use nodewright_core::catalogue::OverheadConfig;

    let types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
    let zone = m5
        .offerings
        .iter()
        .find(|o| o.capacity_type == CapacityType::Spot)
        .map(|o| o.zone.clone())
        .unwrap();
    let embedded = PriceBook::new().price(m5, &zone, CapacityType::Spot).unwrap();

    let history = mock!(Client::describe_spot_price_history).then_output({
        let zone = zone.clone();
        move || {
            DescribeSpotPriceHistoryOutput::builder()
                .spot_price_history(
                    SpotPrice::builder()
                        .instance_type(InstanceType::from("m5.large"))
                        .availability_zone(&zone)
                        .spot_price("0.0123")
                        .build(),
                )
                .build()
        }
    });
    let ec2 = mock_client!(aws_sdk_ec2, [&history]);
    let mut book = PriceBook::new();
    assert!(book.is_stale());
    assert!(book.refresh_spot(&ec2, &["m5.large".to_string()]).await);
    assert!(!book.is_stale(), "cached for warm invocations");
    assert_eq!(book.price(m5, &zone, CapacityType::Spot), Some(0.0123));
    assert_ne!(embedded, 0.0123);

    // Unreachable: a closed loopback port. The refresh reports failure; prices stay embedded.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let offline = nodewright_aws::AwsClients::load(&nodewright_aws::ClientOptions {
        region: Some("us-east-1".into()),
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        static_credentials: true,
        max_attempts: Some(1),
    })
    .await;
    let mut book = PriceBook::new();
    assert!(!book.refresh_spot(&offline.ec2, &["m5.large".to_string()]).await);
    assert_eq!(book.price(m5, &zone, CapacityType::Spot), Some(embedded));
    assert_eq!(book.refreshed_spot_prices(), 0);
}

/// On-demand prices from the Pricing API (mocked GetProducts with a real-shaped price list).
#[tokio::test]
async fn on_demand_prices_refresh_from_the_pricing_api() {
    use aws_sdk_pricing::operation::get_products::GetProductsOutput;
    use nodewright_aws::capacity::PriceBook;
    use nodewright_core::Catalogue;
    use nodewright_core::catalogue::OverheadConfig;

    let doc = r#"{"product":{"productFamily":"Compute Instance","attributes":{"instanceType":"m5.large","regionCode":"us-east-1","operatingSystem":"Linux"}},"terms":{"OnDemand":{"X.JRTCKXETXF":{"priceDimensions":{"X.JRTCKXETXF.6YS6EN2CT7":{"unit":"Hrs","pricePerUnit":{"USD":"0.0777000000"}}}}}}}"#;
    let products = mock!(aws_sdk_pricing::Client::get_products)
        .match_requests(|r| r.service_code() == Some("AmazonEC2"))
        .then_output(move || GetProductsOutput::builder().price_list(doc).build());
    let pricing = mock_client!(aws_sdk_pricing, [&products]);
    let types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
    let zone = m5.offerings[0].zone.clone();
    let mut book = PriceBook::new();
    let embedded = book.price(m5, &zone, CapacityType::OnDemand).unwrap();
    assert!(book.refresh_on_demand(&pricing, "us-east-1").await);
    assert_eq!(book.refreshed_on_demand_prices(), 1);
    assert_eq!(book.price(m5, &zone, CapacityType::OnDemand), Some(0.0777));
    assert_ne!(embedded, 0.0777);
    assert_eq!(products.num_calls(), 1);
}

/// The account's spot quota for standard types is spent (MaxSpotInstanceCountExceeded on the spot
/// request): no other spot request for those types can succeed, so the launch makes no more,
/// reports the quota class unavailable with one entry and falls back to on-demand in the same
/// launch.
#[tokio::test]
async fn a_spot_quota_error_gives_up_on_spot_and_falls_back_at_once() {
    let clients = support::clients().await;
    let store = support::store(&clients, "quota").await;
    let create_fleet = mock!(Client::create_fleet).then_compute_response(spot_fails_with(
        "MaxSpotInstanceCountExceeded",
        "Max spot instance count exceeded",
    ));
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&no_instances(), &create_fleet]);
    let fleet = Fleet::new(ec2, store.cluster());
    let offerings = vec![
        offering("m5.large", "us-east-1a", CapacityType::Spot, 0.030),
        offering("m5.large", "us-east-1b", CapacityType::Spot, 0.032),
        offering("c5.large", "us-east-1a", CapacityType::Spot, 0.033),
        offering("m5.large", "us-east-1a", CapacityType::OnDemand, 0.096),
    ];
    let outcome = fleet.launch(&request(offerings)).await.unwrap();
    assert_eq!(outcome.capacity_type, CapacityType::OnDemand);
    assert!(outcome.fell_back_to_on_demand);
    assert_eq!(
        outcome.unavailable,
        vec![(
            CapacityType::Spot,
            "quota:standard".into(),
            "*".into(),
            "MaxSpotInstanceCountExceeded".into()
        )]
    );
    assert_eq!(create_fleet.num_calls(), 2, "one spot request, one on-demand");
}

/// PutEvents answers per entry: an entry the bus refused (throttled, here) is not handed off, so
/// its claim launches inline; the others are. moto never refuses a well-formed entry.
#[tokio::test]
async fn the_launch_bus_reports_only_the_entries_put() {
    use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
    use aws_sdk_eventbridge::types::PutEventsResultEntry;
    use nodewright_aws::capacity::LaunchBus;
    use nodewright_core::model::claim_launch::ClaimLaunchRequest;
    let put = mock!(aws_sdk_eventbridge::Client::put_events).then_compute_output(|input| {
        let entries = input
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| {
                assert_eq!(e.detail_type(), Some("Claim Launch"));
                assert_eq!(e.event_bus_name(), Some("launches"));
                if i == 1 {
                    PutEventsResultEntry::builder()
                        .error_code("ThrottlingException")
                        .error_message("Rate exceeded")
                        .build()
                } else {
                    PutEventsResultEntry::builder().event_id(format!("e-{i}")).build()
                }
            })
            .collect();
        PutEventsOutput::builder()
            .failed_entry_count(1)
            .set_entries(Some(entries))
            .build()
    });
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&put]);
    let requests: Vec<ClaimLaunchRequest> = (0..3)
        .map(|i| ClaimLaunchRequest::new("demo", &format!("nc-{i:016x}"), NOW))
        .collect();
    let handed = LaunchBus::new(client, "launches").put(&requests).await.unwrap();
    assert_eq!(handed, [requests[0].claim.clone(), requests[2].claim.clone()]);
}
