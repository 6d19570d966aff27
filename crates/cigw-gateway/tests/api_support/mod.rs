//! Shared set-up of the router tests: a real SQLite store in a temp dir, a catalog of fake
//! targets with chosen capabilities, a bootstrap admin token, and request helpers.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use chrono::{DateTime, Utc};
use cigw_core::catalog::{Catalog, ConfiguredTarget};
use cigw_core::config::{DatabaseSettings, Settings};
use cigw_core::secret::SecretSetting;
use cigw_core::{
    Capabilities, CiTarget, ConcurrencyPolicy, Decision, ParamType, ParamValue, ParameterSpec, ProviderKind,
    ProviderRunRef, RecentQuery, RerunOptions, RunCandidate, RunState, RunStatus, TargetSpec, TriggerOutcome,
    TriggerSpec,
};
use cigw_gateway::state::AppState;
use cigw_sim::Harness;
use cigw_sim::fake::{FakeConfig, FakeTarget};
use cigw_store::{DispatchOutcome, EventKind, NewToken, RunFilter, RunRecord, Store};
use serde_json::Value;
use tower::ServiceExt;

/// The bootstrap admin token of every test app.
pub const ADMIN: &str = "cigw_bootstrapadmintokenbootstrapadmintokenbootstrap";

/// A fake target whose capabilities the test chooses (check_ref follows them).
#[derive(Debug)]
pub struct Limited {
    pub inner: Arc<FakeTarget>,
    pub caps: Capabilities,
}

#[async_trait]
impl CiTarget for Limited {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    fn locator(&self) -> String {
        self.inner.locator()
    }
    fn capabilities(&self) -> Capabilities {
        self.caps
    }
    async fn trigger(&self, spec: &TriggerSpec) -> cigw_core::Result<TriggerOutcome> {
        self.inner.trigger(spec).await
    }
    async fn status(&self, run: &ProviderRunRef) -> cigw_core::Result<RunStatus> {
        self.inner.status(run).await
    }
    async fn cancel(&self, run: &ProviderRunRef) -> cigw_core::Result<()> {
        self.inner.cancel(run).await
    }
    async fn rerun(&self, run: &ProviderRunRef, options: RerunOptions) -> cigw_core::Result<TriggerOutcome> {
        self.inner.rerun(run, options).await
    }
    async fn approve(&self, run: &ProviderRunRef, decision: Decision) -> cigw_core::Result<()> {
        self.inner.approve(run, decision).await
    }
    async fn find_recent(&self, query: &RecentQuery) -> cigw_core::Result<Vec<RunCandidate>> {
        self.inner.find_recent(query).await
    }
}

pub fn param(name: &str, kind: ParamType) -> ParameterSpec {
    ParameterSpec {
        name: name.into(),
        kind,
        default: None,
        allowed: None,
        required: false,
        secret: false,
        description: None,
    }
}

pub fn spec(name: &str, provider: ProviderKind, parameters: Vec<ParameterSpec>) -> TargetSpec {
    TargetSpec {
        name: name.into(),
        provider,
        account: "main".into(),
        default_branch: "main".into(),
        parameters,
        max_duration: None,
        concurrency: ConcurrencyPolicy::Queue,
        debounce: None,
        description: Some(format!("{name} (test)")),
    }
}

/// The catalog every test uses:
/// - `web-e2e` (fake, all capabilities) declares `env` (string enum qa|staging, default qa),
///   `retries` (integer), `debug` (boolean), `api_key` (secret string) and `approval` (boolean);
/// - `web-smoke` (fake, all capabilities) declares `api_key` (secret string, required);
/// - `circle-build` (circleci-like: no sha, rerun_failed_only) takes no parameters;
/// - `ship-deploy` (codeship-like: no tag, no approve, no parameters).
pub fn catalog(harness: &Harness) -> (Catalog, Arc<FakeTarget>) {
    let fake = Arc::new(FakeTarget::new(harness.clone(), FakeConfig::default()));
    let all = fake.capabilities();
    let mut catalog = Catalog::default();
    let web = spec(
        "web-e2e",
        ProviderKind::Circleci,
        vec![
            ParameterSpec {
                default: Some(ParamValue::String("qa".into())),
                allowed: Some(vec![ParamValue::String("qa".into()), ParamValue::String("staging".into())]),
                ..param("env", ParamType::String)
            },
            param("retries", ParamType::Integer),
            param("debug", ParamType::Boolean),
            ParameterSpec {
                secret: true,
                default: Some(ParamValue::String("default-secret".into())),
                ..param("api_key", ParamType::String)
            },
            param("approval", ParamType::Boolean),
        ],
    );
    catalog.targets.insert("web-e2e".into(), ConfiguredTarget { spec: web, target: fake.clone() });
    let smoke = spec(
        "web-smoke",
        ProviderKind::Codefresh,
        vec![ParameterSpec { secret: true, required: true, ..param("api_key", ParamType::String) }],
    );
    catalog.targets.insert("web-smoke".into(), ConfiguredTarget { spec: smoke, target: fake.clone() });
    let circle = Limited { inner: fake.clone(), caps: Capabilities { pin_sha: false, rerun_failed_only: true, ..all } };
    catalog.targets.insert(
        "circle-build".into(),
        ConfiguredTarget { spec: spec("circle-build", ProviderKind::Circleci, vec![]), target: Arc::new(circle) },
    );
    let ship = Limited {
        inner: fake.clone(),
        caps: Capabilities { tag: false, approve: false, parameters: false, rerun_failed_only: false, ..all },
    };
    catalog.targets.insert(
        "ship-deploy".into(),
        ConfiguredTarget { spec: spec("ship-deploy", ProviderKind::Codeship, vec![]), target: Arc::new(ship) },
    );
    (catalog, fake)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.text))
    }

    /// Assert an error status and code, and that the body has a message.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.code(), code, "{}", self.text);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.text);
    }
}

/// One router over a fresh database.
pub struct App {
    pub router: Router,
    pub state: AppState,
    pub harness: Harness,
    pub fake: Arc<FakeTarget>,
    _dir: Option<tempfile::TempDir>,
}

impl App {
    /// The default app (body limit 16 KiB).
    pub async fn new() -> App {
        Self::with_settings(|_| {}).await
    }

    /// An app with adjusted settings.
    pub async fn with_settings(adjust: impl FnOnce(&mut Settings)) -> App {
        Self::with_catalog(adjust, |_, _| {}).await
    }

    /// An app with adjusted settings and more targets in its catalog.
    pub async fn with_catalog(
        adjust: impl FnOnce(&mut Settings),
        extend: impl FnOnce(&mut Catalog, &Arc<FakeTarget>),
    ) -> App {
        let dir = tempfile::tempdir().unwrap();
        let db = DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("api.db").display()),
            ..DatabaseSettings::default()
        };
        let mut app = Self::on_database(&db, adjust, extend).await;
        app._dir = Some(dir);
        app
    }

    /// An app on the database `db` (migrated here), e.g. one replica of several on PostgreSQL.
    pub async fn on_database(
        db: &DatabaseSettings,
        adjust: impl FnOnce(&mut Settings),
        extend: impl FnOnce(&mut Catalog, &Arc<FakeTarget>),
    ) -> App {
        cigw_core::telemetry::init_for_tests();
        let store = cigw_store::open(db).await.unwrap();
        store.migrate().await.unwrap();
        let harness = Harness::new();
        let (mut catalog, fake) = catalog(&harness);
        extend(&mut catalog, &fake);
        let mut settings = Settings::default();
        settings.auth.admin_token = Some(SecretSetting::new(ADMIN));
        settings.server.body_limit_bytes = 16 * 1024;
        adjust(&mut settings);
        let state = AppState::new(store, catalog, settings);
        let router = cigw_gateway::build_router(state.clone());
        App { router, state, harness, fake, _dir: None }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    /// Send a request through the router.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body, text }
    }

    /// A JSON request with an optional bearer token.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.send(request(method, path, token, body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// POST without a body.
    pub async fn post_empty(&self, path: &str, token: &str) -> Reply {
        self.call(Method::POST, path, Some(token), None).await
    }

    /// Store a token directly; returns its secret.
    pub async fn token(&self, name: &str, scopes: &[&str]) -> String {
        self.token_with(name, scopes, |_| {}).await
    }

    /// Store a token with adjusted fields; returns its secret.
    pub async fn token_with(&self, name: &str, scopes: &[&str], adjust: impl FnOnce(&mut NewToken)) -> String {
        let secret = cigw_gateway::auth::generate_token();
        let mut token = NewToken {
            id: uuid::Uuid::now_v7().to_string(),
            name: name.into(),
            hash: cigw_gateway::auth::hash_token(&secret),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: None,
            allowed_origins: vec![],
            rate_limit_per_minute: None,
            created_at: Utc::now(),
        };
        adjust(&mut token);
        self.store().create_token(token).await.unwrap();
        secret
    }

    /// Every stored run, newest first.
    pub async fn runs(&self) -> Vec<RunRecord> {
        self.store().list_runs(&RunFilter { limit: 1000, ..RunFilter::default() }, None).await.unwrap().runs
    }

    /// How many runs are stored.
    pub async fn run_count(&self) -> usize {
        self.runs().await.len()
    }

    /// Trigger through the API as admin and return the run ids.
    pub async fn trigger(&self, body: Value) -> Vec<String> {
        let reply = self.post("/v1/triggers", ADMIN, body).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        reply.body["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    }

    /// Dispatch a pending run as the engine would, to a build the fake target really started.
    pub async fn dispatch(&self, run_id: &str) -> RunRecord {
        let now = Utc::now();
        let claimed = self.store().claim_dispatch("test", now, now + chrono::Duration::seconds(30), 100).await.unwrap();
        let run = claimed.iter().find(|r| r.id == run_id).expect("the run is due for dispatch").clone();
        for other in claimed.iter().filter(|r| r.id != run_id) {
            let at = now - chrono::Duration::seconds(1);
            self.store()
                .record_dispatch(&other.id, "test", DispatchOutcome::RetryAt { at, reason: "test".into() }, now)
                .await
                .unwrap();
        }
        let spec = TriggerSpec {
            run_id: run.id.clone(),
            git_ref: run.git_ref.clone(),
            parameters: run.parameters.clone(),
            requested_by: run.requested_by.clone(),
        };
        let TriggerOutcome::Started(run_ref) = self.fake.trigger(&spec).await.unwrap() else { panic!("not started") };
        let update = self
            .store()
            .record_dispatch(&run.id, "test", DispatchOutcome::Started { run_ref, next_poll_at: now }, now)
            .await
            .unwrap();
        update.run
    }

    /// Apply an observed state to a dispatched run, as the tracker would.
    pub async fn observe(&self, run_id: &str, state: RunState) -> RunRecord {
        let now = Utc::now();
        let claimed = self.store().claim_poll("test", now, now + chrono::Duration::seconds(30), 100).await.unwrap();
        assert!(claimed.iter().any(|r| r.id == run_id), "the run is due for a poll");
        let mut status = RunStatus::new(state, state.as_str());
        status.observed_at = now;
        let mut result = None;
        for r in claimed {
            // The observed run is next due in an hour (never, once finished); others stay due.
            let (observed, next) = if r.id == run_id {
                (status.clone(), (!state.is_terminal()).then(|| now + chrono::Duration::hours(1)))
            } else {
                (RunStatus { observed_at: now, ..RunStatus::new(r.state, "unchanged") }, Some(now))
            };
            let update = self.store().apply_status(&r.id, "test", &observed, next).await.unwrap();
            if r.id == run_id {
                result = Some(update.run);
            }
        }
        result.unwrap()
    }

    /// End a run in `state` without a provider (as the gateway does for timeouts etc.).
    pub async fn finish(&self, run_id: &str, state: RunState) -> RunRecord {
        self.store()
            .set_state(run_id, state, Some("test".into()), EventKind::StateChanged, Utc::now())
            .await
            .unwrap()
            .run
    }
}

/// A fresh PostgreSQL database on `CIGW_TEST_DATABASE_URL` (by default
/// `postgres://postgres@127.0.0.1:5432/test`; never skipped), dropped with this value.
pub struct PgDatabase {
    pub settings: DatabaseSettings,
    /// The server's admin URL (`CIGW_TEST_DATABASE_URL`).
    pub admin: String,
    /// The database's name.
    pub name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let admin = std::env::var("CIGW_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at CIGW_TEST_DATABASE_URL is needed (never skipped): {e}"));
        let name = format!("cigw_gw_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let settings = DatabaseSettings { url: format!("{base}/{name}"), ..DatabaseSettings::default() };
        PgDatabase { settings, admin, name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Outside the test's runtime, which may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// Build a request.
pub fn request(method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => {
            builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
        }
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// A time `secs` seconds from now (negative for the past).
pub fn in_secs(secs: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(secs)
}
