//! Diagnostics while parsing: errors and warnings, each under the path of the field it is
//! about, and the "did you mean" for a misspelt field.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{UnknownFields, parse_duration};

/// Diagnostic collector with path-qualified messages.
pub(super) struct Ctx {
    pub prefix: String,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    unknown: UnknownFields,
}

impl Ctx {
    pub(super) fn new(unknown: UnknownFields) -> Self {
        Ctx {
            prefix: String::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            unknown,
        }
    }
    /// A field the format does not have: an error (as the API server's strict field validation
    /// refuses it), or a warning when unknown fields are allowed. `near` is the field most likely
    /// meant.
    pub(super) fn unknown_field(&mut self, path: &str, near: Option<&str>) {
        let meant = near.map(|n| format!("; did you mean {n:?}?")).unwrap_or_default();
        match self.unknown {
            UnknownFields::Error => self.err(
                path,
                format!("unknown field{meant} (--allow-unknown-fields reads it as a warning and ignores it)"),
            ),
            UnknownFields::Warn => self.warn(path, format!("unknown field (ignored){meant}")),
        }
    }
    pub fn err(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{}{path}: {msg}", self.prefix));
    }
    pub fn warn(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.warnings.push(format!("{}{path}: {msg}", self.prefix));
    }
    pub(super) fn object<'a>(&mut self, v: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            Value::Null => None,
            _ => {
                self.err(path, "expected a mapping");
                None
            }
        }
    }
    pub(super) fn child<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        m.get(key).and_then(|v| self.object(v, &join(path, key)))
    }
    pub(super) fn known(&mut self, m: &Map<String, Value>, path: &str, known: &[&str]) {
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                let near = nearest(k, known);
                self.unknown_field(&join(path, k), near);
            }
        }
    }
    pub(super) fn string(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match m.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.err(&join(path, key), "expected a string");
                None
            }
        }
    }
    pub(super) fn array<'a>(&mut self, m: &'a Map<String, Value>, key: &str, path: &str) -> &'a [Value] {
        match m.get(key) {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => &[],
            Some(_) => {
                self.err(&join(path, key), "expected a list");
                &[]
            }
        }
    }
    pub(super) fn string_map(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(obj) = self.child(m, key, path) {
            for (k, v) in obj {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Number(_) | Value::Bool(_) => {
                        out.insert(k.clone(), v.to_string());
                    }
                    _ => self.err(&format!("{}.{k}", join(path, key)), "expected a string value"),
                }
            }
        }
        out
    }
    pub(super) fn duration_or_never(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<Option<u64>> {
        let s = self.string(m, key, path)?;
        if s == "Never" {
            return Some(None);
        }
        match parse_duration(&s) {
            Ok(v) => Some(Some(v)),
            Err(e) => {
                self.err(
                    &join(path, key),
                    format!("{e}; expected a duration like 720h or \"Never\""),
                );
                None
            }
        }
    }
}

/// The known field `word` is most likely a misspelling of: the closest by edit distance, within a
/// third of its length (at least 1), so `requirments` finds `requirements` and `foo` finds nothing.
pub(super) fn nearest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut last = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let next = (row[j + 1] + 1).min(row[j] + 1).min(last + usize::from(ca != *cb));
                last = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    };
    // Bounded: field names are short; a long unknown key is not compared.
    if word.len() > 64 {
        return None;
    }
    known
        .iter()
        .map(|k| (distance(&word.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
