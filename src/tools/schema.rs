//! Tool-argument validation against the tools' JSON Schemas, through the `jsonschema` crate: the whole standard
//! (nested objects, `items`, `enum` at any level, `anyOf` / `oneOf` / `allOf`, formats, `$ref` inside the schema).
//! Built without network or file resolution, so a schema can never make the process fetch anything.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::Value;

/// Compiles a schema; the error says why the validator cannot use it.
pub fn compile(schema: &Value) -> Result<Arc<Validator>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Validator>>>> = OnceLock::new();
    let key = schema.to_string();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(v.clone());
    }
    let v = Arc::new(jsonschema::validator_for(schema).map_err(|e| format!("not a usable JSON schema: {e}"))?);
    cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, v.clone());
    Ok(v)
}

/// Checks `value` against `schema`; the error names the path of the first offending value (e.g.
/// `arguments.to`, `arguments.tags[1]`).
pub fn validate(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    let validator = compile(schema)?;
    let Some(e) = validator.iter_errors(value).next() else { return Ok(()) };
    let at = e.instance_path().to_string().split('/').skip(1).fold(path.to_string(), |acc, seg| {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.parse::<usize>().is_ok() {
            format!("{acc}[{seg}]")
        } else {
            format!("{acc}.{seg}")
        }
    });
    Err(match e.kind() {
        ValidationErrorKind::Required { property } => format!("missing required argument `{at}.{}`", property.as_str().unwrap_or_default()),
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = declared_properties(schema, &e.instance_path().to_string());
            format!("unknown argument `{at}.{}` (known: {})", unexpected.first().map_or("", String::as_str), known.join(", "))
        }
        _ => format!("`{at}`: {}", truncate(&e.to_string())),
    })
}

/// The property names the schema declares for the object at `pointer` (best effort: nested `properties` and
/// `items`; empty where composition keywords hide them).
fn declared_properties(schema: &Value, pointer: &str) -> Vec<String> {
    let mut s = schema;
    for seg in pointer.split('/').skip(1) {
        match s.pointer(&format!("/properties/{seg}")).or_else(|| s.get("items")) {
            Some(next) => s = next,
            None => return vec![],
        }
    }
    s.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

/// Keeps messages that quote a long value readable (they are shown to the model).
fn truncate(s: &str) -> String {
    if s.chars().count() <= 200 {
        return s.to_string();
    }
    s.chars().take(197).collect::<String>() + "..."
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "value": {"type": "number"}, "unit": {"type": "string", "enum": ["m", "km"]},
            "n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["value", "unit"], "additionalProperties": false})
    }

    #[test]
    fn accepts_valid_and_names_the_bad_field() {
        assert!(validate(&json!({"value": 1.5, "unit": "m", "n": 3.0, "tags": ["a"]}), &schema(), "arguments").is_ok());
        let e = validate(&json!({"value": "1.5", "unit": "m"}), &schema(), "arguments").unwrap_err();
        assert!(e.contains("arguments.value") && e.contains("number"), "{e}");
        let e = validate(&json!({"value": 1}), &schema(), "arguments").unwrap_err();
        assert!(e.contains("missing required argument `arguments.unit`"), "{e}");
        let e = validate(&json!({"value": 1, "unit": "mi"}), &schema(), "arguments").unwrap_err();
        assert!(e.contains("one of"), "{e}");
        let e = validate(&json!({"value": 1, "unit": "m", "x": 1}), &schema(), "arguments").unwrap_err();
        assert!(e.contains("unknown argument `arguments.x`"), "{e}");
        let e = validate(&json!({"value": 1, "unit": "m", "n": 1.5}), &schema(), "arguments").unwrap_err();
        assert!(e.contains("integer"), "{e}");
        let e = validate(&json!({"value": 1, "unit": "m", "tags": ["a", 2]}), &schema(), "arguments").unwrap_err();
        assert!(e.contains("arguments.tags[1]"), "{e}");
    }

    #[test]
    fn full_json_schema_nested_arrays_enums_and_composition() {
        let s = json!({"type": "object", "properties": {
            "filter": {"type": "object", "properties": {
                "field": {"type": "string", "enum": ["name", "date"]},
                "range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}},
                "required": ["field"], "additionalProperties": false},
            "target": {"anyOf": [{"type": "string", "format": "email"}, {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}]},
            "mode": {"oneOf": [{"const": "fast"}, {"const": "slow"}], "default": "fast"}},
            "required": ["filter"]});
        let ok = json!({"filter": {"field": "date", "range": [1, 5]}, "target": {"id": 3}, "mode": "slow"});
        assert!(validate(&ok, &s, "arguments").is_ok());
        assert!(validate(&json!({"filter": {"field": "name"}}), &s, "arguments").is_ok(), "defaults need not be passed");
        let bad = |v: Value| validate(&v, &s, "arguments").unwrap_err();
        let e = bad(json!({"filter": {"field": "size"}}));
        assert!(e.contains("arguments.filter.field") && e.contains("size"), "{e}");
        let e = bad(json!({"filter": {"field": "name", "range": [1, "2"]}}));
        assert!(e.contains("arguments.filter.range[1]"), "{e}");
        let e = bad(json!({"filter": {"field": "name", "range": [1]}}));
        assert!(e.contains("arguments.filter.range"), "{e}");
        let e = bad(json!({"filter": {"field": "name", "x": 1}}));
        assert!(e.contains("unknown argument `arguments.filter.x`") && e.contains("field"), "{e}");
        let e = bad(json!({"filter": {}}));
        assert!(e.contains("missing required argument `arguments.filter.field`"), "{e}");
        assert!(bad(json!({"filter": {"field": "name"}, "target": {"name": 1}})).contains("arguments.target"));
        assert!(bad(json!({"filter": {"field": "name"}, "mode": "medium"})).contains("arguments.mode"));
    }

    #[test]
    fn unusable_schemas_and_remote_refs_are_errors_not_fetches() {
        assert!(compile(&json!({"type": "nonsense"})).unwrap_err().contains("not a usable JSON schema"));
        let e = compile(&json!({"properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}})).unwrap_err();
        assert!(e.contains("not a usable JSON schema"), "{e}");
        let local = json!({"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}});
        assert!(validate(&json!({"a": 1}), &local, "arguments").is_ok() && validate(&json!({"a": "x"}), &local, "arguments").is_err());
    }
}
