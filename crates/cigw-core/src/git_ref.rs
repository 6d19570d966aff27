//! What to build: a branch or a tag, and optionally a commit sha.

use serde::{Deserialize, Serialize};

/// A git ref as requested: a branch or a tag (or neither, meaning the target's default branch),
/// plus an optional sha.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitRef {
    /// Branch name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Tag name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Commit sha (7 to 40 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
}

impl GitRef {
    /// A branch ref.
    pub fn branch(name: impl Into<String>) -> Self {
        Self { branch: Some(name.into()), ..Self::default() }
    }

    /// A tag ref.
    pub fn tag(name: impl Into<String>) -> Self {
        Self { tag: Some(name.into()), ..Self::default() }
    }

    /// The same ref pinned to a sha.
    pub fn with_sha(mut self, sha: impl Into<String>) -> Self {
        self.sha = Some(sha.into());
        self
    }

    /// Check the shape: not both branch and tag, no empty names, a hex sha.
    pub fn validate(&self) -> Result<(), String> {
        if self.branch.is_some() && self.tag.is_some() {
            return Err("give either `branch` or `tag`, not both".into());
        }
        for (field, value) in [("branch", &self.branch), ("tag", &self.tag)] {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    return Err(format!("`{field}` must not be empty"));
                }
                if v.chars().any(|c| c.is_control() || c == ' ') {
                    return Err(format!("`{field}` must not contain spaces or control characters"));
                }
            }
        }
        if let Some(sha) = &self.sha
            && (!(7..=40).contains(&sha.len()) || !sha.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err("`sha` must be 7 to 40 hexadecimal digits".into());
        }
        Ok(())
    }

    /// The ref with the default branch filled in when neither branch nor tag is given.
    pub fn or_default_branch(mut self, default_branch: &str) -> Self {
        if self.branch.is_none() && self.tag.is_none() {
            self.branch = Some(default_branch.to_string());
        }
        self
    }

    /// A short human form: `branch main`, `tag v1 @ abc1234`.
    pub fn describe(&self) -> String {
        let base = match (&self.branch, &self.tag) {
            (Some(b), _) => format!("branch {b}"),
            (None, Some(t)) => format!("tag {t}"),
            (None, None) => "default branch".to_string(),
        };
        match &self.sha {
            Some(s) => format!("{base} @ {s}"),
            None => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_refs() {
        assert!(GitRef::branch("main").validate().is_ok());
        assert!(GitRef::tag("v1.2.3").with_sha("abcdef1").validate().is_ok());
        assert!(GitRef::default().validate().is_ok());
        assert!(GitRef::branch("feature/x").with_sha("a".repeat(40)).validate().is_ok());
    }

    #[test]
    fn invalid_refs_say_why() {
        let both = GitRef { branch: Some("a".into()), tag: Some("b".into()), sha: None };
        assert_eq!(both.validate().unwrap_err(), "give either `branch` or `tag`, not both");
        assert_eq!(GitRef::branch("  ").validate().unwrap_err(), "`branch` must not be empty");
        assert_eq!(GitRef::tag("a b").validate().unwrap_err(), "`tag` must not contain spaces or control characters");
        for sha in ["abc", "zzzzzzz", &"a".repeat(41)] {
            assert_eq!(
                GitRef::branch("m").with_sha(sha).validate().unwrap_err(),
                "`sha` must be 7 to 40 hexadecimal digits"
            );
        }
    }

    #[test]
    fn default_branch_fills_only_an_empty_ref() {
        assert_eq!(GitRef::default().or_default_branch("main"), GitRef::branch("main"));
        assert_eq!(GitRef::tag("v1").or_default_branch("main"), GitRef::tag("v1"));
        assert_eq!(GitRef::default().with_sha("abcdef1").or_default_branch("dev").describe(), "branch dev @ abcdef1");
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<GitRef>(r#"{"branch":"m","commit":"x"}"#).is_err());
    }
}
