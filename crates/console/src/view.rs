//! Reading API bodies in templates: `item.t("/vault/name")` is the text at a JSON pointer.

use serde_json::Value;

pub(crate) trait Text {
    /// The value at `pointer` as text: strings as they are, lists joined by ", ", absent as "".
    fn t(&self, pointer: &str) -> String;
    /// The list at `pointer` (empty when absent).
    fn items(&self, pointer: &str) -> Vec<Value>;
}

impl Text for Value {
    fn t(&self, pointer: &str) -> String {
        match self.pointer(pointer) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            Some(other) => other.to_string(),
        }
    }

    fn items(&self, pointer: &str) -> Vec<Value> {
        self.pointer(pointer)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

/// A state as people read it: `pre_activation` → "Pre-active".
pub(crate) fn state_label(state: &str) -> &'static str {
    match state {
        "pre_activation" => "Pre-active",
        "active" => "Active",
        "deactivated" => "Deactivated",
        "destroyed" => "Destroyed",
        "compromised" => "Compromised",
        "archived" => "Archived",
        "unarchived" => "Unarchived",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_reads_strings_numbers_lists_and_absence() {
        let v = json!({"a": {"b": "x"}, "n": 3, "l": ["p", "q"], "z": null});
        assert_eq!(v.t("/a/b"), "x");
        assert_eq!(v.t("/n"), "3");
        assert_eq!(v.t("/l"), "p, q");
        assert_eq!(v.t("/z"), "");
        assert_eq!(v.t("/missing"), "");
        assert_eq!(v.items("/l").len(), 2);
    }
}
