//! The schema: migrations embedded from the top-level `migrations/` folder.

use rusqlite_migration::{M, Migrations};

/// Every migration, in order. Append only: a released migration never changes.
const LIST: &[M<'static>] = &[
    M::up(include_str!("../../../../migrations/0001_replica.sql")),
    M::up(include_str!("../../../../migrations/0002_backfill.sql")),
    M::up(include_str!(
        "../../../../migrations/0003_search_index_by_store.sql"
    )),
];

/// The migrations as `rusqlite_migration` runs them.
pub(crate) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(LIST);

/// The schema version this binary reads and writes (SQLite's `user_version`).
pub const SCHEMA_VERSION: i64 = LIST.len() as i64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }

    /// Every file in `migrations/` is embedded, in name order, and none is forgotten.
    #[test]
    fn every_migration_file_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        assert_eq!(files.len(), LIST.len(), "{files:?}");
        for (i, name) in files.iter().enumerate() {
            assert!(
                name.starts_with(&format!("{:04}_", i + 1)),
                "migration {name} is out of sequence"
            );
        }
    }
}
