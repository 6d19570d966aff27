//! The OpenAPI document of the HTTP API, served at `/openapi.json`.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::api::{events, health, runs, targets, tokens, triggers};
use crate::error::{ErrorBody, FieldProblem};

/// The API description (paths, schemas, the bearer scheme).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "cigw",
        description = "CI trigger gateway: one request fans out to CircleCI, Codefresh and Codeship; runs are \
                       followed to their end and can be read, cancelled, rerun and approved here.",
        license(name = "Apache-2.0")
    ),
    paths(
        triggers::create_trigger,
        triggers::get_trigger,
        triggers::cancel_trigger,
        runs::list_runs,
        runs::get_run,
        runs::run_events,
        runs::cancel_run,
        runs::rerun_run,
        runs::approve_run,
        runs::deny_run,
        runs::refresh_run,
        events::stream_events,
        targets::list_targets,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        health::healthz,
        health::readyz,
    ),
    components(schemas(ErrorBody, FieldProblem)),
    modifiers(&BearerAuth),
    tags(
        (name = "triggers", description = "Trigger targets (fan-out, idempotency)"),
        (name = "runs", description = "Read and act on runs"),
        (name = "targets", description = "Configured targets"),
        (name = "tokens", description = "API tokens (scope `admin`)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("cigw_<43+ url-safe characters>")
                    .description(Some("An API token; scopes: read, trigger[:glob], cancel, approve, admin"))
                    .build(),
            ),
        );
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
