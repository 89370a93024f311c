//! Backend implementations of the ports: `local` (the embedded default) and, behind the same
//! traits, the GCP adapters. Plus `faults`, a decorator that injects errors and latency for
//! drills on the embedded default.

pub mod faults;
pub mod gcp;
pub mod local;
