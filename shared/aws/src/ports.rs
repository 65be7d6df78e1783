//! The core's ports over AWS: [`State`] is the DynamoDB `StateStore` itself; [`AwsCapacity`] resolves a
//! pool's EC2NodeClass (AMIs, subnets, security groups; cached for the life of the execution
//! environment), keeps one launch template per content hash, and launches through `Fleet`.

use std::collections::HashMap;

use crate::capacity::{
    AsgPool, ClusterEndpoint, Fleet, InstanceProfiles, InstanceSummary, LaunchOffering, LaunchOutcome, LaunchRequest,
    LaunchTemplateSpec, NodeClassResolution, PriceBook, Variant,
};
use crate::state::{
    ClaimRecord, ClaimUpdate, EventStart, Holder, PoolUsage, StateStore, TransitionOutcome, UnavailableOffering,
    UsageDecision, UsageDelta, UsageDrift, UsageSnapshot,
};
use crate::{EpochMillis, Error, Result};
use nodewright_core::model::ClaimState;
use nodewright_core::nodepool::{Ec2NodeClass, Limits};
use nodewright_core::{CapacityType, InstanceType, labels, registration};
use tokio::sync::Mutex;

use nodewright_core::ports::state::PriceSheet;
use nodewright_core::ports::{Capacity, ClaimLaunch, State};

impl State for StateStore {
    async fn begin_event(&self, key: &str, now: EpochMillis) -> Result<EventStart> {
        StateStore::begin_event(self, key, now).await
    }
    async fn complete_event(&self, key: &str, outcome: &str, now: EpochMillis) -> Result<()> {
        StateStore::complete_event(self, key, outcome, now).await
    }
    async fn abandon_event(&self, key: &str) -> Result<()> {
        StateStore::abandon_event(self, key).await
    }
    async fn reserve_pods(&self, uids: &[String], holder: &Holder, now: EpochMillis, ttl: i64) -> Result<Vec<String>> {
        StateStore::reserve_pods(self, uids, holder, now, ttl).await
    }
    async fn transfer_pod(&self, uid: &str, from: &Holder, to: &Holder, now: EpochMillis, ttl: i64) -> Result<bool> {
        StateStore::transfer_pod(self, uid, from, to, now, ttl).await
    }
    async fn release_pod(&self, uid: &str, holder: &Holder) -> Result<bool> {
        StateStore::release_pod(self, uid, holder).await
    }
    async fn take_lease(&self, name: &str, holder: &str, now: EpochMillis, ttl_secs: i64) -> Result<bool> {
        StateStore::take_lease(self, name, holder, now, ttl_secs).await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        StateStore::release_lease(self, name, holder).await
    }
    async fn create_claim(&self, claim: &ClaimRecord) -> Result<bool> {
        StateStore::create_claim(self, claim).await
    }
    async fn get_claim(&self, id: &str) -> Result<Option<ClaimRecord>> {
        StateStore::get_claim(self, id).await
    }
    async fn claim_by_instance(&self, instance_id: &str) -> Result<Option<ClaimRecord>> {
        StateStore::claim_by_instance(self, instance_id).await
    }
    async fn claims(&self) -> Result<Vec<ClaimRecord>> {
        StateStore::claims(self).await
    }
    async fn live_claims(&self) -> Result<Vec<ClaimRecord>> {
        StateStore::live_claims(self).await
    }
    async fn in_flight_claims(&self) -> Result<Vec<ClaimRecord>> {
        StateStore::in_flight_claims(self).await
    }
    async fn replace_claim(&self, claim: &ClaimRecord, expected_version: u64) -> Result<bool> {
        StateStore::replace_claim(self, claim, expected_version).await
    }
    async fn transition_claim(
        &self,
        id: &str,
        to: ClaimState,
        at: EpochMillis,
        update: &ClaimUpdate,
    ) -> Result<TransitionOutcome> {
        StateStore::transition_claim(self, id, to, at, update).await
    }
    async fn mark_offering_unavailable(
        &self,
        capacity_type: CapacityType,
        instance_type: &str,
        zone: &str,
        reason: &str,
        now: EpochMillis,
    ) -> Result<()> {
        StateStore::mark_offering_unavailable(self, capacity_type, instance_type, zone, reason, now).await
    }
    async fn unavailable_offerings(&self, now: EpochMillis) -> Result<Vec<UnavailableOffering>> {
        StateStore::unavailable_offerings(self, now).await
    }
    async fn try_add_usage(&self, pool: &str, delta: &UsageDelta, limits: &Limits) -> Result<UsageDecision> {
        StateStore::try_add_usage(self, pool, delta, limits).await
    }
    async fn release_usage(&self, pool: &str, delta: &UsageDelta, was_in_flight: bool) -> Result<()> {
        StateStore::release_usage(self, pool, delta, was_in_flight).await
    }
    async fn mark_usage_running(&self, pool: &str, nodes: u64) -> Result<()> {
        StateStore::mark_usage_running(self, pool, nodes).await
    }
    async fn usage_snapshot(&self, pool: &str) -> Result<UsageSnapshot> {
        StateStore::usage_snapshot(self, pool).await
    }
    async fn prices(&self, now: EpochMillis) -> Result<Option<PriceSheet>> {
        StateStore::prices(self, now).await
    }
    async fn resume_point(&self) -> Result<Option<nodewright_core::disruption::ResumePoint>> {
        StateStore::resume_point(self).await
    }
    async fn put_resume_point(&self, point: Option<&nodewright_core::disruption::ResumePoint>) -> Result<()> {
        StateStore::put_resume_point(self, point).await
    }
    async fn put_prices(&self, sheet: &PriceSheet) -> Result<()> {
        StateStore::put_prices(self, sheet).await
    }
    async fn note_usage_checked(&self, pool: &str, drift: &UsageDrift, now: EpochMillis) -> Result<()> {
        StateStore::note_usage_checked(self, pool, drift, now).await
    }
    async fn correct_usage(
        &self,
        pool: &str,
        usage: &PoolUsage,
        expected_version: u64,
        now: EpochMillis,
    ) -> Result<bool> {
        StateStore::correct_usage(self, pool, usage, expected_version, now).await
    }
}

/// EC2 / Auto Scaling capacity for one cluster.
pub struct AwsCapacity {
    pub fleet: Fleet,
    pub asg: AsgPool,
    pub store: StateStore,
    pub ssm: Option<aws_sdk_ssm::Client>,
    /// Instance profiles for classes that name a `role` (None: only `instanceProfile` works).
    pub profiles: Option<InstanceProfiles>,
    pub endpoint: ClusterEndpoint,
    pub kubernetes_version: Option<String>,
    pub node_classes: Vec<Ec2NodeClass>,
    /// The Pricing API (None: on-demand prices stay the catalogue's) and the cluster's region.
    pub pricing: Option<aws_sdk_pricing::Client>,
    pub region: String,
    /// Instance types by name (for the architecture of an offering).
    pub instance_types: HashMap<String, InstanceType>,
    /// Nodewright's bus, when launches are handed off to `state-change` (None: launched inline).
    pub launch_bus: Option<crate::capacity::LaunchBus>,
    resolved: Mutex<HashMap<String, NodeClassResolution>>,
    templates: Mutex<HashMap<String, String>>,
    /// Instance profile per role, for the life of the execution environment.
    profile_names: Mutex<HashMap<String, String>>,
}

impl AwsCapacity {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        fleet: Fleet,
        asg: AsgPool,
        store: StateStore,
        ssm: Option<aws_sdk_ssm::Client>,
        profiles: Option<InstanceProfiles>,
        endpoint: ClusterEndpoint,
        kubernetes_version: Option<String>,
        node_classes: Vec<Ec2NodeClass>,
        instance_types: &[InstanceType],
    ) -> Self {
        AwsCapacity {
            fleet,
            asg,
            store,
            ssm,
            profiles,
            endpoint,
            kubernetes_version,
            node_classes,
            pricing: None,
            region: String::new(),
            instance_types: instance_types.iter().map(|t| (t.name.clone(), t.clone())).collect(),
            launch_bus: None,
            resolved: Mutex::new(HashMap::new()),
            templates: Mutex::new(HashMap::new()),
            profile_names: Mutex::new(HashMap::new()),
        }
    }

    /// The class's `instanceProfile`, or the profile found or created for its `role`.
    async fn instance_profile(&self, class: &Ec2NodeClass) -> Result<String> {
        if let Some(p) = &class.instance_profile {
            return Ok(p.clone());
        }
        let field = format!("EC2NodeClass {}: spec.role", class.name);
        let role = class
            .role
            .as_deref()
            .ok_or_else(|| Error::invalid(&field, "the class names neither role nor instanceProfile"))?;
        let mut cache = self.profile_names.lock().await;
        if let Some(p) = cache.get(role) {
            return Ok(p.clone());
        }
        let profiles = self
            .profiles
            .as_ref()
            .ok_or_else(|| Error::invalid(&field, "no IAM client to create an instance profile for the role"))?;
        let name = profiles.ensure(&class.name, role).await?;
        cache.insert(role.to_string(), name.clone());
        Ok(name)
    }

    /// Cached by the class's drift hash: a class changed in the cluster is resolved again.
    async fn resolution(&self, class: &Ec2NodeClass) -> Result<NodeClassResolution> {
        let key = format!("{}/{}", class.name, class.drift_hash());
        let mut cache = self.resolved.lock().await;
        if let Some(r) = cache.get(&key) {
            return Ok(r.clone());
        }
        let r = self
            .fleet
            .resolve_node_class(class, self.ssm.as_ref(), self.kubernetes_version.as_deref())
            .await?;
        cache.insert(key, r.clone());
        Ok(r)
    }

    async fn template(&self, spec: &LaunchTemplateSpec) -> Result<String> {
        let name = spec.name(self.fleet.cluster());
        let mut cache = self.templates.lock().await;
        if let Some(id) = cache.get(&name) {
            return Ok(id.clone());
        }
        let id = self.fleet.ensure_launch_template(spec).await?;
        cache.insert(name, id.clone());
        Ok(id)
    }

    /// The architecture and image variant an instance type boots.
    fn image_key(&self, instance_type: &str) -> (String, Variant) {
        let Some(t) = self.instance_types.get(instance_type) else {
            return ("amd64".into(), Variant::Standard);
        };
        let arch = t.labels.get(labels::ARCH).cloned().unwrap_or_else(|| "amd64".into());
        (arch, Variant::of(&t.labels))
    }
}

impl Capacity for AwsCapacity {
    /// (`_now`: the instance's launch time is EC2's.)
    async fn launch(&self, launch: &ClaimLaunch, _now: EpochMillis) -> Result<LaunchOutcome> {
        let class_name = launch.pool.node_class.clone().unwrap_or_else(|| "default".into());
        let class = launch
            .node_class
            .as_ref()
            .or_else(|| self.node_classes.iter().find(|c| c.name == class_name))
            .ok_or_else(|| {
                Error::invalid(
                    format!("NodePool {}: spec.template.spec.nodeClassRef", launch.pool.name),
                    format!("EC2NodeClass {class_name:?} is not in the configuration"),
                )
            })?;
        let resolution = self.resolution(class).await?;
        // One launch template per request: the image of the cheapest offering that has one (its
        // architecture, and for an alias its GPU / Neuron variant); offerings booting another
        // image wait for another request, as Karpenter leaves types no image boots unlaunched.
        let image_of = |name: &str| {
            let (arch, variant) = self.image_key(name);
            resolution.image(&arch, variant).cloned().map(|id| (arch, variant, id))
        };
        let (arch, variant, image) = launch.offerings.iter().find_map(|o| image_of(&o.name)).ok_or_else(|| {
            Error::invalid(
                format!("EC2NodeClass {}: spec.amiSelectorTerms", class.name),
                format!(
                    "no image boots any instance type of claim {} (first: {})",
                    launch.claim_id,
                    launch.offerings.first().map_or("none", |o| o.name.as_str())
                ),
            )
        })?;
        let profile = self.instance_profile(class).await?;
        let spec = LaunchTemplateSpec::new(
            class,
            &resolution,
            &arch,
            variant,
            &self.endpoint,
            &registration::boot_labels(&launch.pool),
            &registration::boot_taints(&launch.pool),
            Some(profile),
        )?
        .with_tenancy_of(&launch.labels);
        let template = self.template(&spec).await?;
        let offerings: Vec<LaunchOffering> = launch
            .offerings
            .iter()
            .filter(|o| image_of(&o.name).is_some_and(|(_, _, id)| id == image))
            .filter_map(|o| {
                let subnet = resolution.subnets.iter().find(|(_, zone)| *zone == o.zone)?;
                Some(LaunchOffering {
                    instance_type: o.name.clone(),
                    zone: o.zone.clone(),
                    subnet_id: subnet.0.clone(),
                    capacity_type: o.capacity_type,
                    price: o.price,
                })
            })
            .collect();
        let mut tags = class.tags.clone();
        tags.insert(labels::NODEPOOL.into(), launch.pool.name.clone());
        if let Some(t) = nodewright_core::ports::capacity::labels_tag(&launch.labels) {
            tags.insert(nodewright_core::ports::capacity::TAG_LABELS.into(), t);
        }
        let request = LaunchRequest {
            claim_id: launch.claim_id.clone(),
            pool: launch.pool.name.clone(),
            launch_template_id: template,
            offerings,
            tags,
        };
        self.fleet.launch(&request).await
    }

    async fn scale_up(&self, group: &str) -> Result<bool> {
        let raised = self.asg.scale_up(group, 1).await?;
        Ok(raised.granted > 0)
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<()> {
        self.fleet.terminate(instance_ids).await
    }

    async fn scale_in(&self, group: &str, instance_ids: &[String]) -> Result<Vec<String>> {
        self.asg.scale_in(group, instance_ids).await
    }

    async fn set_protection(&self, group: &str, instance_ids: &[String], protect: bool) -> Result<()> {
        self.asg.set_protection(group, instance_ids, protect).await
    }

    async fn group_members(&self, group: &str) -> Result<Vec<String>> {
        let state = self.asg.group_state(group).await?;
        Ok(state
            .instances
            .into_iter()
            .filter(|(_, lifecycle, _)| !lifecycle.starts_with("Terminat") && !lifecycle.starts_with("Detach"))
            .map(|(id, _, _)| id)
            .collect())
    }

    async fn instances(&self) -> Result<Vec<InstanceSummary>> {
        self.fleet.cluster_instances().await
    }

    async fn current_prices(&self, instance_types: &[String], now: EpochMillis) -> Result<PriceSheet> {
        let mut book = PriceBook::new();
        let on_demand = match &self.pricing {
            Some(pricing) => book.refresh_on_demand(pricing, &self.region).await,
            None => false,
        };
        let spot = book.refresh_spot(&self.fleet.ec2, instance_types).await;
        if !on_demand && !spot {
            return Err(Error::Aws {
                operation: "GetProducts",
                code: "Unavailable".into(),
                message: "neither the Pricing API nor DescribeSpotPriceHistory answered".into(),
            });
        }
        let mut sheet = book.sheet(&self.region, now);
        sheet.zone_ids = PriceBook::zone_ids(&self.fleet.ec2).await;
        Ok(sheet)
    }

    async fn describe(&self, instance_ids: &[String]) -> Result<Vec<InstanceSummary>> {
        self.fleet.describe_ids(instance_ids).await
    }
    fn has_launch_bus(&self) -> bool {
        self.launch_bus.is_some()
    }
    async fn hand_off_launches(
        &self,
        requests: &[nodewright_core::model::claim_launch::ClaimLaunchRequest],
    ) -> Result<Vec<String>> {
        match &self.launch_bus {
            Some(bus) => bus.put(requests).await,
            None => Ok(Vec::new()),
        }
    }
}
