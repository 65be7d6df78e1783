//! PutEvents with retries. EventBridge accepts up to 10 entries and 256 KB per request and may
//! refuse single entries (`FailedEntryCount`, per-entry `ErrorCode`, e.g. throttling or an internal
//! failure); refused entries are re-sent with backoff, accepted ones never are.

use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::entry::{ENTRY_LIMIT, Entry};
use crate::{Error, Result};

/// Most entries in one PutEvents request.
pub const MAX_ENTRIES_PER_REQUEST: usize = 10;

/// Where and how patiently to send.
#[derive(Debug, Clone)]
pub struct Sender {
    pub client: aws_sdk_eventbridge::Client,
    /// Event bus name or ARN ("default" for the account's default bus).
    pub bus: String,
    pub attempts: u32,
    pub backoff: Duration,
}

impl Sender {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Sender {
            client,
            bus: bus.into(),
            attempts: 5,
            backoff: Duration::from_millis(200),
        }
    }

    /// Sends every entry, retrying refused ones; returns the EventBridge event ids in entry order.
    pub async fn send(&self, entries: &[Entry]) -> Result<Vec<String>> {
        let mut ids: Vec<Option<String>> = vec![None; entries.len()];
        let mut todo: Vec<usize> = (0..entries.len()).collect();
        let mut backoff = self.backoff;
        let mut last_error = String::new();
        for attempt in 1..=self.attempts.max(1) {
            let mut refused = Vec::new();
            for request in requests(&todo, entries) {
                let mut call = self.client.put_events();
                for &i in &request {
                    let e = &entries[i];
                    call = call.entries(
                        PutEventsRequestEntry::builder()
                            .event_bus_name(&self.bus)
                            .source(&e.source)
                            .detail_type(&e.detail_type)
                            .detail(&e.detail)
                            .build(),
                    );
                }
                match call.send().await {
                    Ok(out) => {
                        let results = out.entries();
                        for (k, &i) in request.iter().enumerate() {
                            match results.get(k) {
                                Some(r) if r.error_code().is_none() => ids[i] = r.event_id().map(str::to_string),
                                Some(r) => {
                                    last_error = format!(
                                        "{}: {}",
                                        r.error_code().unwrap_or_default(),
                                        r.error_message().unwrap_or_default()
                                    );
                                    refused.push(i);
                                }
                                None => {
                                    last_error = "no result for entry".into();
                                    refused.push(i);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        last_error = aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string();
                        refused.extend(&request);
                    }
                }
            }
            if refused.is_empty() {
                return Ok(ids.into_iter().map(Option::unwrap_or_default).collect());
            }
            tracing::warn!(attempt, refused = refused.len(), error = %last_error, "PutEvents refused entries; retrying");
            todo = refused;
            if attempt < self.attempts {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(Error::Send {
            failed: todo.len(),
            total: entries.len(),
            attempts: self.attempts,
            last_error,
        })
    }
}

/// Groups entry indexes into requests of at most 10 entries and 256 KB.
fn requests(todo: &[usize], entries: &[Entry]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for &i in todo {
        let s = entries[i].size();
        let fits = out
            .last()
            .is_some_and(|r| r.len() < MAX_ENTRIES_PER_REQUEST && size + s <= ENTRY_LIMIT);
        if !fits {
            out.push(Vec::new());
            size = 0;
        }
        size += s;
        if let Some(r) = out.last_mut() {
            r.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bytes: usize) -> Entry {
        Entry {
            source: "s".into(),
            detail_type: "d".into(),
            detail: "x".repeat(bytes),
        }
    }

    #[test]
    fn requests_respect_count_and_size() {
        let entries: Vec<_> = (0..25).map(|_| entry(100)).collect();
        let todo: Vec<_> = (0..25).collect();
        let r = requests(&todo, &entries);
        assert_eq!(r.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);

        let big: Vec<_> = (0..3).map(|_| entry(200_000)).collect();
        let r = requests(&[0, 1, 2], &big);
        assert_eq!(r, [vec![0], vec![1], vec![2]]);
    }
}
