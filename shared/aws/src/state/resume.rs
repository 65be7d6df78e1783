//! Where the last consolidation run stopped ([`ResumePoint`]), in the idempotency table under
//! `resume/consolidation` (no event id starts with `resume/`). One item per cluster, replaced by
//! every run that stops with work left, deleted by a run that finishes; it expires with the
//! table's TTL once too old to be taken up.

use nodewright_core::disruption::{RESUME_WITHIN_MS, ResumePoint};

use super::item::{Fields, n, s};
use super::{StateStore, Table};
use crate::error::FromSdk;
use crate::{Error, Result};

const RESUME_KEY: &str = "resume/consolidation";

impl StateStore {
    /// The stored point (consistent read); None when none is stored.
    pub async fn resume_point(&self) -> Result<Option<ResumePoint>> {
        let Some(item) = self.get_one(Table::Idempotency, RESUME_KEY).await? else {
            return Ok(None);
        };
        let table = self.table_name(Table::Idempotency);
        let f = Fields::new(&table, "eventId", &item);
        ResumePoint::decode(&f.s("point")?)
            .map(Some)
            .map_err(|reason| f.corrupt(reason))
    }

    /// Replaces the stored point, or deletes it (None).
    pub async fn put_resume_point(&self, point: Option<&ResumePoint>) -> Result<()> {
        let table = self.table_name(Table::Idempotency);
        let Some(point) = point else {
            self.client
                .delete_item()
                .table_name(&table)
                .key("cluster", s(&self.cluster))
                .key("eventId", s(RESUME_KEY))
                .send()
                .await
                .map_err(|e| Error::aws("DeleteItem", e))?;
            return Ok(());
        };
        self.client
            .put_item()
            .table_name(&table)
            .item("cluster", s(&self.cluster))
            .item("eventId", s(RESUME_KEY))
            .item("status", s("resume"))
            .item("point", s(point.encode()))
            .item("expiresAt", n((point.planned_at + RESUME_WITHIN_MS) / 1000 + 1))
            .send()
            .await
            .map_err(|e| Error::aws("PutItem", e))?;
        Ok(())
    }
}
