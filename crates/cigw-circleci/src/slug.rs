//! CircleCI project slugs (`gh/org/repo`, `bb/org/repo`, `circleci/<org-id>/<project-id>`) and
//! their per-segment encoding in request paths.

use std::fmt;

use cigw_core::transport::encode_segment;

/// The VCS part of a slug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlugVcs {
    /// GitHub OAuth projects (`gh` or `github`).
    GitHub,
    /// Bitbucket Cloud projects (`bb` or `bitbucket`).
    Bitbucket,
    /// GitHub App, GitLab and Bitbucket DC projects: `circleci/<org-id>/<project-id>`, opaque.
    Circleci,
}

/// A validated project slug of three segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSlug {
    vcs: SlugVcs,
    vcs_text: String,
    org: String,
    project: String,
}

impl ProjectSlug {
    /// Parse and validate `vcs/org/project`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected `gh/<org>/<repo>`, `bb/<org>/<repo>` or `circleci/<org-id>/<project-id>`";
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() != 3 {
            return Err(format!("`{text}` has {} segment(s); {expected}", parts.len()));
        }
        let vcs = match parts[0] {
            "gh" | "github" => SlugVcs::GitHub,
            "bb" | "bitbucket" => SlugVcs::Bitbucket,
            "circleci" => SlugVcs::Circleci,
            other => return Err(format!("unknown VCS `{other}` in `{text}`; {expected}")),
        };
        for (what, seg) in [("organization", parts[1]), ("project", parts[2])] {
            if seg.trim().is_empty() {
                return Err(format!("the {what} segment of `{text}` is empty; {expected}"));
            }
            if seg.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!("the {what} segment of `{text}` contains spaces or control characters"));
            }
        }
        Ok(Self { vcs, vcs_text: parts[0].to_string(), org: parts[1].to_string(), project: parts[2].to_string() })
    }

    /// The VCS kind.
    pub fn vcs(&self) -> SlugVcs {
        self.vcs
    }

    /// The three segments as written (`gh`, `org`, `repo`).
    pub fn segments(&self) -> [&str; 3] {
        [&self.vcs_text, &self.org, &self.project]
    }

    /// The classic endpoint cannot trigger GitHub App and GitLab projects.
    pub fn needs_definition_id(&self) -> bool {
        self.vcs == SlugVcs::Circleci
    }

    /// The path segments of the slug, each percent-encoded on its own, joined by `/`.
    pub fn encoded_path(&self) -> String {
        self.segments().iter().map(|s| encode_segment(s)).collect::<Vec<_>>().join("/")
    }

    /// The slug as the web app spells it (`github/org/repo`), for links.
    pub fn app_path(&self) -> String {
        let vcs = match self.vcs {
            SlugVcs::GitHub => "github",
            SlugVcs::Bitbucket => "bitbucket",
            SlugVcs::Circleci => "circleci",
        };
        format!("{vcs}/{}/{}", encode_segment(&self.org), encode_segment(&self.project))
    }
}

impl fmt::Display for ProjectSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.vcs_text, self.org, self.project)
    }
}

/// Webhook payloads spell slugs `github/…` and `bitbucket/…`; the API spells them `gh/…` and
/// `bb/…`. Normalize to the API spelling.
pub fn normalize_slug(slug: &str) -> String {
    match slug.split_once('/') {
        Some(("github", rest)) => format!("gh/{rest}"),
        Some(("bitbucket", rest)) => format!("bb/{rest}"),
        _ => slug.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_slug_shapes() {
        let gh = ProjectSlug::parse("gh/acme/api").unwrap();
        assert_eq!(gh.vcs(), SlugVcs::GitHub);
        assert!(!gh.needs_definition_id());
        assert_eq!(ProjectSlug::parse("bitbucket/acme/api").unwrap().vcs(), SlugVcs::Bitbucket);
        let c = ProjectSlug::parse("circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat").unwrap();
        assert!(c.needs_definition_id());
        assert_eq!(c.to_string(), "circleci/43G3lM5RtfFE7v5sa4nWAU/44n9wujWcTnVZ2b5S8Fnat");
    }

    #[test]
    fn refuses_bad_slugs_saying_why() {
        assert!(ProjectSlug::parse("gh/acme").unwrap_err().contains("has 2 segment(s)"));
        assert!(ProjectSlug::parse("gh/acme/api/x").unwrap_err().contains("has 4 segment(s)"));
        assert!(ProjectSlug::parse("gl/acme/api").unwrap_err().contains("unknown VCS `gl`"));
        assert!(ProjectSlug::parse("gh//api").unwrap_err().contains("organization segment"));
        assert!(ProjectSlug::parse("gh/acme/a b").unwrap_err().contains("spaces"));
    }

    #[test]
    fn each_segment_is_encoded_on_its_own() {
        let s = ProjectSlug::parse("gh/my org%/repo?#.x_y-z~").unwrap_err();
        assert!(s.contains("spaces"), "{s}");
        let s = ProjectSlug::parse("gh/ac%me/re?po#1").unwrap();
        assert_eq!(s.encoded_path(), "gh/ac%25me/re%3Fpo%231");
        assert_eq!(encode_segment("a.b_c-d~e"), "a.b_c-d~e");
        assert_eq!(encode_segment("ü/x"), "%C3%BC%2Fx");
    }

    #[test]
    fn webhook_slugs_are_normalized() {
        assert_eq!(normalize_slug("github/circleci/webhook-service"), "gh/circleci/webhook-service");
        assert_eq!(normalize_slug("bitbucket/o/r"), "bb/o/r");
        assert_eq!(normalize_slug("gh/o/r"), "gh/o/r");
        assert_eq!(normalize_slug("circleci/a/b"), "circleci/a/b");
    }

    #[test]
    fn app_links_use_the_long_vcs_name() {
        assert_eq!(ProjectSlug::parse("gh/acme/api").unwrap().app_path(), "github/acme/api");
        assert_eq!(ProjectSlug::parse("bb/acme/api").unwrap().app_path(), "bitbucket/acme/api");
    }
}
