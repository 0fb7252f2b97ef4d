//! The subset of JSON Schema that function specs use: `type` (one or a list), `properties`, `required`,
//! `additionalProperties: false`, `enum`, `items`. Unknown keywords are ignored, as JSON Schema does.
use serde_json::Value;

/// Checks `value` against `schema`; the error names the path of the first offending value (e.g.
/// `arguments.to`).
pub fn validate(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    if let Some(ty) = schema.get("type") {
        let ok = match ty {
            Value::String(t) => type_matches(value, t),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_matches(value, t)),
            _ => true,
        };
        if !ok {
            return Err(format!(
                "`{path}` must be of type {}, got {}",
                type_label(ty),
                describe(value)
            ));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!(
                "`{path}` must be one of {}, got {value}",
                list.join(", ")
            ));
        }
    }
    if let Value::Object(obj) = value {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(name) {
                    return Err(format!("missing required argument `{path}.{name}`"));
                }
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => validate(v, sub, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    let known: Vec<&str> = props
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    return Err(format!(
                        "unknown argument `{path}.{k}` (known: {})",
                        known.join(", ")
                    ));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            validate(v, item_schema, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn type_matches(value: &Value, ty: &str) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.as_i64().is_some()
                || value.as_u64().is_some()
                || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn type_label(ty: &Value) -> String {
    match ty {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let mut s = v.to_string();
    if s.len() > 40 {
        s.truncate(s.char_indices().nth(37).map_or(s.len(), |(i, _)| i));
        s.push_str("...");
    }
    format!("{kind} {s}")
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
        assert!(validate(
            &json!({"value": 1.5, "unit": "m", "n": 3.0, "tags": ["a"]}),
            &schema(),
            "arguments"
        )
        .is_ok());
        let e = validate(
            &json!({"value": "1.5", "unit": "m"}),
            &schema(),
            "arguments",
        )
        .unwrap_err();
        assert!(e.contains("arguments.value") && e.contains("number"), "{e}");
        let e = validate(&json!({"value": 1}), &schema(), "arguments").unwrap_err();
        assert!(
            e.contains("missing required argument `arguments.unit`"),
            "{e}"
        );
        let e = validate(&json!({"value": 1, "unit": "mi"}), &schema(), "arguments").unwrap_err();
        assert!(e.contains("one of"), "{e}");
        let e = validate(
            &json!({"value": 1, "unit": "m", "x": 1}),
            &schema(),
            "arguments",
        )
        .unwrap_err();
        assert!(e.contains("unknown argument `arguments.x`"), "{e}");
        let e = validate(
            &json!({"value": 1, "unit": "m", "n": 1.5}),
            &schema(),
            "arguments",
        )
        .unwrap_err();
        assert!(e.contains("integer"), "{e}");
        let e = validate(
            &json!({"value": 1, "unit": "m", "tags": ["a", 2]}),
            &schema(),
            "arguments",
        )
        .unwrap_err();
        assert!(e.contains("arguments.tags[1]"), "{e}");
    }
}
