//! Zone IDs (`topology.k8s.aws/zone-id`, e.g. `use1-az1`): the same physical zone in every
//! account, where a zone's name (`us-east-1a`) is mapped to one per account. An offering carries
//! its zone's ID once the account's mapping is known (DescribeAvailabilityZones, refreshed with
//! the prices); a requirement on the zone ID is then read as one on the zones holding those IDs,
//! so the scheduler keeps a single zone dimension.

use std::collections::BTreeMap;

use super::InstanceType;
use crate::labels;
use crate::requirements::{Operator, Requirement};

/// Sets each offering's zone ID from `ids` (zone name → zone ID); zones not in `ids` get none.
pub fn assign(types: &mut [InstanceType], ids: &BTreeMap<String, String>) {
    for o in types.iter_mut().flat_map(|t| t.offerings.iter_mut()) {
        o.zone_id = ids.get(&o.zone).cloned();
    }
}

/// The zone name → zone ID mapping the offerings of `types` carry.
pub fn of(types: &[InstanceType]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for o in types.iter().flat_map(|t| t.offerings.iter()) {
        if let Some(id) = &o.zone_id
            && !m.contains_key(&o.zone)
        {
            m.insert(o.zone.clone(), id.clone());
        }
    }
    m
}

/// The mapping of an account that does not exist: the simulator's and the examples'. AWS maps
/// names to IDs per account; here the zone letter gives the number (`us-east-1a` → `use1-az1`),
/// with AWS's region abbreviation (`eu-central-1` → `euc1`, `ap-northeast-2` → `apne2`).
pub fn example(region: &str, zones: impl IntoIterator<Item = String>) -> BTreeMap<String, String> {
    let abbr = abbreviation(region);
    zones
        .into_iter()
        .filter_map(|z| {
            let letter = z.strip_prefix(region)?.chars().next()?;
            let n = u32::from(letter).checked_sub(u32::from('a'))? + 1;
            Some((z.clone(), format!("{abbr}-az{n}")))
        })
        .collect()
}

/// Gives `types`' offerings the [`example`] mapping: for plans made without an account (the
/// simulator, `nodewright plan`, the scenario tests).
pub fn assign_example(types: &mut [InstanceType], region: &str) {
    let zones = types.iter().flat_map(|t| t.offerings.iter().map(|o| o.zone.clone()));
    let ids = example(region, zones.collect::<Vec<_>>());
    assign(types, &ids);
}

/// `us-east-1` → `use1`, `ap-southeast-2` → `apse2`, `il-central-1` → `ilc1`.
fn abbreviation(region: &str) -> String {
    let mut parts = region.split('-');
    let mut out = parts.next().unwrap_or_default().to_string();
    for p in parts {
        match p {
            "northeast" => out.push_str("ne"),
            "northwest" => out.push_str("nw"),
            "southeast" => out.push_str("se"),
            "southwest" => out.push_str("sw"),
            p if p.chars().all(|c| c.is_ascii_digit()) => out.push_str(p),
            p => out.extend(p.chars().next()),
        }
    }
    out
}

/// `r` read against the zones: a requirement on the zone ID becomes one on the zones whose IDs
/// it admits, a zone with no known ID lacking the label (None: `r` is not on the zone ID). With
/// no mapping known (before the first refresh), `In` and `Exists` admit no zone.
pub fn as_zone_requirement(r: &Requirement, ids: &BTreeMap<String, String>) -> Option<Requirement> {
    if r.key != labels::ZONE_ID {
        return None;
    }
    let listed = || -> Vec<String> {
        ids.iter()
            .filter(|(_, id)| r.values.contains(id))
            .map(|(z, _)| z.clone())
            .collect()
    };
    let with_id = || -> Vec<String> { ids.keys().cloned().collect() };
    let (operator, values) = match r.operator {
        Operator::In => (Operator::In, listed()),
        Operator::NotIn => (Operator::NotIn, listed()),
        Operator::Exists => (Operator::In, with_id()),
        Operator::DoesNotExist => (Operator::NotIn, with_id()),
        // An ID is not a number: Gt/Lt are never met.
        _ => (Operator::In, Vec::new()),
    };
    Some(Requirement {
        key: labels::ZONE.to_string(),
        operator,
        values,
        min_values: r.min_values,
    })
}

/// `reqs` with every zone-ID requirement read as a zone requirement ([`as_zone_requirement`]).
pub fn to_zones(reqs: &[Requirement], ids: &BTreeMap<String, String>) -> Vec<Requirement> {
    reqs.iter()
        .map(|r| as_zone_requirement(r, ids).unwrap_or_else(|| r.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> BTreeMap<String, String> {
        example(
            "us-east-1",
            ["us-east-1a", "us-east-1b", "us-east-1c"].map(String::from),
        )
    }

    #[test]
    fn the_example_mapping_follows_the_zone_letter_with_aws_region_abbreviations() {
        assert_eq!(ids()["us-east-1b"], "use1-az2");
        assert_eq!(abbreviation("ap-northeast-2"), "apne2");
        assert_eq!(abbreviation("eu-central-1"), "euc1");
        assert_eq!(abbreviation("us-gov-west-1"), "usgw1");
    }

    #[test]
    fn zone_id_requirements_become_zone_requirements() {
        let ids = ids();
        let r = Requirement::new(labels::ZONE_ID, Operator::In, &["use1-az2", "use1-az9"]);
        let z = as_zone_requirement(&r, &ids).unwrap();
        assert_eq!(
            (z.key.as_str(), z.values.clone()),
            (labels::ZONE, vec!["us-east-1b".to_string()])
        );
        let r = Requirement::new(labels::ZONE_ID, Operator::NotIn, &["use1-az1"]);
        let z = as_zone_requirement(&r, &ids).unwrap();
        assert!(z.matches(Some("us-east-1b")) && !z.matches(Some("us-east-1a")));
        // Unknown IDs: In admits no zone.
        let r = Requirement::new(labels::ZONE_ID, Operator::In, &["use1-az9"]);
        assert!(!as_zone_requirement(&r, &ids).unwrap().matches(Some("us-east-1a")));
        // No mapping known yet: no zone has an ID.
        let none = BTreeMap::new();
        assert!(!as_zone_requirement(&r, &none).unwrap().matches(Some("us-east-1a")));
        let not = Requirement::new(labels::ZONE_ID, Operator::NotIn, &["use1-az1"]);
        assert!(as_zone_requirement(&not, &none).unwrap().matches(Some("us-east-1a")));
        let exists = Requirement::new(labels::ZONE_ID, Operator::Exists, &[]);
        assert!(as_zone_requirement(&exists, &ids).unwrap().matches(Some("us-east-1c")));
        assert!(!as_zone_requirement(&exists, &ids).unwrap().matches(Some("us-east-1d")));
        // Another key: left alone.
        let zone = Requirement::new(labels::ZONE, Operator::In, &["us-east-1a"]);
        assert!(as_zone_requirement(&zone, &ids).is_none());
    }
}
