//! What the memory state store's calls would cost in DynamoDB on-demand, by DynamoDB's own rules
//! ("Item sizes and formats", "Read/write capacity units" in the DynamoDB developer guide), so
//! `nodewright bench-scale` and the cost-of-running model count requests and capacity units the way
//! AWS bills them:
//! - an item's size is the UTF-8 length of its attribute names and values; a number is one byte
//!   per two significant digits plus one; a list or map adds 3 bytes and 1 byte per element;
//! - a read unit covers 4 KB of what one GetItem or one Query page returns (a page is at most
//!   1 MB), rounded up, at least one; an eventually consistent read costs half;
//! - a write unit covers 1 KB of the larger of the item before and after, at least one, and a
//!   write whose condition fails is charged too; a transaction costs twice per item.
//!
//! The claim item's size is computed from the same attribute layout as the DynamoDB store's
//! `claim_item` (nodewright-aws checks the two agree on real items).

use std::collections::BTreeMap;

use nodewright_core::ports::state::{ClaimRecord, MAX_STORED_OFFERINGS};

/// The length of the cluster name assumed in item sizes (keys are scoped by cluster).
pub const CLUSTER_NAME_BYTES: usize = 16;
/// The most a Query returns in one page.
pub const QUERY_PAGE_BYTES: usize = 1 << 20;

/// Requests and capacity units, in total and per DynamoDB operation.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bill {
    pub requests: u64,
    pub read_units: f64,
    pub write_units: f64,
    /// Bytes of the items returned to reads.
    pub bytes_read: u64,
    /// Per operation (`GetItem`, `Query`, `PutItem`, `UpdateItem`, `DeleteItem`,
    /// `TransactWriteItems`): requests, read units, write units.
    pub operations: BTreeMap<String, (u64, f64, f64)>,
}

impl Bill {
    fn add(&mut self, operation: &str, read_units: f64, write_units: f64, bytes_read: usize) {
        self.requests += 1;
        self.read_units += read_units;
        self.write_units += write_units;
        self.bytes_read += bytes_read as u64;
        let o = self.operations.entry(operation.to_string()).or_default();
        o.0 += 1;
        o.1 += read_units;
        o.2 += write_units;
    }

    /// One GetItem returning an item of `bytes` (0: none).
    pub fn get(&mut self, bytes: usize, consistent: bool) {
        self.add("GetItem", read_units(bytes, consistent), 0.0, bytes);
    }

    /// A Query returning items of these sizes: one request per 1 MB page.
    pub fn query(&mut self, item_bytes: impl IntoIterator<Item = usize>, consistent: bool) {
        let mut page = 0;
        let mut any = false;
        for b in item_bytes {
            if page > 0 && page + b > QUERY_PAGE_BYTES {
                self.add("Query", read_units(page, consistent), 0.0, page);
                page = 0;
            }
            page += b;
            any = true;
        }
        if page > 0 || !any {
            self.add("Query", read_units(page, consistent), 0.0, page);
        }
    }

    /// A PutItem, UpdateItem or DeleteItem of an item `before` and `after` bytes (0: absent).
    pub fn write(&mut self, operation: &str, before: usize, after: usize) {
        self.add(operation, 0.0, write_units(before.max(after)), 0);
    }

    /// One TransactWriteItems over items of these sizes (the larger of before and after each).
    pub fn transaction(&mut self, item_bytes: &[usize]) {
        let units = item_bytes.iter().map(|b| 2.0 * write_units(*b)).sum();
        self.add("TransactWriteItems", 0.0, units, 0);
    }
}

/// Read units of one read returning `bytes`: 4 KB each, rounded up, at least one; half when
/// eventually consistent.
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// Write units of writing an item of `bytes`: 1 KB each, rounded up, at least one.
pub fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// A string attribute.
fn string(name: &str, value: &str) -> usize {
    name.len() + value.len()
}

/// A number attribute: one byte per two significant digits, plus one.
fn number(name: &str, value: &str) -> usize {
    name.len() + number_value(value)
}

fn number_value(value: &str) -> usize {
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1);
    significant.div_ceil(2) + 1
}

/// A scoped key value: `<cluster>#value`.
fn scoped(value: &str) -> usize {
    CLUSTER_NAME_BYTES + 1 + value.len()
}

fn json<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_string(value).map_or(0, |s| s.len())
}

/// The size of the DynamoDB item that stores `claim` (the store's attribute layout).
pub fn claim_item_bytes(claim: &ClaimRecord) -> usize {
    let mut size = 0;
    let partition = if claim.state.is_terminal() {
        CLUSTER_NAME_BYTES + "#ended".len()
    } else {
        CLUSTER_NAME_BYTES
    };
    size += "cluster".len() + partition;
    size += string("claimId", &claim.id);
    size += string("pool", &claim.pool);
    size += "poolKey".len() + scoped(&claim.pool);
    size += string("state", claim.state.as_str());
    size += "stateKey".len() + scoped(claim.state.as_str());
    size += string("backing", &claim.backing);
    size += number("version", &claim.version.to_string());
    if let Some(at) = claim.expires_at() {
        size += number("expiresAt", &at.to_string());
    }
    if let Some(id) = &claim.instance_id {
        size += string("instanceId", id);
        size += "instanceKey".len() + scoped(id);
    }
    if let Some(v) = &claim.instance_type {
        size += string("instanceType", v);
    }
    if let Some(v) = claim.capacity_type {
        size += string("capacityType", v.as_str());
    }
    if let Some(v) = &claim.zone {
        size += string("zone", v);
    }
    if let Some(v) = claim.price_per_hour {
        size += number("pricePerHour", &v.to_string());
    }
    if let Some(v) = &claim.allocatable {
        size += "allocatable".len() + json(v);
    }
    if let Some(v) = &claim.requested {
        size += "requested".len() + json(v);
    }
    if !claim.host_ports.is_empty() {
        size += "hostPorts".len() + json(&claim.host_ports);
    }
    if !claim.labels.is_empty() {
        size += "labels".len() + json(&claim.labels);
    }
    if let Some(v) = &claim.node_class_hash {
        size += string("nodeClassHash", v);
    }
    if let Some(v) = &claim.pods_digest {
        size += string("podsDigest", v);
    }
    if let Some(v) = claim.pods_changed_at {
        size += number("podsChangedAt", &v.to_string());
    }
    if let Some(v) = claim.scale_requested_at {
        size += number("scaleRequestedAt", &v.to_string());
    }
    if let Some(v) = &claim.node_name {
        size += string("nodeName", v);
    }
    if !claim.offerings.is_empty() {
        let kept = &claim.offerings[..claim.offerings.len().min(MAX_STORED_OFFERINGS)];
        size += "offerings".len() + json(&kept);
    }
    size += "pods".len() + 3 + claim.pods.iter().map(|p| p.len() + 1).sum::<usize>();
    size += "transitions".len()
        + 3
        + claim
            .transitions
            .iter()
            .map(|(k, v)| k.as_str().len() + number_value(&v.to_string()) + 1)
            .sum::<usize>();
    size
}

/// Approximate sizes of the small records (reservations, idempotency records, leases, usage
/// counters, unavailable offerings): each is well under 1 KB, so one write unit and, read alone,
/// one read unit; what they add to a Query is their size.
pub const SMALL_ITEM_BYTES: usize = 160;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_up_per_request_as_dynamodb_bills() {
        // Reads: 4 KB units, at least one, half when eventually consistent.
        assert_eq!(read_units(0, true), 1.0);
        assert_eq!(read_units(4096, true), 1.0);
        assert_eq!(read_units(4097, true), 2.0);
        assert_eq!(read_units(4097, false), 1.0);
        // Writes: 1 KB units, at least one.
        assert_eq!(write_units(1), 1.0);
        assert_eq!(write_units(1025), 2.0);
        // A Query is billed on the sum of its page, not per item: 100 items of 400 bytes are
        // 40,000 bytes, 10 units consistent (100 GetItems would be 100).
        let mut bill = Bill::default();
        bill.query(std::iter::repeat_n(400, 100), true);
        assert_eq!((bill.requests, bill.read_units, bill.bytes_read), (1, 10.0, 40_000));
        // Pages of at most 1 MB, each rounded on its own: 3,000 items of 1,000 bytes are three
        // pages (1,048 + 1,048 + 904 items).
        let mut bill = Bill::default();
        bill.query(std::iter::repeat_n(1000, 3000), false);
        assert_eq!(bill.requests, 3);
        assert_eq!(bill.read_units, (256.0 + 256.0 + 221.0) / 2.0);
        // An empty Query still costs its minimum.
        let mut bill = Bill::default();
        bill.query(std::iter::empty(), true);
        assert_eq!((bill.requests, bill.read_units), (1, 1.0));
        // Writes take the larger of before and after; a transaction doubles per item.
        let mut bill = Bill::default();
        bill.write("PutItem", 3000, 500);
        bill.transaction(&[100, 2100]);
        assert_eq!(bill.write_units, 3.0 + 2.0 * 1.0 + 2.0 * 3.0);
        assert_eq!(bill.operations["TransactWriteItems"], (1, 0.0, 8.0));
    }

    #[test]
    fn numbers_count_significant_digits() {
        assert_eq!(number_value("0"), 2);
        assert_eq!(number_value("7"), 2);
        assert_eq!(number_value("1700000000000"), 2);
        assert_eq!(number_value("1764583200123"), 8);
        assert_eq!(number_value("0.0416"), 3);
    }
}
