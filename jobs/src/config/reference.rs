//! The two printed views of the configuration: the reference of every field (`weatherflow config
//! --reference`, also the table in `docs/configuration.md`) and the effective values with their
//! origins (`weatherflow config`).

use super::{Config, OTHER_VARIABLES, Origins};

/// One row of the effective configuration: `section.field`, the value (secrets masked), its origin.
#[derive(Debug)]
pub(crate) struct Effective {
    /// `section.field`.
    pub path: String,
    /// The value as shown, secrets masked.
    pub value: String,
    /// `default`, `file <path>` or `env <VAR>`.
    pub origin: String,
}

/// Every field's effective value and origin, in reference order.
pub(crate) fn effective(config: &Config, origins: &Origins) -> Vec<Effective> {
    let mut rows = Vec::new();
    for section in config.sections() {
        for doc in section.fields() {
            let path = doc.path();
            rows.push(Effective {
                value: section.show(doc.name).unwrap_or_default(),
                origin: origins.of(&path).to_string(),
                path,
            });
        }
    }
    rows
}

/// The reference as Markdown: a table of every field (environment variable, type, default, doc
/// comment), then the binary's other variables.
pub(crate) fn markdown() -> String {
    let defaults = Config::default();
    let mut out = String::from(
        "| Field | Environment variable | Type | Default | Description |\n|---|---|---|---|---|\n",
    );
    for section in defaults.sections() {
        for doc in section.fields() {
            let default = section.show(doc.name).unwrap_or_default();
            let default = match default.as_str() {
                "" | "(none)" => "—".to_owned(),
                _ => format!("`{default}`"),
            };
            out.push_str(&format!(
                "| `{}` | `{}` | {} | {} | {} |\n",
                doc.path(),
                doc.env_var(),
                (doc.type_name)(),
                default,
                cell(&doc.summary()),
            ));
        }
    }
    out.push_str("\nOther variables the binary reads:\n\n");
    for (var, what) in OTHER_VARIABLES {
        out.push_str(&format!("- `{var}`: {what}\n"));
    }
    out
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::field::FieldValue;

    const BEGIN: &str = "<!-- BEGIN GENERATED: weatherflow config --reference -->";
    const END: &str = "<!-- END GENERATED -->";

    /// The names serde accepts where `toml` puts `__nope`, read from its "expected one of" message.
    fn accepted(toml: &str) -> Vec<String> {
        let err = toml::from_str::<Config>(toml)
            .expect_err("an unknown field")
            .to_string();
        let expected = &err[err.find("expected").expect("a list of expected names")..];
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    /// The reference lists exactly the fields serde deserializes, section by section.
    #[test]
    fn reference_lists_every_field_the_file_accepts() {
        let config = Config::default();
        let sections: Vec<&str> = config.sections().iter().map(|s| s.fields()[0].section).collect();
        assert_eq!(accepted("__nope = 1"), sections);
        let table = markdown();
        for section in config.sections() {
            let fields = section.fields();
            let names: Vec<&str> = fields.iter().map(|d| d.name).collect();
            assert_eq!(accepted(&format!("[{}]\n__nope = 1", fields[0].section)), names);
            for doc in fields {
                assert!(table.contains(&format!("| `{}` |", doc.path())), "{}", doc.path());
                assert!(!doc.summary().is_empty(), "{} has no doc comment", doc.path());
            }
        }
    }

    #[test]
    fn reference_shows_types_defaults_and_docs() {
        let table = markdown();
        let row = table
            .lines()
            .find(|l| l.starts_with("| `persist.batch_size` |"))
            .expect("persist.batch_size row");
        assert!(row.contains("`WEATHERFLOW_PERSIST_BATCH_SIZE`"), "{row}");
        assert!(row.contains("| unsigned integer |"), "{row}");
        assert!(row.contains("| `5000` |"), "{row}");
        assert!(
            row.contains("A batch is written when it holds this many records"),
            "{row}"
        );
        let url = table
            .lines()
            .find(|l| l.starts_with("| `database.url` |"))
            .expect("url row");
        assert!(
            url.contains("`DATABASE_URL`") && url.contains("weatherflow:***@"),
            "{url}"
        );
        let replica = table
            .lines()
            .find(|l| l.starts_with("| `scheduler.replica` |"))
            .expect("row");
        assert!(
            replica.contains(&format!("| {} | — |", Option::<String>::type_name())),
            "{replica}"
        );
    }

    #[test]
    fn docs_configuration_md_matches_the_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let start = text.find(BEGIN).map(|i| i + BEGIN.len()).expect("BEGIN marker");
        let len = text[start..].find(END).expect("END marker");
        assert!(
            text[start..start + len].trim() == markdown().trim(),
            "docs/configuration.md differs from `weatherflow config --reference`; \
             regenerate it with scripts/gen-docs.sh"
        );
    }
}
