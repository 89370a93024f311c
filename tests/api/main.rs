//! Black-box tests of the API: each spawns the real release binary (port 0, its own
//! `DATA_DIR`) and talks HTTP to it.
//!
//! One suite, three targets:
//! - default: the embedded backend;
//! - `TEST_BACKEND=gcp`: the same binary on `BACKEND=gcp` against the Pub/Sub and BigQuery
//!   emulators (their addresses come from the environment; see `scripts/checks/60-*`);
//! - `TEST_BASE_URL=https://...`: an already running deployment (post-deploy tests in CD);
//!   tests that need to control the process say so and are skipped, loudly.

#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod cache;
mod durability;
mod idempotency;
mod ingest;
mod observability;
mod oidc;
mod protection;
mod query;
