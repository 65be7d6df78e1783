//! The live price sheet, in the offerings table under its own partition (`{cluster}#prices`, so
//! the ICE cache's queries never see it): a `meta` item naming the current sheet, and the sheet's
//! chunks under `chunk#{refreshedAt}#{i}`. A new sheet's chunks are written before its `meta`, so a
//! reader sees one whole sheet or the previous one; old chunks expire with the table's TTL.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use nodewright_core::ports::state::{PRICES_TTL_SECS, PriceSheet};

use super::item::{Fields, n, s};

/// More chunks than a sheet of `MAX_PRICE_ENTRIES` lines of ~60 bytes needs.
const MAX_PRICE_CHUNKS: usize = 64;
use super::{StateStore, Table};
use crate::error::FromSdk;
use crate::{Error, Result};

impl StateStore {
    fn prices_partition(&self) -> String {
        format!("{}#prices", self.cluster)
    }

    /// The current sheet; None when none was stored or it has expired at `now`.
    pub async fn prices(&self, now: i64) -> Result<Option<PriceSheet>> {
        let table = self.table_name(Table::Offerings);
        let meta = self
            .client
            .get_item()
            .table_name(&table)
            .key("cluster", s(self.prices_partition()))
            .key("offering", s("meta"))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| Error::aws("GetItem", e))?;
        self.count_read(meta.consumed_capacity());
        let Some(item) = meta.item else { return Ok(None) };
        let f = Fields::new(&table, "offering", &item);
        let refreshed_at: i64 = f.n("refreshedAt")?;
        let chunks: usize = f.n("chunks")?;
        // Bounded before allocating: MAX_PRICE_ENTRIES lines fit in far fewer chunks.
        if chunks > MAX_PRICE_CHUNKS {
            return Err(f.corrupt(format!("{chunks} price chunks (at most {MAX_PRICE_CHUNKS})")));
        }
        let region = f.s("region")?;
        if now - refreshed_at >= PRICES_TTL_SECS * 1000 {
            return Ok(None);
        }
        let mut texts = vec![String::new(); chunks];
        let mut found = 0;
        let prefix = format!("chunk#{refreshed_at}#");
        let partition = self.prices_partition();
        let items = self
            .query_pages(
                Table::Offerings,
                None,
                "cluster",
                &partition,
                Some(("offering", &prefix)),
            )
            .await?;
        for item in &items {
            let f = Fields::new(&table, "offering", item);
            let i: usize = f.n("index")?;
            let slot = texts
                .get_mut(i)
                .ok_or_else(|| f.corrupt(format!("chunk {i} of {chunks}")))?;
            *slot = f.s("prices")?;
            found += 1;
        }
        if found != chunks {
            return Err(Error::Corrupt {
                table,
                key: "meta".into(),
                reason: format!("{found} of {chunks} price chunks found"),
            });
        }
        PriceSheet::decode(&region, refreshed_at, &texts)
            .map(Some)
            .map_err(|reason| Error::Corrupt {
                table,
                key: "meta".into(),
                reason,
            })
    }

    /// Stores `sheet`: its chunks, then the `meta` item that makes it current.
    pub async fn put_prices(&self, sheet: &PriceSheet) -> Result<()> {
        if sheet.on_demand.len() + sheet.spot.len() > nodewright_core::ports::state::MAX_PRICE_ENTRIES {
            return Err(Error::Invalid {
                field: "prices".into(),
                reason: "too many prices to store".into(),
            });
        }
        let table = self.table_name(Table::Offerings);
        let expires = sheet.refreshed_at / 1000 + PRICES_TTL_SECS;
        let chunks = sheet.encode();
        for (i, text) in chunks.iter().enumerate() {
            self.client
                .put_item()
                .table_name(&table)
                .item("cluster", s(self.prices_partition()))
                .item("offering", s(format!("chunk#{}#{i:04}", sheet.refreshed_at)))
                .item("index", n(i))
                .item("prices", s(text.clone()))
                .item("expiresAt", n(expires))
                .send()
                .await
                .map_err(|e| Error::aws("PutItem", e))?;
        }
        self.client
            .put_item()
            .table_name(&table)
            .item("cluster", s(self.prices_partition()))
            .item("offering", s("meta"))
            .item("region", s(sheet.region.clone()))
            .item("refreshedAt", n(sheet.refreshed_at))
            .item("chunks", n(chunks.len()))
            .item("expiresAt", AttributeValue::N(expires.to_string()))
            .send()
            .await
            .map_err(|e| Error::aws("PutItem", e))?;
        Ok(())
    }
}
