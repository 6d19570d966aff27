//! `cigw token create|list|revoke` (scope `admin`), including one-command button tokens.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{connect, finish, s, show_time, table, time};
use crate::client::{Client, ClientError, ConnectArgs, segment};

/// Flags of `cigw token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create(CreateArgs),
    /// List live tokens (never their secrets).
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or name.
    Revoke {
        /// Token id or name.
        #[arg(value_name = "TOKEN")]
        id_or_name: String,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// A unique name (letters, digits, `.`, `_`, `-`, `@`, `:`); with --button it defaults to `button-<targets>`.
    #[arg(long, required_unless_present = "button")]
    name: Option<String>,
    /// A scope: read, trigger, trigger:<glob>, cancel, approve, admin.
    #[arg(long = "scope", value_name = "SCOPE", required_unless_present = "button", conflicts_with = "button")]
    scopes: Vec<String>,
    /// A token for a web page's build button (`<cigw-build-button>`): trigger-only, with scope
    /// `trigger:<T>` for each --target, usable from the --origin pages only, and rate limited
    /// (30 requests a minute unless --rate-limit says otherwise). It reads nothing: the button
    /// follows the run it started through a watch link.
    #[arg(long, requires_all = ["targets", "origins"])]
    button: bool,
    /// With --button: a target the button may trigger.
    #[arg(long = "target", value_name = "TARGET", requires = "button")]
    targets: Vec<String>,
    /// Lifetime, such as 90d or 12h.
    #[arg(long, value_name = "DURATION")]
    expires_in: Option<String>,
    /// A browser origin allowed to use the token (`https://host[:port]`).
    #[arg(long = "origin", value_name = "ORIGIN")]
    origins: Vec<String>,
    /// Requests per minute.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
}

/// Run `cigw token …`.
pub(crate) async fn run(args: TokenArgs) -> ExitCode {
    let client = match connect(&args.connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match args.command {
        TokenCommand::Create(c) => {
            let body = create_body(&c);
            finish(client.post("/v1/tokens", &body, &[]).await, c.json, created_text)
        }
        TokenCommand::List { json } => finish(client.get("/v1/tokens", &[]).await, json, list_text),
        TokenCommand::Revoke { id_or_name } => match revoke(&client, &id_or_name).await {
            Ok(id) => {
                println!("revoked token {id}");
                ExitCode::SUCCESS
            }
            Err(e) => e.report(),
        },
    }
}

/// Requests per minute of a button token unless `--rate-limit` is given.
const BUTTON_RATE_LIMIT: u32 = 30;

fn create_body(c: &CreateArgs) -> Value {
    let (name, scopes) = if c.button {
        let scopes = c.targets.iter().map(|t| format!("trigger:{t}")).collect();
        let name = c.name.clone().unwrap_or_else(|| {
            let mut n = format!("button-{}", c.targets.join("-"));
            n.truncate(100);
            n
        });
        (name, scopes)
    } else {
        (c.name.clone().unwrap_or_default(), c.scopes.clone())
    };
    let mut body = json!({"name": name, "scopes": scopes});
    if let Some(e) = &c.expires_in {
        body["expires_in"] = json!(e);
    }
    if !c.origins.is_empty() {
        body["allowed_origins"] = json!(c.origins);
    }
    if let Some(r) = c.rate_limit.or(c.button.then_some(BUTTON_RATE_LIMIT)) {
        body["rate_limit_per_minute"] = json!(r);
    }
    body
}

fn strings(v: &Value, key: &str) -> String {
    let items: Vec<&str> =
        v.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    if items.is_empty() { "-".into() } else { items.join(",") }
}

fn created_text(created: &Value) -> String {
    let mut out = format!(
        "created token {} ({})\nscopes: {}\n",
        s(created, "name"),
        s(created, "id"),
        strings(created, "scopes").replace(',', " ")
    );
    if created.get("allowed_origins").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        out.push_str(&format!("origins: {}\n", strings(created, "allowed_origins").replace(',', " ")));
    }
    if let Some(t) = time(created, "expires_at") {
        out.push_str(&format!("expires: {}\n", show_time(Some(t))));
    }
    out.push_str(&format!("secret (shown only now): {}\n", s(created, "secret")));
    out
}

fn list_text(list: &Value) -> String {
    let tokens = list.get("tokens").and_then(Value::as_array).cloned().unwrap_or_default();
    if tokens.is_empty() {
        return "no tokens\n".into();
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                s(t, "id").into(),
                s(t, "name").into(),
                strings(t, "scopes"),
                show_time(time(t, "expires_at")),
                strings(t, "allowed_origins"),
                t.get("rate_limit_per_minute")
                    .and_then(Value::as_u64)
                    .map(|n| format!("{n}/min"))
                    .unwrap_or("-".into()),
                show_time(time(t, "last_used_at")),
            ]
        })
        .collect();
    table(&["ID", "NAME", "SCOPES", "EXPIRES", "ORIGINS", "RATE", "LAST USED"], &rows)
}

/// Revoke by id, or by name when no live token has that id; returns the id revoked.
async fn revoke(client: &Client, token: &str) -> Result<String, ClientError> {
    let list = client.get("/v1/tokens", &[]).await?;
    let tokens = list.get("tokens").and_then(Value::as_array).cloned().unwrap_or_default();
    let id = tokens
        .iter()
        .find(|t| s(t, "id") == token)
        .or_else(|| tokens.iter().find(|t| s(t, "name") == token))
        .map(|t| s(t, "id").to_string())
        // Unknown either way: let the gateway give its 404.
        .unwrap_or_else(|| token.to_string());
    client.delete(&format!("/v1/tokens/{}", segment(&id))).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: TokenArgs,
    }

    fn create(argv: &[&str]) -> Result<CreateArgs, clap::Error> {
        let w = Wrapper::try_parse_from(["cigw", "create"].into_iter().chain(argv.iter().copied()))?;
        match w.args.command {
            TokenCommand::Create(c) => Ok(c),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_button_token_gets_one_trigger_scope_per_target_and_a_rate_limit() {
        let c =
            create(&["--button", "--target", "web-e2e", "--target", "api-build", "--origin", "https://qa.example.com"])
                .unwrap();
        assert_eq!(
            create_body(&c),
            json!({"name": "button-web-e2e-api-build", "scopes": ["trigger:web-e2e", "trigger:api-build"],
                   "allowed_origins": ["https://qa.example.com"], "rate_limit_per_minute": 30})
        );
        assert!(create(&["--button", "--target", "web"]).is_err(), "a button needs an origin");
        assert!(create(&["--button", "--origin", "https://a.b"]).is_err(), "a button needs a target");
        assert!(create(&["--button", "--scope", "admin", "--target", "w", "--origin", "https://a.b"]).is_err());
    }

    #[test]
    fn a_plain_token_needs_a_name_and_scopes() {
        let c = create(&[
            "--name",
            "ci",
            "--scope",
            "read",
            "--scope",
            "trigger:web-*",
            "--expires-in",
            "30d",
            "--rate-limit",
            "60",
        ])
        .unwrap();
        assert_eq!(
            create_body(&c),
            json!({"name": "ci", "scopes": ["read", "trigger:web-*"], "expires_in": "30d", "rate_limit_per_minute": 60})
        );
        assert!(create(&["--name", "ci"]).is_err());
        assert!(create(&["--scope", "read"]).is_err());
        assert!(create(&["--name", "ci", "--scope", "read", "--target", "w"]).is_err(), "--target is for buttons");
    }

    #[test]
    fn revoke_takes_the_token_name_not_the_api_token() {
        let w = Wrapper::try_parse_from(["cigw", "--token", "cigw_admin", "revoke", "ci-bot"]).unwrap();
        assert_eq!(w.args.connect.token.as_deref(), Some("cigw_admin"));
        assert!(matches!(w.args.command, TokenCommand::Revoke { ref id_or_name } if id_or_name == "ci-bot"));
    }

    #[test]
    fn texts() {
        let created = json!({"id": "k1", "name": "ci", "scopes": ["read", "cancel"], "allowed_origins": [],
            "expires_at": null, "secret": "cigw_abc"});
        assert_eq!(
            created_text(&created),
            "created token ci (k1)\nscopes: read cancel\nsecret (shown only now): cigw_abc\n"
        );
        let list = json!({"tokens": [{"id": "k1", "name": "ci", "scopes": ["read"], "expires_at": null,
            "allowed_origins": ["https://a.b"], "rate_limit_per_minute": 60, "last_used_at": null}]});
        assert_eq!(
            list_text(&list),
            "ID  NAME  SCOPES  EXPIRES  ORIGINS      RATE    LAST USED\nk1  ci    read    -        https://a.b  60/min  -\n"
        );
    }
}
