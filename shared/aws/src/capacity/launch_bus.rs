//! Nodewright's EventBridge bus as the way `pod-pending` hands a claim's launch to `state-change`:
//! one `Claim Launch` event per claim (docs/events.md), put in calls of at most ten entries.
//! PutEvents answers per entry; an entry it refused is reported as not handed off, and the caller
//! launches that claim itself.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use nodewright_core::model::claim_launch::{CLAIM_LAUNCH, ClaimLaunchRequest, SOURCE};

use crate::error::FromSdk;
use crate::{Error, Result};

/// Entries PutEvents takes per call.
const ENTRIES_PER_CALL: usize = 10;

/// The bus the launch requests go to.
#[derive(Debug, Clone)]
pub struct LaunchBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl LaunchBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        LaunchBus {
            client,
            bus: bus.into(),
        }
    }

    /// Puts one `Claim Launch` per request; the claims whose entries the bus accepted.
    pub async fn put(&self, requests: &[ClaimLaunchRequest]) -> Result<Vec<String>> {
        let mut accepted = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(ENTRIES_PER_CALL) {
            let mut entries = Vec::with_capacity(chunk.len());
            for r in chunk {
                let detail = serde_json::to_string(r).map_err(|e| Error::Invalid {
                    field: "detail".into(),
                    reason: e.to_string(),
                })?;
                entries.push(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(CLAIM_LAUNCH)
                        .detail(detail)
                        .time(aws_smithy_types::DateTime::from_millis(r.requested_at))
                        .build(),
                );
            }
            let out = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| Error::aws("PutEvents", e))?;
            for (r, entry) in chunk.iter().zip(out.entries()) {
                match (entry.event_id(), entry.error_code()) {
                    (Some(_), None) => accepted.push(r.claim.clone()),
                    (_, code) => tracing::warn!(
                        claim = %r.claim,
                        code = code.unwrap_or("none"),
                        message = entry.error_message().unwrap_or(""),
                        "the bus refused a launch request"
                    ),
                }
            }
        }
        Ok(accepted)
    }
}
