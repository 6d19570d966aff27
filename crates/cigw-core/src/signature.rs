//! HMAC-SHA256 signatures: the primitive inbound hooks verify with, and the Standard Webhooks scheme
//! (`shared/specs/standard-webhooks/`) that hooks verify and outbound notifications sign with.
//!
//! Comparisons are constant time (`Mac::verify_slice`); nothing here logs or formats a key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    mac(key, parts).finalize().into_bytes().into()
}

/// Whether `expected` is the HMAC-SHA256 of `parts` under `key`, compared in constant time.
pub fn hmac_sha256_matches(key: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    mac(key, parts).verify_slice(expected).is_ok()
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Why a signature was not accepted. Never carries a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header the scheme needs is absent.
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    /// A header is present but not in the scheme's format.
    #[error("the `{header}` header is malformed: {reason}")]
    Malformed {
        /// The header.
        header: &'static str,
        /// What was expected.
        reason: &'static str,
    },
    /// The timestamp is further from now than the tolerance allows (a replay or a wrong clock).
    #[error("the timestamp is {seconds} s away from now, more than the {tolerance} s tolerated")]
    Stale {
        /// Distance from now, in seconds.
        seconds: i64,
        /// The tolerance, in seconds.
        tolerance: i64,
    },
    /// No configured secret produces the signature.
    #[error("the signature does not match any configured secret")]
    Mismatch,
}

/// The Standard Webhooks scheme: `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64>`
/// over `id.timestamp.payload`, keyed by the base64 bytes of a `whsec_` secret.
pub mod standard_webhooks {
    use super::*;

    /// The message id header.
    pub const ID_HEADER: &str = "webhook-id";
    /// The Unix-seconds timestamp header.
    pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
    /// The signature header (space-separated `v1,<base64>` entries).
    pub const SIGNATURE_HEADER: &str = "webhook-signature";
    /// The tolerance the specification recommends between the timestamp and now.
    pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

    /// The key bytes of a secret: base64 after an optional `whsec_` prefix.
    pub fn key(secret: &str) -> Result<Vec<u8>, &'static str> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        match BASE64.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(key),
            Ok(_) => Err("the secret decodes to no bytes"),
            Err(_) => Err("a Standard Webhooks secret is base64, optionally after `whsec_`"),
        }
    }

    /// The `webhook-signature` value (`v1,<base64>`) for one message.
    pub fn sign(key: &[u8], id: &str, timestamp: i64, payload: &[u8]) -> String {
        let ts = timestamp.to_string();
        let sig = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", payload]);
        format!("v1,{}", BASE64.encode(sig))
    }

    /// Check a message against every key: the timestamp within `tolerance_secs` of `now_secs`, then
    /// any `v1` entry of the signature header made by any key (rotation). Other versions are ignored.
    pub fn verify(
        keys: &[Vec<u8>],
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        payload: &[u8],
        now_secs: i64,
        tolerance_secs: i64,
    ) -> Result<(), SignatureError> {
        let id = id.ok_or(SignatureError::MissingHeader(ID_HEADER))?;
        let timestamp = timestamp.ok_or(SignatureError::MissingHeader(TIMESTAMP_HEADER))?;
        let signature = signature.ok_or(SignatureError::MissingHeader(SIGNATURE_HEADER))?;
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::Malformed { header: TIMESTAMP_HEADER, reason: "expected Unix seconds" })?;
        let distance = (now_secs - ts).abs();
        if distance > tolerance_secs {
            return Err(SignatureError::Stale { seconds: distance, tolerance: tolerance_secs });
        }
        let candidates: Vec<Vec<u8>> = signature
            .split_whitespace()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, sig)| BASE64.decode(sig).ok())
            .collect();
        if candidates.is_empty() {
            return Err(SignatureError::Malformed { header: SIGNATURE_HEADER, reason: "expected `v1,<base64>`" });
        }
        let ts = ts.to_string();
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", payload];
        let ok = keys.iter().any(|key| candidates.iter().any(|sig| hmac_sha256_matches(key, &parts, sig)));
        if ok { Ok(()) } else { Err(SignatureError::Mismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::standard_webhooks as sw;
    use super::*;

    struct Vector {
        secret: String,
        id: String,
        timestamp: String,
        payload: String,
        signature: String,
    }

    /// The vector shipped with the specification (vendored from `shared/specs/standard-webhooks/` into tests/resources).
    fn vector() -> Vector {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/resources/standard-webhooks/vector.json");
        let text = std::fs::read_to_string(path).expect("the Standard Webhooks vector is readable");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let field = |k: &str| v[k].as_str().unwrap().to_string();
        Vector {
            secret: field("secret"),
            id: field("webhook-id"),
            timestamp: field("webhook-timestamp"),
            payload: field("payload"),
            signature: field("webhook-signature"),
        }
    }

    #[test]
    fn signs_the_specification_vector() {
        let v = vector();
        let key = sw::key(&v.secret).unwrap();
        assert_eq!(sw::sign(&key, &v.id, v.timestamp.parse().unwrap(), v.payload.as_bytes()), v.signature);
    }

    fn check(v: &Vector, keys: &[Vec<u8>], sig: &str, payload: &str, now: i64) -> Result<(), SignatureError> {
        sw::verify(keys, Some(&v.id), Some(&v.timestamp), Some(sig), payload.as_bytes(), now, 300)
    }

    #[test]
    fn verifies_the_vector_and_refuses_each_failure() {
        let v = vector();
        let key = sw::key(&v.secret).unwrap();
        let now: i64 = v.timestamp.parse().unwrap();
        assert_eq!(check(&v, std::slice::from_ref(&key), &v.signature, &v.payload, now), Ok(()));
        // A rotated secret list: an old key first, the signing key second.
        let old = sw::key("whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0").unwrap();
        assert_eq!(check(&v, &[old.clone(), key.clone()], &v.signature, &v.payload, now), Ok(()));
        assert_eq!(check(&v, &[old], &v.signature, &v.payload, now), Err(SignatureError::Mismatch));
        // One changed byte of the payload.
        assert_eq!(
            check(&v, std::slice::from_ref(&key), &v.signature, &v.payload.replace('2', "3"), now),
            Err(SignatureError::Mismatch)
        );
        // Several entries, the valid one last; unknown versions skipped.
        let many = format!("v2,abc v1,AAAA {}", v.signature);
        assert_eq!(check(&v, std::slice::from_ref(&key), &many, &v.payload, now), Ok(()));
        assert!(matches!(
            check(&v, std::slice::from_ref(&key), "v2,abc", &v.payload, now),
            Err(SignatureError::Malformed { .. })
        ));
        // Outside the window on either side.
        assert_eq!(
            check(&v, std::slice::from_ref(&key), &v.signature, &v.payload, now + 301),
            Err(SignatureError::Stale { seconds: 301, tolerance: 300 })
        );
        assert!(matches!(
            check(&v, std::slice::from_ref(&key), &v.signature, &v.payload, now - 301),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            sw::verify(&[key], None, Some("1"), Some("v1,x"), b"", 1, 300),
            Err(SignatureError::MissingHeader(sw::ID_HEADER))
        );
    }

    #[test]
    fn refuses_secrets_that_are_not_base64() {
        assert!(sw::key("whsec_not base64!").is_err());
        assert!(sw::key("whsec_").is_err());
    }

    #[test]
    fn hmac_matches_the_github_documentation_vector() {
        // GitHub's "Validating webhook deliveries" example.
        let sig = hmac_sha256(b"It's a Secret to Everybody", &[b"Hello, World!"]);
        assert_eq!(hex_of(&sig), "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
        assert!(hmac_sha256_matches(b"It's a Secret to Everybody", &[b"Hello, ", b"World!"], &sig));
        assert!(!hmac_sha256_matches(b"another secret", &[b"Hello, World!"], &sig));
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
