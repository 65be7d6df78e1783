//! Pod reservations: which invocation, claim or node a pending pod has been promised to. A pod is
//! reserved by exactly one holder at a time; the conditional put decides, so two concurrent
//! `pod-pending` invocations that see the same pod never both provision for it. Reservations expire
//! (TTL) so that a holder that died half-way does not keep a pod forever.

use futures::StreamExt;

use super::item::{Fields, conditional, n, s};
use super::{Holder, Item, Reservation, StateStore, Table};
use crate::{EpochMillis, Error, Result};

/// How many conditional writes run at once when reserving a batch.
const RESERVE_CONCURRENCY: usize = 16;

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
            .item("cluster", s(&self.cluster))
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
            .key("cluster", s(&self.cluster))
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
            .key("cluster", s(&self.cluster))
            .key("podUid", s(pod_uid))
            .condition_expression("holder = :h")
            .expression_attribute_values(":h", s(holder.encode()))
            .send()
            .await;
        conditional("DeleteItem", result)
    }

    /// Every live reservation of this cluster (expired ones filtered out).
    pub async fn reservations(&self, now: EpochMillis) -> Result<Vec<Reservation>> {
        let table = self.table_name(Table::Reservations);
        let items = self.query_all(Table::Reservations, None).await?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let r = parse_reservation(&table, item)?;
            if r.expires_at >= now / 1000 {
                out.push(r);
            }
        }
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
