//! `rejected_records`: the database side of the dead-letter queue.

use sea_orm::entity::prelude::*;

/// A record the persist job refused, with the complete raw message. Unique on
/// `(kafka_topic, kafka_partition, kafka_offset)`, so a replayed rejection is stored once. The
/// `redrive*` columns record what `weatherflow rejects redrive` made of it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rejected_records")]
pub struct Model {
    /// Surrogate key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// When it was rejected.
    pub received_at: DateTimeUtc,
    /// Source topic.
    pub kafka_topic: String,
    /// Source partition.
    pub kafka_partition: i32,
    /// Source offset.
    pub kafka_offset: i64,
    /// The message key, raw (may be absent or not UTF-8).
    pub key: Option<Vec<u8>>,
    /// The message value, raw and complete (may be absent).
    pub payload: Option<Vec<u8>>,
    /// Machine-readable class, e.g. `invalid_json`, `out_of_range`.
    pub error_class: String,
    /// Human-readable reason. A re-drive that refuses the record again replaces class and reason with
    /// the new ones; one that stores it leaves them, saying why it was quarantined.
    pub reason: String,
    /// How many re-drives tried this record (`weatherflow rejects redrive`).
    pub redrive_attempts: i32,
    /// When a re-drive last tried it.
    pub last_redrive_at: Option<DateTimeUtc>,
    /// When a re-drive stored it (it passed validation and its observation is in `observations`);
    /// `None` while it is still quarantined. A re-driven row is kept, not deleted.
    pub redriven_at: Option<DateTimeUtc>,
    /// The `job_runs` row of the re-drive that last tried it (that stored it, once `redriven_at` is
    /// set); cleared when that row is deleted.
    pub redrive_run_id: Option<i64>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
