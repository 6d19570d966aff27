//! The OpenAPI document of the HTTP API, served at `/openapi.json`.

use cigw_core::params::{MAX_NAME_CHARS, MAX_PARAMETERS};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::api::{chains, events, health, hooks, notifications, runs, schedules, targets, tokens, triggers};
use crate::error::{ErrorBody, FieldProblem};
use crate::intake::request;

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
        schedules::list_schedules,
        chains::trigger_tree,
        chains::list_joins,
        hooks::list_hooks,
        hooks::list_deliveries,
        hooks::test_hook,
        hooks::replay_delivery,
        notifications::list_deliveries,
        notifications::get_delivery,
        notifications::redeliver,
        tokens::create_token,
        tokens::list_tokens,
        tokens::revoke_token,
        health::healthz,
        health::readyz,
    ),
    components(schemas(ErrorBody, FieldProblem)),
    modifiers(&BearerAuth, &MapConstraints, &CommonResponses),
    tags(
        (name = "triggers", description = "Trigger targets (fan-out, idempotency)"),
        (name = "runs", description = "Read and act on runs"),
        (name = "targets", description = "Configured targets"),
        (name = "schedules", description = "Configured schedules and their slots"),
        (name = "chains", description = "Trigger trees made by chains, and open fan-in joins"),
        (name = "hooks", description = "Inbound webhooks: listing, dry runs, remembered deliveries and replays"),
        (name = "notifications", description = "Outbound notification deliveries (scope `admin`)"),
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

/// The property `property` of the object schema `schema`, when both exist.
fn property_mut<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    schema: &str,
    property: &str,
) -> Option<&'a mut utoipa::openapi::schema::Object> {
    let components = openapi.components.as_mut()?;
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else { return None };
    match object.properties.get_mut(property)? {
        RefOr::T(Schema::Object(p)) => Some(p),
        _ => None,
    }
}

/// The array property `property` of the object schema `schema`, when both exist.
fn property_mut_array<'a>(
    openapi: &'a mut utoipa::openapi::OpenApi,
    schema: &str,
    property: &str,
) -> Option<&'a mut utoipa::openapi::schema::Array> {
    let components = openapi.components.as_mut()?;
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else { return None };
    match object.properties.get_mut(property)? {
        RefOr::T(Schema::Array(p)) => Some(p),
        _ => None,
    }
}

fn string_schema(min: Option<usize>, max: usize) -> Schema {
    ObjectBuilder::new().schema_type(Type::String).min_length(min).max_length(Some(max)).into()
}

/// Limits of the request maps (count of entries, key lengths), which field attributes cannot
/// express: every limit the server checks is in the schema.
struct MapConstraints;

impl Modify for MapConstraints {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (schema, property) in [("TriggerRequest", "parameters"), ("TargetOverride", "parameters")] {
            if let Some(p) = property_mut(openapi, schema, property) {
                p.max_properties = Some(MAX_PARAMETERS);
                p.property_names = Some(Box::new(string_schema(None, MAX_NAME_CHARS)));
            }
        }
        if let Some(p) = property_mut(openapi, "TriggerRequest", "overrides") {
            p.max_properties = Some(request::MAX_TARGETS);
        }
        if let Some(p) = property_mut_array(openapi, "CreateTokenRequest", "scopes") {
            p.items = ArrayItems::RefOrSchema(Box::new(RefOr::T(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^(read|cancel|approve|admin|trigger|trigger:.+)$"))
                    .into(),
            )));
        }
        if let Some(p) = property_mut_array(openapi, "CreateTokenRequest", "allowed_origins") {
            p.items = ArrayItems::RefOrSchema(Box::new(RefOr::T(
                ObjectBuilder::new().schema_type(Type::String).pattern(Some("^https?://[^/?#@\\s]+/?$")).into(),
            )));
        }
        if let Some(p) = property_mut(openapi, "TriggerRequest", "labels") {
            p.max_properties = Some(request::MAX_LABELS);
            p.property_names = Some(Box::new(string_schema(Some(1), request::MAX_LABEL_KEY)));
            p.additional_properties =
                Some(Box::new(AdditionalProperties::RefOr(RefOr::T(string_schema(None, request::MAX_LABEL_VALUE)))));
        }
    }
}

/// Statuses any route can answer whatever its handler does, added where a route does not
/// document them itself: middleware (time limit → 503, panic → 500), the token check (401,
/// 403 for a browser origin the token does not allow, 429 for its rate limit, 503 when the
/// store is down) and the JSON body reader (400, 413, 415, 422).
struct CommonResponses;

impl CommonResponses {
    fn add(operation: &mut Operation, status: &str, description: &str) {
        operation.responses.responses.entry(status.to_string()).or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                    )
                    .build(),
            )
        });
    }
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    Self::add(operation, "401", "No usable token");
                    Self::add(operation, "403", "A scope is missing, or the token does not allow this origin");
                    Self::add(operation, "429", "The token's rate limit was hit (see `Retry-After`)");
                }
                if operation.request_body.is_some() {
                    Self::add(operation, "400", "Malformed JSON");
                    Self::add(operation, "413", "The body is larger than `server.body_limit_bytes`");
                    Self::add(operation, "415", "The body is not `application/json`");
                    Self::add(operation, "422", "The body has the wrong shape");
                }
                Self::add(operation, "500", "Internal error (the cause is logged, not sent)");
                Self::add(operation, "503", "The request timed out or the store is unavailable");
            }
        }
    }
}

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
