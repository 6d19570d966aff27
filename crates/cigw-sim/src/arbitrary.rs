//! Proptest strategies for provider answers: any JSON, JSON shaped like a provider's objects,
//! timestamps at chrono's edges, status codes and `Retry-After` headers. The adapters' property
//! tests share them (feature `proptest`).

use chrono::{DateTime, TimeZone, Utc};
use cigw_core::CallKind;
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Any JSON value, nested a few levels.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Timestamps as providers might send them, including the edges of what chrono represents.
pub fn any_time_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (-8_000_000_000_000i64..8_000_000_000_000i64).prop_map(|s| {
            Utc.timestamp_opt(s, 0).single().map_or(Value::Null, |t: DateTime<Utc>| Value::from(t.to_rfc3339()))
        }),
        1 => prop::sample::select(vec![
            "+262142-12-31T23:59:59Z",
            "-262143-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999+23:59",
            "1970-01-01T00:00:00-23:59",
            "2026-13-40T25:61:61Z",
            "",
            "not a time",
        ])
        .prop_map(Value::from),
    ]
}

/// A value for a key of a provider object: usually of a plausible kind, sometimes anything.
pub fn field(plausible: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    prop_oneof![12 => plausible, 1 => any_json()]
}

/// One of `options`, or any short text.
pub fn text_of(options: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![prop::sample::select(options).prop_map(Value::from), ".{0,20}".prop_map(Value::from)].boxed()
}

/// An object with any subset of `keys`, each with a value from its strategy.
pub fn shaped(keys: Vec<(&'static str, BoxedStrategy<Value>)>) -> impl Strategy<Value = Value> {
    let parts: Vec<_> =
        keys.into_iter().map(|(k, s)| prop::option::weighted(0.85, field(s)).prop_map(move |v| (k, v))).collect();
    parts.prop_map(|fields| {
        let mut m = Map::new();
        for (k, v) in fields {
            if let Some(v) = v {
                m.insert(k.to_string(), v);
            }
        }
        Value::Object(m)
    })
}

/// Any status code from 100 to 999.
pub fn any_status() -> impl Strategy<Value = StatusCode> {
    (100u16..=999).prop_map(|s| StatusCode::from_u16(s).expect("100..=999 is a valid status"))
}

/// Either kind of provider call.
pub fn any_kind() -> impl Strategy<Value = CallKind> {
    prop_oneof![Just(CallKind::Idempotent), Just(CallKind::StartsBuild)]
}

/// Headers with no `Retry-After`, or one in seconds, as a date or as junk.
pub fn retry_after_headers() -> impl Strategy<Value = HeaderMap> {
    let value = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        "[ -~]{0,40}",
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_string()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_string()),
    ];
    prop::option::of(value).prop_map(|v| {
        let mut h = HeaderMap::new();
        if let Some(v) = v.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(http::header::RETRY_AFTER, v);
        }
        h
    })
}

/// Any instant chrono can represent, to seconds.
pub fn any_now() -> impl Strategy<Value = DateTime<Utc>> {
    (-8_000_000_000_000i64..8_000_000_000_000i64).prop_map(|s| Utc.timestamp_opt(s, 0).single().unwrap_or_default())
}
