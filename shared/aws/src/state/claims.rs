//! Node claims: one record per node Nodewright decided to launch, from decision to termination.
//! Claims move forward only (see `ClaimState::transition`), under an optimistic version number, so
//! a late or duplicated event can never rewind or resurrect one.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem};
use nodewright_core::CapacityType;
use nodewright_core::model::{ClaimState, Transition};

use super::item::{Fields, conditional, n, s, transaction};
use super::tables::{CLAIMS_BY_INSTANCE, CLAIMS_BY_POOL, CLAIMS_BY_STATE};
use super::{ClaimRecord, ClaimUpdate, Item, MAX_STORED_OFFERINGS, StateStore, Table, TransitionOutcome};
use crate::{EpochMillis, Error, Result};

/// How many times a transition re-reads and retries after losing a version race.
const MAX_VERSION_RETRIES: usize = 8;

/// The partition key of this cluster's ended claims (`<cluster>#ended`), beside the live ones
/// under `<cluster>`: a Query of live claims reads no history, and ended claims expire by TTL.
fn ended_partition(cluster: &str) -> String {
    format!("{cluster}#ended")
}

impl StateStore {
    /// The partition a claim in `state` lives in.
    fn claim_partition(&self, state: ClaimState) -> String {
        if state.is_terminal() {
            ended_partition(&self.cluster)
        } else {
            self.cluster.clone()
        }
    }

    fn claim_key(&self, partition: String, id: &str) -> Item {
        Item::from([("cluster".to_string(), s(partition)), ("claimId".to_string(), s(id))])
    }

    /// The size of the item that stores `claim`, as DynamoDB bills it.
    pub fn claim_item_bytes(&self, claim: &ClaimRecord) -> Result<usize> {
        Ok(super::item::item_bytes(&self.claim_item(claim)?))
    }

    pub(crate) fn claim_item(&self, claim: &ClaimRecord) -> Result<Item> {
        let mut item = Item::new();
        item.insert("cluster".into(), s(self.claim_partition(claim.state)));
        if let Some(at) = claim.expires_at() {
            item.insert("expiresAt".into(), n(at));
        }
        item.insert("claimId".into(), s(&claim.id));
        item.insert("pool".into(), s(&claim.pool));
        item.insert("poolKey".into(), s(self.scoped(&claim.pool)));
        item.insert("state".into(), s(claim.state.as_str()));
        item.insert("stateKey".into(), s(self.scoped(claim.state.as_str())));
        item.insert("backing".into(), s(&claim.backing));
        item.insert("version".into(), n(claim.version));
        if let Some(id) = &claim.instance_id {
            item.insert("instanceId".into(), s(id));
            item.insert("instanceKey".into(), s(self.scoped(id)));
        }
        if let Some(v) = &claim.instance_type {
            item.insert("instanceType".into(), s(v));
        }
        if let Some(v) = claim.capacity_type {
            item.insert("capacityType".into(), s(v.as_str()));
        }
        if let Some(v) = &claim.zone {
            item.insert("zone".into(), s(v));
        }
        if let Some(v) = claim.price_per_hour {
            item.insert("pricePerHour".into(), n(v));
        }
        if let Some(v) = &claim.allocatable {
            let json = serde_json::to_string(v).map_err(|e| Error::invalid("allocatable", e.to_string()))?;
            item.insert("allocatable".into(), s(json));
        }
        if let Some(v) = &claim.requested {
            let json = serde_json::to_string(v).map_err(|e| Error::invalid("requested", e.to_string()))?;
            item.insert("requested".into(), s(json));
        }
        if !claim.host_ports.is_empty() {
            let json =
                serde_json::to_string(&claim.host_ports).map_err(|e| Error::invalid("hostPorts", e.to_string()))?;
            item.insert("hostPorts".into(), s(json));
        }
        if !claim.labels.is_empty() {
            let json = serde_json::to_string(&claim.labels).map_err(|e| Error::invalid("labels", e.to_string()))?;
            item.insert("labels".into(), s(json));
        }
        if let Some(v) = &claim.node_class_hash {
            item.insert("nodeClassHash".into(), s(v));
        }
        if let Some(v) = &claim.pods_digest {
            item.insert("podsDigest".into(), s(v));
        }
        if let Some(v) = claim.pods_changed_at {
            item.insert("podsChangedAt".into(), n(v));
        }
        if let Some(v) = claim.scale_requested_at {
            item.insert("scaleRequestedAt".into(), n(v));
        }
        if let Some(v) = &claim.node_name {
            item.insert("nodeName".into(), s(v));
        }
        if !claim.offerings.is_empty() {
            let kept = &claim.offerings[..claim.offerings.len().min(MAX_STORED_OFFERINGS)];
            let json = serde_json::to_string(kept).map_err(|e| Error::invalid("offerings", e.to_string()))?;
            item.insert("offerings".into(), s(json));
        }
        item.insert("pods".into(), AttributeValue::L(claim.pods.iter().map(s).collect()));
        item.insert(
            "transitions".into(),
            AttributeValue::M(
                claim
                    .transitions
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), n(v)))
                    .collect(),
            ),
        );
        Ok(item)
    }

    fn parse_claim(&self, item: &Item) -> Result<ClaimRecord> {
        let table = self.table_name(Table::Claims);
        let f = Fields::new(&table, "claimId", item);
        let state = f.s("state")?;
        let capacity_type = match f.opt_s("capacityType")? {
            Some(ct) => {
                Some(CapacityType::parse(&ct).ok_or_else(|| f.corrupt(format!("capacityType {ct:?} is unknown")))?)
            }
            None => None,
        };
        let allocatable = match f.opt_s("allocatable")? {
            Some(json) => {
                Some(serde_json::from_str(&json).map_err(|e| f.corrupt(format!("allocatable is not valid: {e}")))?)
            }
            None => None,
        };
        let requested = match f.opt_s("requested")? {
            Some(json) => {
                Some(serde_json::from_str(&json).map_err(|e| f.corrupt(format!("requested is not valid: {e}")))?)
            }
            None => None,
        };
        let host_ports = match f.opt_s("hostPorts")? {
            Some(json) => serde_json::from_str(&json).map_err(|e| f.corrupt(format!("hostPorts is not valid: {e}")))?,
            None => Vec::new(),
        };
        let labels = match f.opt_s("labels")? {
            Some(json) => serde_json::from_str(&json).map_err(|e| f.corrupt(format!("labels is not valid: {e}")))?,
            None => BTreeMap::new(),
        };
        let offerings = match f.opt_s("offerings")? {
            Some(json) => serde_json::from_str(&json).map_err(|e| f.corrupt(format!("offerings is not valid: {e}")))?,
            None => Vec::new(),
        };
        let mut transitions = BTreeMap::new();
        for (k, v) in f.number_map("transitions")? {
            let st = ClaimState::parse(&k).ok_or_else(|| f.corrupt(format!("transitions has unknown state {k:?}")))?;
            transitions.insert(st, v);
        }
        Ok(ClaimRecord {
            id: f.s("claimId")?,
            pool: f.s("pool")?,
            state: ClaimState::parse(&state).ok_or_else(|| f.corrupt(format!("state {state:?} is unknown")))?,
            instance_id: f.opt_s("instanceId")?,
            instance_type: f.opt_s("instanceType")?,
            capacity_type,
            zone: f.opt_s("zone")?,
            price_per_hour: f.opt_n("pricePerHour")?,
            allocatable,
            requested,
            host_ports,
            labels,
            pods: f.string_list("pods")?,
            transitions,
            backing: f.opt_s("backing")?.unwrap_or_else(|| "fleet".into()),
            node_class_hash: f.opt_s("nodeClassHash")?,
            pods_digest: f.opt_s("podsDigest")?,
            pods_changed_at: f.opt_n("podsChangedAt")?,
            offerings,
            scale_requested_at: f.opt_n("scaleRequestedAt")?,
            node_name: f.opt_s("nodeName")?,
            version: f.n("version")?,
        })
    }

    /// Stores a new claim. Returns false (and writes nothing) when a claim with that id exists,
    /// live or ended, so a retried invocation that re-derives the same id neither overwrites
    /// progress nor brings an ended claim back (one transaction: the ended key is checked).
    pub async fn create_claim(&self, claim: &ClaimRecord) -> Result<bool> {
        let table = self.table_name(Table::Claims);
        let absent = ConditionCheck::builder()
            .table_name(&table)
            .set_key(Some(self.claim_key(ended_partition(&self.cluster), &claim.id)))
            .condition_expression("attribute_not_exists(claimId)")
            .build()
            .map_err(|e| Error::invalid("claim", e.to_string()))?;
        let put = Put::builder()
            .table_name(&table)
            .set_item(Some(self.claim_item(claim)?))
            .condition_expression("attribute_not_exists(claimId)")
            .build()
            .map_err(|e| Error::invalid("claim", e.to_string()))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(absent).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        transaction("TransactWriteItems", result)
    }

    /// The claim, live or ended (consistent reads: the live key, then the ended one).
    pub async fn get_claim(&self, id: &str) -> Result<Option<ClaimRecord>> {
        for partition in [self.cluster.clone(), ended_partition(&self.cluster)] {
            if let Some(item) = self.get_in(Table::Claims, &partition, id).await? {
                return self.parse_claim(&item).map(Some);
            }
        }
        Ok(None)
    }

    /// The claim that launched an instance (index look-up; eventually consistent).
    pub async fn claim_by_instance(&self, instance_id: &str) -> Result<Option<ClaimRecord>> {
        let key = self.scoped(instance_id);
        let items = self
            .query_all(Table::Claims, Some((CLAIMS_BY_INSTANCE, "instanceKey", &key)))
            .await?;
        match items.first() {
            // Re-read through the table for a consistent, current view.
            Some(item) => {
                let claim = self.parse_claim(item)?;
                self.get_claim(&claim.id).await
            }
            None => Ok(None),
        }
    }

    pub async fn claims_in_state(&self, state: ClaimState) -> Result<Vec<ClaimRecord>> {
        let key = self.scoped(state.as_str());
        self.query_all(Table::Claims, Some((CLAIMS_BY_STATE, "stateKey", &key)))
            .await?
            .iter()
            .map(|i| self.parse_claim(i))
            .collect()
    }

    /// Launching, Launched and Registered claims: three Queries of the state index, at once.
    pub async fn in_flight_claims(&self) -> Result<Vec<ClaimRecord>> {
        let (launching, launched, registered) = futures::try_join!(
            self.claims_in_state(ClaimState::Launching),
            self.claims_in_state(ClaimState::Launched),
            self.claims_in_state(ClaimState::Registered)
        )?;
        Ok(launching.into_iter().chain(launched).chain(registered).collect())
    }

    pub async fn claims_in_pool(&self, pool: &str) -> Result<Vec<ClaimRecord>> {
        let key = self.scoped(pool);
        self.query_all(Table::Claims, Some((CLAIMS_BY_POOL, "poolKey", &key)))
            .await?
            .iter()
            .map(|i| self.parse_claim(i))
            .collect()
    }

    /// Every claim of this cluster kept: the live ones and the ended ones not yet expired.
    pub async fn claims(&self) -> Result<Vec<ClaimRecord>> {
        let ended = ended_partition(&self.cluster);
        let (live, ended) = futures::try_join!(
            self.query_pages(Table::Claims, None, "cluster", &self.cluster, None),
            self.query_pages(Table::Claims, None, "cluster", &ended, None)
        )?;
        live.iter().chain(&ended).map(|i| self.parse_claim(i)).collect()
    }

    /// The claims not ended: one consistent Query of the live partition, whose cost follows the
    /// live nodes. A stored ended claim found there (written before ended claims moved to their
    /// own partition) is left out and moved.
    pub async fn live_claims(&self) -> Result<Vec<ClaimRecord>> {
        let items = self
            .query_pages(Table::Claims, None, "cluster", &self.cluster, None)
            .await?;
        let mut live = Vec::with_capacity(items.len());
        for item in &items {
            let claim = self.parse_claim(item)?;
            if claim.state.is_terminal() {
                if let Err(e) = self.replace_claim(&claim, claim.version).await {
                    tracing::warn!(claim = %claim.id, error = %e, "moving an ended claim out of the live partition");
                }
                continue;
            }
            live.push(claim);
        }
        Ok(live)
    }

    /// Moves a claim to `to` at time `at`, with what was learned on the way. Monotonic: a state at or
    /// before the current one is reported (Duplicate / Stale) and nothing is written.
    pub async fn transition_claim(
        &self,
        id: &str,
        to: ClaimState,
        at: EpochMillis,
        update: &ClaimUpdate,
    ) -> Result<TransitionOutcome> {
        for _ in 0..MAX_VERSION_RETRIES {
            let Some(mut claim) = self.get_claim(id).await? else {
                return Err(Error::ClaimNotFound(id.into()));
            };
            let previous_version = claim.version;
            match claim.advance(to, at, update) {
                Transition::Duplicate => return Ok(TransitionOutcome::Duplicate(claim)),
                Transition::Stale => return Ok(TransitionOutcome::Stale(claim)),
                Transition::Advance => {}
            }
            if self.replace_claim(&claim, previous_version).await? {
                return Ok(TransitionOutcome::Advanced(claim));
            }
        }
        Err(Error::Contended(id.into()))
    }

    /// Replaces the stored claim if its version is still `expected_version`. A claim that ends
    /// moves to the ended partition in one transaction (the live item deleted under the version
    /// condition); an ended claim is replaced where it is.
    pub async fn replace_claim(&self, claim: &ClaimRecord, expected_version: u64) -> Result<bool> {
        let table = self.table_name(Table::Claims);
        if claim.state.is_terminal() {
            let delete = Delete::builder()
                .table_name(&table)
                .set_key(Some(self.claim_key(self.cluster.clone(), &claim.id)))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(expected_version))
                .build()
                .map_err(|e| Error::invalid("claim", e.to_string()))?;
            let put = Put::builder()
                .table_name(&table)
                .set_item(Some(self.claim_item(claim)?))
                .build()
                .map_err(|e| Error::invalid("claim", e.to_string()))?;
            let moved = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().delete(delete).build())
                .transact_items(TransactWriteItem::builder().put(put).build())
                .send()
                .await;
            if transaction("TransactWriteItems", moved)? {
                return Ok(true);
            }
            // Not live at that version: already ended (replaced in place below) or moved on.
        }
        let result = self
            .client
            .put_item()
            .table_name(&table)
            .set_item(Some(self.claim_item(claim)?))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(expected_version))
            .send()
            .await;
        conditional("PutItem", result)
    }
}
