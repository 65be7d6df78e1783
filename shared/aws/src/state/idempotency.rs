//! Event idempotency: the first invocation to claim an event id runs it and records the outcome; a
//! redelivery gets that outcome back and does nothing. An invocation that died mid-way holds only a
//! short lease, after which the event may be run again (its writes are themselves idempotent).

use super::item::{Fields, is_condition_failure, n, s};
use super::{EventStart, IDEMPOTENCY_LEASE_SECS, IDEMPOTENCY_TTL_SECS, Once, StateStore, Table};
use crate::error::FromSdk;
use crate::{EpochMillis, Error, Result};

/// The largest outcome recorded (DynamoDB items are limited to 400 KB).
const MAX_OUTCOME_BYTES: usize = 64 * 1024;

impl StateStore {
    /// Runs `work` for an event at most once (per lease): a redelivered event returns the first
    /// outcome without running `work`. If `work` fails the event is released for a retry.
    pub async fn run_once<F, Fut>(&self, event_id: &str, now: EpochMillis, work: F) -> Result<Once>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String>>,
    {
        match self.begin_event(event_id, now).await? {
            EventStart::Completed(outcome) => Ok(Once::Replayed(outcome)),
            EventStart::InProgress => Ok(Once::Busy),
            EventStart::New => match work().await {
                Ok(outcome) => {
                    self.complete_event(event_id, &outcome, now).await?;
                    Ok(Once::Ran(outcome))
                }
                Err(e) => {
                    if let Err(release) = self.abandon_event(event_id).await {
                        tracing::warn!(event_id, error = %release, "could not release a failed event");
                    }
                    Err(e)
                }
            },
        }
    }

    /// Claims an event id for this invocation, or reports that it already ran or is running.
    pub async fn begin_event(&self, event_id: &str, now: EpochMillis) -> Result<EventStart> {
        if event_id.is_empty() || event_id.len() > 512 {
            return Err(Error::invalid(
                "id",
                format!("event id must be 1-512 characters, got {}", event_id.len()),
            ));
        }
        let now_secs = now / 1000;
        let result = self
            .client
            .put_item()
            .table_name(self.table_name(Table::Idempotency))
            .item("cluster", s(&self.cluster))
            .item("eventId", s(event_id))
            .item("status", s("in_progress"))
            .item("startedAt", n(now))
            .item("leaseUntil", n(now_secs + IDEMPOTENCY_LEASE_SECS))
            .item("expiresAt", n(now_secs + IDEMPOTENCY_TTL_SECS))
            // New, or expired (TTL is lazy), or an abandoned in-progress lease.
            .condition_expression(
                "attribute_not_exists(eventId) OR expiresAt < :now OR (#st = :inProgress AND leaseUntil < :now)",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":now", n(now_secs))
            .expression_attribute_values(":inProgress", s("in_progress"))
            .send()
            .await;
        match result {
            Ok(_) => return Ok(EventStart::New),
            Err(e) if is_condition_failure(&e) => {}
            Err(e) => return Err(Error::aws("PutItem", e)),
        }
        let table = self.table_name(Table::Idempotency);
        let item = self.get_one(Table::Idempotency, event_id).await?;
        let Some(item) = item else {
            // Deleted between our put and get (TTL): treat as in progress; a retry will own it.
            return Ok(EventStart::InProgress);
        };
        let f = Fields::new(&table, "eventId", &item);
        match f.s("status")?.as_str() {
            "completed" => Ok(EventStart::Completed(f.opt_s("outcome")?.unwrap_or_default())),
            _ => Ok(EventStart::InProgress),
        }
    }

    /// Records the outcome of an event this invocation began.
    pub async fn complete_event(&self, event_id: &str, outcome: &str, now: EpochMillis) -> Result<()> {
        let mut outcome = outcome.to_string();
        if outcome.len() > MAX_OUTCOME_BYTES {
            let mut cut = MAX_OUTCOME_BYTES;
            while !outcome.is_char_boundary(cut) {
                cut -= 1;
            }
            outcome.truncate(cut);
        }
        self.client
            .update_item()
            .table_name(self.table_name(Table::Idempotency))
            .key("cluster", s(&self.cluster))
            .key("eventId", s(event_id))
            .update_expression("SET #st = :done, outcome = :outcome, completedAt = :now")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":done", s("completed"))
            .expression_attribute_values(":outcome", s(outcome))
            .expression_attribute_values(":now", n(now))
            .send()
            .await
            .map_err(|e| Error::aws("UpdateItem", e))?;
        Ok(())
    }

    /// Forgets an event this invocation began but could not finish, so a redelivery runs it again.
    pub async fn abandon_event(&self, event_id: &str) -> Result<()> {
        let result = self
            .client
            .delete_item()
            .table_name(self.table_name(Table::Idempotency))
            .key("cluster", s(&self.cluster))
            .key("eventId", s(event_id))
            .condition_expression("#st = :inProgress")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":inProgress", s("in_progress"))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(Error::aws("DeleteItem", e)),
        }
    }

    /// Takes a named lease (an item of the idempotency table, key `lease/<name>`, never listed):
    /// written if absent, expired, or already `holder`'s. Its TTL attribute lets DynamoDB delete
    /// it once it has run out.
    pub async fn take_lease(&self, name: &str, holder: &str, now: EpochMillis, ttl_secs: i64) -> Result<bool> {
        if name.is_empty() || name.len() > 256 {
            return Err(Error::invalid(
                "lease",
                format!("lease name must be 1-256 characters, got {}", name.len()),
            ));
        }
        let until = now.div_euclid(1000) + ttl_secs;
        let result = self
            .client
            .put_item()
            .table_name(self.table_name(Table::Idempotency))
            .item("cluster", s(&self.cluster))
            .item("eventId", s(format!("{LEASE_PREFIX}{name}")))
            .item("status", s("lease"))
            .item("holder", s(holder))
            .item("leaseUntil", n(until))
            .item("expiresAt", n(until))
            .condition_expression("attribute_not_exists(eventId) OR leaseUntil < :now OR holder = :holder")
            .expression_attribute_values(":now", n(now.div_euclid(1000)))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(Error::aws("PutItem", e)),
        }
    }

    /// Gives a lease back if `holder` still has it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let result = self
            .client
            .delete_item()
            .table_name(self.table_name(Table::Idempotency))
            .key("cluster", s(&self.cluster))
            .key("eventId", s(format!("{LEASE_PREFIX}{name}")))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(Error::aws("DeleteItem", e)),
        }
    }
}

/// Leases share the idempotency table under this key prefix (no event id starts with it: event
/// ids are AWS event ids and pod-batch digests).
const LEASE_PREFIX: &str = "lease/";
