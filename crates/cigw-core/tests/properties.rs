//! Property-based tests of what cigw reads from outside: configuration text and values, requested
//! parameters and git refs. None may panic on any input; what is accepted keeps the documented
//! caps; what is refused names the key, parameter or field.

use std::collections::BTreeMap;

use cigw_core::config::{Problems, Settings, load_raw, load_raw_from_str};
use cigw_core::git_ref::{MAX_REF_NAME_BYTES, MAX_SHA_LEN, MIN_SHA_LEN};
use cigw_core::params::{self, MAX_PARAMETERS, MAX_VALUE_CHARS};
use cigw_core::{GitRef, ParamType, ParamValue, ParameterSpec};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;
use serde_json::Value;

/// Any JSON value: scalars of every kind (long strings, numeric and boolean strings included)
/// nested a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        ".{0,40}".prop_map(Value::from),
        ".{500,530}".prop_map(Value::from),
        " ?-?[0-9]{1,25} ?".prop_map(Value::from),
        prop_oneof![Just("true"), Just("false"), Just("True"), Just("")].prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_type() -> impl Strategy<Value = ParamType> {
    prop_oneof![Just(ParamType::String), Just(ParamType::Boolean), Just(ParamType::Integer)]
}

/// A declared value (default or enum value) of type `kind`, as configuration loading allows.
fn arb_value_of(kind: ParamType) -> BoxedStrategy<ParamValue> {
    match kind {
        ParamType::Boolean => any::<bool>().prop_map(ParamValue::Bool).boxed(),
        ParamType::Integer => prop_oneof![any::<i64>(), -3i64..3].prop_map(ParamValue::Int).boxed(),
        ParamType::String => {
            prop_oneof![".{0,20}", "[a-c0-9]{0,2}", Just("true".to_string())].prop_map(ParamValue::String).boxed()
        }
    }
}

/// A declaration that passes [`ParameterSpec::problems`] (what configuration loading checks).
fn arb_spec() -> impl Strategy<Value = ParameterSpec> {
    (arb_type(), any::<bool>(), any::<bool>())
        .prop_flat_map(|(kind, secret, required)| {
            (prop::option::of(prop::collection::vec(arb_value_of(kind), 1..4)), prop::option::of(arb_value_of(kind)))
                .prop_map(move |(allowed, default)| ParameterSpec {
                    name: "p".into(),
                    kind,
                    default,
                    allowed,
                    required,
                    secret,
                    description: None,
                })
        })
        .prop_filter("a valid declaration", |spec| spec.problems().is_empty())
}

/// Does the problem at `problem` belong to the key at `key` (one is a prefix of the other)?
fn related(problem: &str, key: &str) -> bool {
    let within = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}.")) || a.starts_with(&format!("{b}["));
    within(problem, key) || within(key, problem)
}

/// Set `value` at the dotted `path` of `tree`, creating tables on the way.
fn set(tree: &mut Value, path: &str, value: Value) {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !node.get(*part).is_some_and(Value::is_object) {
            node[*part] = Value::Object(Default::default());
        }
        node = node.get_mut(*part).expect("just set");
    }
    node[parts[parts.len() - 1]] = value;
}

/// Keys every configuration has, with the target `t` and its parameter `p` of the base tree.
const KNOWN_KEYS: &[&str] = &[
    "server.listen",
    "server.metrics_listen",
    "server.public_url",
    "server.body_limit_bytes",
    "server.request_timeout",
    "server.shutdown_grace",
    "database.url",
    "database.durability",
    "database.max_connections",
    "database.statement_timeout",
    "auth.admin_token",
    "auth.session_ttl",
    "retention.runs",
    "retention.idempotency_keys",
    "timings.poll_initial",
    "timings.lease",
    "timings.reconcile_grace",
    "timings.dispatch_delay",
    "targets.t.provider",
    "targets.t.account",
    "targets.t.default_branch",
    "targets.t.max_duration",
    "targets.t.concurrency",
    "targets.t.description",
    "targets.t.parameters.p.type",
    "targets.t.parameters.p.default",
    "targets.t.parameters.p.enum",
    "targets.t.parameters.p.required",
    "targets.t.parameters.p.secret",
    "targets.t.parameters.p.colour",
    "targets.t.parameters",
    "targets.t",
    "server.lisen",
    "colour",
];

/// The defaults plus a valid target `t` with a string parameter `p`: no problems at all.
fn base_tree() -> Value {
    let mut raw = load_raw(None).expect("the defaults load");
    set(&mut raw, "targets.t.provider", "circleci".into());
    set(&mut raw, "targets.t.account", "a".into());
    set(&mut raw, "targets.t.parameters.p.type", "string".into());
    raw
}

fn check(raw: &Value) -> Problems {
    let mut problems = Problems::default();
    let settings = Settings::from_raw(raw, &mut problems);
    for (name, target) in &settings.targets {
        target.to_spec(name, &format!("targets.{name}"), &mut problems);
    }
    problems
}

/// Configuration text built from TOML-like pieces, valid or not.
fn tomlish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("server".to_string()),
        Just("targets.t".to_string()),
        Just("targets.t.parameters.p".to_string()),
        Just("timings".to_string()),
        "[a-z_.\"]{0,12}",
    ];
    let line = prop_oneof![
        key.clone().prop_map(|k| format!("[{k}]")),
        key.prop_map(|k| format!("[[{k}]]")),
        ("[a-z_]{1,10}", arb_json()).prop_map(|(k, v)| format!("{k} = {v}")),
        ("[a-z_]{1,10}", "[0-9a-z\"'\\[\\]{}.,=: -]{0,20}").prop_map(|(k, v)| format!("{k} = {v}")),
        ".{0,30}",
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn configuration_text_never_panics(text in tomlish()) {
        if let Ok(raw) = load_raw_from_str(&text, &[]) {
            let problems = check(&raw);
            for p in problems.errors() {
                prop_assert!(!p.message.is_empty());
            }
        }
    }

    #[test]
    fn any_value_at_a_known_key_never_panics_and_problems_name_that_key(
        key in prop::sample::select(KNOWN_KEYS),
        value in arb_json(),
    ) {
        let mut raw = base_tree();
        set(&mut raw, key, value);
        let problems = check(&raw);
        for p in problems.errors() {
            prop_assert!(related(&p.path, key), "problem `{}` for a change at `{key}`", p);
        }
    }

    #[test]
    fn parameter_values_validate_to_the_declared_type_or_name_the_parameter(
        spec in arb_spec(),
        raw in prop::option::of(arb_json()),
    ) {
        let (kind, secret) = (spec.kind, spec.secret);
        let requested: BTreeMap<String, Value> = raw.clone().map(|v| ("p".to_string(), v)).into_iter().collect();
        match params::validate(std::slice::from_ref(&spec), &requested) {
            Ok(values) => {
                if let Some(entry) = values.get("p") {
                    prop_assert_eq!(entry.value.kind(), kind);
                    prop_assert_eq!(entry.secret, secret);
                    if let (Some(_), ParamValue::String(s)) = (&raw, &entry.value) {
                        prop_assert!(s.chars().count() <= MAX_VALUE_CHARS);
                    }
                }
            }
            Err(errors) => {
                prop_assert!(errors.too_many.is_none());
                prop_assert!(!errors.problems.is_empty());
                for p in &errors.problems {
                    prop_assert_eq!(&p.name, "p");
                    prop_assert!(!p.message.is_empty());
                    prop_assert!(p.message.len() < 400, "{}", p.message);
                }
            }
        }
    }

    #[test]
    fn secret_values_and_their_allowed_values_never_appear_in_errors(
        kind in arb_type(),
        allowed in prop::option::of(prop::collection::vec("[A-Z]{12}", 1..4)),
        given in "[A-Z]{12}",
        nest in 0usize..3,
    ) {
        let spec = ParameterSpec {
            name: "p".into(),
            kind,
            default: None,
            allowed: allowed.clone().map(|a| a.into_iter().map(ParamValue::String).collect()),
            required: true,
            secret: true,
            description: None,
        };
        let mut raw = Value::from(given.clone());
        for _ in 0..nest {
            raw = Value::Array(vec![raw]);
        }
        let requested = BTreeMap::from([("p".to_string(), raw)]);
        if let Err(errors) = params::validate(&[spec], &requested) {
            let shown = format!("{errors} {errors:?} {}", serde_json::to_string(&errors).unwrap());
            prop_assert!(!shown.contains(&given), "{shown}");
            for a in allowed.iter().flatten() {
                prop_assert!(!shown.contains(a.as_str()), "{shown}");
            }
        }
    }

    #[test]
    fn any_parameter_map_never_panics_and_stays_within_the_caps(
        requested in prop::collection::btree_map(
            prop_oneof![".{0,4}", ".{126,130}", Just("p".to_string())], arb_json(), 0..8),
        extra in 0usize..2,
    ) {
        let mut requested = requested;
        if extra == 1 {
            requested.extend((0..=MAX_PARAMETERS).map(|i| (format!("n{i}"), Value::from(i))));
        }
        let specs = [ParameterSpec {
            name: "p".into(), kind: ParamType::String, default: None, allowed: None, required: false, secret: false,
            description: None,
        }];
        match params::validate(&specs, &requested) {
            Ok(values) => prop_assert!(values.len() <= MAX_PARAMETERS),
            Err(errors) if requested.len() > MAX_PARAMETERS => {
                prop_assert_eq!(errors.too_many, Some(requested.len()));
                prop_assert!(errors.problems.is_empty());
            }
            Err(errors) => {
                for p in &errors.problems {
                    prop_assert!(requested.contains_key(&p.name), "{} names no requested parameter", p.name);
                }
            }
        }
    }

    #[test]
    fn refs_never_panic_and_accepted_ones_are_clean_and_capped(
        branch in prop::option::of(prop_oneof![any::<String>(), "[a-z/._@{}~^:-]{0,12}", ".{250,260}"]),
        tag in prop::option::of(any::<String>()),
        sha in prop::option::of(prop_oneof![any::<String>(), "[0-9a-fA-F]{0,45}"]),
    ) {
        let git_ref = GitRef { branch, tag, sha };
        match git_ref.check() {
            Ok(()) => {
                prop_assert!(git_ref.branch.is_none() || git_ref.tag.is_none());
                for name in git_ref.branch.iter().chain(git_ref.tag.iter()) {
                    prop_assert!(!name.is_empty() && name.len() <= MAX_REF_NAME_BYTES);
                    prop_assert!(name.chars().all(|c| !c.is_control() && !c.is_whitespace()), "{name:?}");
                    prop_assert!(!name.contains(".."), "{name:?}");
                }
                if let Some(sha) = &git_ref.sha {
                    prop_assert!((MIN_SHA_LEN..=MAX_SHA_LEN).contains(&sha.len()));
                    prop_assert!(sha.chars().all(|c| c.is_ascii_hexdigit()));
                }
            }
            Err(problem) => {
                let field = problem.field.unwrap_or("ref");
                prop_assert!(problem.message.contains('`'), "{}", problem.message);
                if let Some(f) = problem.field {
                    prop_assert!(problem.message.starts_with(&format!("`{f}`")), "{} for {field}", problem.message);
                }
            }
        }
    }

    #[test]
    fn a_hidden_character_anywhere_in_a_ref_is_refused(
        head in "[a-z0-9/._-]{0,20}",
        tail in "[a-z0-9/._-]{0,20}",
        hidden in prop::sample::select(vec![
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}', '\u{2060}', '\u{FEFF}', '\u{AD}', '\u{61C}',
            '\u{0}', '\u{1B}', '\u{7F}', '\u{85}', '\u{2028}', '\u{2029}', '\u{3000}', '\t', '\n', '\r',
        ]),
        as_tag in any::<bool>(),
    ) {
        let name = format!("{head}{hidden}{tail}");
        let git_ref = if as_tag { GitRef::tag(name) } else { GitRef::branch(name) };
        let problem = git_ref.check().unwrap_err();
        prop_assert_eq!(problem.field, Some(if as_tag { "tag" } else { "branch" }));
    }
}
