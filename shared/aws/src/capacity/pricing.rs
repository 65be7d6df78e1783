//! Prices: the embedded catalogue's prices, refreshed with on-demand prices from the Pricing API
//! (GetProducts) and spot prices from DescribeSpotPriceHistory when reachable, kept in memory across
//! warm Lambda invocations. When a refresh fails the embedded prices stand (logged, never an error).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::FromSdk;
use aws_sdk_ec2::types::Filter;
use nodewright_core::ports::state::PriceSheet;
use nodewright_core::{CapacityType, InstanceType};

/// How long refreshed prices are trusted before the next refresh.
const REFRESH_EVERY: Duration = Duration::from_secs(30 * 60);

/// Current prices by (instance type, zone, capacity type).
#[derive(Debug, Default)]
pub struct PriceBook {
    spot: HashMap<(String, String), f64>,
    on_demand: HashMap<String, f64>,
    refreshed_at: Option<Instant>,
}

impl PriceBook {
    pub fn new() -> Self {
        PriceBook::default()
    }

    /// The price to use: the refreshed spot price when known, else the catalogue's.
    pub fn price(&self, instance_type: &InstanceType, zone: &str, capacity_type: CapacityType) -> Option<f64> {
        if capacity_type == CapacityType::Spot
            && let Some(p) = self.spot.get(&(instance_type.name.clone(), zone.to_string()))
        {
            return Some(*p);
        }
        if capacity_type == CapacityType::OnDemand
            && let Some(p) = self.on_demand.get(&instance_type.name)
        {
            return Some(*p);
        }
        instance_type
            .offerings
            .iter()
            .find(|o| o.capacity_type == capacity_type && o.zone == zone)
            .map(|o| o.price)
    }

    pub fn refreshed_spot_prices(&self) -> usize {
        self.spot.len()
    }

    pub fn refreshed_on_demand_prices(&self) -> usize {
        self.on_demand.len()
    }

    /// What was refreshed, as the state port stores it.
    pub fn sheet(&self, region: &str, now: nodewright_core::ports::EpochMillis) -> PriceSheet {
        PriceSheet {
            region: region.into(),
            refreshed_at: now,
            on_demand: self.on_demand.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            spot: self.spot.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            zone_ids: Default::default(),
        }
    }

    /// The account's zone IDs by zone name (DescribeAvailabilityZones), bounded; empty when EC2
    /// did not answer (the previous sheet's are kept then).
    pub async fn zone_ids(ec2: &aws_sdk_ec2::Client) -> std::collections::BTreeMap<String, String> {
        match ec2.describe_availability_zones().send().await {
            Ok(out) => out
                .availability_zones()
                .iter()
                .filter_map(|z| Some((z.zone_name()?.to_string(), z.zone_id()?.to_string())))
                .filter(|(z, id)| !z.contains(' ') && !id.contains(' '))
                .take(256)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %crate::Error::aws("DescribeAvailabilityZones", e), "DescribeAvailabilityZones failed; zone IDs not refreshed");
                Default::default()
            }
        }
    }

    pub fn is_stale(&self) -> bool {
        self.refreshed_at.is_none_or(|t| t.elapsed() > REFRESH_EVERY)
    }

    /// Refreshes spot prices for `types` (Linux/UNIX, the latest price per type and zone). Returns
    /// whether the refresh succeeded; on failure the previous prices are kept.
    pub async fn refresh_spot(&mut self, ec2: &aws_sdk_ec2::Client, types: &[String]) -> bool {
        let mut fresh = HashMap::new();
        for chunk in types.chunks(100) {
            let mut token: Option<String> = None;
            loop {
                let result = ec2
                    .describe_spot_price_history()
                    .set_instance_types(Some(chunk.iter().map(|t| t.as_str().into()).collect()))
                    .filters(
                        Filter::builder()
                            .name("product-description")
                            .values("Linux/UNIX")
                            .build(),
                    )
                    .start_time(aws_smithy_types::DateTime::from(std::time::SystemTime::now()))
                    .set_next_token(token.take())
                    .send()
                    .await;
                let page = match result {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %crate::Error::aws("DescribeSpotPriceHistory", e), "spot price refresh failed; using embedded prices");
                        return false;
                    }
                };
                for p in page.spot_price_history() {
                    let (Some(t), Some(zone), Some(price)) = (p.instance_type(), p.availability_zone(), p.spot_price())
                    else {
                        continue;
                    };
                    if let Ok(price) = price.parse::<f64>() {
                        // Entries come newest first: keep the first seen.
                        fresh.entry((t.as_str().to_string(), zone.to_string())).or_insert(price);
                    }
                }
                match page.next_token {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => break,
                }
            }
        }
        self.spot.extend(fresh);
        self.refreshed_at = Some(Instant::now());
        true
    }

    /// Refreshes on-demand Linux prices for a region from the Pricing API (all types, paginated).
    /// Returns whether it succeeded; on failure the previous prices are kept.
    pub async fn refresh_on_demand(&mut self, pricing: &aws_sdk_pricing::Client, region: &str) -> bool {
        use aws_sdk_pricing::types::{Filter as PriceFilter, FilterType};
        let filters: Result<Vec<PriceFilter>, _> = [
            ("regionCode", region),
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
            // Not Capacity Blocks or other market options priced under the same type.
            ("marketoption", "OnDemand"),
        ]
        .into_iter()
        .map(|(field, value)| {
            PriceFilter::builder()
                .r#type(FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
        })
        .collect();
        let Ok(filters) = filters else {
            return false;
        };
        let mut fresh = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let result = pricing
                .get_products()
                .service_code("AmazonEC2")
                .set_filters(Some(filters.clone()))
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await;
            let page = match result {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %crate::Error::aws("GetProducts", e), "on-demand price refresh failed; using embedded prices");
                    return false;
                }
            };
            for entry in page.price_list() {
                if let Some((itype, price)) = on_demand_price(entry) {
                    // Two documents for one type (a product the filters did not tell apart): the
                    // lower, whatever their order.
                    let p = fresh.entry(itype).or_insert(price);
                    *p = f64::min(*p, price);
                }
            }
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        self.on_demand.extend(fresh);
        self.refreshed_at = Some(Instant::now());
        true
    }
}

/// The instance type and hourly USD price in one Pricing API price-list document.
fn on_demand_price(document: &str) -> Option<(String, f64)> {
    let v: serde_json::Value = serde_json::from_str(document).ok()?;
    let itype = v.pointer("/product/attributes/instanceType")?.as_str()?.to_string();
    let terms = v.pointer("/terms/OnDemand")?.as_object()?;
    let price = terms.values().find_map(|term| {
        term.get("priceDimensions")?.as_object()?.values().find_map(|d| {
            if d.get("unit")?.as_str()? != "Hrs" {
                return None;
            }
            d.pointer("/pricePerUnit/USD")?.as_str()?.parse::<f64>().ok()
        })
    })?;
    (price > 0.0).then_some((itype, price))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_list_documents_are_read() {
        let doc = r#"{"product":{"attributes":{"instanceType":"m5.large","regionCode":"us-east-1"}},
            "terms":{"OnDemand":{"ABC.JRTCKXETXF":{"priceDimensions":{"ABC.JRTCKXETXF.6YS6EN2CT7":
            {"unit":"Hrs","pricePerUnit":{"USD":"0.0960000000"}}}}}}}"#;
        assert_eq!(on_demand_price(doc), Some(("m5.large".to_string(), 0.096)));
        assert_eq!(on_demand_price("{not json"), None);
        assert_eq!(on_demand_price(r#"{"product":{}}"#), None);
    }
}
