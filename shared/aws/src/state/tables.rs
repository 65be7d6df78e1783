//! The DynamoDB tables, defined once. The same definitions create the tables in the emulator
//! (`create_tables`) and are compared with the deployment template by a test, so code and
//! infrastructure cannot drift.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};

use crate::error::FromSdk;
use crate::{Error, Result};

/// The record types Nodewright keeps, one table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Claims,
    Reservations,
    Idempotency,
    Offerings,
    Usage,
}

/// A global secondary index: a string partition key and optional string sort key, all attributes
/// projected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub partition_key: &'static str,
    pub sort_key: Option<&'static str>,
}

/// A table: string keys, pay-per-request billing, an optional TTL attribute (epoch seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    pub table: Table,
    /// Appended to the deployment's table prefix: `{prefix}-{suffix}`.
    pub suffix: &'static str,
    pub partition_key: &'static str,
    pub sort_key: Option<&'static str>,
    pub indexes: &'static [IndexSpec],
    pub ttl_attribute: Option<&'static str>,
}

/// The claims index by instance id (sparse: only claims with an instance).
pub const CLAIMS_BY_INSTANCE: &str = "byInstance";
/// The claims index by lifecycle state.
pub const CLAIMS_BY_STATE: &str = "byState";
/// The claims index by pool.
pub const CLAIMS_BY_POOL: &str = "byPool";

/// Every table, in a fixed order.
pub const TABLES: [TableSpec; 5] = [
    TableSpec {
        table: Table::Claims,
        suffix: "claims",
        partition_key: "cluster",
        sort_key: Some("claimId"),
        indexes: &[
            IndexSpec {
                name: CLAIMS_BY_INSTANCE,
                partition_key: "instanceKey",
                sort_key: None,
            },
            IndexSpec {
                name: CLAIMS_BY_STATE,
                partition_key: "stateKey",
                sort_key: Some("claimId"),
            },
            IndexSpec {
                name: CLAIMS_BY_POOL,
                partition_key: "poolKey",
                sort_key: Some("claimId"),
            },
        ],
        ttl_attribute: Some("expiresAt"),
    },
    TableSpec {
        table: Table::Reservations,
        suffix: "reservations",
        partition_key: "cluster",
        sort_key: Some("podUid"),
        indexes: &[],
        ttl_attribute: Some("expiresAt"),
    },
    TableSpec {
        table: Table::Idempotency,
        suffix: "idempotency",
        partition_key: "cluster",
        sort_key: Some("eventId"),
        indexes: &[],
        ttl_attribute: Some("expiresAt"),
    },
    TableSpec {
        table: Table::Offerings,
        suffix: "offerings",
        partition_key: "cluster",
        sort_key: Some("offering"),
        indexes: &[],
        ttl_attribute: Some("expiresAt"),
    },
    TableSpec {
        table: Table::Usage,
        suffix: "usage",
        partition_key: "cluster",
        sort_key: Some("pool"),
        indexes: &[],
        ttl_attribute: None,
    },
];

impl Table {
    pub fn spec(self) -> &'static TableSpec {
        match self {
            Table::Claims => &TABLES[0],
            Table::Reservations => &TABLES[1],
            Table::Idempotency => &TABLES[2],
            Table::Offerings => &TABLES[3],
            Table::Usage => &TABLES[4],
        }
    }
}

/// Physical table names: `{prefix}-{suffix}`. The prefix comes from `NODEWRIGHT_TABLE_PREFIX`
/// (the template sets it to the stack name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    prefix: String,
}

impl TableNames {
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let ok = !prefix.is_empty()
            && prefix.len() <= 200
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(Error::invalid(
                "NODEWRIGHT_TABLE_PREFIX",
                format!("{prefix:?} is not a valid DynamoDB table name prefix (1-200 of [A-Za-z0-9_.-])"),
            ));
        }
        Ok(TableNames { prefix })
    }

    pub fn name(&self, table: Table) -> String {
        format!("{}-{}", self.prefix, table.spec().suffix)
    }
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(|e| Error::invalid("key schema", e.to_string()))
}

fn string_attribute(name: &str) -> Result<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| Error::invalid("attribute definition", e.to_string()))
}

fn key_schema(partition: &str, sort: Option<&str>) -> Result<Vec<KeySchemaElement>> {
    let mut keys = vec![key(partition, KeyType::Hash)?];
    if let Some(sort) = sort {
        keys.push(key(sort, KeyType::Range)?);
    }
    Ok(keys)
}

/// Creates every table that does not exist yet, with its indexes and TTL. Used for the emulator and
/// for `nodewright` local runs; production tables come from the template.
pub async fn create_tables(client: &Client, names: &TableNames) -> Result<()> {
    let existing = client
        .list_tables()
        .send()
        .await
        .map_err(|e| Error::aws("ListTables", e))?
        .table_names
        .unwrap_or_default();
    for spec in &TABLES {
        let name = names.name(spec.table);
        if existing.contains(&name) {
            continue;
        }
        let mut attributes: Vec<&str> = vec![spec.partition_key];
        attributes.extend(spec.sort_key);
        for index in spec.indexes {
            attributes.push(index.partition_key);
            attributes.extend(index.sort_key);
        }
        attributes.sort_unstable();
        attributes.dedup();
        let mut request = client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_key_schema(Some(key_schema(spec.partition_key, spec.sort_key)?))
            .set_attribute_definitions(Some(
                attributes
                    .iter()
                    .map(|a| string_attribute(a))
                    .collect::<Result<Vec<_>>>()?,
            ));
        for index in spec.indexes {
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(index.name)
                    .set_key_schema(Some(key_schema(index.partition_key, index.sort_key)?))
                    .projection(Projection::builder().projection_type(ProjectionType::All).build())
                    .build()
                    .map_err(|e| Error::invalid("index", e.to_string()))?,
            );
        }
        request.send().await.map_err(|e| Error::aws("CreateTable", e))?;
        if let Some(ttl) = spec.ttl_attribute {
            client
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(ttl)
                        .build()
                        .map_err(|e| Error::invalid("ttl", e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| Error::aws("UpdateTimeToLive", e))?;
        }
    }
    Ok(())
}
