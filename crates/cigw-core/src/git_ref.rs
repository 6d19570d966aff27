//! What to build: a branch or a tag, and optionally a commit sha.

use serde::{Deserialize, Serialize};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest branch or tag name, in bytes. Git keeps a ref as a file name, and file systems and
/// hosts (GitHub among them) stop at 255 bytes.
pub const MAX_REF_NAME_BYTES: usize = 255;
/// Shortest abbreviated commit sha accepted (git's default abbreviation).
pub const MIN_SHA_LEN: usize = 7;
/// Longest commit sha accepted: a full SHA-1 object name, which every provider takes.
pub const MAX_SHA_LEN: usize = 40;

/// Why a ref is refused, and in which field (`None`: the ref as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefProblem {
    /// `branch`, `tag` or `sha`.
    pub field: Option<&'static str>,
    /// What is wrong, naming the field.
    pub message: String,
}

/// Characters no ref may hold: controls, Unicode format characters (bidi overrides and isolates,
/// zero-width characters, the BOM) and any whitespace or line separator. They make a ref look
/// like another one, or break the logs and terminals that show it.
fn is_hidden_or_control(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c.general_category(),
            GeneralCategory::Format | GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator
        )
}

/// Check a branch or tag name against git's `check-ref-format` rules and cigw's caps; the
/// error completes a sentence starting with the field name ("must not be empty").
pub fn check_ref_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_REF_NAME_BYTES {
        return Err(format!("must be at most {MAX_REF_NAME_BYTES} bytes, got {}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| is_hidden_or_control(*c)) {
        return Err(format!(
            "must not contain whitespace, control or invisible formatting characters (found U+{:04X})",
            u32::from(c)
        ));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')) {
        return Err(format!("must not contain `{c}` (git refuses `~ ^ : ? * [ \\` in ref names)"));
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return Err("must not contain `..`, `@{` or `//`".into());
    }
    if name == "@" || name.starts_with(['/', '-']) || name.ends_with(['/', '.']) {
        return Err("must not be `@`, start with `/` or `-`, or end with `/` or `.`".into());
    }
    if name.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock")) {
        return Err("must not have a `/`-separated part that starts with `.` or ends with `.lock`".into());
    }
    Ok(())
}

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

    /// Check the shape: not both branch and tag, names git would accept (see [`check_ref_name`]),
    /// a hex sha. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|p| p.message)
    }

    /// [`GitRef::validate`], also saying which field is wrong.
    pub fn check(&self) -> Result<(), RefProblem> {
        if self.branch.is_some() && self.tag.is_some() {
            return Err(RefProblem { field: None, message: "give either `branch` or `tag`, not both".into() });
        }
        for (field, value) in [("branch", &self.branch), ("tag", &self.tag)] {
            if let Some(v) = value {
                check_ref_name(v)
                    .map_err(|why| RefProblem { field: Some(field), message: format!("`{field}` {why}") })?;
            }
        }
        if let Some(sha) = &self.sha
            && (!(MIN_SHA_LEN..=MAX_SHA_LEN).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(RefProblem {
                field: Some("sha"),
                message: format!("`sha` must be {MIN_SHA_LEN} to {MAX_SHA_LEN} hexadecimal digits"),
            });
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
        assert_eq!(GitRef::branch("").validate().unwrap_err(), "`branch` must not be empty");
        assert_eq!(
            GitRef::tag("a b").validate().unwrap_err(),
            "`tag` must not contain whitespace, control or invisible formatting characters (found U+0020)"
        );
        for sha in ["abc", "zzzzzzz", &"a".repeat(41)] {
            assert_eq!(
                GitRef::branch("m").with_sha(sha).validate().unwrap_err(),
                "`sha` must be 7 to 40 hexadecimal digits"
            );
        }
    }

    #[test]
    fn names_git_refuses_are_refused() {
        for bad in [
            "a..b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[b",
            "a\\b",
            "a@{1}",
            "@",
            "/a",
            "a/",
            "a.",
            "-a",
            "a//b",
            ".a",
            "a/.b",
            "a.lock",
            "a/b.lock/c",
        ] {
            assert!(GitRef::branch(bad).validate().is_err(), "{bad:?}");
        }
        for good in ["a.b", "v1.2.3", "feature/x-y_z", "a@b", "release/2026.01", "ünïcode", "a.lockx"] {
            assert_eq!(GitRef::branch(good).validate(), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn long_names_and_hidden_characters_are_refused_naming_the_field() {
        let long = GitRef::branch("b".repeat(MAX_REF_NAME_BYTES + 1)).check().unwrap_err();
        assert_eq!(long.field, Some("branch"));
        assert_eq!(long.message, "`branch` must be at most 255 bytes, got 256");
        assert!(GitRef::branch("b".repeat(MAX_REF_NAME_BYTES)).validate().is_ok());
        // Bidi override, bidi isolate, zero-width space and joiner, BOM, soft hyphen, NUL, DEL,
        // line separator, no-break space.
        for c in
            ['\u{202E}', '\u{2066}', '\u{200B}', '\u{200D}', '\u{FEFF}', '\u{AD}', '\0', '\u{7F}', '\u{2028}', '\u{A0}']
        {
            let problem = GitRef::tag(format!("v1{c}.0")).check().unwrap_err();
            assert_eq!(problem.field, Some("tag"), "{c:?}");
            assert!(problem.message.contains(&format!("U+{:04X}", u32::from(c))), "{}", problem.message);
        }
        assert_eq!(GitRef::branch("m").with_sha("g".repeat(7)).check().unwrap_err().field, Some("sha"));
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
