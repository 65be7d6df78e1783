//! Launching a node claim with CreateFleet (type `instant`): the claim's cheapest compatible
//! offerings as overrides, spot first with price-capacity-optimized, on-demand lowest-price as the
//! fallback. Capacity errors (as call errors or entries in the fleet's Errors list) mark the offering
//! unavailable in the shared ICE cache and the launch retries with what remains.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetOnDemandAllocationStrategy, FleetType, InstanceType,
    OnDemandOptionsRequest, ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};
use nodewright_core::CapacityType;
use sha2::{Digest, Sha256};

use super::{LaunchOutcome, TAG_CLAIM, TAG_CLUSTER, TAG_MANAGED_BY, TAG_POOL};
use crate::error::FromSdk;
use crate::{Error, Result};

pub use nodewright_core::ports::capacity::fleet::{
    ANY, MAX_ATTEMPTS_PER_CAPACITY_TYPE, MAX_OVERRIDES, exhausts_capacity_type, is_capacity_error, quota_class,
    quota_entry,
};

/// One launchable offering: instance type in a zone's subnet at a capacity type.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchOffering {
    pub instance_type: String,
    pub zone: String,
    pub subnet_id: String,
    pub capacity_type: CapacityType,
    /// $/h, for ordering (cheapest first) and the outcome.
    pub price: f64,
}

/// A claim to launch.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub claim_id: String,
    pub pool: String,
    pub launch_template_id: String,
    /// Every offering the claim may use, any order; on-demand ones only if the pool allows on-demand.
    pub offerings: Vec<LaunchOffering>,
    /// Extra instance tags (the EC2NodeClass's tags).
    pub tags: BTreeMap<String, String>,
}

/// EC2 access for one cluster.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) cluster: String,
}

impl Fleet {
    pub fn new(ec2: aws_sdk_ec2::Client, cluster: impl Into<String>) -> Self {
        Fleet {
            ec2,
            cluster: cluster.into(),
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Launches one instance for the claim. Adopts an instance already launched for it; reports the
    /// offerings found without capacity (the caller keeps the ICE cache).
    pub async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome> {
        if request.offerings.is_empty() {
            return Err(Error::invalid(
                "offerings",
                format!("claim {} has no offerings", request.claim_id),
            ));
        }
        if let Some(existing) = self.instance_for_claim(&request.claim_id).await? {
            let capacity_type = if existing.spot {
                CapacityType::Spot
            } else {
                CapacityType::OnDemand
            };
            let price = request
                .offerings
                .iter()
                .find(|o| o.instance_type == existing.instance_type && o.capacity_type == capacity_type)
                .map(|o| o.price);
            tracing::info!(claim = %request.claim_id, instance = %existing.instance_id, "adopted instance from an earlier launch");
            return Ok(LaunchOutcome {
                instance_id: existing.instance_id,
                instance_type: existing.instance_type,
                zone: existing.zone,
                capacity_type,
                price,
                adopted: true,
                fell_back_to_on_demand: false,
                unavailable: Vec::new(),
            });
        }

        let mut remaining: Vec<LaunchOffering> = request.offerings.clone();
        remaining.sort_by(|a, b| {
            a.price
                .total_cmp(&b.price)
                .then_with(|| a.instance_type.cmp(&b.instance_type))
        });

        let wanted_spot = request.offerings.iter().any(|o| o.capacity_type == CapacityType::Spot);
        let mut unavailable = Vec::new();
        let mut tried = Vec::new();
        for capacity_type in [CapacityType::Spot, CapacityType::OnDemand] {
            for attempt in 0..MAX_ATTEMPTS_PER_CAPACITY_TYPE {
                let batch: Vec<LaunchOffering> = remaining
                    .iter()
                    .filter(|o| o.capacity_type == capacity_type)
                    .take(MAX_OVERRIDES)
                    .cloned()
                    .collect();
                if batch.is_empty() {
                    break;
                }
                match self.create_fleet(request, capacity_type, &batch, attempt).await {
                    Ok(FleetResult::Launched {
                        instance_id,
                        instance_type,
                        zone,
                    }) => {
                        let price = batch
                            .iter()
                            .find(|o| o.instance_type == instance_type && (zone.is_empty() || o.zone == zone))
                            .map(|o| o.price);
                        let zone = if zone.is_empty() {
                            batch
                                .iter()
                                .find(|o| o.instance_type == instance_type)
                                .map(|o| o.zone.clone())
                                .unwrap_or_default()
                        } else {
                            zone
                        };
                        return Ok(LaunchOutcome {
                            instance_id,
                            instance_type,
                            zone,
                            capacity_type,
                            price,
                            adopted: false,
                            fell_back_to_on_demand: wanted_spot && capacity_type == CapacityType::OnDemand,
                            unavailable,
                        });
                    }
                    Ok(FleetResult::Failed(errors)) => {
                        let mut removed = false;
                        for (code, message, offering) in errors {
                            tried.push(format!("{capacity_type} attempt {}: {code}: {message}", attempt + 1));
                            if !is_capacity_error(&code) {
                                continue;
                            }
                            if exhausts_capacity_type(&code) {
                                // A quota: no offering of its class and capacity type can launch
                                // now (the offering named, else the request's cheapest).
                                let named = offering.as_ref().map(|(t, _)| t.clone());
                                let Some(itype) = named.or_else(|| batch.first().map(|o| o.instance_type.clone()))
                                else {
                                    continue;
                                };
                                let class = quota_class(&itype);
                                remaining.retain(|o| {
                                    o.capacity_type != capacity_type || quota_class(&o.instance_type) != class
                                });
                                let entry = (capacity_type, quota_entry(&itype), ANY.to_string(), code.clone());
                                if !unavailable.contains(&entry) {
                                    unavailable.push(entry);
                                }
                                removed = true;
                                continue;
                            }
                            let victims: Vec<LaunchOffering> = if let Some((itype, zone)) = offering {
                                batch
                                    .iter()
                                    .filter(|o| o.instance_type == itype && (zone.is_empty() || o.zone == zone))
                                    .cloned()
                                    .collect()
                            } else {
                                // A call-level error that names no offering: blame the cheapest.
                                batch.first().cloned().into_iter().collect()
                            };
                            for v in victims {
                                remaining.retain(|o| o != &v);
                                unavailable.push((
                                    v.capacity_type,
                                    v.instance_type.clone(),
                                    v.zone.clone(),
                                    code.clone(),
                                ));
                                removed = true;
                            }
                        }
                        if !removed {
                            // Not a capacity problem: retrying the same offerings will not help.
                            return Err(Error::NoCapacity {
                                claim: request.claim_id.clone(),
                                tried,
                                unavailable,
                            });
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(Error::NoCapacity {
            claim: request.claim_id.clone(),
            tried,
            unavailable,
        })
    }

    async fn create_fleet(
        &self,
        request: &LaunchRequest,
        capacity_type: CapacityType,
        batch: &[LaunchOffering],
        attempt: usize,
    ) -> Result<FleetResult> {
        let overrides: Vec<FleetLaunchTemplateOverridesRequest> = batch
            .iter()
            .enumerate()
            .map(|(i, o)| {
                FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(InstanceType::from(o.instance_type.as_str()))
                    .subnet_id(&o.subnet_id)
                    .availability_zone(&o.zone)
                    .priority(i as f64)
                    .build()
            })
            .collect();
        let mut tags = vec![
            tag(TAG_CLUSTER, &self.cluster),
            tag(TAG_POOL, &request.pool),
            tag(TAG_CLAIM, &request.claim_id),
            tag(TAG_MANAGED_BY, "nodewright"),
            tag("Name", &format!("nodewright/{}/{}", request.pool, request.claim_id)),
        ];
        tags.extend(request.tags.iter().map(|(k, v)| tag(k, v)));
        let (default_type, spot, on_demand) = match capacity_type {
            CapacityType::Spot => (
                DefaultTargetCapacityType::Spot,
                Some(
                    SpotOptionsRequest::builder()
                        .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                        .build(),
                ),
                None,
            ),
            _ => (
                DefaultTargetCapacityType::OnDemand,
                None,
                Some(
                    OnDemandOptionsRequest::builder()
                        .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                        .build(),
                ),
            ),
        };
        let response = self
            .ec2
            .create_fleet()
            .r#type(FleetType::Instant)
            .client_token(client_token(&request.claim_id, capacity_type, attempt))
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(1)
                    .default_target_capacity_type(default_type)
                    .build(),
            )
            .set_spot_options(spot)
            .set_on_demand_options(on_demand)
            .launch_template_configs(
                FleetLaunchTemplateConfigRequest::builder()
                    .launch_template_specification(
                        FleetLaunchTemplateSpecificationRequest::builder()
                            .launch_template_id(&request.launch_template_id)
                            .version("$Latest")
                            .build(),
                    )
                    .set_overrides(Some(overrides))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await;
        let output = match response {
            Ok(output) => output,
            Err(err) => {
                let e = Error::aws("CreateFleet", err);
                return match e.aws_code() {
                    Some(code) if is_capacity_error(code) => {
                        let message = e.to_string();
                        Ok(FleetResult::Failed(vec![(code.to_string(), message, None)]))
                    }
                    _ => Err(e),
                };
            }
        };
        for instance in output.instances() {
            if let Some(id) = instance.instance_ids().first() {
                let overrides = instance.launch_template_and_overrides().and_then(|l| l.overrides());
                let instance_type = instance
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .or_else(|| {
                        overrides
                            .and_then(|o| o.instance_type())
                            .map(|t| t.as_str().to_string())
                    })
                    .unwrap_or_default();
                let zone = overrides
                    .and_then(|o| o.availability_zone())
                    .map(str::to_string)
                    .or_else(|| {
                        let subnet = overrides.and_then(|o| o.subnet_id())?;
                        batch.iter().find(|b| b.subnet_id == subnet).map(|b| b.zone.clone())
                    })
                    .unwrap_or_default();
                return Ok(FleetResult::Launched {
                    instance_id: id.clone(),
                    instance_type,
                    zone,
                });
            }
        }
        let errors = output
            .errors()
            .iter()
            .map(|e| {
                let overrides = e.launch_template_and_overrides().and_then(|l| l.overrides());
                let offering = overrides.and_then(|o| {
                    let itype = o.instance_type()?.as_str().to_string();
                    let zone = o
                        .availability_zone()
                        .map(str::to_string)
                        .or_else(|| {
                            let subnet = o.subnet_id()?;
                            batch.iter().find(|b| b.subnet_id == subnet).map(|b| b.zone.clone())
                        })
                        .unwrap_or_default();
                    Some((itype, zone))
                });
                (
                    e.error_code().unwrap_or("Unknown").to_string(),
                    e.error_message().unwrap_or_default().to_string(),
                    offering,
                )
            })
            .collect::<Vec<_>>();
        if errors.is_empty() {
            return Ok(FleetResult::Failed(vec![(
                "NoInstances".into(),
                "CreateFleet returned neither instances nor errors".into(),
                None,
            )]));
        }
        Ok(FleetResult::Failed(errors))
    }
}

enum FleetResult {
    Launched {
        instance_id: String,
        instance_type: String,
        zone: String,
    },
    Failed(Vec<FleetError>),
}

/// A fleet error: code, message, and the offering it names (instance type, zone) if any.
type FleetError = (String, String, Option<(String, String)>);

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// The same claim, capacity type and attempt always produce the same token, so an SDK retry of a
/// CreateFleet call that actually succeeded returns the first result instead of a second instance.
fn client_token(claim_id: &str, capacity_type: CapacityType, attempt: usize) -> String {
    let digest = Sha256::digest(format!("{claim_id}/{capacity_type}/{attempt}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_token_is_stable_and_distinct() {
        let a = client_token("c-1", CapacityType::Spot, 0);
        assert_eq!(a, client_token("c-1", CapacityType::Spot, 0));
        assert_ne!(a, client_token("c-1", CapacityType::Spot, 1));
        assert_ne!(a, client_token("c-1", CapacityType::OnDemand, 0));
        assert_eq!(a.len(), 32, "within EC2's 64-character ClientToken limit");
    }
}
