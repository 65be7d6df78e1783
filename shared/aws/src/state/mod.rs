//! Nodewright's state in DynamoDB, scoped by cluster: node claims, pod reservations, event
//! idempotency records, unavailable offerings (the ICE cache) and pool usage counters.
//!
//! Concurrency is decided by DynamoDB conditions, never by the caller's view: a reservation is won by
//! a conditional put, a usage increment is granted by a conditional update, a claim moves forward
//! only under its version number. TTL'd records are also filtered on read, because DynamoDB deletes
//! expired items lazily (and moto not at all).

mod claims;
mod idempotency;
mod item;
mod offerings;
mod prices;
mod reservations;
mod resume;
pub mod tables;
mod usage;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity, ReturnConsumedCapacity};

pub use nodewright_core::ports::state::{
    ClaimRecord, ClaimUpdate, EventStart, Holder, IDEMPOTENCY_LEASE_SECS, IDEMPOTENCY_TTL_SECS, MAX_STORED_OFFERINGS,
    OFFERING_UNAVAILABLE_SECS, Once, PoolUsage, RESERVATION_TTL_SECS, ReadCost, Reservation, STATE_VIEW_FORMAT,
    StateView, TransitionOutcome, UnavailableOffering, UsageDecision, UsageDelta, UsageDrift, UsageSnapshot,
};
pub use reservations::{RESERVATION_SHARDS, reservation_partition};
pub use tables::{Table, TableNames, create_tables};

use crate::error::FromSdk;
use crate::{Error, Result};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The longest cluster name accepted (EKS allows 100 characters).
const MAX_CLUSTER_NAME: usize = 100;

/// Access to one cluster's records.
#[derive(Debug, Clone)]
pub struct StateStore {
    client: Client,
    tables: TableNames,
    cluster: String,
    /// What this store's reads have cost so far (DynamoDB's own count), shared by clones.
    reads: Arc<Mutex<ReadCost>>,
}

impl StateStore {
    pub fn new(client: Client, tables: TableNames, cluster: impl Into<String>) -> Result<Self> {
        let cluster = cluster.into();
        if cluster.is_empty() || cluster.len() > MAX_CLUSTER_NAME || cluster.contains('#') {
            return Err(Error::invalid(
                "cluster",
                format!("{cluster:?} must be 1-{MAX_CLUSTER_NAME} characters without '#'"),
            ));
        }
        Ok(StateStore {
            client,
            tables,
            cluster,
            reads: Arc::default(),
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The requests and read capacity units this store's reads (GetItem, Query) have consumed.
    pub fn read_cost(&self) -> ReadCost {
        *self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_read(&self, consumed: Option<&ConsumedCapacity>) {
        let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        reads.requests += 1;
        reads.read_units += consumed.and_then(|c| c.capacity_units).unwrap_or(0.0);
    }

    pub fn table_name(&self, table: Table) -> String {
        self.tables.name(table)
    }

    /// A value scoped to this cluster, for index keys (`cluster#value`).
    pub(crate) fn scoped(&self, value: &str) -> String {
        format!("{}#{}", self.cluster, value)
    }

    /// One item of this cluster by its sort key, read consistently.
    pub(crate) async fn get_one(&self, table: Table, sort_value: &str) -> Result<Option<Item>> {
        let partition = self.cluster.clone();
        self.get_in(table, &partition, sort_value).await
    }

    /// One item of `partition` by its sort key, read consistently.
    pub(crate) async fn get_in(&self, table: Table, partition: &str, sort_value: &str) -> Result<Option<Item>> {
        let spec = table.spec();
        let sort_key = spec.sort_key.unwrap_or(spec.partition_key);
        let out = self
            .client
            .get_item()
            .table_name(self.table_name(table))
            .key(spec.partition_key, AttributeValue::S(partition.to_string()))
            .key(sort_key, AttributeValue::S(sort_value.to_string()))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| Error::aws("GetItem", e))?;
        self.count_read(out.consumed_capacity());
        Ok(out.item)
    }

    /// Every item of this cluster in `table` (or in one partition of an index), following pages.
    /// The table is read consistently: handlers decide from it (which claim holds an instance,
    /// which waits for one) and a read missing a write of a second ago gave one instance to two
    /// claims. Indexes allow only eventually consistent reads; their callers re-read the item.
    pub(crate) async fn query_all(&self, table: Table, index: Option<(&str, &str, &str)>) -> Result<Vec<Item>> {
        let (index_name, key_attr, key_value) = match index {
            Some((name, attr, value)) => (Some(name), attr, value.to_string()),
            None => (None, table.spec().partition_key, self.cluster.clone()),
        };
        self.query_pages(table, index_name, key_attr, &key_value, None).await
    }

    /// Every item of one partition (`key_attr = key_value`), or of its sort keys starting with
    /// `(sort_attr, prefix)`, following pages; consistent on the table, as [`Self::query_all`].
    pub(crate) async fn query_pages(
        &self,
        table: Table,
        index_name: Option<&str>,
        key_attr: &str,
        key_value: &str,
        sort_prefix: Option<(&str, &str)>,
    ) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(self.table_name(table))
                .set_index_name(index_name.map(str::to_string))
                .consistent_read(index_name.is_none())
                .expression_attribute_names("#k", key_attr)
                .expression_attribute_values(":k", AttributeValue::S(key_value.to_string()));
            query = match sort_prefix {
                Some((attr, prefix)) => query
                    .key_condition_expression("#k = :k AND begins_with(#s, :p)")
                    .expression_attribute_names("#s", attr)
                    .expression_attribute_values(":p", AttributeValue::S(prefix.to_string())),
                None => query.key_condition_expression("#k = :k"),
            };
            let page = query
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| Error::aws("Query", e))?;
            self.count_read(page.consumed_capacity());
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(items)
    }
}
