//! Live prices: on-demand from the Pricing API per region, spot from DescribeSpotPriceHistory per
//! type and zone, refreshed by the scheduled function and kept in the state store for every
//! function to read. The embedded catalogue stays the fallback (and the source of spot
//! interruption bands); a sheet only replaces prices of offerings the catalogue knows.

use std::collections::BTreeMap;

use crate::CapacityType;
use crate::catalogue::InstanceType;
use crate::ports::EpochMillis;

/// How old a sheet may get before the scheduled function refreshes it.
pub const PRICES_REFRESH_SECS: i64 = 3600;
/// A sheet not refreshed for this long expires (the catalogue's prices are used again).
pub const PRICES_TTL_SECS: i64 = 2 * 86_400;
/// Prices are stored in chunks of at most this many bytes (a DynamoDB item holds 400 KB).
pub const PRICE_CHUNK_BYTES: usize = 100_000;
/// More entries than any region has (types x zones); a larger sheet is refused, not stored.
pub const MAX_PRICE_ENTRIES: usize = 50_000;

/// Prices for one region as AWS reported them at `refreshed_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceSheet {
    pub region: String,
    pub refreshed_at: EpochMillis,
    /// USD per hour by instance type (Linux, shared tenancy).
    pub on_demand: BTreeMap<String, f64>,
    /// USD per hour by (instance type, zone) (Linux/UNIX).
    pub spot: BTreeMap<(String, String), f64>,
    /// The account's zone IDs by zone name (DescribeAvailabilityZones), read with the prices:
    /// what `topology.k8s.aws/zone-id` requirements are met by ([`crate::catalogue::zone_ids`]).
    pub zone_ids: BTreeMap<String, String>,
}

impl PriceSheet {
    pub fn is_empty(&self) -> bool {
        self.on_demand.is_empty() && self.spot.is_empty()
    }

    /// Whether it has expired at `now` (the catalogue's prices are used again).
    pub fn is_expired(&self, now: EpochMillis) -> bool {
        now - self.refreshed_at >= PRICES_TTL_SECS * 1000
    }

    /// Whether the scheduled function should refresh it at `now`.
    pub fn is_due(&self, now: EpochMillis) -> bool {
        now - self.refreshed_at >= PRICES_REFRESH_SECS * 1000
    }

    /// Replaces the prices of the offerings the sheet knows; returns how many changed. A type
    /// whose on-demand price is live but whose spot price is not keeps its estimated spot price
    /// scaled by the same ratio (the estimate is a saving off on-demand).
    pub fn apply(&self, types: &mut [InstanceType]) -> usize {
        if !self.zone_ids.is_empty() {
            crate::catalogue::zone_ids::assign(types, &self.zone_ids);
        }
        let mut changed = 0;
        for t in types.iter_mut() {
            let catalogue_od = t
                .offerings
                .iter()
                .find(|o| o.capacity_type == CapacityType::OnDemand)
                .map(|o| o.price);
            let live_od = self
                .on_demand
                .get(&t.name)
                .copied()
                .filter(|p| p.is_finite() && *p > 0.0);
            for o in &mut t.offerings {
                let live = match o.capacity_type {
                    CapacityType::OnDemand => live_od,
                    CapacityType::Spot => self
                        .spot
                        .get(&(t.name.clone(), o.zone.clone()))
                        .copied()
                        .filter(|p| p.is_finite() && *p > 0.0)
                        .or_else(|| match (live_od, catalogue_od) {
                            (Some(live), Some(old)) if old > 0.0 => Some(o.price * live / old),
                            _ => None,
                        }),
                    _ => None,
                };
                if let Some(p) = live
                    && p != o.price
                {
                    o.price = p;
                    changed += 1;
                }
            }
        }
        changed
    }

    /// The sheet as text chunks of at most [`PRICE_CHUNK_BYTES`]: lines `od TYPE PRICE` and
    /// `spot TYPE ZONE PRICE`.
    pub fn encode(&self) -> Vec<String> {
        let lines = self
            .on_demand
            .iter()
            .map(|(t, p)| format!("od {t} {p}"))
            .chain(self.spot.iter().map(|((t, z), p)| format!("spot {t} {z} {p}")))
            .chain(self.zone_ids.iter().map(|(z, id)| format!("zone {z} {id}")));
        let mut chunks = vec![String::new()];
        for line in lines {
            let last = chunks.last_mut().expect("one chunk");
            if !last.is_empty() && last.len() + line.len() + 1 > PRICE_CHUNK_BYTES {
                chunks.push(String::new());
            }
            let last = chunks.last_mut().expect("one chunk");
            last.push_str(&line);
            last.push('\n');
        }
        chunks
    }

    /// Reads chunks written by [`PriceSheet::encode`]; a bad line is an error naming it.
    pub fn decode(region: &str, refreshed_at: EpochMillis, chunks: &[String]) -> Result<PriceSheet, String> {
        let mut sheet = PriceSheet {
            region: region.into(),
            refreshed_at,
            ..Default::default()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            for (n, line) in chunk.lines().enumerate() {
                let bad = || format!("prices chunk {i} line {n}: {line:?}");
                let parts: Vec<&str> = line.split(' ').collect();
                let price = |s: &str| s.parse::<f64>().ok().filter(|p| p.is_finite() && *p > 0.0);
                match parts.as_slice() {
                    ["od", t, p] => {
                        sheet.on_demand.insert((*t).into(), price(p).ok_or_else(bad)?);
                    }
                    ["spot", t, z, p] => {
                        sheet.spot.insert(((*t).into(), (*z).into()), price(p).ok_or_else(bad)?);
                    }
                    ["zone", z, id] if !z.is_empty() && !id.is_empty() => {
                        sheet.zone_ids.insert((*z).into(), (*id).into());
                    }
                    _ => return Err(bad()),
                }
                if sheet.on_demand.len() + sheet.spot.len() + sheet.zone_ids.len() > MAX_PRICE_ENTRIES {
                    return Err(format!("more than {MAX_PRICE_ENTRIES} prices"));
                }
            }
        }
        Ok(sheet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalogue;
    use crate::catalogue::OverheadConfig;

    #[test]
    fn live_prices_replace_the_catalogues_and_scale_spot_estimates() {
        let mut types = Catalogue::embedded().instance_types("eu-west-2", &OverheadConfig::default());
        let m5 = types.iter().find(|t| t.name == "m5.large").unwrap().clone();
        let od = |t: &InstanceType| {
            t.offerings
                .iter()
                .find(|o| o.capacity_type == CapacityType::OnDemand)
                .unwrap()
                .price
        };
        let spot_zone = m5
            .offerings
            .iter()
            .find(|o| o.capacity_type == CapacityType::Spot)
            .unwrap()
            .zone
            .clone();
        let mut sheet = PriceSheet {
            region: "eu-west-2".into(),
            refreshed_at: 1,
            ..Default::default()
        };
        sheet.on_demand.insert("m5.large".into(), od(&m5) * 1.1);
        sheet.spot.insert(("m5.large".into(), spot_zone.clone()), 0.031);
        // A type the catalogue does not know is ignored, not added.
        sheet.on_demand.insert("x9.unknown".into(), 1.0);
        let changed = sheet.apply(&mut types);
        assert!(changed >= 2, "{changed}");
        let after = types.iter().find(|t| t.name == "m5.large").unwrap();
        assert!((od(after) - od(&m5) * 1.1).abs() < 1e-9);
        for o in after.offerings.iter().filter(|o| o.capacity_type == CapacityType::Spot) {
            let before = m5
                .offerings
                .iter()
                .find(|b| b.zone == o.zone && b.capacity_type == o.capacity_type)
                .unwrap();
            if o.zone == spot_zone {
                assert_eq!(o.price, 0.031);
            } else {
                assert!(
                    (o.price - before.price * 1.1).abs() < 1e-9,
                    "estimate scaled with on-demand"
                );
            }
        }
        assert_eq!(
            after.interruption_band, m5.interruption_band,
            "bands stay the catalogue's"
        );
    }

    #[test]
    fn a_sheet_round_trips_through_bounded_chunks_and_bad_lines_are_named() {
        let mut sheet = PriceSheet {
            region: "us-east-1".into(),
            refreshed_at: 42,
            ..Default::default()
        };
        for i in 0..6000 {
            sheet
                .spot
                .insert((format!("m{i}.large"), "us-east-1a".into()), 0.01 + f64::from(i) / 1e4);
        }
        sheet.on_demand.insert("m5.large".into(), 0.096);
        sheet.zone_ids.insert("us-east-1a".into(), "use1-az6".into());
        let chunks = sheet.encode();
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.len() <= PRICE_CHUNK_BYTES));
        assert_eq!(PriceSheet::decode("us-east-1", 42, &chunks).unwrap(), sheet);
        let e = PriceSheet::decode("us-east-1", 42, &["od m5.large -3\n".into()]).unwrap_err();
        assert!(e.contains("line 0") && e.contains("m5.large"), "{e}");
    }

    #[test]
    fn a_sheet_gives_the_offerings_their_zone_ids() {
        let mut types = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
        let mut sheet = PriceSheet {
            region: "us-east-1".into(),
            ..Default::default()
        };
        // As DescribeAvailabilityZones answers for one account (moto's mapping).
        sheet.zone_ids.insert("us-east-1a".into(), "use1-az6".into());
        sheet.zone_ids.insert("us-east-1b".into(), "use1-az1".into());
        sheet.apply(&mut types);
        let ids = crate::catalogue::zone_ids::of(&types);
        assert_eq!(ids.get("us-east-1b").map(String::as_str), Some("use1-az1"));
        assert_eq!(ids.get("us-east-1c"), None, "a zone the account did not list has no ID");
    }
}
