//! Route handlers, one module per concern; each exposes its handlers and their OpenAPI paths.

pub mod health;
pub mod ingest;
pub mod openapi;
pub mod query;
