//! `/openapi.json`, generated from the handlers' annotations so it cannot drift from them.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{health, ingest, query};

/// The API document.
#[derive(OpenApi)]
#[openapi(
    info(title = "challenge-latam-api", description = "Ingest customer records and read them back."),
    paths(ingest::ingest, query::get_data, health::healthz, health::readyz),
    components(schemas(crate::domain::Record, crate::domain::Order, crate::domain::StoredRecord,
        crate::domain::FieldError, crate::http::error::Problem, ingest::IngestResponse, health::Readiness)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key; the service is configured with only its SHA-256 hash.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "oidc",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT from a trusted OIDC issuer (OIDC_ISSUERS: Okta, Google), RS256 or \
                         ES256, for OIDC_AUDIENCE; its roles map to scopes through \
                         OIDC_SCOPE_MAP (docs/oidc.md).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Serves the document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "This document.", body = serde_json::Value)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
