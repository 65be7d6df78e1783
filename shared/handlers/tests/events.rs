//! Event parsing against every sample (ours in events/, AWS's own in events/aws-samples with their
//! placeholders) and against hostile input: truncated JSON, wrong source, unknown detail-type,
//! missing instance id, oversized payloads, and arbitrary JSON (proptest; cargo-fuzz is not used so
//! that CI needs no nightly toolchain).
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_handlers::event::{Event, MAX_EVENT_BYTES, Parsed, parse_bytes, parse_sqs_batch, parse_value};
use nodewright_handlers::{Function, Outcome, handle};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::*;

fn samples(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn each_of_our_samples_goes_to_exactly_one_function() {
    let expected = [
        ("asg-launch-successful.json", Function::StateChange),
        ("asg-launch-unsuccessful.json", Function::StateChange),
        ("asg-terminate-successful.json", Function::StateChange),
        ("capacity-reservation-interruption.json", Function::SpotInterruption),
        ("claim-launch.json", Function::StateChange),
        ("health-scheduled-change.json", Function::SpotInterruption),
        ("instance-state-change-running.json", Function::StateChange),
        ("instance-state-change-terminated.json", Function::StateChange),
        ("node-ready.json", Function::StateChange),
        ("pod-pending.json", Function::PodPending),
        ("rebalance-recommendation.json", Function::SpotInterruption),
        ("scheduled.json", Function::Consolidation),
        ("spot-interruption.json", Function::SpotInterruption),
    ];
    let all = samples(&events_dir());
    let names: Vec<&str> = all
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "pod-pending-sqs.json")
        .collect();
    assert_eq!(
        names,
        expected.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "every sample is listed here"
    );
    for (name, function) in expected {
        let Parsed::Event(e) = parse_bytes(&std::fs::read(events_dir().join(name)).unwrap()).unwrap() else {
            panic!("{name} was ignored")
        };
        let takers: Vec<Function> = Function::ALL.into_iter().filter(|f| f.accepts(&e)).collect();
        assert_eq!(takers, [function], "{name}");
    }
    let health = parse_bytes(&std::fs::read(events_dir().join("health-scheduled-change.json")).unwrap()).unwrap();
    assert!(
        matches!(health, Parsed::Event(Event::ScheduledChange { ref instance_ids, .. }) if instance_ids == &["i-0123456789abcdef0"])
    );
}

#[test]
fn sqs_batches_unwrap_to_the_same_event() {
    let v: Value = serde_json::from_str(&event_text("pod-pending-sqs.json")).unwrap();
    let records = parse_sqs_batch(&v).unwrap();
    assert_eq!(records.len(), 1);
    let direct = parse_bytes(event_text("pod-pending.json").as_bytes()).unwrap();
    assert_eq!(records[0].1.as_ref().unwrap(), &direct);
}

/// Every AWS documentation sample, into every function: handled, ignored, or a named error.
#[tokio::test]
async fn aws_samples_with_placeholders_never_panic() {
    for (name, bytes) in samples(&events_dir().join("aws-samples")) {
        match parse_bytes(&bytes) {
            Ok(parsed) => {
                for f in Function::ALL {
                    let deps = deps();
                    let r: Result<Outcome, _> = handle(f, &deps, parsed.clone(), NOW).await;
                    assert!(r.is_ok(), "{name} in {}: {r:?}", f.name());
                }
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("event "), "{name}: {msg}");
            }
        }
    }
    // The Health samples are account notifications: ignored, with the reason.
    let p =
        parse_bytes(&std::fs::read(events_dir().join("aws-samples/cr-eventbridge__aws-health-event__1.json")).unwrap())
            .unwrap();
    assert!(
        matches!(p, Parsed::Ignore(ref r) if r.contains("accountNotification")),
        "{p:?}"
    );
    // The placeholder time is "unknown", not an error.
    let p = parse_bytes(
        &std::fs::read(
            events_dir()
                .join("aws-samples/spot-instance-termination-notices__ec2-spot-instance-interruption-warning__1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(matches!(p, Parsed::Event(Event::SpotInterruption { ref envelope, .. }) if envelope.time.is_none()));
}

fn error_of(bytes: &[u8]) -> String {
    parse_bytes(bytes).expect_err("should be rejected").to_string()
}

#[test]
fn hostile_input_gets_a_named_error_or_an_ignore() {
    let spot = event_text("spot-interruption.json");
    // Truncated JSON.
    assert!(error_of(&spot.as_bytes()[..spot.len() / 2]).starts_with("event payload: not JSON"));
    // Not an object.
    assert!(error_of(b"[1,2,3]").starts_with("event payload"));
    // Missing instance id, and a placeholder one.
    let mut v: Value = serde_json::from_str(&spot).unwrap();
    v["detail"].as_object_mut().unwrap().remove("instance-id");
    assert_eq!(
        parse_value(&v).unwrap_err().to_string(),
        "event detail.instance-id: missing"
    );
    v["detail"]["instance-id"] = json!("instance-id-placeholder");
    assert!(
        parse_value(&v)
            .unwrap_err()
            .to_string()
            .starts_with("event detail.instance-id: ")
    );
    // Missing envelope fields.
    let mut v: Value = serde_json::from_str(&spot).unwrap();
    v.as_object_mut().unwrap().remove("detail-type");
    assert_eq!(parse_value(&v).unwrap_err().to_string(), "event detail-type: missing");
    // Unknown detail-type and wrong source: acknowledged and ignored.
    let mut v: Value = serde_json::from_str(&spot).unwrap();
    v["detail-type"] = json!("EC2 Something New");
    assert!(matches!(parse_value(&v).unwrap(), Parsed::Ignore(_)));
    let mut v: Value = serde_json::from_str(&spot).unwrap();
    v["source"] = json!("com.example.app");
    assert!(matches!(parse_value(&v).unwrap(), Parsed::Ignore(_)));
    // A 1 MB payload.
    let mut v: Value = serde_json::from_str(&event_text("pod-pending.json")).unwrap();
    v["detail"]["padding"] = json!("x".repeat(1 << 20));
    let bytes = serde_json::to_vec(&v).unwrap();
    assert!(bytes.len() > MAX_EVENT_BYTES);
    assert!(error_of(&bytes).contains("over the 262144 byte limit"));
    // A watcher batch of a future schema version.
    let text = event_text("pod-pending.json").replace("\"schemaVersion\": 1", "\"schemaVersion\": 2");
    assert!(error_of(text.as_bytes()).contains("detail.schemaVersion"));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 ._:/-]{0,24}".prop_map(Value::String),
        prop_oneof![
            Just(json!("aws.ec2")),
            Just(json!("aws.health")),
            Just(json!("aws.autoscaling")),
            Just(json!("nodewright.cluster")),
            Just(json!("EC2 Spot Instance Interruption Warning")),
            Just(json!("Pod Pending")),
            Just(json!("i-0123456789abcdef0")),
        ],
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("source".to_string()),
                    Just("detail-type".to_string()),
                    Just("detail".to_string()),
                    Just("instance-id".to_string()),
                    Just("pods".to_string()),
                    "[a-z-]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let _ = parse_value(&v);
        let _ = parse_sqs_batch(&v);
    }

    #[test]
    fn arbitrary_envelopes_never_panic(detail in arb_json(), source in prop_oneof![Just("aws.ec2"), Just("aws.health"), Just("aws.autoscaling"), Just("nodewright.cluster"), Just("aws.events")], dt in prop_oneof![Just("EC2 Spot Instance Interruption Warning"), Just("EC2 Instance State-change Notification"), Just("AWS Health Event"), Just("Pod Pending"), Just("Node Ready"), Just("EC2 Instance Launch Successful"), Just("EC2 Instance Terminate Successful"), Just("Scheduled Event")]) {
        let v = json!({"id": "x", "source": source, "detail-type": dt, "time": "2026-11-21T10:00:00Z", "detail": detail});
        let _ = parse_value(&v);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_bytes(&bytes);
    }
}
