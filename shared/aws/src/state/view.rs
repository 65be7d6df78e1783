//! A read-only view of one cluster's state, for `nodewright avail`: the live claims, live
//! reservations, every pool's usage counters and the unavailable offerings, read with paginated,
//! eventually consistent Queries (no Scan, no consistent reads), with what the reads cost.
//!
//! The view is also a file format: its JSON form is what `--state DIR` reads, written by the
//! simulator and by `nodewright invoke --state DIR`, so one renderer serves live and local state.

use futures::future::try_join_all;
use nodewright_core::model::ClaimState;

use super::{StateStore, StateView};
use crate::{EpochMillis, Result};

impl StateStore {
    /// Reads the view at `now`: one Query per live claim state on the by-state index, and one each on
    /// reservations, usage and offerings, all following pages; run concurrently.
    pub async fn read_view(&self, now: EpochMillis) -> Result<StateView> {
        // Ended claims are never read: one by-state Query per live state.
        let live = ClaimState::ALL.into_iter().filter(|s| !s.is_terminal());
        let claims = try_join_all(live.map(|s| self.claims_in_state(s)));
        let (claims, reservations, usage, offerings) = futures::try_join!(
            claims,
            self.reservations(now),
            self.pool_usages(),
            self.unavailable_offerings(now)
        )?;
        let mut view = StateView::new(self.cluster(), now);
        view.claims = claims.into_iter().flatten().collect();
        view.claims.sort_by(|a, b| a.id.cmp(&b.id));
        view.reservations = reservations;
        view.usage = usage;
        view.offerings = offerings;
        Ok(view)
    }
}
