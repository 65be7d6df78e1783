//! Every event the functions accept, parsed from the EventBridge envelope (or an SQS batch of them)
//! into one typed [`Event`]. Parsing is total: any input yields an event, an [`Parsed::Ignore`] with
//! the reason (not ours to handle: wrong source, unknown detail-type, a Health event that is not an
//! EC2 scheduled change), or an [`Error::Event`] naming the field. It never panics (proptest in
//! tests/events.rs) and bounds its input size.
//!
//! AWS's documentation samples carry placeholders (`"time": "yyyy-mm-ddThh:mm:ssZ"`,
//! `"instance-action": "action"`). Fields the handlers do not need are not validated; the envelope
//! time is optional (a placeholder means "unknown", and handlers fall back to the receive time);
//! instance ids must be real (`i-` + hex).

use nodewright_core::model::claim_launch::{self, ClaimLaunchRequest};
use nodewright_core::model::cluster_event::{self, NodeReady, PodPending};
use serde_json::Value;

use crate::{Error, Result};

/// Largest event accepted: EventBridge's own entry limit.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// What every event carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: String,
    pub source: String,
    pub detail_type: String,
    /// Event time (Unix ms); None when absent or a placeholder.
    pub time: Option<i64>,
    pub region: Option<String>,
}

/// EC2 instance states of `EC2 Instance State-change Notification`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            _ => return None,
        })
    }
}

/// A parsed event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    PodPending(Envelope, Box<PodPending>),
    NodeReady(Envelope, NodeReady),
    SpotInterruption {
        envelope: Envelope,
        instance_id: String,
    },
    Rebalance {
        envelope: Envelope,
        instance_id: String,
    },
    ReservationInterruption {
        envelope: Envelope,
        instance_id: String,
    },
    /// AWS Health, service EC2, category scheduledChange: instances with scheduled maintenance.
    ScheduledChange {
        envelope: Envelope,
        event_type: String,
        instance_ids: Vec<String>,
    },
    InstanceState {
        envelope: Envelope,
        instance_id: String,
        state: InstanceState,
    },
    AsgLaunch {
        envelope: Envelope,
        group: String,
        instance_id: Option<String>,
        successful: bool,
    },
    AsgTerminate {
        envelope: Envelope,
        group: String,
        instance_id: String,
    },
    /// The EventBridge schedule (consolidation).
    Schedule(Envelope),
    /// A claim `pod-pending` wrote and handed to `state-change` to launch.
    ClaimLaunch(Envelope, ClaimLaunchRequest),
}

impl Event {
    pub fn envelope(&self) -> &Envelope {
        match self {
            Event::PodPending(e, _) | Event::NodeReady(e, _) | Event::ClaimLaunch(e, _) | Event::Schedule(e) => e,
            Event::SpotInterruption { envelope, .. }
            | Event::Rebalance { envelope, .. }
            | Event::ReservationInterruption { envelope, .. }
            | Event::ScheduledChange { envelope, .. }
            | Event::InstanceState { envelope, .. }
            | Event::AsgLaunch { envelope, .. }
            | Event::AsgTerminate { envelope, .. } => envelope,
        }
    }
}

/// The result of parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Event(Event),
    /// Acknowledged and ignored, with the reason (logged at debug).
    Ignore(String),
}

/// Parses raw bytes (size-checked first).
pub fn parse_bytes(bytes: &[u8]) -> Result<Parsed> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(Error::event(
            "payload",
            format!("{} bytes is over the {MAX_EVENT_BYTES} byte limit", bytes.len()),
        ));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::event("payload", format!("not JSON: {e}")))?;
    parse_value(&v)
}

/// Parses one EventBridge event given as JSON.
pub fn parse_value(v: &Value) -> Result<Parsed> {
    if !v.is_object() {
        return Err(Error::event("payload", "not a JSON object"));
    }
    let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > MAX_EVENT_BYTES {
        return Err(Error::event(
            "payload",
            format!("{size} bytes is over the {MAX_EVENT_BYTES} byte limit"),
        ));
    }
    for field in ["id", "source", "detail-type"] {
        match v.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) => return Err(Error::event(field, "must not be empty")),
            Some(_) => return Err(Error::event(field, "must be a string")),
            None => return Err(Error::event(field, "missing")),
        }
    }
    // The envelope is read field by field rather than through aws_lambda_events' EventBridgeEvent,
    // whose strict `time` rejects AWS's own documentation samples.
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let envelope = Envelope {
        id: text("id"),
        source: text("source"),
        detail_type: text("detail-type"),
        time: v.get("time").and_then(Value::as_str).and_then(parse_rfc3339_millis),
        region: v.get("region").and_then(Value::as_str).map(str::to_string),
    };
    let null = Value::Null;
    let detail = v.get("detail").unwrap_or(&null);
    let ev = match (envelope.source.as_str(), envelope.detail_type.as_str()) {
        (cluster_event::SOURCE, cluster_event::POD_PENDING) => {
            let mut d: PodPending =
                serde_json::from_value(detail.clone()).map_err(|e| Error::event("detail", e.to_string()))?;
            // The same normalization and validation as file input: the defaults (one `pods` slot,
            // namespace) are what keep max-pods and the scheduler's invariants.
            d.normalize();
            d.validate().map_err(Error::invalid_event)?;
            Event::PodPending(envelope, Box::new(d))
        }
        (cluster_event::SOURCE, cluster_event::NODE_READY) => {
            let d: NodeReady =
                serde_json::from_value(detail.clone()).map_err(|e| Error::event("detail", e.to_string()))?;
            d.validate().map_err(Error::invalid_event)?;
            Event::NodeReady(envelope, d)
        }
        (claim_launch::SOURCE, claim_launch::CLAIM_LAUNCH) => {
            let d: ClaimLaunchRequest =
                serde_json::from_value(detail.clone()).map_err(|e| Error::event("detail", e.to_string()))?;
            d.validate().map_err(Error::invalid_event)?;
            Event::ClaimLaunch(envelope, d)
        }
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => Event::SpotInterruption {
            instance_id: instance_id(detail, "instance-id")?,
            envelope,
        },
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => Event::Rebalance {
            instance_id: instance_id(detail, "instance-id")?,
            envelope,
        },
        ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning") => Event::ReservationInterruption {
            instance_id: instance_id(detail, "instance-id")?,
            envelope,
        },
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let state = detail
                .get("state")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::event("detail.state", "missing"))?;
            Event::InstanceState {
                instance_id: instance_id(detail, "instance-id")?,
                state: InstanceState::parse(state)
                    .ok_or_else(|| Error::event("detail.state", format!("unknown state {state:?}")))?,
                envelope,
            }
        }
        ("aws.health", "AWS Health Event") => {
            let service = detail.get("service").and_then(Value::as_str).unwrap_or("");
            let category = detail.get("eventTypeCategory").and_then(Value::as_str).unwrap_or("");
            if service != "EC2" || category != "scheduledChange" {
                return Ok(Parsed::Ignore(format!(
                    "AWS Health event for service {service:?}, category {category:?}: only EC2 scheduledChange is handled"
                )));
            }
            let mut ids: Vec<String> = detail
                .get("affectedEntities")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("entityValue").and_then(Value::as_str))
                .chain(
                    v.get("resources")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                )
                .filter_map(|s| s.rsplit('/').next())
                .filter(|s| is_instance_id(s))
                .map(str::to_string)
                .collect();
            ids.sort();
            ids.dedup();
            if ids.is_empty() {
                return Ok(Parsed::Ignore("EC2 scheduled change names no instance".into()));
            }
            Event::ScheduledChange {
                event_type: detail
                    .get("eventTypeCode")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                instance_ids: ids,
                envelope,
            }
        }
        ("aws.autoscaling", "EC2 Instance Launch Successful" | "EC2 Instance Launch Unsuccessful") => {
            let successful = envelope.detail_type == "EC2 Instance Launch Successful";
            let id = detail
                .get("EC2InstanceId")
                .and_then(Value::as_str)
                .filter(|s| is_instance_id(s));
            if successful && id.is_none() {
                return Err(Error::event("detail.EC2InstanceId", "missing or not an instance id"));
            }
            Event::AsgLaunch {
                group: group(detail)?,
                instance_id: id.map(str::to_string),
                successful,
                envelope,
            }
        }
        ("aws.autoscaling", "EC2 Instance Terminate Successful") => Event::AsgTerminate {
            group: group(detail)?,
            instance_id: instance_id(detail, "EC2InstanceId")?,
            envelope,
        },
        ("aws.events", "Scheduled Event") => Event::Schedule(envelope),
        (source, detail_type) => {
            return Ok(Parsed::Ignore(format!(
                "source {source:?} detail-type {detail_type:?} is not an event Nodewright handles"
            )));
        }
    };
    Ok(Parsed::Event(ev))
}

fn group(detail: &Value) -> Result<String> {
    detail
        .get("AutoScalingGroupName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::event("detail.AutoScalingGroupName", "missing"))
}

fn instance_id(detail: &Value, field: &str) -> Result<String> {
    match detail.get(field) {
        None | Some(Value::Null) => Err(Error::event(format!("detail.{field}"), "missing")),
        Some(Value::String(s)) if is_instance_id(s) => Ok(s.clone()),
        Some(other) => Err(Error::event(
            format!("detail.{field}"),
            format!(
                "{} is not an EC2 instance id (i- and 8 or 17 hex digits)",
                truncate(&other.to_string())
            ),
        )),
    }
}

pub use nodewright_core::model::is_instance_id;

fn truncate(s: &str) -> String {
    if s.len() <= 64 {
        return s.to_string();
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

pub use nodewright_core::time::parse_rfc3339_millis;

/// An SQS batch (EventBridge -> SQS -> Lambda): each record's body is one EventBridge event.
/// Returns (messageId, parse result) per record.
pub fn parse_sqs_batch(v: &Value) -> Result<Vec<(String, Result<Parsed>)>> {
    let records = v
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::event("Records", "missing"))?;
    Ok(records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let id = r
                .get("messageId")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("record-{i}"));
            let parsed = match r.get("body").and_then(Value::as_str) {
                Some(body) => parse_bytes(body.as_bytes()),
                None => Err(Error::event(format!("Records[{i}].body"), "missing")),
            };
            (id, parsed)
        })
        .collect())
}

/// Whether a payload is an SQS batch rather than one EventBridge event.
pub fn is_sqs_batch(v: &Value) -> bool {
    v.get("Records").is_some_and(Value::is_array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_millis("2021-11-11T21:29:54Z"), Some(1_636_666_194_000));
        assert_eq!(parse_rfc3339_millis("2021-11-11T21:29:54.25Z"), Some(1_636_666_194_250));
        assert_eq!(parse_rfc3339_millis("yyyy-mm-ddThh:mm:ssZ"), None);
        assert_eq!(parse_rfc3339_millis(""), None);
        assert_eq!(parse_rfc3339_millis("2021-13-11T21:29:54Z"), None);
    }

    #[test]
    fn instance_ids() {
        assert!(is_instance_id("i-abcd1111"));
        assert!(is_instance_id("i-1234567890abcdef0"));
        assert!(!is_instance_id("i-"));
        assert!(!is_instance_id("i-XYZ12345"));
        assert!(!is_instance_id("cr-01234567890abcdef"));
    }
}
