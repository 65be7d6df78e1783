//! Prices: the embedded catalogue's prices, refreshed with spot prices from
//! DescribeSpotPriceHistory when EC2 is reachable, kept in memory across warm Lambda invocations.
//! When the refresh fails the embedded prices stand (logged, never an error).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;
use nodewright_core::{CapacityType, InstanceType};

/// How long refreshed prices are trusted before the next refresh.
const REFRESH_EVERY: Duration = Duration::from_secs(30 * 60);

/// Current prices by (instance type, zone, capacity type).
#[derive(Debug, Default)]
pub struct PriceBook {
    spot: HashMap<(String, String), f64>,
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
        instance_type
            .offerings
            .iter()
            .find(|o| o.capacity_type == capacity_type && o.zone == zone)
            .map(|o| o.price)
    }

    pub fn refreshed_spot_prices(&self) -> usize {
        self.spot.len()
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
}
