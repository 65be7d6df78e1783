//! The unavailable-offerings cache (Karpenter's ICE cache): an offering (capacity type, instance
//! type, zone) that just failed with a capacity error is skipped by every invocation for 3 minutes.

use nodewright_core::CapacityType;

use super::item::{Fields, n, s};
use super::{OFFERING_UNAVAILABLE_SECS, StateStore, Table, UnavailableOffering};
use crate::error::FromSdk;
use crate::{EpochMillis, Result};

fn offering_key(capacity_type: CapacityType, instance_type: &str, zone: &str) -> String {
    format!("{}#{}#{}", capacity_type.as_str(), instance_type, zone)
}

impl StateStore {
    /// Marks an offering unavailable until `now + OFFERING_UNAVAILABLE_SECS`.
    pub async fn mark_offering_unavailable(
        &self,
        capacity_type: CapacityType,
        instance_type: &str,
        zone: &str,
        reason: &str,
        now: EpochMillis,
    ) -> Result<()> {
        self.client
            .put_item()
            .table_name(self.table_name(Table::Offerings))
            .item("cluster", s(&self.cluster))
            .item("offering", s(offering_key(capacity_type, instance_type, zone)))
            .item("capacityType", s(capacity_type.as_str()))
            .item("instanceType", s(instance_type))
            .item("zone", s(zone))
            .item("reason", s(reason))
            .item("expiresAt", n(now / 1000 + OFFERING_UNAVAILABLE_SECS))
            .send()
            .await
            .map_err(|e| crate::Error::aws("PutItem", e))?;
        Ok(())
    }

    /// Offerings unavailable at `now` (expired entries are filtered out).
    pub async fn unavailable_offerings(&self, now: EpochMillis) -> Result<Vec<UnavailableOffering>> {
        let table = self.table_name(Table::Offerings);
        let mut out = Vec::new();
        for item in self.query_all(Table::Offerings, None).await? {
            let f = Fields::new(&table, "offering", &item);
            let expires_at: i64 = f.n("expiresAt")?;
            if expires_at < now / 1000 {
                continue;
            }
            let ct = f.s("capacityType")?;
            out.push(UnavailableOffering {
                capacity_type: CapacityType::parse(&ct)
                    .ok_or_else(|| f.corrupt(format!("capacityType {ct:?} is unknown")))?,
                instance_type: f.s("instanceType")?,
                zone: f.s("zone")?,
                reason: f.s("reason")?,
                expires_at,
            });
        }
        Ok(out)
    }
}
