//! Secret settings: `env:NAME`, `file:PATH` or (for sandboxes) a literal, resolved into a
//! `SecretString` whose value never reaches `Debug`, logs or error messages.

use std::fmt;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::Problems;

/// A secret as written in the configuration. `Debug` shows where it comes from, never a literal.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretSetting(String);

/// Why a secret could not be resolved. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// `env:NAME` names an unset (or non-UTF-8) variable.
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// `file:PATH` cannot be read.
    #[error("cannot read secret file `{path}`: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The resolved value is empty.
    #[error("the secret is empty")]
    Empty,
}

/// Where a resolved secret came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOrigin {
    /// An environment variable.
    Env,
    /// A file.
    File,
    /// Written in the configuration itself.
    Literal,
}

impl SecretSetting {
    /// A setting from its configuration text.
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// Resolve the secret now.
    pub fn resolve(&self) -> Result<(SecretString, SecretOrigin), SecretError> {
        let (value, origin) = if let Some(name) = self.0.strip_prefix("env:") {
            let v = std::env::var(name).map_err(|_| SecretError::MissingEnv(name.to_string()))?;
            (v, SecretOrigin::Env)
        } else if let Some(path) = self.0.strip_prefix("file:") {
            let v = std::fs::read_to_string(path)
                .map_err(|e| SecretError::Unreadable { path: path.to_string(), reason: e.kind().to_string() })?;
            (v.trim_end_matches(['\n', '\r']).to_string(), SecretOrigin::File)
        } else {
            (self.0.clone(), SecretOrigin::Literal)
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok((SecretString::from(value), origin))
    }

    /// Resolve, reporting a failure (as an error) or a literal (as a warning) at `path`.
    pub fn resolve_at(&self, path: &str, problems: &mut Problems) -> Option<SecretString> {
        match self.resolve() {
            Ok((secret, origin)) => {
                if origin == SecretOrigin::Literal {
                    problems.warn(path, "secret written as a literal; use `env:NAME` or `file:PATH` outside sandboxes");
                }
                Some(secret)
            }
            Err(e) => {
                problems.error(path, e.to_string());
                None
            }
        }
    }
}

impl fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.starts_with("env:") || self.0.starts_with("file:") {
            write!(f, "SecretSetting({:?})", self.0)
        } else {
            f.write_str("SecretSetting(<literal, redacted>)")
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn resolves_env_file_and_literal() {
        // `set_var` is unsafe in edition 2024, so the env case reads a variable every process has.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file-secret\n").unwrap();
        let (v, o) = SecretSetting::new(format!("file:{}", path.display())).resolve().unwrap();
        assert_eq!((v.expose_secret(), o), ("from-file-secret", SecretOrigin::File));
        let (v, o) = SecretSetting::new("plain-literal").resolve().unwrap();
        assert_eq!((v.expose_secret(), o), ("plain-literal", SecretOrigin::Literal));
        let (v, o) = SecretSetting::new("env:PATH").resolve().unwrap();
        assert!(!v.expose_secret().is_empty());
        assert_eq!(o, SecretOrigin::Env);
    }

    #[test]
    fn failures_name_the_source_not_the_value() {
        let e = SecretSetting::new("env:CIGW_TEST_SURELY_UNSET_VARIABLE").resolve().unwrap_err();
        assert_eq!(e.to_string(), "environment variable `CIGW_TEST_SURELY_UNSET_VARIABLE` is not set");
        let e = SecretSetting::new("file:/nonexistent/cigw/secret").resolve().unwrap_err();
        assert!(e.to_string().starts_with("cannot read secret file `/nonexistent/cigw/secret`"), "{e}");
        assert_eq!(SecretSetting::new("").resolve().unwrap_err(), SecretError::Empty);
    }

    #[test]
    fn debug_never_shows_a_literal() {
        assert_eq!(format!("{:?}", SecretSetting::new("hunter2")), "SecretSetting(<literal, redacted>)");
        assert_eq!(format!("{:?}", SecretSetting::new("env:TOKEN")), "SecretSetting(\"env:TOKEN\")");
        let mut problems = Problems::default();
        let s = SecretSetting::new("hunter2").resolve_at("providers.circleci.main.token", &mut problems).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{problems:?}").contains("hunter2"));
        assert_eq!(problems.warnings().count(), 1);
    }
}
