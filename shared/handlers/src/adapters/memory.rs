//! In-process stand-ins for DynamoDB, EC2 and the cluster, with the same semantics as the real
//! adapters (conditional reservations, monotonic claims, TTLs, pool limits, ICE cache, guarded
//! termination). Used by `nodewright invoke`, handler tests and the decision-time benchmark.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use nodewright_core::disruption::Pdb;
use nodewright_core::model::claim_launch::ClaimLaunchRequest;
use nodewright_core::model::cluster_event::PendingPod;
use nodewright_core::model::{ClaimState, Transition};
use nodewright_core::nodepool::Limits;
use nodewright_core::ports::capacity::{InstanceSummary, LaunchOutcome, fleet};
use nodewright_core::ports::cluster::{
    ClusterNode, ConfigKind, ConfigObject, ConfigObjects, DrainMode, DrainOptions, DrainReport, Listed, ObjectEvent,
};
use nodewright_core::ports::state::{
    ClaimRecord, ClaimUpdate, EventStart, Holder, IDEMPOTENCY_LEASE_SECS, IDEMPOTENCY_TTL_SECS,
    OFFERING_UNAVAILABLE_SECS, PoolUsage, PriceSheet, Reservation, StateView, TransitionOutcome, UnavailableOffering,
    UsageDecision, UsageDelta, UsageDrift, UsageSnapshot,
};
use nodewright_core::ports::{AwsError as Error, AwsResult as Result, EpochMillis};
use nodewright_core::scheduler::InstanceOption;
use nodewright_core::{CapacityType, Pod, Resource};

use super::billing::{Bill, SMALL_ITEM_BYTES, claim_item_bytes};
use crate::ports::{Capacity, ClaimLaunch, ClusterApi, State};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a test panicked mid-write; the data is still the best we have.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An idempotency record as DynamoDB holds it: times in whole seconds, compared inclusively.
#[derive(Debug, Clone)]
struct EventRecord {
    /// The outcome once completed.
    outcome: Option<String>,
    /// In progress through this second (epoch seconds).
    lease_until: i64,
    /// The record is forgotten after this second (its TTL, a day from its start).
    expires_at: i64,
}

#[derive(Debug, Default)]
struct StateData {
    events: HashMap<String, EventRecord>,
    /// name -> (holder, held through this second)
    leases: HashMap<String, (String, i64)>,
    reservations: HashMap<String, Reservation>,
    claims: BTreeMap<String, ClaimRecord>,
    offerings: Vec<UnavailableOffering>,
    usage: HashMap<String, SignedUsage>,
    /// Per pool: the counters' write version and the reconciler's last check (version, ms).
    usage_versions: HashMap<String, (u64, Option<(UsageDrift, EpochMillis)>)>,
    /// The instance index (a DynamoDB global secondary index, eventually consistent): look-ups by
    /// instance served so far, how many more miss a newly written instance, and from which
    /// look-up on each instance is visible.
    index_lookups: u64,
    index_lag: u64,
    indexed_from: HashMap<String, u64>,
    /// The stored price sheet (expires as the DynamoDB items do).
    prices: Option<PriceSheet>,
    /// Where the last consolidation run stopped, encoded as stored.
    resume: Option<String>,
    /// What the calls so far would have cost in DynamoDB ([`super::billing`]).
    bill: Bill,
}

impl StateData {
    /// A consistent GetItem of the live key, and of the ended key when the claim is not live.
    fn bill_get_claim(&mut self, claim: Option<&ClaimRecord>) {
        match claim {
            Some(c) if !c.state.is_terminal() => self.bill.get(claim_item_bytes(c), true),
            Some(c) => {
                self.bill.get(0, true);
                self.bill.get(claim_item_bytes(c), true);
            }
            None => {
                self.bill.get(0, true);
                self.bill.get(0, true);
            }
        }
    }

    /// A conditional replace; a claim that ends moves partitions in a transaction (a delete and
    /// a put), as the DynamoDB store writes it.
    fn bill_replace_claim(&mut self, before: Option<&ClaimRecord>, after: &ClaimRecord, expected_version: u64) {
        let before_bytes = before.map_or(0, claim_item_bytes);
        let after_bytes = claim_item_bytes(after);
        if after.state.is_terminal() {
            self.bill.transaction(&[before_bytes, after_bytes]);
            if before.is_some_and(|b| !b.state.is_terminal() && b.version == expected_version) {
                return;
            }
            // The move's condition failed: the store then tries the put in place.
        }
        self.bill.write("PutItem", before_bytes, after_bytes);
    }

    /// A claim written with an instance: the index shows it `index_lag` look-ups later.
    fn index(&mut self, claim: &ClaimRecord) {
        if let Some(iid) = &claim.instance_id
            && !self.indexed_from.contains_key(iid)
        {
            let from = self.index_lookups + self.index_lag;
            self.indexed_from.insert(iid.clone(), from);
        }
    }
}

/// A pool's counters as DynamoDB keeps them: numbers that an extra release takes below zero
/// (reads show zero; the usage reconciler is told).
#[derive(Debug, Clone, Copy, Default)]
struct SignedUsage {
    cpu_milli: i128,
    memory_bytes: i128,
    gpus: i128,
    nodes: i128,
    nodes_in_flight: i128,
}

impl SignedUsage {
    fn clamped(&self) -> PoolUsage {
        let c = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
        PoolUsage {
            cpu_milli: c(self.cpu_milli),
            memory_bytes: c(self.memory_bytes),
            gpus: c(self.gpus),
            nodes: c(self.nodes),
            nodes_in_flight: c(self.nodes_in_flight),
        }
    }

    fn negative(&self) -> bool {
        [
            self.cpu_milli,
            self.memory_bytes,
            self.gpus,
            self.nodes,
            self.nodes_in_flight,
        ]
        .iter()
        .any(|v| *v < 0)
    }
}

impl From<PoolUsage> for SignedUsage {
    fn from(u: PoolUsage) -> Self {
        SignedUsage {
            cpu_milli: u.cpu_milli.into(),
            memory_bytes: u.memory_bytes.into(),
            gpus: u.gpus.into(),
            nodes: u.nodes.into(),
            nodes_in_flight: u.nodes_in_flight.into(),
        }
    }
}

impl StateData {
    fn bump_usage_version(&mut self, pool: &str) {
        self.usage_versions.entry(pool.to_string()).or_default().0 += 1;
    }
}

/// DynamoDB stand-in.
#[derive(Debug, Clone, Default)]
pub struct MemoryState {
    data: Arc<Mutex<StateData>>,
}

impl MemoryState {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose instance index lags its table as DynamoDB's global secondary indexes do: the
    /// next `lookups` look-ups by instance after a claim gets its instance miss it.
    pub fn with_index_lag(lookups: u64) -> Self {
        let s = Self::default();
        lock(&s.data).index_lag = lookups;
        s
    }

    /// Every claim, for inspection.
    /// Every reservation kept, expired ones included (DynamoDB deletes expired items lazily too).
    pub fn reservation_records(&self) -> Vec<Reservation> {
        lock(&self.data).reservations.values().cloned().collect()
    }

    /// Live reservations, sorted by pod (what `StateStore::reservations` lists; no handler needs
    /// it, so it is not part of the `State` port).
    pub async fn reservations(&self, now: EpochMillis) -> Result<Vec<Reservation>> {
        let d = lock(&self.data);
        let mut out: Vec<_> = d.reservations.values().filter(|r| live(r, now)).cloned().collect();
        out.sort_by(|a, b| a.pod_uid.cmp(&b.pod_uid));
        Ok(out)
    }

    pub fn claim_records(&self) -> Vec<ClaimRecord> {
        lock(&self.data).claims.values().cloned().collect()
    }

    /// What the calls so far would have cost in DynamoDB: requests and capacity units as AWS
    /// bills them ([`super::billing`]).
    pub fn bill(&self) -> Bill {
        lock(&self.data).bill.clone()
    }

    /// Starts counting again (a benchmark measures one invocation at a time).
    pub fn reset_bill(&self) {
        lock(&self.data).bill = Bill::default();
    }

    /// What DynamoDB's TTL does in the background: forgets ended claims past their expiry
    /// ([`ClaimRecord::expires_at`]). Returns how many went.
    pub fn expire(&self, now: EpochMillis) -> usize {
        let mut d = lock(&self.data);
        let before = d.claims.len();
        let now_secs = now.div_euclid(1000);
        d.claims.retain(|_, c| c.expires_at().is_none_or(|at| at >= now_secs));
        before - d.claims.len()
    }

    pub fn usage(&self, pool: &str) -> PoolUsage {
        lock(&self.data)
            .usage
            .get(pool)
            .map(SignedUsage::clamped)
            .unwrap_or_default()
    }

    /// The state as `nodewright avail` sees it at `now` (what `--state DIR` files hold).
    pub fn view(&self, cluster: &str, now: EpochMillis) -> StateView {
        let d = lock(&self.data);
        let mut view = StateView::new(cluster, now);
        view.claims = d.claims.values().filter(|c| !c.state.is_terminal()).cloned().collect();
        let mut reservations: Vec<_> = d.reservations.values().filter(|r| live(r, now)).cloned().collect();
        reservations.sort_by(|a, b| a.pod_uid.cmp(&b.pod_uid));
        view.reservations = reservations;
        view.usage = d.usage.iter().map(|(k, v)| (k.clone(), v.clamped())).collect();
        view.offerings = d
            .offerings
            .iter()
            .filter(|o| live_until(o.expires_at, now))
            .cloned()
            .collect();
        view
    }

    /// Completed events (idempotency key -> outcome), to save next to a view so that a replayed
    /// event is recognised in a later run (`invoke --state DIR`).
    pub fn completed_events(&self) -> BTreeMap<String, String> {
        lock(&self.data)
            .events
            .iter()
            .filter_map(|(k, e)| Some((k.clone(), e.outcome.clone()?)))
            .collect()
    }

    pub fn restore_completed_events(&self, events: &BTreeMap<String, String>) {
        let mut d = lock(&self.data);
        for (k, v) in events {
            d.events.insert(
                k.clone(),
                EventRecord {
                    outcome: Some(v.clone()),
                    lease_until: 0,
                    expires_at: i64::MAX,
                },
            );
        }
    }

    /// A store holding a view's records, to continue from a saved state (`invoke --state DIR`).
    /// Ended claims are not in a view, so they start empty.
    pub fn from_view(view: &StateView) -> MemoryState {
        let state = MemoryState::new();
        {
            let mut d = lock(&state.data);
            d.claims = view.claims.iter().map(|c| (c.id.clone(), c.clone())).collect();
            for c in &view.claims {
                d.index(c);
            }
            d.reservations = view
                .reservations
                .iter()
                .map(|r| (r.pod_uid.clone(), r.clone()))
                .collect();
            d.usage = view.usage.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
            d.offerings = view.offerings.clone();
        }
        state
    }
}

/// A price sheet as stored: about 40 bytes per price in its JSON chunks.
fn price_sheet_bytes(sheet: &PriceSheet) -> usize {
    (sheet.on_demand.len() + sheet.spot.len()) * 40
}

fn live(r: &Reservation, now: EpochMillis) -> bool {
    live_until(r.expires_at, now)
}

/// Whether a record whose TTL attribute is `expires_at` (epoch seconds) is still live at `now`:
/// through its last second, as the DynamoDB adapter's conditions and read filters compare.
fn live_until(expires_at: i64, now: EpochMillis) -> bool {
    expires_at >= now.div_euclid(1000)
}

impl State for MemoryState {
    async fn begin_event(&self, key: &str, now: EpochMillis) -> Result<EventStart> {
        let mut d = lock(&self.data);
        d.bill.write("PutItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        let now_secs = now.div_euclid(1000);
        match d.events.get(key) {
            Some(e) if live_until(e.expires_at, now) => match &e.outcome {
                Some(outcome) => return Ok(EventStart::Completed(outcome.clone())),
                None if e.lease_until >= now_secs => return Ok(EventStart::InProgress),
                None => {}
            },
            _ => {}
        }
        d.events.insert(
            key.to_string(),
            EventRecord {
                outcome: None,
                lease_until: now_secs + IDEMPOTENCY_LEASE_SECS,
                expires_at: now_secs + IDEMPOTENCY_TTL_SECS,
            },
        );
        Ok(EventStart::New)
    }
    /// Completes the record the event's start wrote (its expiry stays a day from the start).
    async fn complete_event(&self, key: &str, outcome: &str, _now: EpochMillis) -> Result<()> {
        let mut d = lock(&self.data);
        d.bill
            .write("UpdateItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES + outcome.len());
        let record = d.events.entry(key.to_string()).or_insert_with(|| EventRecord {
            // DynamoDB's UpdateItem creates an item without TTL attributes: it never expires.
            outcome: None,
            lease_until: 0,
            expires_at: i64::MAX,
        });
        record.outcome = Some(outcome.to_string());
        Ok(())
    }
    /// Releases an event still in progress; a completed one keeps its outcome.
    async fn abandon_event(&self, key: &str) -> Result<()> {
        let mut d = lock(&self.data);
        d.bill.write("DeleteItem", SMALL_ITEM_BYTES, 0);
        if d.events.get(key).is_some_and(|e| e.outcome.is_none()) {
            d.events.remove(key);
        }
        Ok(())
    }
    async fn reserve_pods(&self, uids: &[String], holder: &Holder, now: EpochMillis, ttl: i64) -> Result<Vec<String>> {
        let mut d = lock(&self.data);
        let mut won = Vec::new();
        for uid in uids {
            // One conditional PutItem per pod (charged whether or not the condition holds).
            d.bill.write("PutItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
            let free = d
                .reservations
                .get(uid)
                .is_none_or(|r| !live(r, now) || r.holder == *holder);
            if free {
                d.reservations.insert(
                    uid.clone(),
                    Reservation {
                        pod_uid: uid.clone(),
                        holder: holder.clone(),
                        created_at: now,
                        expires_at: now / 1000 + ttl,
                    },
                );
                won.push(uid.clone());
            }
        }
        Ok(won)
    }
    async fn transfer_pod(&self, uid: &str, from: &Holder, to: &Holder, now: EpochMillis, ttl: i64) -> Result<bool> {
        let mut d = lock(&self.data);
        d.bill.write("UpdateItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        match d.reservations.get_mut(uid) {
            Some(r) if r.holder == *from => {
                r.holder = to.clone();
                r.expires_at = now / 1000 + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn release_pod(&self, uid: &str, holder: &Holder) -> Result<bool> {
        let mut d = lock(&self.data);
        d.bill.write("DeleteItem", SMALL_ITEM_BYTES, 0);
        if d.reservations.get(uid).is_some_and(|r| r.holder == *holder) {
            d.reservations.remove(uid);
            return Ok(true);
        }
        Ok(false)
    }
    async fn take_lease(&self, name: &str, holder: &str, now: EpochMillis, ttl_secs: i64) -> Result<bool> {
        if name.is_empty() || name.len() > 256 {
            return Err(Error::invalid(
                "lease",
                format!("lease name must be 1-256 characters, got {}", name.len()),
            ));
        }
        let mut d = lock(&self.data);
        d.bill.write("PutItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        let free = d
            .leases
            .get(name)
            .is_none_or(|(h, until)| h == holder || !live_until(*until, now));
        if free {
            d.leases
                .insert(name.to_string(), (holder.to_string(), now.div_euclid(1000) + ttl_secs));
        }
        Ok(free)
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let mut d = lock(&self.data);
        d.bill.write("DeleteItem", SMALL_ITEM_BYTES, 0);
        if d.leases.get(name).is_some_and(|(h, _)| h == holder) {
            d.leases.remove(name);
        }
        Ok(())
    }
    /// A transaction as the DynamoDB store writes it: the ended key checked absent, the claim
    /// put if absent.
    async fn create_claim(&self, claim: &ClaimRecord) -> Result<bool> {
        let mut d = lock(&self.data);
        d.bill.transaction(&[0, claim_item_bytes(claim)]);
        if d.claims.contains_key(&claim.id) {
            return Ok(false);
        }
        d.index(claim);
        d.claims.insert(claim.id.clone(), claim.clone());
        Ok(true)
    }
    /// The live key, then the ended one (two consistent reads when the claim is not live).
    async fn get_claim(&self, id: &str) -> Result<Option<ClaimRecord>> {
        let mut d = lock(&self.data);
        let claim = d.claims.get(id).cloned();
        d.bill_get_claim(claim.as_ref());
        Ok(claim)
    }
    /// Through the lagging index, then the table (as the DynamoDB store re-reads the item).
    async fn claim_by_instance(&self, instance_id: &str) -> Result<Option<ClaimRecord>> {
        let mut d = lock(&self.data);
        d.index_lookups += 1;
        let visible = d
            .indexed_from
            .get(instance_id)
            .is_some_and(|from| *from < d.index_lookups);
        let found = if visible {
            d.claims
                .values()
                .find(|c| c.instance_id.as_deref() == Some(instance_id))
                .cloned()
        } else {
            None
        };
        d.bill.query(found.iter().map(claim_item_bytes), false);
        if found.is_some() {
            d.bill_get_claim(found.as_ref());
        }
        Ok(found)
    }
    /// Both partitions: the live claims and the ended ones kept.
    async fn claims(&self) -> Result<Vec<ClaimRecord>> {
        let mut d = lock(&self.data);
        let (ended, live): (Vec<_>, Vec<_>) = d.claims.values().cloned().partition(|c| c.state.is_terminal());
        d.bill.query(live.iter().map(claim_item_bytes), true);
        d.bill.query(ended.iter().map(claim_item_bytes), true);
        Ok(live.into_iter().chain(ended).collect())
    }
    /// The live partition only: ended claims are neither returned nor billed.
    async fn live_claims(&self) -> Result<Vec<ClaimRecord>> {
        let mut d = lock(&self.data);
        let live: Vec<ClaimRecord> = d.claims.values().filter(|c| !c.state.is_terminal()).cloned().collect();
        d.bill.query(live.iter().map(claim_item_bytes), true);
        Ok(live)
    }
    /// Billed as the three eventually consistent index Queries the DynamoDB store makes.
    async fn in_flight_claims(&self) -> Result<Vec<ClaimRecord>> {
        let mut d = lock(&self.data);
        let mut out = Vec::new();
        for state in [ClaimState::Launching, ClaimState::Launched, ClaimState::Registered] {
            let these: Vec<ClaimRecord> = d.claims.values().filter(|c| c.state == state).cloned().collect();
            d.bill.query(these.iter().map(claim_item_bytes), false);
            out.extend(these);
        }
        Ok(out)
    }
    async fn replace_claim(&self, claim: &ClaimRecord, expected_version: u64) -> Result<bool> {
        let mut d = lock(&self.data);
        let before = d.claims.get(&claim.id).cloned();
        d.bill_replace_claim(before.as_ref(), claim, expected_version);
        match d.claims.get_mut(&claim.id) {
            Some(c) if c.version == expected_version => {
                *c = claim.clone();
                d.index(claim);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    /// Atomic here; billed as the DynamoDB store does it (a consistent read, then a conditional
    /// replace).
    async fn transition_claim(
        &self,
        id: &str,
        to: ClaimState,
        at: EpochMillis,
        update: &ClaimUpdate,
    ) -> Result<TransitionOutcome> {
        let mut d = lock(&self.data);
        let before = d.claims.get(id).cloned();
        d.bill_get_claim(before.as_ref());
        let claim = d.claims.get_mut(id).ok_or_else(|| Error::ClaimNotFound(id.into()))?;
        let outcome = match claim.advance(to, at, update) {
            Transition::Advance => TransitionOutcome::Advanced(claim.clone()),
            Transition::Duplicate => TransitionOutcome::Duplicate(claim.clone()),
            Transition::Stale => TransitionOutcome::Stale(claim.clone()),
        };
        let written = claim.clone();
        if let (TransitionOutcome::Advanced(_), Some(before)) = (&outcome, &before) {
            d.bill_replace_claim(Some(before), &written, before.version);
        }
        d.index(&written);
        Ok(outcome)
    }
    async fn mark_offering_unavailable(
        &self,
        capacity_type: CapacityType,
        instance_type: &str,
        zone: &str,
        reason: &str,
        now: EpochMillis,
    ) -> Result<()> {
        let mut d = lock(&self.data);
        d.bill.write("PutItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        d.offerings
            .retain(|o| !(o.capacity_type == capacity_type && o.instance_type == instance_type && o.zone == zone));
        d.offerings.push(UnavailableOffering {
            capacity_type,
            instance_type: instance_type.into(),
            zone: zone.into(),
            reason: reason.into(),
            expires_at: now / 1000 + OFFERING_UNAVAILABLE_SECS,
        });
        Ok(())
    }
    async fn unavailable_offerings(&self, now: EpochMillis) -> Result<Vec<UnavailableOffering>> {
        let mut d = lock(&self.data);
        // The Query reads the expired items DynamoDB has not deleted yet too.
        let stored = d.offerings.len();
        d.bill.query(std::iter::repeat_n(SMALL_ITEM_BYTES, stored), true);
        Ok(d.offerings
            .iter()
            .filter(|o| live_until(o.expires_at, now))
            .cloned()
            .collect())
    }
    async fn try_add_usage(&self, pool: &str, delta: &UsageDelta, limits: &Limits) -> Result<UsageDecision> {
        let mut d = lock(&self.data);
        d.bill.write("UpdateItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        let used = d.usage.entry(pool.to_string()).or_default();
        let limit = |r: Resource| limits.of(r);
        let gpu_limit = limits.gpus();
        let dims: [(&'static str, Option<u64>, i128, u64); 4] = [
            ("cpuMilli", limit(Resource::Cpu), used.cpu_milli, delta.cpu_milli),
            (
                "memoryBytes",
                limit(Resource::Memory),
                used.memory_bytes,
                delta.memory_bytes,
            ),
            ("gpus", gpu_limit, used.gpus, delta.gpus),
            ("nodes", limits.nodes, used.nodes, delta.nodes),
        ];
        // A charge above a limit on its own is refused before any write, whatever the counters.
        for (resource, limit, _, inc) in dims {
            if let Some(limit) = limit
                && inc > limit
            {
                return Ok(UsageDecision::Denied {
                    resource,
                    used: 0,
                    requested: inc,
                    limit,
                });
            }
        }
        // As DynamoDB's condition (`attr <= limit - increment`): a counter below zero passes.
        for (resource, limit, current, inc) in dims {
            if let Some(limit) = limit
                && current + i128::from(inc) > i128::from(limit)
            {
                return Ok(UsageDecision::Denied {
                    resource,
                    used: u64::try_from(current.max(0)).unwrap_or(u64::MAX),
                    requested: inc,
                    limit,
                });
            }
        }
        used.cpu_milli += i128::from(delta.cpu_milli);
        used.memory_bytes += i128::from(delta.memory_bytes);
        used.gpus += i128::from(delta.gpus);
        used.nodes += i128::from(delta.nodes);
        used.nodes_in_flight += i128::from(delta.nodes);
        d.bump_usage_version(pool);
        Ok(UsageDecision::Granted)
    }
    /// Unconditional, like DynamoDB's ADD: a release applied twice takes the counters below zero.
    async fn release_usage(&self, pool: &str, delta: &UsageDelta, was_in_flight: bool) -> Result<()> {
        let mut d = lock(&self.data);
        d.bill.write("UpdateItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        let used = d.usage.entry(pool.to_string()).or_default();
        used.cpu_milli -= i128::from(delta.cpu_milli);
        used.memory_bytes -= i128::from(delta.memory_bytes);
        used.gpus -= i128::from(delta.gpus);
        used.nodes -= i128::from(delta.nodes);
        if was_in_flight {
            used.nodes_in_flight -= i128::from(delta.nodes);
        }
        d.bump_usage_version(pool);
        Ok(())
    }
    async fn mark_usage_running(&self, pool: &str, nodes: u64) -> Result<()> {
        let mut d = lock(&self.data);
        d.bill.write("UpdateItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        let used = d.usage.entry(pool.to_string()).or_default();
        if used.nodes_in_flight >= i128::from(nodes) {
            used.nodes_in_flight -= i128::from(nodes);
            d.bump_usage_version(pool);
        }
        Ok(())
    }
    async fn prices(&self, now: EpochMillis) -> Result<Option<PriceSheet>> {
        let mut d = lock(&self.data);
        let bytes = d.prices.as_ref().map_or(0, price_sheet_bytes);
        d.bill.get(SMALL_ITEM_BYTES, true);
        if bytes > 0 {
            d.bill.query([bytes], true);
        }
        Ok(d.prices.clone().filter(|p| !p.is_expired(now)))
    }
    async fn put_prices(&self, sheet: &PriceSheet) -> Result<()> {
        if sheet.on_demand.len() + sheet.spot.len() > nodewright_core::ports::state::MAX_PRICE_ENTRIES {
            return Err(Error::Invalid {
                field: "prices".into(),
                reason: "too many prices to store".into(),
            });
        }
        let mut d = lock(&self.data);
        let bytes = price_sheet_bytes(sheet);
        for _ in 0..bytes.div_ceil(nodewright_core::ports::state::PRICE_CHUNK_BYTES).max(1) {
            d.bill.write(
                "PutItem",
                0,
                bytes.min(nodewright_core::ports::state::PRICE_CHUNK_BYTES),
            );
        }
        d.bill.write("PutItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        d.prices = Some(sheet.clone());
        Ok(())
    }
    async fn resume_point(&self) -> Result<Option<nodewright_core::disruption::ResumePoint>> {
        let mut d = lock(&self.data);
        let bytes = d.resume.as_ref().map_or(0, String::len);
        d.bill.get(SMALL_ITEM_BYTES + bytes, true);
        // Decoded from the stored text, as DynamoDB's item is: no shared value between runs.
        d.resume
            .as_deref()
            .map(nodewright_core::disruption::ResumePoint::decode)
            .transpose()
            .map_err(|reason| Error::Corrupt {
                table: "idempotency".into(),
                key: "resume/consolidation".into(),
                reason,
            })
    }
    async fn put_resume_point(&self, point: Option<&nodewright_core::disruption::ResumePoint>) -> Result<()> {
        let mut d = lock(&self.data);
        match point {
            Some(p) => {
                let text = p.encode();
                d.bill.write("PutItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES + text.len());
                d.resume = Some(text);
            }
            None => {
                d.bill.write("DeleteItem", SMALL_ITEM_BYTES, 0);
                d.resume = None;
            }
        }
        Ok(())
    }
    async fn usage_snapshot(&self, pool: &str) -> Result<UsageSnapshot> {
        let mut d = lock(&self.data);
        d.bill.get(SMALL_ITEM_BYTES, true);
        let (version, checked) = d.usage_versions.get(pool).copied().unwrap_or_default();
        Ok(match d.usage.get(pool) {
            Some(usage) => UsageSnapshot {
                exists: true,
                usage: usage.clamped(),
                negative: usage.negative(),
                version,
                checked,
            },
            None => UsageSnapshot::default(),
        })
    }
    async fn note_usage_checked(&self, pool: &str, drift: &UsageDrift, now: EpochMillis) -> Result<()> {
        let mut d = lock(&self.data);
        d.bill.write("UpdateItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        if !d.usage.contains_key(pool) {
            return Ok(());
        }
        let entry = d.usage_versions.entry(pool.to_string()).or_default();
        if entry.1.is_none_or(|(seen, _)| seen != *drift) {
            entry.1 = Some((*drift, now));
        }
        Ok(())
    }
    async fn correct_usage(
        &self,
        pool: &str,
        usage: &PoolUsage,
        expected_version: u64,
        now: EpochMillis,
    ) -> Result<bool> {
        let mut d = lock(&self.data);
        d.bill.write("PutItem", SMALL_ITEM_BYTES, SMALL_ITEM_BYTES);
        let entry = d.usage_versions.entry(pool.to_string()).or_default();
        if entry.0 != expected_version {
            return Ok(false);
        }
        *entry = (expected_version + 1, Some((UsageDrift::default(), now)));
        d.usage.insert(pool.to_string(), (*usage).into());
        Ok(true)
    }
}

#[derive(Debug, Default)]
struct CapacityData {
    /// What the Pricing API and the spot price history report (None: unreachable).
    live_prices: Option<PriceSheet>,
    instances: BTreeMap<String, InstanceSummary>,
    /// Offerings that fail with InsufficientInstanceCapacity: (capacity type, type, zone).
    exhausted: Vec<(CapacityType, String, String)>,
    next_id: u64,
    asg_scale_ups: Vec<String>,
    /// (group, instances terminated with a decrement)
    asg_scale_ins: Vec<(String, Vec<String>)>,
    /// Instances protected from their group's scale-in.
    protected: BTreeSet<String>,
    terminated: Vec<String>,
    /// The user data each instance was launched with (what its node registers from).
    user_data: HashMap<String, String>,
    /// Auto Scaling groups by name.
    groups: BTreeMap<String, MemoryGroup>,
    /// The account's spot instance quota (MaxSpotInstanceCountExceeded past it).
    spot_quota: Option<usize>,
    /// CreateFleet requests made: (capacity type, overrides sent).
    fleet_requests: Vec<(CapacityType, usize)>,
    /// Nodewright's bus, when launches are handed off: the `Claim Launch` events put on it and
    /// not yet taken, as EventBridge delivers them (None: no bus, launches stay inline).
    bus: Option<Vec<serde_json::Value>>,
    /// Events put on the bus so far (the delivered events' ids).
    events_put: u64,
}

/// An Auto Scaling group as the service keeps it: a desired capacity it launches towards (see
/// [`MemoryCapacity::launch_group_instances`]), a max it never passes, its member instances.
#[derive(Debug, Clone)]
pub struct MemoryGroup {
    pub desired: u32,
    pub max: u32,
    pub members: BTreeSet<String>,
    /// What the group's launch template launches.
    pub instance_type: String,
    pub zone: String,
    /// The launch template's user data (the user's: what its nodes register from).
    pub user_data: Option<String>,
}

/// The max size of a group no test declared (the user created it; its size is theirs).
const UNDECLARED_GROUP_MAX: u32 = 100;

fn undeclared_group(instance_type: &str) -> MemoryGroup {
    MemoryGroup {
        desired: 0,
        max: UNDECLARED_GROUP_MAX,
        members: BTreeSet::new(),
        instance_type: instance_type.into(),
        zone: "us-east-1a".into(),
        user_data: None,
    }
}

/// EC2 stand-in: launches as CreateFleet does for the fleet adapter (requests of at most
/// [`fleet::MAX_OVERRIDES`] offerings, spot first, a bounded number per capacity type, the cheapest
/// offering with capacity in a request, errors for those without, a spot quota failing a whole
/// request), adopts by claim tag, terminates only its own instances.
#[derive(Debug, Clone)]
pub struct MemoryCapacity {
    cluster: String,
    data: Arc<Mutex<CapacityData>>,
}

impl MemoryCapacity {
    pub fn new(cluster: &str) -> Self {
        MemoryCapacity {
            cluster: cluster.into(),
            data: Arc::new(Mutex::new(CapacityData::default())),
        }
    }

    /// What the Pricing API and DescribeSpotPriceHistory report from now on (unset: unreachable).
    pub fn set_live_prices(&self, sheet: PriceSheet) {
        lock(&self.data).live_prices = Some(sheet);
    }

    /// The account may run at most `instances` spot instances of each quota class
    /// (MaxSpotInstanceCountExceeded).
    pub fn limit_spot_instances(&self, instances: usize) {
        lock(&self.data).spot_quota = Some(instances);
    }

    /// Gives this account Nodewright's bus: launches are handed off as `Claim Launch` events,
    /// kept until [`MemoryCapacity::take_bus_events`] takes them.
    pub fn with_bus(self) -> Self {
        self.set_bus(true);
        self
    }

    /// Gives this account the bus (`on`; events already put and not taken stay) or takes it
    /// away (events not taken are dropped).
    pub fn set_bus(&self, on: bool) {
        let mut d = lock(&self.data);
        if on {
            d.bus.get_or_insert_with(Vec::new);
        } else {
            d.bus = None;
        }
    }

    /// The `Claim Launch` events put on the bus since the last call, as EventBridge delivers them
    /// to a target (envelope and detail), in the order they were put.
    pub fn take_bus_events(&self) -> Vec<serde_json::Value> {
        lock(&self.data).bus.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The CreateFleet requests made so far: (capacity type, overrides in the request).
    pub fn fleet_requests(&self) -> Vec<(CapacityType, usize)> {
        lock(&self.data).fleet_requests.clone()
    }

    /// Makes an offering fail with insufficient capacity from now on.
    pub fn exhaust(&self, capacity_type: CapacityType, instance_type: &str, zone: &str) {
        lock(&self.data)
            .exhausted
            .push((capacity_type, instance_type.into(), zone.into()));
    }

    /// Re-creates the instances of saved claims (ours, running) and continues instance ids after
    /// theirs, so a run resumed from a state file (`invoke --state`) sees the same fleet.
    pub fn resume_from_claims(&self, claims: &[ClaimRecord]) {
        let mut d = lock(&self.data);
        for c in claims {
            let (Some(id), Some(instance_type)) = (&c.instance_id, &c.instance_type) else {
                continue;
            };
            if let Some(n) = id.strip_prefix("i-").and_then(|h| u64::from_str_radix(h, 16).ok()) {
                d.next_id = d.next_id.max(n);
            }
            // A group's instance carries the group's tags, none of ours, and counts towards its
            // desired capacity.
            let group = c.backing.strip_prefix("asg:");
            if let Some(group) = group {
                let g = d
                    .groups
                    .entry(group.to_string())
                    .or_insert_with(|| undeclared_group(instance_type));
                g.members.insert(id.clone());
                g.desired = g.desired.max(u32::try_from(g.members.len()).unwrap_or(u32::MAX));
            }
            let ours = group.is_none();
            d.instances.insert(
                id.clone(),
                InstanceSummary {
                    instance_id: id.clone(),
                    instance_type: instance_type.clone(),
                    zone: c.zone.clone().unwrap_or_default(),
                    state: "running".into(),
                    spot: c.capacity_type == Some(CapacityType::Spot),
                    claim_id: ours.then(|| c.id.clone()),
                    pool: ours.then(|| c.pool.clone()),
                    cluster: ours.then(|| self.cluster.clone()),
                    launch_time_millis: c.entered(ClaimState::Launched),
                    // As the launch tagged it (a set too long for a tag is lost, as on EC2).
                    labels: if ours {
                        nodewright_core::ports::capacity::labels_tag(&c.labels)
                            .map(|t| nodewright_core::ports::capacity::labels_of_tag(&t))
                            .unwrap_or_default()
                    } else {
                        Default::default()
                    },
                },
            );
        }
    }

    /// Adds an instance that is not ours (another cluster's), for termination-guard tests.
    pub fn add_foreign_instance(&self, instance_id: &str) {
        lock(&self.data).instances.insert(
            instance_id.into(),
            InstanceSummary {
                instance_id: instance_id.into(),
                instance_type: "m5.large".into(),
                zone: "us-east-1a".into(),
                state: "running".into(),
                spot: false,
                claim_id: None,
                pool: None,
                cluster: Some("someone-else".into()),
                launch_time_millis: None,
                labels: Default::default(),
            },
        );
    }

    pub fn all_instances(&self) -> Vec<InstanceSummary> {
        lock(&self.data).instances.values().cloned().collect()
    }

    pub fn terminated(&self) -> Vec<String> {
        lock(&self.data).terminated.clone()
    }

    /// Terminations since the last call (the simulator bills and removes them).
    pub fn take_terminated(&self) -> Vec<String> {
        let mut d = lock(&self.data);
        let out = std::mem::take(&mut d.terminated);
        // Terminated instances leave the table, as EC2 forgets them after an hour.
        for id in &out {
            d.instances.remove(id);
        }
        out
    }

    pub fn asg_scale_ups(&self) -> Vec<String> {
        lock(&self.data).asg_scale_ups.clone()
    }

    pub fn asg_scale_ins(&self) -> Vec<(String, Vec<String>)> {
        lock(&self.data).asg_scale_ins.clone()
    }

    pub fn protected(&self) -> BTreeSet<String> {
        lock(&self.data).protected.clone()
    }

    /// The user data an instance was launched with, rendered by the same code as a real launch
    /// template's (the class's family: nodeadm, Bottlerocket, bootstrap.sh), for a kubelet emulator to register its node from.
    pub fn user_data(&self, instance_id: &str) -> Option<String> {
        lock(&self.data).user_data.get(instance_id).cloned()
    }

    /// Declares an Auto Scaling group (its max size and what it launches); a group used without
    /// being declared gets a max of 100 and launches m5.large in us-east-1a.
    pub fn declare_group(&self, name: &str, max: u32, instance_type: &str, zone: &str) {
        lock(&self.data).groups.insert(
            name.to_string(),
            MemoryGroup {
                desired: 0,
                max,
                members: BTreeSet::new(),
                instance_type: instance_type.into(),
                zone: zone.into(),
                user_data: None,
            },
        );
    }

    /// Gives a declared group's launch template user data for `pool`, as our docs tell a user to
    /// write it: nodeadm joining the cluster with the pool's labels and taints.
    pub fn set_group_user_data_for(&self, name: &str, pool: &nodewright_core::NodePool) {
        let user_data = memory_user_data(&self.cluster, pool, None);
        if let Some(g) = lock(&self.data).groups.get_mut(name) {
            g.user_data = user_data;
        }
    }

    pub fn group(&self, name: &str) -> Option<MemoryGroup> {
        lock(&self.data).groups.get(name).cloned()
    }

    /// What the Auto Scaling service does between calls: each group launches instances until its
    /// live members reach its desired capacity. Returns (group, instance id) per launch, the
    /// launch events to deliver.
    pub fn launch_group_instances(&self, now: EpochMillis) -> Vec<(String, String)> {
        let mut launched = Vec::new();
        let names: Vec<String> = lock(&self.data).groups.keys().cloned().collect();
        for name in names {
            loop {
                let (missing, instance_type, zone, user_data) = {
                    let mut d = lock(&self.data);
                    let CapacityData { groups, instances, .. } = &mut *d;
                    let Some(g) = groups.get_mut(&name) else { break };
                    g.members
                        .retain(|m| instances.get(m).is_some_and(|i| i.state != "terminated"));
                    (
                        usize::try_from(g.desired).unwrap_or(usize::MAX) > g.members.len(),
                        g.instance_type.clone(),
                        g.zone.clone(),
                        g.user_data.clone(),
                    )
                };
                if !missing {
                    break;
                }
                let id = self.add_group_instance(&instance_type, &zone, now);
                let mut d = lock(&self.data);
                if let Some(g) = d.groups.get_mut(&name) {
                    g.members.insert(id.clone());
                }
                if let Some(u) = user_data {
                    d.user_data.insert(id.clone(), u);
                }
                drop(d);
                launched.push((name.clone(), id));
            }
        }
        launched
    }

    /// Adds a running instance as an Auto Scaling group launches it: no tag of ours, its own user
    /// data (the group's launch template is the user's).
    pub fn add_group_instance(&self, instance_type: &str, zone: &str, now: EpochMillis) -> String {
        let mut d = lock(&self.data);
        d.next_id += 1;
        let id = format!("i-{:017x}", d.next_id);
        d.instances.insert(
            id.clone(),
            InstanceSummary {
                instance_id: id.clone(),
                instance_type: instance_type.into(),
                zone: zone.into(),
                state: "running".into(),
                spot: false,
                claim_id: None,
                pool: None,
                cluster: None,
                launch_time_millis: Some(now),
                labels: Default::default(),
            },
        );
        id
    }
}

/// The nodeadm user data a memory launch records: the real renderer, a placeholder endpoint, the
/// class's kubelet settings.
fn memory_user_data(
    cluster: &str,
    pool: &nodewright_core::NodePool,
    class: Option<&nodewright_core::nodepool::Ec2NodeClass>,
) -> Option<String> {
    let endpoint = nodewright_core::ports::capacity::ClusterEndpoint {
        name: cluster.to_string(),
        endpoint: "https://memory.cluster.invalid".into(),
        certificate_authority: "bWVtb3J5".into(),
        service_cidr: None,
    };
    let labels = nodewright_core::registration::boot_labels(pool);
    let taints = nodewright_core::registration::boot_taints(pool);
    let boot = nodewright_core::registration::user_data::Bootstrap {
        cluster: &endpoint,
        labels: &labels,
        taints: &taints,
        kubelet: &class.map(|c| c.kubelet.clone()).unwrap_or_default(),
        instance_store_raid0: class.is_some_and(|c| c.instance_store_raid0),
    };
    // As the AWS adapter's launch template chooses (the family from amiFamily, else the alias).
    let family = class.and_then(|c| {
        c.ami_family.clone().or_else(|| {
            c.ami_selector_terms
                .iter()
                .find_map(|t| t.alias.as_deref())
                .and_then(|a| a.split('@').next())
                .map(str::to_string)
        })
    });
    let user = class.and_then(|c| c.user_data.as_deref());
    use nodewright_core::registration::user_data;
    match family.map(|f| f.to_ascii_lowercase()).as_deref() {
        Some("al2") => user_data::al2(&boot, user, "userData").ok(),
        Some("custom") => user.map(str::to_string),
        Some("bottlerocket") => user_data::bottlerocket(&boot, user, "userData").ok(),
        _ => user_data::nodeadm(&boot, user, "userData").ok(),
    }
}

impl Capacity for MemoryCapacity {
    async fn launch(&self, launch: &ClaimLaunch, now: EpochMillis) -> Result<LaunchOutcome> {
        if let Some(existing) = lock(&self.data)
            .instances
            .values()
            .find(|i| i.claim_id.as_deref() == Some(launch.claim_id.as_str()) && i.state != "terminated")
            .cloned()
        {
            return Ok(LaunchOutcome {
                capacity_type: if existing.spot {
                    CapacityType::Spot
                } else {
                    CapacityType::OnDemand
                },
                instance_id: existing.instance_id,
                instance_type: existing.instance_type,
                zone: existing.zone,
                price: None,
                adopted: true,
                fell_back_to_on_demand: false,
                unavailable: Vec::new(),
            });
        }
        let mut remaining: Vec<_> = launch.offerings.clone();
        remaining.sort_by(|a, b| a.price.total_cmp(&b.price).then_with(|| a.name.cmp(&b.name)));
        let wanted_spot = launch.offerings.iter().any(|o| o.capacity_type == CapacityType::Spot);
        let mut unavailable = Vec::new();
        let mut tried = Vec::new();
        for capacity_type in [CapacityType::Spot, CapacityType::OnDemand] {
            for attempt in 0..fleet::MAX_ATTEMPTS_PER_CAPACITY_TYPE {
                let batch: Vec<_> = remaining
                    .iter()
                    .filter(|o| o.capacity_type == capacity_type)
                    .take(fleet::MAX_OVERRIDES)
                    .cloned()
                    .collect();
                if batch.is_empty() {
                    break;
                }
                let mut d = lock(&self.data);
                d.fleet_requests.push((capacity_type, batch.len()));
                // The spot quota is per class of instance families: the cheapest offering's class
                // at its quota fails the whole request, and no other request for that class can
                // succeed; otherwise an error per offering tried without capacity (cheapest first,
                // up to the one launched).
                let class = fleet::quota_class(&batch[0].name);
                let spot_running = d
                    .instances
                    .values()
                    .filter(|i| i.spot && i.state != "terminated" && fleet::quota_class(&i.instance_type) == class)
                    .count();
                let over_quota = capacity_type == CapacityType::Spot && d.spot_quota.is_some_and(|q| spot_running >= q);
                if over_quota {
                    let code = "MaxSpotInstanceCountExceeded";
                    tried.push(format!("{capacity_type} attempt {}: {code} ({class})", attempt + 1));
                    remaining.retain(|o| o.capacity_type != capacity_type || fleet::quota_class(&o.name) != class);
                    unavailable.push((
                        capacity_type,
                        fleet::quota_entry(&batch[0].name),
                        fleet::ANY.into(),
                        code.into(),
                    ));
                    continue;
                }
                let mut errors: Vec<(String, &InstanceOption)> = Vec::new();
                let mut chosen = None;
                {
                    for o in &batch {
                        let exhausted = d
                            .exhausted
                            .iter()
                            .any(|(ct, t, z)| *ct == o.capacity_type && *t == o.name && *z == o.zone);
                        if exhausted {
                            errors.push(("InsufficientInstanceCapacity".into(), o));
                        } else {
                            chosen = Some(o.clone());
                            break;
                        }
                    }
                }
                for (code, o) in &errors {
                    tried.push(format!(
                        "{capacity_type} attempt {}: {code}: {}/{}",
                        attempt + 1,
                        o.name,
                        o.zone
                    ));
                    remaining.retain(|r| r != *o);
                    unavailable.push((o.capacity_type, o.name.clone(), o.zone.clone(), code.clone()));
                }
                let Some(o) = chosen else { continue };
                let user_data = memory_user_data(&self.cluster, &launch.pool, launch.node_class.as_ref());
                d.next_id += 1;
                let id = format!("i-{:017x}", d.next_id);
                if let Some(u) = user_data {
                    d.user_data.insert(id.clone(), u);
                }
                d.instances.insert(
                    id.clone(),
                    InstanceSummary {
                        instance_id: id.clone(),
                        instance_type: o.name.clone(),
                        zone: o.zone.clone(),
                        state: "pending".into(),
                        spot: o.capacity_type == CapacityType::Spot,
                        claim_id: Some(launch.claim_id.clone()),
                        pool: Some(launch.pool.name.clone()),
                        cluster: Some(self.cluster.clone()),
                        launch_time_millis: Some(now),
                        labels: nodewright_core::ports::capacity::labels_tag(&launch.labels)
                            .map(|t| nodewright_core::ports::capacity::labels_of_tag(&t))
                            .unwrap_or_default(),
                    },
                );
                return Ok(LaunchOutcome {
                    instance_id: id,
                    instance_type: o.name.clone(),
                    zone: o.zone.clone(),
                    capacity_type: o.capacity_type,
                    price: Some(o.price),
                    adopted: false,
                    fell_back_to_on_demand: wanted_spot && o.capacity_type == CapacityType::OnDemand,
                    unavailable,
                });
            }
        }
        Err(Error::NoCapacity {
            claim: launch.claim_id.clone(),
            tried,
            unavailable,
        })
    }

    /// A read-modify-write of the desired capacity, as the Auto Scaling adapter does it (describe,
    /// then set): two calls that interleave raise the group once between them.
    async fn scale_up(&self, group: &str) -> Result<bool> {
        let read = {
            let mut d = lock(&self.data);
            let g = d
                .groups
                .entry(group.to_string())
                .or_insert_with(|| undeclared_group("m5.large"));
            (g.desired, g.max)
        };
        tokio::task::yield_now().await;
        let (desired, max) = read;
        if desired >= max {
            return Ok(false);
        }
        let mut d = lock(&self.data);
        if let Some(g) = d.groups.get_mut(group) {
            g.desired = desired + 1;
        }
        d.asg_scale_ups.push(group.to_string());
        Ok(true)
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<()> {
        let mut d = lock(&self.data);
        for id in instance_ids {
            let ours = d
                .instances
                .get(id)
                .is_some_and(|i| i.cluster.as_deref() == Some(self.cluster.as_str()));
            if !ours {
                return Err(Error::Refused(format!(
                    "instance {id} is not tagged nodewright.io/cluster={}",
                    self.cluster
                )));
            }
        }
        for id in instance_ids {
            if let Some(i) = d.instances.get_mut(id) {
                i.state = "terminated".into();
            }
            d.terminated.push(id.clone());
        }
        Ok(())
    }

    async fn scale_in(&self, group: &str, instance_ids: &[String]) -> Result<Vec<String>> {
        let mut d = lock(&self.data);
        let mut done = Vec::new();
        for id in instance_ids {
            // TerminateInstanceInAutoScalingGroup refuses an instance outside the group.
            let member = d.groups.get(group).is_some_and(|g| g.members.contains(id));
            if !member || d.protected.contains(id) {
                continue;
            }
            let Some(i) = d.instances.get_mut(id) else { continue };
            i.state = "terminated".into();
            d.terminated.push(id.clone());
            done.push(id.clone());
            if let Some(g) = d.groups.get_mut(group) {
                g.members.remove(id);
                g.desired = g.desired.saturating_sub(1);
            }
        }
        d.asg_scale_ins.push((group.to_string(), done.clone()));
        Ok(done)
    }

    async fn set_protection(&self, _group: &str, instance_ids: &[String], protect: bool) -> Result<()> {
        let mut d = lock(&self.data);
        for id in instance_ids {
            if protect {
                d.protected.insert(id.clone());
            } else {
                d.protected.remove(id);
            }
        }
        Ok(())
    }

    async fn group_members(&self, group: &str) -> Result<Vec<String>> {
        let d = lock(&self.data);
        let Some(g) = d.groups.get(group) else {
            return Err(Error::invalid(
                "autoScalingGroup",
                format!("group {group:?} does not exist"),
            ));
        };
        Ok(g.members
            .iter()
            .filter(|m| d.instances.get(*m).is_some_and(|i| i.state != "terminated"))
            .cloned()
            .collect())
    }

    async fn current_prices(&self, instance_types: &[String], now: EpochMillis) -> Result<PriceSheet> {
        let d = lock(&self.data);
        let Some(live) = &d.live_prices else {
            return Err(Error::Aws {
                operation: "GetProducts",
                code: "EndpointUnreachable".into(),
                message: "no price source configured".into(),
            });
        };
        // As DescribeSpotPriceHistory: spot prices for the types asked about only.
        let mut sheet = live.clone();
        sheet.spot.retain(|(t, _), _| instance_types.iter().any(|n| n == t));
        sheet.refreshed_at = now;
        Ok(sheet)
    }

    async fn instances(&self) -> Result<Vec<InstanceSummary>> {
        Ok(lock(&self.data)
            .instances
            .values()
            .filter(|i| i.cluster.as_deref() == Some(self.cluster.as_str()) && i.state != "terminated")
            .cloned()
            .collect())
    }

    async fn describe(&self, instance_ids: &[String]) -> Result<Vec<InstanceSummary>> {
        let d = lock(&self.data);
        Ok(instance_ids
            .iter()
            .filter_map(|id| d.instances.get(id).cloned())
            .collect())
    }
    fn has_launch_bus(&self) -> bool {
        lock(&self.data).bus.is_some()
    }
    async fn hand_off_launches(&self, requests: &[ClaimLaunchRequest]) -> Result<Vec<String>> {
        let mut d = lock(&self.data);
        if d.bus.is_none() {
            return Ok(Vec::new());
        }
        // PutEvents takes at most 10 entries a call, as the real bus does.
        if requests.len() > 10 {
            return Err(Error::Aws {
                operation: "PutEvents",
                code: "ValidationException".into(),
                message: format!("at most 10 entries, not {}", requests.len()),
            });
        }
        let mut handed = Vec::new();
        for r in requests {
            d.events_put += 1;
            let id = format!("launch-event-{:06}", d.events_put);
            let event = r.delivered(&id, "us-east-1");
            if let Some(bus) = d.bus.as_mut() {
                bus.push(event);
            }
            handed.push(r.claim.clone());
        }
        Ok(handed)
    }
}

/// A write the memory cluster received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterWrite {
    CordonAndTaint {
        node: String,
        taint: String,
    },
    Drain {
        node: String,
        forced: bool,
    },
    DeleteNode(String),
    /// The labels written, and the node's taints after registration.
    Register {
        node: String,
        labels: BTreeMap<String, String>,
        taints: Vec<nodewright_core::model::Taint>,
    },
}

#[derive(Debug, Default)]
struct ClusterData {
    nodes: Vec<ClusterNode>,
    pending: Vec<PendingPod>,
    /// Shared so a drain rebuilds the list by moving pointers, not 92,500 pods
    /// (`nodewright bench-scale`'s compute is the handlers', not this stand-in's).
    bound: Vec<Arc<Pod>>,
    daemonsets: Vec<Pod>,
    pdbs: Vec<Pdb>,
    writes: Vec<ClusterWrite>,
    /// Pods (`namespace/name`) whose eviction a PDB refuses (429) until the grace period runs out.
    pdb_blocked: BTreeSet<String>,
    /// Pods whose eviction fails with a server error, every time.
    failing: BTreeSet<String>,
    /// Bound-pod listings served so far, and a change due after that many (tests: the cluster
    /// moving between a handler's read and its write).
    bound_lists: usize,
    bound_change: Option<(usize, Vec<Pod>)>,
    /// Whether the API serves NodePools and EC2NodeClasses (their CRDs are installed).
    config_served: bool,
    /// NodePools and EC2NodeClasses as the API server holds them.
    config: BTreeMap<(ConfigKind, String), serde_json::Value>,
    /// Events created, by name (a second create of a name is refused, as the API server does).
    events: BTreeMap<String, ObjectEvent>,
    duplicate_events: usize,
    status_writes: usize,
    /// Config objects created so far (for their uids).
    created_objects: u64,
}

impl ClusterData {
    fn pdbs_of<'a>(&'a self, pod: &'a Pod) -> impl Iterator<Item = usize> + 'a {
        self.pdbs
            .iter()
            .enumerate()
            .filter(move |(_, b)| b.namespace == pod.namespace && b.selector.matches(&pod.labels))
            .map(|(i, _)| i)
    }

    /// The eviction API's check: every PDB selecting the pod must allow one more disruption.
    fn pdbs_allow_eviction(&self, pod: &Pod) -> bool {
        self.pdbs_of(pod).all(|i| self.pdbs[i].disruptions_allowed > 0)
    }

    /// An eviction spends one disruption of every PDB selecting the pod, until the disruption
    /// controller recomputes the status (the caller's `set_pdbs`).
    fn take_disruption(&mut self, pod: &Pod) {
        let spent: Vec<usize> = self.pdbs_of(pod).collect();
        for i in spent {
            self.pdbs[i].disruptions_allowed = self.pdbs[i].disruptions_allowed.saturating_sub(1);
        }
    }
}

/// Kubernetes stand-in: nodes and pods set by the caller, writes recorded. Evictions are refused
/// (429) as the API server refuses them: by the PDBs' `disruptionsAllowed`, each eviction spending
/// one, or for pods marked with `block_eviction`.
#[derive(Debug, Clone, Default)]
pub struct MemoryCluster {
    data: Arc<Mutex<ClusterData>>,
}

impl ClusterData {
    /// One listing of bound pods: a change due by now ([`MemoryCluster::change_bound_after`]) lands.
    fn count_bound_listing(&mut self) {
        if self
            .bound_change
            .as_ref()
            .is_some_and(|(due, _)| self.bound_lists >= *due)
            && let Some((_, pods)) = self.bound_change.take()
        {
            self.bound = pods.into_iter().map(Arc::new).collect();
        }
        self.bound_lists += 1;
    }
}

impl MemoryCluster {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set_nodes(&self, nodes: Vec<ClusterNode>) {
        lock(&self.data).nodes = nodes;
    }
    /// Pending pods whose creation time the caller does not keep (reported as unknown, 0).
    pub fn set_pending(&self, pods: Vec<Pod>) {
        self.set_pending_since(
            pods.into_iter()
                .map(|pod| PendingPod {
                    resource_version: "1".into(),
                    created_at: 0,
                    pod,
                })
                .collect(),
        );
    }
    pub fn set_pending_since(&self, pods: Vec<PendingPod>) {
        lock(&self.data).pending = pods;
    }
    pub fn set_bound(&self, pods: Vec<Pod>) {
        lock(&self.data).bound = pods.into_iter().map(Arc::new).collect();
    }
    /// After `listings` more bound-pod listings, the bound pods become `pods`: a pod arriving or
    /// leaving while a handler is between reading and acting.
    pub fn change_bound_after(&self, listings: usize, pods: Vec<Pod>) {
        let mut d = lock(&self.data);
        let due = d.bound_lists + listings;
        d.bound_change = Some((due, pods));
    }
    pub fn writes(&self) -> Vec<ClusterWrite> {
        lock(&self.data).writes.clone()
    }
    /// `kubectl apply` of a NodePool or EC2NodeClass: the API server keeps the status, sets the
    /// generation to 1 on create and bumps it when the spec changes (not on metadata or status),
    /// and assigns the uid on create (a uid in the applied object is not the server's).
    /// Serves the kinds from now on (as when their CRDs are installed).
    pub fn apply_config(&self, kind: ConfigKind, object: serde_json::Value) {
        let mut d = lock(&self.data);
        d.config_served = true;
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut object = object;
        let key = (kind, name);
        let (generation, status, uid) = match d.config.get(&key) {
            Some(old) => {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let g = if old.get("spec") == object.get("spec") {
                    g
                } else {
                    g + 1
                };
                (g, old.get("status").cloned(), old["metadata"]["uid"].clone())
            }
            None => {
                d.created_objects += 1;
                (
                    1,
                    None,
                    format!("00000000-0000-4000-8000-{:012x}", d.created_objects).into(),
                )
            }
        };
        object["metadata"]["generation"] = generation.into();
        object["metadata"]["uid"] = uid;
        match status {
            Some(s) => object["status"] = s,
            None => {
                if let Some(m) = object.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        d.config.insert(key, object);
    }
    /// `kubectl delete` of a NodePool or EC2NodeClass.
    pub fn delete_config(&self, kind: ConfigKind, name: &str) {
        lock(&self.data).config.remove(&(kind, name.to_string()));
    }
    /// A NodePool or EC2NodeClass as the API holds it now (with its status).
    pub fn config_object(&self, kind: ConfigKind, name: &str) -> Option<serde_json::Value> {
        lock(&self.data).config.get(&(kind, name.to_string())).cloned()
    }
    /// Status writes asked for so far.
    pub fn status_writes(&self) -> usize {
        lock(&self.data).status_writes
    }
    /// The Events created, and how many creates were refused as duplicates.
    pub fn events(&self) -> (Vec<ObjectEvent>, usize) {
        let d = lock(&self.data);
        (d.events.values().cloned().collect(), d.duplicate_events)
    }
    pub fn set_daemonsets(&self, pods: Vec<Pod>) {
        lock(&self.data).daemonsets = pods;
    }
    /// The PDBs with their status as the disruption controller last computed it.
    pub fn set_pdbs(&self, pdbs: Vec<Pdb>) {
        lock(&self.data).pdbs = pdbs;
    }
    /// The PDBs as the cluster holds them now (evictions spent).
    pub fn pdb_list(&self) -> Vec<Pdb> {
        lock(&self.data).pdbs.clone()
    }
    /// A PDB refuses the pod's eviction (429) from now on; only a drain past the grace period
    /// (which deletes) removes it.
    pub fn block_eviction(&self, pod_key: &str) {
        lock(&self.data).pdb_blocked.insert(pod_key.into());
    }
    /// The pod's eviction fails with a server error from now on (or until `allow_eviction`).
    pub fn fail_eviction(&self, pod_key: &str) {
        lock(&self.data).failing.insert(pod_key.into());
    }
    pub fn allow_eviction(&self, pod_key: &str) {
        let mut d = lock(&self.data);
        d.failing.remove(pod_key);
        d.pdb_blocked.remove(pod_key);
    }
    /// The nodes as the cluster holds them now (registration writes applied).
    pub fn node_list(&self) -> Vec<ClusterNode> {
        lock(&self.data).nodes.clone()
    }
    pub fn bound(&self) -> Vec<Pod> {
        lock(&self.data).bound.iter().map(|p| Pod::clone(p)).collect()
    }
    /// The writes since the last call (the simulator applies them to its cluster).
    pub fn take_writes(&self) -> Vec<ClusterWrite> {
        std::mem::take(&mut lock(&self.data).writes)
    }
}

impl ClusterApi for MemoryCluster {
    async fn config_objects(&self) -> nodewright_core::ports::KubeResult<ConfigObjects> {
        let d = lock(&self.data);
        let mut out = ConfigObjects {
            served: d.config_served,
            ..Default::default()
        };
        for ((kind, name), object) in &d.config {
            let o = ConfigObject {
                kind: *kind,
                name: name.clone(),
                generation: object["metadata"]["generation"].as_i64().unwrap_or(1),
                object: object.clone(),
            };
            match kind {
                ConfigKind::NodePool => out.node_pools.push(o),
                ConfigKind::Ec2NodeClass => out.node_classes.push(o),
            }
        }
        Ok(out)
    }
    async fn write_status(
        &self,
        kind: ConfigKind,
        name: &str,
        status: &serde_json::Value,
    ) -> nodewright_core::ports::KubeResult<bool> {
        let mut d = lock(&self.data);
        d.status_writes += 1;
        let Some(object) = d.config.get_mut(&(kind, name.to_string())) else {
            return Ok(false);
        };
        // A JSON merge patch, as the API server applies it: keys not in the patch stay, null
        // removes, objects merge, anything else replaces.
        fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
            match (target.as_object_mut(), patch.as_object()) {
                (Some(t), Some(p)) => {
                    for (k, v) in p {
                        if v.is_null() {
                            t.remove(k);
                        } else {
                            merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                        }
                    }
                }
                _ => *target = patch.clone(),
            }
        }
        merge(&mut object["status"], status);
        Ok(true)
    }
    async fn record_events(&self, events: &[ObjectEvent]) -> nodewright_core::ports::KubeResult<usize> {
        let mut d = lock(&self.data);
        let mut created = 0;
        for e in events {
            match d.events.entry(e.name()) {
                std::collections::btree_map::Entry::Occupied(_) => d.duplicate_events += 1,
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(e.clone());
                    created += 1;
                }
            }
        }
        Ok(created)
    }
    async fn unschedulable_pods(&self) -> nodewright_core::ports::KubeResult<Listed<PendingPod>> {
        Ok(Listed {
            items: lock(&self.data).pending.clone(),
            rejected: Vec::new(),
        })
    }
    /// A listing of bound pods (it counts toward [`MemoryCluster::change_bound_after`]),
    /// filtered by node as the field selector does, in the order of `nodes`.
    async fn pods_on_nodes(&self, nodes: &[String]) -> nodewright_core::ports::KubeResult<Listed<Pod>> {
        let mut d = lock(&self.data);
        d.count_bound_listing();
        let mut by_node: HashMap<&str, Vec<Pod>> = nodes.iter().map(|n| (n.as_str(), Vec::new())).collect();
        for p in &d.bound {
            if let Some(list) = p.node_name.as_deref().and_then(|n| by_node.get_mut(n)) {
                list.push(Pod::clone(p));
            }
        }
        let mut items = Vec::new();
        for n in nodes {
            if let Some(list) = by_node.remove(n.as_str()) {
                items.extend(list);
            }
        }
        Ok(Listed {
            items,
            rejected: Vec::new(),
        })
    }
    async fn nodes(&self) -> nodewright_core::ports::KubeResult<Listed<ClusterNode>> {
        Ok(Listed {
            items: lock(&self.data).nodes.clone(),
            rejected: Vec::new(),
        })
    }
    async fn node_named(&self, name: &str) -> nodewright_core::ports::KubeResult<Option<ClusterNode>> {
        Ok(lock(&self.data).nodes.iter().find(|n| n.node.name == name).cloned())
    }
    async fn daemonsets(&self) -> nodewright_core::ports::KubeResult<Listed<Pod>> {
        Ok(Listed {
            items: lock(&self.data).daemonsets.clone(),
            rejected: Vec::new(),
        })
    }
    async fn pdbs(&self) -> nodewright_core::ports::KubeResult<Vec<Pdb>> {
        Ok(lock(&self.data).pdbs.clone())
    }
    async fn cordon_and_taint(&self, node: &str, taint_key: &str) -> nodewright_core::ports::KubeResult<()> {
        let mut d = lock(&self.data);
        if let Some(n) = d.nodes.iter_mut().find(|n| n.node.name == node) {
            n.node.unschedulable = true;
        }
        d.writes.push(ClusterWrite::CordonAndTaint {
            node: node.into(),
            taint: taint_key.into(),
        });
        Ok(())
    }
    async fn drain(&self, node: &str, options: &DrainOptions) -> nodewright_core::ports::KubeResult<DrainReport> {
        let mut d = lock(&self.data);
        d.writes.push(ClusterWrite::Drain {
            node: node.into(),
            forced: options.mode == DrainMode::Forced,
        });
        let mut report = DrainReport::default();
        let mut blocked = Vec::new();
        let mut keep = Vec::with_capacity(d.bound.len());
        for p in std::mem::take(&mut d.bound) {
            if p.node_name.as_deref() != Some(node) {
                keep.push(p);
                continue;
            }
            let key = format!("{}/{}", p.namespace, p.name);
            if p.goes_with_node() {
                report.skipped.push(key);
                keep.push(p);
            } else if options.grace_expired {
                report.deleted.push(key);
            } else if d.pdbs_of(&p).count() > 1 {
                // The eviction API refuses a pod more than one PDB selects (500).
                report.failed.push((
                    key,
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                        .into(),
                ));
                keep.push(p);
            } else if d.pdb_blocked.contains(&key) || !d.pdbs_allow_eviction(&p) {
                report.pdb_retries += 1;
                blocked.push(key);
                keep.push(p);
            } else if d.failing.contains(&key) {
                report
                    .failed
                    .push((key, "Internal error occurred: etcdserver: request timed out".into()));
                keep.push(p);
            } else {
                d.take_disruption(&p);
                report.evicted.push(key);
            }
        }
        d.bound = keep;
        if !blocked.is_empty() {
            return Err(nodewright_core::ports::KubeError::PdbBlocked {
                node: node.into(),
                pods: blocked,
            });
        }
        Ok(report)
    }
    async fn delete_node(&self, node: &str) -> nodewright_core::ports::KubeResult<bool> {
        let mut d = lock(&self.data);
        let before = d.nodes.len();
        d.nodes.retain(|n| n.node.name != node);
        d.writes.push(ClusterWrite::DeleteNode(node.into()));
        Ok(d.nodes.len() < before)
    }
    async fn register_node(
        &self,
        node: &str,
        registration: &nodewright_core::registration::NodeRegistration,
    ) -> nodewright_core::ports::KubeResult<bool> {
        let labels = &registration.labels;
        let mut d = lock(&self.data);
        let Some(n) = d.nodes.iter_mut().find(|n| n.node.name == node) else {
            return Err(nodewright_core::ports::KubeError::NotFound {
                kind: "Node",
                name: node.into(),
            });
        };
        let missing = labels.iter().any(|(k, v)| n.node.labels.get(k) != Some(v));
        let mut pairs: Vec<(&str, &str)> = n
            .node
            .taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        if n.unregistered {
            pairs.push((nodewright_core::registration::UNREGISTERED_TAINT, "NoExecute"));
        }
        let added: Vec<nodewright_core::model::Taint> =
            registration.missing_taints(&pairs).into_iter().cloned().collect();
        if !missing && !n.unregistered && added.is_empty() {
            return Ok(false);
        }
        n.node.labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        // What the next listing's conversion (`node_from_k8s`) derives from the labels.
        if let Some(pool) = n.node.labels.get(nodewright_core::labels::NODEPOOL) {
            n.node.pool = Some(pool.clone());
        }
        if let Some(ct) = n
            .node
            .labels
            .get(nodewright_core::labels::CAPACITY_TYPE)
            .and_then(|v| CapacityType::parse(v))
        {
            n.node.capacity_type = ct;
        }
        n.node
            .taints
            .retain(|t| t.key != nodewright_core::registration::UNREGISTERED_TAINT);
        n.node.taints.extend(added);
        n.unregistered = false;
        let n_taints = n.node.taints.clone();
        d.writes.push(ClusterWrite::Register {
            node: node.into(),
            labels: labels.clone(),
            taints: n_taints,
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    //! The memory EC2 fails as the fleet adapter's CreateFleet does (its mocked-EC2 tests in
    //! shared/aws/tests/faults.rs): requests of at most 60 overrides, errors naming the offerings
    //! without capacity, a quota failing a whole request, a bounded number of requests.
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: EpochMillis = 1_795_255_200_000;

    fn offering(i: usize, capacity_type: CapacityType) -> InstanceOption {
        InstanceOption {
            name: format!("m5.t{i:03}"),
            capacity_type,
            zone: "us-east-1a".into(),
            price: 0.01 + i as f64 * 0.001,
        }
    }

    fn launch(claim: &str, offerings: Vec<InstanceOption>) -> ClaimLaunch {
        ClaimLaunch {
            node_class: None,
            claim_id: claim.into(),
            pool: nodewright_core::NodePool::new("general"),
            offerings,
            labels: Default::default(),
        }
    }

    #[tokio::test]
    async fn offerings_without_capacity_are_reported_and_the_next_request_takes_the_rest() {
        let ec2 = MemoryCapacity::new("demo");
        let offerings: Vec<_> = (0..70).map(|i| offering(i, CapacityType::Spot)).collect();
        for o in &offerings[..62] {
            ec2.exhaust(CapacityType::Spot, &o.name, &o.zone);
        }
        let out = ec2.launch(&launch("c1", offerings), NOW).await.unwrap();
        assert_eq!(out.instance_type, "m5.t062", "the cheapest with capacity");
        assert_eq!(
            ec2.fleet_requests(),
            [(CapacityType::Spot, 60), (CapacityType::Spot, 10)]
        );
        assert_eq!(out.unavailable.len(), 62);
        assert!(out.unavailable.iter().all(|u| u.3 == "InsufficientInstanceCapacity"));
    }

    #[tokio::test]
    async fn a_spot_quota_fails_the_whole_request_and_on_demand_takes_over() {
        let ec2 = MemoryCapacity::new("demo");
        ec2.limit_spot_instances(1);
        let offerings = vec![
            offering(0, CapacityType::Spot),
            offering(1, CapacityType::Spot),
            offering(50, CapacityType::OnDemand),
        ];
        let first = ec2.launch(&launch("c1", offerings.clone()), NOW).await.unwrap();
        assert_eq!(first.capacity_type, CapacityType::Spot);
        let second = ec2.launch(&launch("c2", offerings), NOW).await.unwrap();
        assert_eq!(second.capacity_type, CapacityType::OnDemand);
        assert!(second.fell_back_to_on_demand);
        assert_eq!(
            second.unavailable,
            [(
                CapacityType::Spot,
                "quota:standard".into(),
                "*".into(),
                "MaxSpotInstanceCountExceeded".into()
            )],
            "spot as a whole"
        );
    }

    #[tokio::test]
    async fn a_capacity_type_is_given_up_after_four_requests() {
        let ec2 = MemoryCapacity::new("demo");
        let offerings: Vec<_> = (0..300).map(|i| offering(i, CapacityType::Spot)).collect();
        for o in &offerings {
            ec2.exhaust(CapacityType::Spot, &o.name, &o.zone);
        }
        let err = ec2.launch(&launch("c1", offerings), NOW).await.unwrap_err();
        match err {
            Error::NoCapacity { unavailable, .. } => assert_eq!(unavailable.len(), 240),
            other => panic!("expected NoCapacity, got {other}"),
        }
        assert_eq!(ec2.fleet_requests(), [(CapacityType::Spot, 60); 4]);
    }
}
