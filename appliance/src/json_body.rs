//! The one reader of JSON request bodies from outside (the admin API and
//! the agent enrolment of custos-keyd): shared here so that the fuzz target
//! `agent_json` decodes with the very function the key service uses.
//!
//! serde alone is looser than the API document: it reads a struct from a
//! JSON array (`[null, null]`), and `null` for an `Option` field as if the
//! field were left out. So a body is read in two steps (the daemon checks
//! its `Content-Type` first):
//!
//! 1. the bytes are parsed to a [`serde_json::Value`]; the body must be an
//!    object, and no field anywhere may be `null` — no request field of the
//!    API takes `null`: a field left out means "the default" or "unchanged";
//! 2. the value is deserialized through `serde_path_to_error`, so serde's
//!    refusal (wrong type, unknown field with `deny_unknown_fields`, missing
//!    field) becomes a [`BodyError`] naming the field by its path, e.g.
//!    `schedule.time: must be a string, not integer 7`.
//!
//! Nested request objects use [`object`] (`deserialize_with`) so they too
//! refuse an array in place of an object.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::Value;

/// Why a body is not the request's JSON: the path of the offending field
/// (`body` for the body itself) and the rule it breaks, as
/// `message` = `field: rule`. The daemon answers it with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BodyError {}

fn refused(field: impl Into<String>, rule: &str) -> BodyError {
    let field = field.into();
    BodyError {
        message: format!("{field}: {rule}"),
        field,
    }
}

/// Reads a request body that must be a JSON object of `T`'s fields.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| refused("body", &format!("must be a JSON object ({e})")))?;
    from_value(value)
}

/// Reads a parsed body: an object, without `null`, of `T`'s fields.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, BodyError> {
    if !value.is_object() {
        return Err(refused(
            "body",
            &format!("must be a JSON object, not {}", kind(&value)),
        ));
    }
    if let Some(path) = null_at(&value, String::new()) {
        return Err(refused(path, NULL_RULE));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let (field, rule) = describe(&path, &e.into_inner().to_string());
        refused(field, &rule)
    })
}

const NULL_RULE: &str = "must not be null (leave the field out instead)";

/// `deserialize_with` for a nested request object (`Option<T>` field with
/// `#[serde(default)]`): an array in its place is refused, and an error
/// inside it names the inner field (`schedule.time`).
pub fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(d)?;
    if !value.is_object() {
        return Err(D::Error::custom(format!(
            "{NESTED}must be a JSON object, not {}",
            kind(&value)
        )));
    }
    serde_path_to_error::deserialize(value)
        .map(Some)
        .map_err(|e| {
            let path = e.path().to_string();
            let (field, rule) = describe(&path, &e.into_inner().to_string());
            let field = if field == "body" {
                String::new()
            } else {
                field
            };
            D::Error::custom(format!("{NESTED}{field}\u{1f}{rule}"))
        })
}

/// Marks a message from [`object`]: the inner field, U+001F, the rule (or
/// only the rule for the object itself). serde's own messages never start
/// with it.
const NESTED: &str = "\u{1e}";

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The path of the first `null` in `v`, e.g. `schedule.weekday`, `acl[1]`.
fn null_at(v: &Value, path: String) -> Option<String> {
    match v {
        Value::Null => Some(if path.is_empty() { "body".into() } else { path }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| null_at(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            null_at(item, p)
        }),
        _ => None,
    }
}

fn join(path: &str, field: &str) -> String {
    match (path, field) {
        (".", "") | ("", "") => "body".into(),
        (".", f) | ("", f) => f.into(),
        (p, "") => p.into(),
        (p, f) => format!("{p}.{f}"),
    }
}

/// The text between the first pair of backquotes.
fn quoted(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// serde's expectation in the words of the API document.
fn expected(what: &str) -> String {
    let what = what.trim();
    let integer = ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"];
    if integer.contains(&what) {
        "an integer".into()
    } else if what == "a sequence" {
        "an array".into()
    } else if what.starts_with("struct ") || what == "a map" {
        "a JSON object".into()
    } else {
        what.into()
    }
}

/// (field, rule) of a serde error at `path` (serde_path_to_error's form:
/// `.` for the body itself, `schedule.time`, `acl[1]`).
fn describe(path: &str, msg: &str) -> (String, String) {
    if let Some(nested) = msg.strip_prefix(NESTED) {
        return match nested.split_once('\u{1f}') {
            Some((inner, rule)) => (join(path, inner), rule.into()),
            None => (join(path, ""), nested.into()),
        };
    }
    if msg.starts_with("missing field")
        && let Some(f) = quoted(msg)
    {
        return (join(path, f), "is required".into());
    }
    if msg.starts_with("unknown field") {
        let expected = msg
            .split_once(", expected ")
            .map(|(_, e)| format!(" (expected {e})"))
            .unwrap_or_default();
        // serde_path_to_error's path already ends with the unknown field.
        return (
            join(path, ""),
            format!("is not a field of this request{expected}"),
        );
    }
    let wrong = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "));
    if let Some(rest) = wrong
        // serde_json appends " at line L column C" to some messages.
        && let Some((got, want)) = rest
            .split(" at line ")
            .next()
            .unwrap_or(rest)
            .rsplit_once(", expected ")
    {
        return (
            join(path, ""),
            format!("must be {}, not {got}", expected(want)),
        );
    }
    (join(path, ""), msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        time: String,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        n: Option<i64>,
        #[serde(default, deserialize_with = "object")]
        inner: Option<Inner>,
        list: Option<Vec<String>>,
    }

    fn refusal(v: Value) -> String {
        match from_value::<Outer>(v) {
            Ok(o) => panic!("accepted: {o:?}"),
            Err(BodyError { message, .. }) => message,
        }
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        assert_eq!(
            refusal(json!([null, null])),
            "body: must be a JSON object, not an array"
        );
        assert_eq!(refusal(json!({"n": null})), format!("n: {NULL_RULE}"));
        assert_eq!(
            refusal(json!({"list": ["a", null]})),
            format!("list[1]: {NULL_RULE}")
        );
        assert_eq!(
            refusal(json!({"n": "1"})),
            "n: must be an integer, not string \"1\""
        );
        assert_eq!(
            refusal(json!({"n": 1.5})),
            "n: must be an integer, not floating point `1.5`"
        );
        assert!(refusal(json!({"m": 1})).starts_with("m: is not a field of this request"));
        assert_eq!(
            refusal(json!({"inner": ["01:00"]})),
            "inner: must be a JSON object, not an array"
        );
        assert_eq!(refusal(json!({"inner": {}})), "inner.time: is required");
        assert_eq!(
            refusal(json!({"inner": {"time": 7}})),
            "inner.time: must be a string, not integer `7`"
        );
        assert!(
            refusal(json!({"inner": {"time": "x", "y": 1}})).starts_with("inner.y: is not a field")
        );
        assert_eq!(
            refusal(json!({"list": "a"})),
            "list: must be an array, not string \"a\""
        );
        let ok: Outer = from_value(json!({"n": 3, "inner": {"time": "01:00"}})).expect("valid");
        assert_eq!(ok.n, Some(3));
    }
}

#[cfg(test)]
mod registration_tests {
    use super::*;
    use crate::store::Registration;

    #[test]
    fn a_registration_body_reads_as_the_agent_sends_it() {
        let body = br#"{"host_name":"rec1.example.com","domain":"D","shared_secret":"s3cret","csr":"PEM"}"#;
        let reg: Registration = from_slice(body).expect("valid");
        assert_eq!(reg.csr_pem, "PEM");
        assert!(reg.check().is_ok());
        let e = from_slice::<Registration>(
            br#"{"host_name":"h","domain":"D","shared_secret":"s","csr":"c","csr_pem":"c"}"#,
        )
        .expect_err("unknown field");
        assert_eq!(e.field, "csr_pem");
        let e =
            from_slice::<Registration>(br#"{"host_name":"h","domain":"D","shared_secret":"s"}"#)
                .expect_err("missing");
        assert_eq!(e.message, "csr: is required");
        let bad: Registration =
            from_slice(br#"{"host_name":"a b","domain":"D","shared_secret":"s","csr":"c"}"#)
                .expect("decodes");
        assert!(bad.check().is_err());
    }
}
