//! PutEvents retries against the SDK's own mock (aws-smithy-mocks): refused entries are re-sent,
//! accepted ones never are, and a batch that cannot be delivered is a typed error.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::operation::put_events::{PutEventsInput, PutEventsOutput};
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use nodewright_core::Pod;
use nodewright_core::model::cluster_event::{PendingPod, PodPending};
use nodewright_watcher::Error;
use nodewright_watcher::entry::{ENTRY_BUDGET, Entry, pod_pending_entries};
use nodewright_watcher::send::Sender;

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            source: "nodewright.cluster".into(),
            detail_type: "Pod Pending".into(),
            detail: format!("{{\"n\":{i}}}"),
        })
        .collect()
}

fn details(input: &PutEventsInput) -> Vec<String> {
    input
        .entries()
        .iter()
        .map(|e| e.detail().unwrap().to_string())
        .collect()
}

fn ok(id: &str) -> PutEventsResultEntry {
    PutEventsResultEntry::builder().event_id(id).build()
}

fn refused() -> PutEventsResultEntry {
    PutEventsResultEntry::builder()
        .error_code("ThrottlingException")
        .error_message("Rate exceeded")
        .build()
}

fn sender(client: Client) -> Sender {
    let mut s = Sender::new(client, "nodewright-bus");
    s.backoff = Duration::from_millis(1);
    s
}

#[tokio::test]
async fn refused_entries_are_resent_alone() {
    let first = mock!(Client::put_events)
        .match_requests(|i| details(i) == ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"])
        .then_output(|| {
            PutEventsOutput::builder()
                .failed_entry_count(1)
                .entries(ok("e0"))
                .entries(refused())
                .entries(ok("e2"))
                .build()
        });
    let retry = mock!(Client::put_events)
        .match_requests(|i| {
            details(i) == ["{\"n\":1}"]
                && i.entries()[0].event_bus_name() == Some("nodewright-bus")
                && i.entries()[0].source() == Some("nodewright.cluster")
                && i.entries()[0].detail_type() == Some("Pod Pending")
        })
        .then_output(|| {
            PutEventsOutput::builder()
                .failed_entry_count(0)
                .entries(ok("e1"))
                .build()
        });
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::Sequential, [&first, &retry]);
    let ids = sender(client).send(&entries(3)).await.unwrap();
    assert_eq!(ids, ["e0", "e1", "e2"]);
    assert_eq!(first.num_calls(), 1);
    assert_eq!(retry.num_calls(), 1);
}

#[tokio::test]
async fn entries_never_accepted_give_a_typed_error() {
    let always = mock!(Client::put_events).then_output(|| {
        PutEventsOutput::builder()
            .failed_entry_count(1)
            .entries(refused())
            .build()
    });
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&always]);
    let mut s = sender(client);
    s.attempts = 3;
    match s.send(&entries(1)).await.unwrap_err() {
        Error::Send {
            failed,
            total,
            attempts,
            last_error,
        } => {
            assert_eq!((failed, total, attempts), (1, 1, 3));
            assert!(last_error.contains("ThrottlingException"), "{last_error}");
        }
        other => panic!("expected Send, got {other:?}"),
    }
    assert_eq!(always.num_calls(), 3);
}

#[tokio::test]
async fn a_split_batch_goes_out_in_requests_of_at_most_ten_entries_under_256_kb() {
    // 1,200 pods of ~2 KB: ~2.4 MB, so at least 10 entries of up to ~254 KB each.
    let pods: Vec<_> = (0..1200)
        .map(|i| PendingPod {
            resource_version: "1".into(),
            created_at: 0,
            pod: Pod {
                uid: format!("u{i}"),
                name: format!("p{i}"),
                namespace: "default".into(),
                labels: [("blob".to_string(), "y".repeat(2000))].into(),
                ..Default::default()
            },
        })
        .collect();
    let batch = pod_pending_entries("prod", pods, 7, ENTRY_BUDGET).unwrap();
    let parts = batch.len();
    assert!(parts >= 10, "{parts} parts");
    let accept = mock!(Client::put_events)
        .match_requests(|i| {
            let total: usize = i
                .entries()
                .iter()
                .map(|e| e.source().unwrap().len() + e.detail_type().unwrap().len() + e.detail().unwrap().len())
                .sum();
            !i.entries().is_empty() && i.entries().len() <= 10 && total <= 256 * 1024
        })
        .then_compute_output(|i| {
            let mut out = PutEventsOutput::builder().failed_entry_count(0);
            for e in i.entries() {
                let d: PodPending = serde_json::from_str(e.detail().unwrap()).unwrap();
                out = out.entries(ok(&format!("part-{}", d.part)));
            }
            out.build()
        });
    let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&accept]);
    let ids = sender(client).send(&batch).await.unwrap();
    let expected: Vec<_> = (1..=parts).map(|p| format!("part-{p}")).collect();
    assert_eq!(ids, expected);
    // One entry per request here: each part is close to the 256 KB request limit itself.
    assert_eq!(accept.num_calls(), parts);
}
