//! Live prices: the scheduled function refreshes the region's price sheet (the Pricing API's
//! on-demand prices, DescribeSpotPriceHistory's spot prices) when it is older than an hour
//! (`PRICES_REFRESH_SECS`), under a lease so one run does it; every function reads the stored
//! sheet at most every [`PRICES_CHECK_MS`] per execution environment and plans at its prices. A
//! failed refresh or read leaves the prices in use (the embedded catalogue's at first): prices
//! are never worth failing a decision for.

use std::sync::Arc;

use nodewright_core::Catalogue;
use nodewright_core::catalogue::OverheadConfig;
use nodewright_core::ports::{Capacity, ClusterApi, EpochMillis, State};

use crate::Deps;
use crate::settings::Settings;

/// How often an execution environment looks for a newer sheet.
pub const PRICES_CHECK_MS: i64 = 5 * 60_000;
const LEASE: &str = "prices";

/// Plans at the newest stored sheet (read at most every [`PRICES_CHECK_MS`]).
pub async fn load<S: State>(settings: &Settings, state: &S, now: EpochMillis) {
    {
        let mut checked = settings.prices_checked_at.lock().unwrap_or_else(|p| p.into_inner());
        if checked.is_some_and(|at| (0..PRICES_CHECK_MS).contains(&(now - at))) {
            return;
        }
        *checked = Some(now);
    }
    let sheet = match state.prices(now).await {
        Ok(Some(sheet)) => sheet,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "reading live prices failed; planning at the prices in use");
            return;
        }
    };
    if sheet.region != settings.region || settings.prices().is_some_and(|p| p.refreshed_at == sheet.refreshed_at) {
        return;
    }
    let entries = (sheet.on_demand.len(), sheet.spot.len());
    match settings.set_prices(Arc::new(sheet)) {
        Ok(()) => tracing::info!(on_demand = entries.0, spot = entries.1, "planning at live prices"),
        Err(e) => tracing::warn!(error = %e, "live prices not applied"),
    }
}

/// After a failed refresh, the next try waits this long (the price APIs may be unreachable from
/// the functions' network for good: a private VPC without a NAT gateway).
pub const PRICES_RETRY_MS: i64 = 15 * 60_000;
/// A refresh gives up after this long: it runs inside the scheduled function's 55 s.
const REFRESH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The scheduled function's part: refreshes the stored sheet when it is due. Returns whether it
/// stored a new one. Half a refresh (on-demand or spot unreachable) keeps the other half of the
/// previous sheet.
pub async fn refresh<S: State, C: Capacity, K: ClusterApi>(deps: &Deps<S, C, K>, now: EpochMillis) -> bool {
    // The sheet in use is not due: nothing to read (the sheet is ~100 KB per region).
    if deps.settings.prices().is_some_and(|p| !p.is_due(now)) {
        return false;
    }
    {
        let failed = deps.settings.prices_failed_at.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_some_and(|at| (0..PRICES_RETRY_MS).contains(&(now - at))) {
            return false;
        }
    }
    // Not loaded, or due: another environment may have refreshed it already.
    let previous = match deps.state.prices(now).await {
        Ok(Some(sheet)) if !sheet.is_due(now) => return false,
        Ok(previous) => previous,
        Err(e) => {
            tracing::warn!(error = %e, "reading live prices failed; refreshing them");
            None
        }
    };
    let region = deps.settings.region.clone();
    let names: Vec<String> = Catalogue::embedded()
        .instance_types(&region, &OverheadConfig::default())
        .into_iter()
        .map(|t| t.name)
        .collect();
    let holder = format!("prices/{now}");
    let stored = crate::provision::with_lease(deps, LEASE, &holder, 1, now, || async {
        let fetched = tokio::time::timeout(REFRESH_TIMEOUT, deps.capacity.current_prices(&names, now)).await;
        let mut sheet = match fetched {
            Ok(result) => result?,
            Err(_) => {
                return Err(crate::Error::Aws(nodewright_core::ports::AwsError::Aws {
                    operation: "GetProducts",
                    code: "Timeout".into(),
                    message: format!("the price refresh took more than {}s", REFRESH_TIMEOUT.as_secs()),
                }));
            }
        };
        if let Some(previous) = previous.filter(|p| p.region == sheet.region) {
            if sheet.on_demand.is_empty() {
                sheet.on_demand = previous.on_demand;
            }
            if sheet.spot.is_empty() {
                sheet.spot = previous.spot;
            }
            if sheet.zone_ids.is_empty() {
                sheet.zone_ids = previous.zone_ids;
            }
        }
        if sheet.is_empty() {
            return Ok(false);
        }
        deps.state.put_prices(&sheet).await?;
        tracing::info!(
            on_demand = sheet.on_demand.len(),
            spot = sheet.spot.len(),
            "live prices refreshed"
        );
        Ok(true)
    })
    .await;
    match stored {
        Ok(Some(stored)) => stored,
        Ok(None) => false,
        Err(e) => {
            *deps.settings.prices_failed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
            tracing::warn!(
                error = %e,
                retry_in_minutes = PRICES_RETRY_MS / 60_000,
                "refreshing live prices failed; the prices in use stand"
            );
            false
        }
    }
}
