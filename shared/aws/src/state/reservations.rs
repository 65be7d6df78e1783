//! Pod reservations: which invocation, claim or node a pending pod has been promised to. A pod is
//! reserved by exactly one holder at a time; the conditional put decides, so two concurrent
//! `pod-pending` invocations that see the same pod never both provision for it. Reservations expire
//! (TTL) so that a holder that died half-way does not keep a pod forever.
//!
//! A burst of pending pods writes two reservation records per pod (reserve, hand over) in seconds:
//! thousands of writes a second, more than one partition key value takes (about 1,000 WCU/s). So
//! the records are spread over [`RESERVATION_SHARDS`] partition values, `cluster#NN`, by a stable
//! hash of the pod uid: a pod's record is always found under the same key, and only the rare
//! whole-cluster listing queries every shard.

use futures::StreamExt;

use super::item::{Fields, conditional, n, s};
use super::{Holder, Item, Reservation, StateStore, Table};
use crate::{EpochMillis, Error, Result};

/// How many conditional writes run at once when reserving a batch.
const RESERVE_CONCURRENCY: usize = 16;

/// Partition key values a cluster's reservations are spread over.
pub const RESERVATION_SHARDS: u64 = 16;

/// The partition key value of a pod's reservation: `cluster#NN`, NN from the FNV-1a hash of the
/// uid (stable across builds and platforms, unlike `std`'s hasher; pod uids are random UUIDs, so
/// any stable hash spreads them evenly).
pub fn reservation_partition(cluster: &str, pod_uid: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod_uid.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    shard_key(cluster, hash % RESERVATION_SHARDS)
}

fn shard_key(cluster: &str, shard: u64) -> String {
    format!("{cluster}#{shard:02}")
}

fn expiry(now: EpochMillis, ttl_secs: i64) -> i64 {
    now / 1000 + ttl_secs
}

impl StateStore {
    /// Reserves one pod for `holder`. Returns false when another live holder has it. An expired
    /// reservation (still present because TTL deletion is lazy) is taken over.
    pub async fn reserve_pod(&self, pod_uid: &str, holder: &Holder, now: EpochMillis, ttl_secs: i64) -> Result<bool> {
        if pod_uid.is_empty() || pod_uid.len() > 256 {
            return Err(Error::invalid(
                "podUid",
                format!("{pod_uid:?} must be 1-256 characters"),
            ));
        }
        let result = self
            .client
            .put_item()
            .table_name(self.table_name(Table::Reservations))
            .item("cluster", s(reservation_partition(&self.cluster, pod_uid)))
            .item("podUid", s(pod_uid))
            .item("holder", s(holder.encode()))
            .item("createdAt", n(now))
            .item("expiresAt", n(expiry(now, ttl_secs)))
            .condition_expression("attribute_not_exists(podUid) OR expiresAt < :nowSecs OR holder = :holder")
            .expression_attribute_values(":nowSecs", n(now / 1000))
            .expression_attribute_values(":holder", s(holder.encode()))
            .send()
            .await;
        conditional("PutItem", result)
    }

    /// Reserves a batch, concurrently; returns the uids this holder won (in input order).
    pub async fn reserve_pods(
        &self,
        pod_uids: &[String],
        holder: &Holder,
        now: EpochMillis,
        ttl_secs: i64,
    ) -> Result<Vec<String>> {
        let requests: Vec<(usize, String)> = pod_uids.iter().cloned().enumerate().collect();
        let results: Vec<(usize, Result<bool>)> = futures::stream::iter(requests)
            .map(|(i, uid)| {
                let store = self.clone();
                let holder = holder.clone();
                async move { (i, store.reserve_pod(&uid, &holder, now, ttl_secs).await) }
            })
            .buffer_unordered(RESERVE_CONCURRENCY)
            .collect()
            .await;
        let mut won = vec![false; pod_uids.len()];
        for (i, r) in results {
            won[i] = r?;
        }
        Ok(pod_uids
            .iter()
            .zip(won)
            .filter(|(_, w)| *w)
            .map(|(uid, _)| uid.clone())
            .collect())
    }

    /// Moves a reservation from one holder to another (an invocation hands its pods to the claim it
    /// launched). Returns false when `from` no longer holds the pod.
    pub async fn transfer_pod(
        &self,
        pod_uid: &str,
        from: &Holder,
        to: &Holder,
        now: EpochMillis,
        ttl_secs: i64,
    ) -> Result<bool> {
        let result = self
            .client
            .update_item()
            .table_name(self.table_name(Table::Reservations))
            .key("cluster", s(reservation_partition(&self.cluster, pod_uid)))
            .key("podUid", s(pod_uid))
            .update_expression("SET holder = :to, expiresAt = :exp")
            .condition_expression("holder = :from")
            .expression_attribute_values(":to", s(to.encode()))
            .expression_attribute_values(":from", s(from.encode()))
            .expression_attribute_values(":exp", n(expiry(now, ttl_secs)))
            .send()
            .await;
        conditional("UpdateItem", result)
    }

    /// Releases a pod if `holder` still holds it (so a slow invocation cannot release a pod someone
    /// else has taken since). Returns whether it was released.
    pub async fn release_pod(&self, pod_uid: &str, holder: &Holder) -> Result<bool> {
        let result = self
            .client
            .delete_item()
            .table_name(self.table_name(Table::Reservations))
            .key("cluster", s(reservation_partition(&self.cluster, pod_uid)))
            .key("podUid", s(pod_uid))
            .condition_expression("holder = :h")
            .expression_attribute_values(":h", s(holder.encode()))
            .send()
            .await;
        conditional("DeleteItem", result)
    }

    /// Every live reservation of this cluster (expired ones filtered out): one Query per shard,
    /// in pod uid order. For inspection and tests; no handler lists reservations.
    pub async fn reservations(&self, now: EpochMillis) -> Result<Vec<Reservation>> {
        let table = self.table_name(Table::Reservations);
        let keys: Vec<String> = (0..RESERVATION_SHARDS).map(|i| shard_key(&self.cluster, i)).collect();
        let shards = futures::future::join_all(
            keys.iter()
                .map(|k| self.query_pages(Table::Reservations, None, "cluster", k, None)),
        )
        .await;
        let mut out = Vec::new();
        for item in shards.into_iter().collect::<Result<Vec<_>>>()?.iter().flatten() {
            let r = parse_reservation(&table, item)?;
            if r.expires_at >= now / 1000 {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.pod_uid.cmp(&b.pod_uid));
        Ok(out)
    }

    /// Live reservations held by one holder.
    pub async fn reservations_of(&self, holder: &Holder, now: EpochMillis) -> Result<Vec<Reservation>> {
        Ok(self
            .reservations(now)
            .await?
            .into_iter()
            .filter(|r| &r.holder == holder)
            .collect())
    }
}

fn parse_reservation(table: &str, item: &Item) -> Result<Reservation> {
    let f = Fields::new(table, "podUid", item);
    let holder = f.s("holder")?;
    Ok(Reservation {
        pod_uid: f.s("podUid")?,
        holder: Holder::decode(&holder).ok_or_else(|| f.corrupt(format!("holder {holder:?} is not kind:id")))?,
        created_at: f.n("createdAt")?,
        expires_at: f.n("expiresAt")?,
    })
}
