//! `challenge-latam-api`: ingest customer records, store them, and read them back, on Google
//! Cloud (Cloud Run -> Pub/Sub -> BigQuery subscription -> BigQuery) or, with no cloud at
//! all, on an embedded default with the same semantics.
//!
//! # Layout
//!
//! - [`config`]: typed settings, read and checked once at start.
//! - [`domain`]: records valid by construction, the stored form, the query filter and its
//!   page token. Knows nothing of HTTP or backends.
//! - [`ports`]: the seams (publish, receive, write, query) that backends implement.
//! - [`adapters`]: the backends: `local` (durable broker + SQLite store) and `gcp`
//!   (Pub/Sub + BigQuery), plus fault-injection decorators for drills.
//! - [`pages`]: getData's read path: serialized pages, cached, coalesced, bounded in the
//!   store queries they run.
//! - [`pipeline`]: receive -> write -> ack, shared by every backend that stores rows itself.
//! - [`http`]: the router and its middleware stack, handlers, the problem+json error type,
//!   authentication, and the admin listener (`/metrics`).
//! - [`telemetry`]: logs in Cloud Logging's shape, OTLP traces, metric names and buckets,
//!   trace context across the broker.
//! - [`startup`]: picks the backends once, binds the listeners, runs and shuts down in order.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod http;
pub mod pages;
pub mod pipeline;
pub mod ports;
pub mod startup;
pub mod telemetry;
