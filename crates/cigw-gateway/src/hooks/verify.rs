//! Verification of a delivery's raw bytes, per scheme, before anything parses them. Failures
//! say which header is missing or malformed, or that no secret matches; never a secret or a
//! signature.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use cigw_core::hook::{Encoding, HmacOptions, Hook, Scheme};
use cigw_core::signature::{SignatureError, hmac_sha256_matches, standard_webhooks};
use subtle::ConstantTimeEq;

/// GitHub's signature header.
pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
/// GitLab's secret token header.
pub const GITLAB_TOKEN: &str = "x-gitlab-token";

/// The value of header `name` (any case), if present and text.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Check a delivery against `hook`'s secrets (not for `bearer`, which is a token check, nor
/// `none`). `now` is the gateway's clock, for schemes with a timestamp.
pub fn verify(
    hook: &Hook,
    headers: &[(String, String)],
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let keys = hook.keys();
    match hook.scheme {
        Scheme::Github => {
            let value = header(headers, GITHUB_SIGNATURE).ok_or(SignatureError::MissingHeader(GITHUB_SIGNATURE))?;
            let hex_sig = value
                .trim()
                .strip_prefix("sha256=")
                .ok_or(SignatureError::Malformed { header: GITHUB_SIGNATURE, reason: "expected `sha256=<hex>`" })?;
            let sig = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed {
                header: GITHUB_SIGNATURE,
                reason: "expected `sha256=<hex>`",
            })?;
            any_key(keys.iter().map(|k| k.expose()), &[body], &sig)
        }
        Scheme::Gitlab => {
            let token = header(headers, GITLAB_TOKEN).ok_or(SignatureError::MissingHeader(GITLAB_TOKEN))?;
            // Every key is compared (no early exit), each in constant time.
            let mut ok = subtle::Choice::from(0);
            for key in keys {
                ok |= key.expose().ct_eq(token.as_bytes());
            }
            if bool::from(ok) { Ok(()) } else { Err(SignatureError::Mismatch) }
        }
        Scheme::StandardWebhooks => {
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.expose().to_vec()).collect();
            standard_webhooks::verify(
                &keys,
                header(headers, standard_webhooks::ID_HEADER),
                header(headers, standard_webhooks::TIMESTAMP_HEADER),
                header(headers, standard_webhooks::SIGNATURE_HEADER),
                body,
                now.timestamp(),
                tolerance_secs(hook),
            )
        }
        Scheme::HmacSha256 => {
            let options = hook.hmac.as_ref().ok_or(SignatureError::Mismatch)?;
            verify_hmac(hook, options, headers, body, now)
        }
        Scheme::Bearer | Scheme::None => Ok(()),
    }
}

fn tolerance_secs(hook: &Hook) -> i64 {
    i64::try_from(hook.tolerance.as_secs()).unwrap_or(i64::MAX)
}

/// The `hmac-sha256` headers are configured, so errors name them by their setting.
const CONFIGURED_SIGNATURE: &str = "signature_header (as configured)";
const CONFIGURED_TIMESTAMP: &str = "timestamp_header (as configured)";

fn verify_hmac(
    hook: &Hook,
    options: &HmacOptions,
    headers: &[(String, String)],
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let value =
        header(headers, &options.signature_header).ok_or(SignatureError::MissingHeader(CONFIGURED_SIGNATURE))?;
    let encoded = value.trim().strip_prefix(options.prefix.as_str()).ok_or(SignatureError::Malformed {
        header: CONFIGURED_SIGNATURE,
        reason: "the configured prefix is missing",
    })?;
    let sig = match options.encoding {
        Encoding::Hex => hex::decode(encoded).ok(),
        Encoding::Base64 => BASE64.decode(encoded).ok(),
    }
    .ok_or(SignatureError::Malformed { header: CONFIGURED_SIGNATURE, reason: "not in the configured encoding" })?;
    let keys = hook.keys().iter().map(|k| k.expose());
    match &options.timestamp_header {
        None => any_key(keys, &[body], &sig),
        Some(name) => {
            let ts = header(headers, name).ok_or(SignatureError::MissingHeader(CONFIGURED_TIMESTAMP))?.trim();
            let secs: i64 = ts.parse().map_err(|_| SignatureError::Malformed {
                header: CONFIGURED_TIMESTAMP,
                reason: "expected Unix seconds",
            })?;
            let distance = (now.timestamp() - secs).abs();
            let tolerance = tolerance_secs(hook);
            if distance > tolerance {
                return Err(SignatureError::Stale { seconds: distance, tolerance });
            }
            any_key(keys, &[ts.as_bytes(), b".", body], &sig)
        }
    }
}

/// `Ok` when any key's HMAC of `parts` is `sig` (constant-time comparisons).
fn any_key<'a>(keys: impl Iterator<Item = &'a [u8]>, parts: &[&[u8]], sig: &[u8]) -> Result<(), SignatureError> {
    let mut ok = false;
    for key in keys {
        ok |= hmac_sha256_matches(key, parts, sig);
    }
    if ok { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// The message of a refused delivery: what was wrong, with a hint for the common causes.
pub fn explain(hook: &Hook, error: &SignatureError) -> String {
    let hint = match (error, hook.scheme) {
        (SignatureError::Stale { .. }, _) => {
            " (a replayed delivery, or the sender's or the gateway's clock is wrong; the window is `tolerance`)"
        }
        (SignatureError::Mismatch, Scheme::Github | Scheme::HmacSha256 | Scheme::StandardWebhooks) => {
            " (check that the sender signs with one of this hook's `secrets` and that nothing rewrites the body)"
        }
        (SignatureError::Mismatch, Scheme::Gitlab) => " (the `X-Gitlab-Token` is not one of this hook's `secrets`)",
        _ => "",
    };
    format!("delivery refused by hook `{}` ({}): {error}{hint}", hook.name, hook.scheme.as_str())
}
