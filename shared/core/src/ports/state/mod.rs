//! The records the state port keeps (DynamoDB in AWS, memory in the simulator): node claims, pod
//! reservations, event idempotency, unavailable offerings (the ICE cache) and pool usage counters.

mod claims;
mod idempotency;
mod offerings;
mod prices;
mod reservations;
mod usage;
mod view;

pub use claims::{CLAIM_RETENTION_SECS, ClaimRecord, ClaimUpdate, MAX_STORED_OFFERINGS, TransitionOutcome};
pub use idempotency::{EventStart, IDEMPOTENCY_LEASE_SECS, IDEMPOTENCY_TTL_SECS, Once};
pub use offerings::{OFFERING_UNAVAILABLE_SECS, UnavailableOffering};
pub use prices::{MAX_PRICE_ENTRIES, PRICE_CHUNK_BYTES, PRICES_REFRESH_SECS, PRICES_TTL_SECS, PriceSheet};
pub use reservations::{Holder, RESERVATION_TTL_SECS, Reservation};
pub use usage::{PoolUsage, UsageDecision, UsageDelta, UsageDrift, UsageSnapshot};
pub use view::{ReadCost, STATE_VIEW_FORMAT, StateView};
