//! `cigw sandbox`: the three provider simulators and a gateway in front of them, on SQLite,
//! configured by `config/sandbox.toml`: everything a newcomer needs to try cigw on one machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cigw_core::config::load_raw_from_str;
use cigw_sim::receiver::{NotificationReceiver, SANDBOX_NOTIFICATION_SECRET};
use cigw_sim::sandbox::SandboxProviders;
use tokio::net::TcpListener;

use crate::gateway::prepare;

/// The sandbox configuration, embedded so the command works from any directory.
const SANDBOX_TOML: &str = include_str!("../../../config/sandbox.toml");

/// Options of `cigw sandbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct SandboxArgs {
    /// Port of the gateway on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// SQLite database file.
    #[arg(long, default_value = "cigw-sandbox.db")]
    db: PathBuf,
    /// How many times faster than real time the simulated providers run.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Simulated duration of one build.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    run_for: Duration,
    /// Admin token to accept (default: a new random one, printed at start).
    #[arg(long, env = "CIGW_SANDBOX_ADMIN_TOKEN")]
    admin_token: Option<String>,
}

/// Start the simulators and the gateway; run until Ctrl-C.
pub(crate) async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    if !(args.speed > 0.0 && args.speed.is_finite()) {
        anyhow::bail!("--speed must be a positive number, got {}", args.speed);
    }
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{} (choose another with --port)", args.port))?;
    let addr = listener.local_addr()?;
    let providers = SandboxProviders::start(args.speed, args.run_for).await.context("starting the simulators")?;
    providers.send_circleci_webhooks_to(format!("http://{addr}/callbacks/circleci/sandbox"));
    let receiver = NotificationReceiver::start(&[SANDBOX_NOTIFICATION_SECRET])
        .await
        .context("starting the notification receiver")?;

    // A token the user chose (flag or environment) is theirs: it is never echoed.
    let (admin_token, shown) = match args.admin_token {
        Some(given) => (given, AdminToken::Given),
        None => {
            let generated = cigw_gateway::auth::generate_token();
            (generated.clone(), AdminToken::Generated(generated))
        }
    };
    if !cigw_gateway::auth::is_well_formed(&admin_token) {
        anyhow::bail!("--admin-token must look like `cigw_` followed by at least 43 letters, digits, `-` or `_`");
    }
    let database = format!("sqlite://{}", args.db.display());
    let listen = addr.to_string();
    let mut overrides: Vec<(String, String)> = providers.base_url_overrides();
    overrides.push(("database.url".into(), database.clone()));
    overrides.push(("server.listen".into(), listen.clone()));
    overrides.push(("server.public_url".into(), format!("http://{listen}")));
    overrides.push(("auth.admin_token".into(), admin_token.clone()));
    overrides.push(("notifications.sandbox-receiver.url".into(), format!("{}/events", receiver.url())));
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let raw = load_raw_from_str(SANDBOX_TOML, &overrides).context("loading the sandbox configuration")?;
    let state = prepare(raw, true).await?;
    let targets: Vec<String> = state.catalog.targets.keys().cloned().collect();
    let chains: Vec<String> = state.settings.chains.keys().cloned().collect();

    println!("{}", banner(&listen, &database, &shown, &targets, &chains, args.speed, &receiver.url()));
    cigw_gateway::serve::serve(listener, state, cigw_gateway::serve::shutdown_signal()).await?;
    drop(providers);
    drop(receiver);
    Ok(())
}

/// The admin token as the banner shows it.
enum AdminToken {
    /// Made up by the sandbox: the user learns it from the banner.
    Generated(String),
    /// Given with `--admin-token` or `CIGW_SANDBOX_ADMIN_TOKEN`: not printed.
    Given,
}

/// The secret of the sandbox's `github` hook (config/sandbox.toml), printed in the banner's
/// signing line: it protects nothing but simulated builds.
const SANDBOX_GITHUB_SECRET: &str = "sandbox-github-secret";

fn banner(
    listen: &str,
    database: &str,
    admin: &AdminToken,
    targets: &[String],
    chains: &[String],
    speed: f64,
    receiver: &str,
) -> String {
    let base = format!("http://{listen}");
    let (shown, token) = match admin {
        AdminToken::Generated(token) => (token.clone(), token.clone()),
        AdminToken::Given => ("the one you gave (not shown)".to_string(), "<your admin token>".to_string()),
    };
    format!(
        r#"cigw sandbox is running (simulated CircleCI, Codefresh and Codeship at {speed}x speed)

  Web UI      {base}/ui   (sign in with the admin token)
  API         {base}/v1
  OpenAPI     {base}/openapi.json
  Health      {base}/healthz
  Database    {database}
  Targets     {targets}
  Chains      {chains}
  Admin token {shown}
  Notices     {receiver}/events   (signed CDEvents of every run, as the sandbox receiver got them)

Try it:
  export CIGW_URL={base} CIGW_TOKEN={token}
  curl -s -X POST $CIGW_URL/v1/triggers -H "Authorization: Bearer $CIGW_TOKEN" \
       -H 'Content-Type: application/json' \
       -d '{{"targets":["api-build","web-e2e","legacy-basic"],"ref":{{"branch":"main"}}}}'
  curl -s "$CIGW_URL/v1/runs?limit=10" -H "Authorization: Bearer $CIGW_TOKEN"
  curl -s $CIGW_URL/v1/targets -H "Authorization: Bearer $CIGW_TOKEN"
  cigw trigger api-build --branch main --wait   # then web-e2e follows (chain api-build-to-web-e2e)
  cigw status <trigger id>                      # draws the tree of triggers chains made
  curl -s $CIGW_URL/v1/joins -H "Authorization: Bearer $CIGW_TOKEN"

Send a signed GitHub push to the hook `github` (it builds api-build on the pushed branch):
  body='{{"ref":"refs/heads/main","after":"4f2c9a7e1b3d5f6a8c0e2b4d6f8a1c3e5b7d9f0a","pusher":{{"name":"you"}}}}'
  curl -s -X POST $CIGW_URL/hooks/github -H 'Content-Type: application/json' \
       -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: $(date +%s%N)" \
       -H "X-Hub-Signature-256: sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac {secret} | sed 's/^.* //')" \
       -d "$body"

Press Ctrl-C to stop."#,
        secret = SANDBOX_GITHUB_SECRET,
        targets = targets.join(", "),
        chains = if chains.is_empty() { "none".to_string() } else { chains.join(", ") },
    )
}
