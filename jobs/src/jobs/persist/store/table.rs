//! The table observations are written to, and the statements that write it, built once from the
//! entity's one column list ([`WRITTEN_COLUMNS`]).

use std::sync::{Arc, LazyLock};

use entity::observations::WRITTEN_COLUMNS;

/// The SQL type of each written column's array in the UNNEST statement, in [`WRITTEN_COLUMNS`]
/// order; the length ties the two lists together at compile time.
const ARRAY_TYPES: [&str; WRITTEN_COLUMNS.len()] = [
    "text",
    "text",
    "text",
    "text",
    "float8",
    "float8",
    "timestamptz",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "int4",
    "int4",
    "int4",
    "text",
    "text",
    "int4",
    "bool",
    "text",
    "timestamptz",
    "text",
    "int4",
    "int8",
];

/// The job's table, `observations`.
pub(crate) static OBSERVATIONS: LazyLock<ObservationTable> =
    LazyLock::new(|| ObservationTable::new("observations"));

/// A table with the shape of `observations` and the statements that write it. The statements are
/// passed to sqlx as [`sqlx::AssertSqlSafe`]: they are built from the entity's column list and a
/// checked plain name, never from input. The job writes
/// [`OBSERVATIONS`]; the benchmark passes a scratch copy (`LIKE observations INCLUDING ALL`).
#[derive(Debug, Clone)]
pub(crate) struct ObservationTable {
    /// `COPY <table> (columns) FROM STDIN (FORMAT binary)`.
    copy: Arc<str>,
    /// `INSERT INTO <table> (columns) SELECT * FROM UNNEST(...) ON CONFLICT ... DO NOTHING`.
    unnest: Arc<str>,
    /// Which `(location_key, observed_at, source)` of a batch `<table>` holds already.
    existing: Arc<str>,
}

impl ObservationTable {
    /// The statements for `name`, which is spliced into SQL as an identifier, so it is a plain
    /// lower-case name chosen by the code (never input).
    pub(crate) fn new(name: &str) -> Self {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name:?} is not a plain table name"
        );
        let columns = WRITTEN_COLUMNS.join(", ");
        let arrays: Vec<String> = ARRAY_TYPES
            .iter()
            .enumerate()
            .map(|(i, ty)| format!("${}::{ty}[]", i + 1))
            .collect();
        Self {
            copy: format!("COPY {name} ({columns}) FROM STDIN (FORMAT binary)").into(),
            unnest: format!(
                "INSERT INTO {name} ({columns}) SELECT * FROM UNNEST({}) \
                 ON CONFLICT (location_key, observed_at, source) DO NOTHING",
                arrays.join(", ")
            )
            .into(),
            existing: format!(
                "SELECT b.location_key, b.observed_at, b.source \
                 FROM UNNEST($1::text[], $2::timestamptz[], $3::text[]) AS b(location_key, observed_at, source) \
                 WHERE EXISTS (SELECT 1 FROM {name} o \
                 WHERE o.location_key = b.location_key AND o.observed_at = b.observed_at \
                 AND o.source = b.source)"
            )
            .into(),
        }
    }

    /// The binary COPY statement, columns in [`WRITTEN_COLUMNS`] order.
    pub(crate) fn copy_statement(&self) -> &Arc<str> {
        &self.copy
    }

    /// The UNNEST insert, one array parameter per column in [`WRITTEN_COLUMNS`] order.
    pub(crate) fn unnest_statement(&self) -> &Arc<str> {
        &self.unnest
    }

    /// The existence check run before a checked COPY.
    pub(crate) fn existing_statement(&self) -> &Arc<str> {
        &self.existing
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{IdenStatic, Iterable};

    use super::*;

    /// The text between the first `(` and the next `)`, split on commas.
    fn column_list(statement: &str) -> Vec<&str> {
        statement
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(cols, _)| cols.split(',').map(str::trim).collect())
            .unwrap()
    }

    #[test]
    fn written_columns_exist_in_the_entity_and_in_the_statement() {
        let entity: Vec<&str> = entity::observations::Column::iter().map(|c| c.as_str()).collect();
        for column in WRITTEN_COLUMNS {
            assert!(entity.contains(&column), "{column} is not an observations column");
        }
        let table = ObservationTable::new("observations");
        assert_eq!(column_list(table.unnest_statement()), WRITTEN_COLUMNS);
        assert!(
            table
                .unnest_statement()
                .contains(&format!("${}::", WRITTEN_COLUMNS.len()))
        );
        assert_eq!(column_list(table.copy_statement()), WRITTEN_COLUMNS);
        let rejected: Vec<&str> = entity::rejected_records::Column::iter()
            .map(|c| c.as_str())
            .collect();
        for column in [
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            "key",
            "payload",
            "error_class",
            "reason",
        ] {
            assert!(rejected.contains(&column), "{column}");
        }
    }

    #[test]
    fn the_table_name_is_the_statements_target() {
        let table = ObservationTable::new("observations_copy");
        assert!(table.copy_statement().starts_with("COPY observations_copy ("));
        assert!(
            table
                .unnest_statement()
                .starts_with("INSERT INTO observations_copy (")
        );
        assert!(table.existing_statement().contains("FROM observations_copy o"));
    }
}
