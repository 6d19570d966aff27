//! `GET /v1/targets`: what can be built, with declared parameters and capabilities.

use axum::Json;
use axum::extract::State;
use cigw_core::params::MASK;
use cigw_core::{Capabilities, ParameterSpec};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// One declared parameter.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ParameterView {
    /// Name.
    pub name: String,
    /// `string`, `boolean` or `integer`.
    #[serde(rename = "type")]
    #[schema(value_type = ParamTypeName)]
    pub kind: String,
    /// A request must give a value (or the declaration has a default).
    pub required: bool,
    /// Masked wherever shown.
    pub secret: bool,
    /// The only values allowed, when set (never shown for a secret parameter).
    #[serde(rename = "enum")]
    #[schema(value_type = Option<Vec<ParameterValue>>)]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// The value used when a request gives none (`***` for a secret).
    #[schema(value_type = Option<ParameterValue>)]
    pub default: Option<serde_json::Value>,
    /// Description.
    pub description: Option<String>,
}

impl From<&ParameterSpec> for ParameterView {
    fn from(p: &ParameterSpec) -> Self {
        Self {
            name: p.name.clone(),
            kind: p.kind.to_string(),
            required: p.required,
            secret: p.secret,
            allowed: if p.secret { None } else { p.allowed.as_ref().map(|a| a.iter().map(|v| v.to_json()).collect()) },
            default: p.default.as_ref().map(|v| if p.secret { MASK.into() } else { v.to_json() }),
            description: p.description.clone(),
        }
    }
}

/// The type of a declared parameter.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // documents `ParameterView.type` for OpenAPI
pub(crate) enum ParamTypeName {
    /// Any string.
    String,
    /// `true` or `false`.
    Boolean,
    /// A 64-bit signed integer.
    Integer,
}

/// A declared parameter value as the API shows it: a string, an integer or a boolean (a secret
/// parameter's default is shown as the string `***`).
#[derive(Debug)]
pub struct ParameterValue;

impl PartialSchema for ParameterValue {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
            )
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .description(Some("A string, an integer or a boolean, per the parameter's type"))
            .into()
    }
}

impl ToSchema for ParameterValue {}

/// What a target's provider can do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CapabilitiesView {
    /// Runs can be cancelled at the provider.
    pub cancel: bool,
    /// Finished runs can be run again.
    pub rerun: bool,
    /// A rerun can be limited to the failed parts.
    pub rerun_failed_only: bool,
    /// Blocked runs can be approved or denied.
    pub approve: bool,
    /// A tag can be built.
    pub tag: bool,
    /// A commit sha can be pinned.
    pub pin_sha: bool,
    /// Parameters can be passed.
    pub parameters: bool,
    /// The trigger call answers with the provider's run id.
    pub trigger_returns_id: bool,
    /// The account receives the provider's completion callbacks (so polls only show progress).
    pub callbacks: bool,
}

impl From<Capabilities> for CapabilitiesView {
    fn from(c: Capabilities) -> Self {
        Self {
            cancel: c.cancel,
            rerun: c.rerun,
            rerun_failed_only: c.rerun_failed_only,
            approve: c.approve,
            tag: c.tag,
            pin_sha: c.pin_sha,
            parameters: c.parameters,
            trigger_returns_id: c.trigger_returns_id,
            callbacks: c.callbacks,
        }
    }
}

/// One configured target.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetView {
    /// Name.
    pub name: String,
    /// `circleci`, `codefresh` or `codeship`.
    #[schema(pattern = "^(circleci|codefresh|codeship)$")]
    pub provider: String,
    /// Provider account.
    pub account: String,
    /// The provider object it builds.
    pub locator: String,
    /// Description.
    pub description: Option<String>,
    /// Built when a request names neither branch nor tag.
    pub default_branch: String,
    /// `queue`, `cancel-previous` or `supersede`.
    #[schema(pattern = "^(queue|cancel-previous|supersede)$")]
    pub concurrency: String,
    /// A new run waits this many seconds before it is sent, superseding the unsent runs of
    /// its branch (`null`: no debounce).
    pub debounce_seconds: Option<f64>,
    /// Runs longer than this many seconds end in `error`.
    pub max_duration_seconds: Option<u64>,
    /// Declared parameters.
    pub parameters: Vec<ParameterView>,
    /// What the provider can do for it.
    pub capabilities: CapabilitiesView,
}

/// The configured targets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetList {
    /// By name.
    pub targets: Vec<TargetView>,
}

/// List the configured targets.
#[utoipa::path(get, path = "/v1/targets", tag = "targets", security(("bearer" = [])),
    responses((status = 200, body = TargetList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_targets(State(state): State<AppState>, principal: Principal) -> Result<Json<TargetList>, ApiError> {
    principal.require_read()?;
    let targets = state
        .catalog
        .targets
        .values()
        .map(|t| TargetView {
            name: t.spec.name.clone(),
            provider: t.spec.provider.to_string(),
            account: t.spec.account.clone(),
            locator: t.target.locator(),
            description: t.spec.description.clone(),
            default_branch: t.spec.default_branch.clone(),
            concurrency: t.spec.concurrency.as_str().into(),
            debounce_seconds: t.spec.debounce.map(|d| d.as_secs_f64()),
            max_duration_seconds: t.spec.max_duration.map(|d| d.as_secs()),
            parameters: t.spec.parameters.iter().map(ParameterView::from).collect(),
            capabilities: t.target.capabilities().into(),
        })
        .collect();
    Ok(Json(TargetList { targets }))
}
