//! The JSON Schema of policy files, generated from the [`Policy`](crate::model::Policy) types.
//!
//! Published at `docs/policy.schema.json` for editors (YAML language servers read JSON
//! Schema). A test keeps the published file identical to what the types generate.

/// The schema as pretty-printed JSON with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(crate::model::Policy);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed `docs/policy.schema.json` is exactly what the types generate. To update
    /// it after changing the types: `MECGW_BLESS=1 cargo test -p mecgw-policy schema`.
    #[test]
    fn published_schema_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policy.schema.json");
        let generated = json_schema();
        if std::env::var_os("MECGW_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/policy.schema.json is out of date: run `MECGW_BLESS=1 cargo test -p mecgw-policy schema`"
        );
        let v: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert_eq!(v["title"], "mecgw privacy policy");
        for key in ["budget", "kinds", "releases", "destinations", "tests"] {
            assert!(v["properties"][key].is_object(), "{key}");
        }
        assert!(generated.contains("pseudonymise") && generated.contains("max_groups"));
    }
}
