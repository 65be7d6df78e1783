//! `Claim Launch`: the event `pod-pending` puts on Nodewright's bus for each claim it wrote, so
//! that `state-change` launches the claim in an invocation of its own. The decision returns as soon
//! as its claims are durable (CreateFleet takes 1-2 s per claim), and a burst's claims launch in
//! parallel invocations rather than a few at a time in one. Documented in docs/events.md.
//!
//! The claim record (state `launching`, its offerings chosen) is the request's substance; the event
//! only names it. A request delivered twice, late, or after the claim moved on launches nothing new:
//! the claim id is the launch's ClientToken and the record's state is checked first.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// EventBridge `source` of events Nodewright's functions send to themselves.
pub const SOURCE: &str = "nodewright.functions";
/// `detail-type` of a launch request.
pub const CLAIM_LAUNCH: &str = "Claim Launch";
/// The `Claim Launch` schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// `detail` of a `Claim Launch` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimLaunchRequest {
    pub schema_version: u32,
    pub cluster: String,
    /// The claim's id (`nc-` and 16 hex digits), as written in `launching`.
    pub claim: String,
    /// When the deciding invocation asked (Unix milliseconds).
    pub requested_at: i64,
}

impl ClaimLaunchRequest {
    pub fn new(cluster: &str, claim: &str, requested_at: i64) -> Self {
        ClaimLaunchRequest {
            schema_version: SCHEMA_VERSION,
            cluster: cluster.to_string(),
            claim: claim.to_string(),
            requested_at,
        }
    }

    /// Checks what serde cannot: the version and the claim id's form.
    pub fn validate(&self) -> Result<()> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(Error::invalid(
                "detail.schemaVersion",
                format!(
                    "{} is not a version this build reads ({SCHEMA_VERSION})",
                    self.schema_version
                ),
            ));
        }
        if self.cluster.is_empty() || self.cluster.len() > 100 {
            return Err(Error::invalid("detail.cluster", "must be 1 to 100 characters"));
        }
        if !is_claim_id(&self.claim) {
            return Err(Error::invalid(
                "detail.claim",
                format!(
                    "{:?} is not a claim id (nc- and 16 hex digits)",
                    self.claim.chars().take(64).collect::<String>()
                ),
            ));
        }
        Ok(())
    }

    /// Checks `requestedAt` against the receiver's clock.
    pub fn check_times(&self, now: i64) -> Result<()> {
        crate::model::cluster_event::check_event_time("detail.requestedAt", self.requested_at, now)
    }

    /// The event as EventBridge delivers it to a target (Lambda or SQS): the envelope EventBridge
    /// adds (`id`, `version`, `account`, `time`, `region`, `resources`) around what PutEvents sent.
    /// For the in-process bus of the memory adapters and the tests.
    pub fn delivered(&self, id: &str, region: &str) -> serde_json::Value {
        serde_json::json!({
            "version": "0",
            "id": id,
            "detail-type": CLAIM_LAUNCH,
            "source": SOURCE,
            "account": "000000000000",
            "time": crate::time::format_rfc3339(self.requested_at),
            "region": region,
            "resources": [],
            "detail": self,
        })
    }
}

/// Whether `s` is a claim id as [`ClaimLaunchRequest`] carries it: `nc-` and 16 lowercase hex
/// digits (a decision's claim id; adopted instances' claims are never launched).
pub fn is_claim_id(s: &str) -> bool {
    s.strip_prefix("nc-")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_a_claim_and_a_known_version() {
        let ok = ClaimLaunchRequest::new("demo", "nc-0123456789abcdef", 1_700_000_000_000);
        assert!(ok.validate().is_ok());
        let bad_claim = ClaimLaunchRequest::new("demo", "nc-../../etc", 0);
        let e = bad_claim.validate().unwrap_err().to_string();
        assert!(e.contains("detail.claim"), "{e}");
        let mut old = ok.clone();
        old.schema_version = 9;
        let e = old.validate().unwrap_err().to_string();
        assert!(e.contains("detail.schemaVersion"), "{e}");
        let e = ClaimLaunchRequest::new("", "nc-0123456789abcdef", 0)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("detail.cluster"), "{e}");
    }

    #[test]
    fn delivered_events_carry_the_detail_as_sent() {
        let r = ClaimLaunchRequest::new("demo", "nc-0123456789abcdef", 1_700_000_000_000);
        let v = r.delivered("e-1", "us-east-1");
        assert_eq!(v["detail-type"], CLAIM_LAUNCH);
        assert_eq!(v["source"], SOURCE);
        assert_eq!(v["detail"]["claim"], "nc-0123456789abcdef");
        assert_eq!(v["detail"]["requestedAt"], 1_700_000_000_000_i64);
        let back: ClaimLaunchRequest = serde_json::from_value(v["detail"].clone()).unwrap();
        assert_eq!(back, r);
    }
}
