//! The results schema's version: every result JSON migbench writes
//! (`<scenario>.result.json`, `bench.json`, `<scenario>.checks.json`, the
//! file of `migbench migrate --json`) carries a top-level `schema_version`,
//! and everything that reads results back (`migbench check`, `migbench
//! report`) refuses a version it does not know, rather than misreading it.
//!
//! Bump [`SCHEMA_VERSION`] when a field changes meaning or a required field
//! is added; adding an optional field (`#[serde(default)]`) needs no bump.
//! Files written before the field existed have version 1's shape, so a file
//! without `schema_version` is read as version 1.

use serde_json::Value;
use thiserror::Error;

/// The version this build writes.
pub const SCHEMA_VERSION: u32 = 1;
/// The oldest version this build still reads.
pub const OLDEST_READABLE: u32 = 1;

/// A result file's `schema_version` is not one this build can read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    /// A version outside `OLDEST_READABLE..=SCHEMA_VERSION`.
    #[error(
        "{source_name}: results schema version {found} is not supported: this migbench reads versions \
         {OLDEST_READABLE} to {SCHEMA_VERSION}; {}",
        if *found > u64::from(SCHEMA_VERSION) {
            "it was written by a newer migbench, so read it with that version (or regenerate the results with this one)"
        } else {
            "regenerate the results with this migbench"
        }
    )]
    Unsupported {
        /// The file.
        source_name: String,
        /// The version found.
        found: u64,
    },
    /// `schema_version` is there but not a non-negative integer.
    #[error("{source_name}: `schema_version` is {found}, expected an integer such as {SCHEMA_VERSION}")]
    Malformed {
        /// The file.
        source_name: String,
        /// The value found, as JSON.
        found: String,
    },
}

/// The version a parsed result file declares (1 when it has none), checked
/// against what this build reads. `source_name` names the file in errors.
pub fn check(v: &Value, source_name: &str) -> Result<u32, SchemaError> {
    let Some(found) = v.as_object().and_then(|o| o.get("schema_version")) else {
        return Ok(1);
    };
    let n = found
        .as_u64()
        .ok_or_else(|| SchemaError::Malformed { source_name: source_name.to_string(), found: found.to_string() })?;
    if (u64::from(OLDEST_READABLE)..=u64::from(SCHEMA_VERSION)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(SchemaError::Unsupported { source_name: source_name.to_string(), found: n })
    }
}

/// `v` with `schema_version` set to [`SCHEMA_VERSION`] (for JSON built from
/// a type that has no such field, e.g. `bench-suites`' report). A `v` that
/// is not an object is returned unchanged.
pub fn stamp(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("schema_version".into(), Value::from(SCHEMA_VERSION));
    }
    v
}

/// The serde default of a `schema_version` field: files without one are
/// version 1.
pub fn default_version() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions() {
        assert_eq!(check(&json!({"a": 1}), "f"), Ok(1));
        assert_eq!(check(&json!({"schema_version": SCHEMA_VERSION}), "f"), Ok(SCHEMA_VERSION));
        let e = check(&json!({"schema_version": SCHEMA_VERSION + 1}), "f.json").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("f.json: results schema version 2 is not supported"), "{m}");
        assert!(m.contains("newer migbench"), "{m}");
        assert!(check(&json!({"schema_version": 0}), "f").unwrap_err().to_string().contains("regenerate"));
        let e = check(&json!({"schema_version": "1"}), "f").unwrap_err();
        assert!(matches!(e, SchemaError::Malformed { .. }), "{e}");
        assert_eq!(stamp(json!({"x": 1}))["schema_version"], json!(SCHEMA_VERSION));
    }
}
