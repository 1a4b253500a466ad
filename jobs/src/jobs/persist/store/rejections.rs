//! The rejected_records write: every quarantined record, byte for byte, once.

use super::RejectedRecord;

/// The rejected_records write. `ON CONFLICT DO NOTHING` on the source offset: a rejection replayed
/// after a crash is stored once.
const INSERT_REJECTIONS: &str = "\
INSERT INTO rejected_records (kafka_topic, kafka_partition, kafka_offset, key, payload, error_class, reason) \
SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::bytea[], $5::bytea[], $6::text[], $7::text[]) \
ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING";

/// Inserts rejections with [`INSERT_REJECTIONS`]; returns how many rows are new.
pub(crate) async fn insert_rejections(
    conn: &mut sqlx::PgConnection,
    records: &[&RejectedRecord],
) -> Result<u64, sqlx::Error> {
    if records.is_empty() {
        return Ok(0);
    }
    let topic: Vec<&str> = records.iter().map(|r| &*r.lineage.topic).collect();
    let partition: Vec<i32> = records.iter().map(|r| r.lineage.partition).collect();
    let offset: Vec<i64> = records.iter().map(|r| r.lineage.offset).collect();
    let key: Vec<Option<&[u8]>> = records.iter().map(|r| r.raw.key.as_deref()).collect();
    let payload: Vec<Option<&[u8]>> = records.iter().map(|r| r.raw.value.as_deref()).collect();
    let class: Vec<&str> = records.iter().map(|r| r.rejection.class.as_str()).collect();
    let reason: Vec<&str> = records.iter().map(|r| r.rejection.reason.as_str()).collect();
    let result = sqlx::query(INSERT_REJECTIONS)
        .bind(topic)
        .bind(partition)
        .bind(offset)
        .bind(key)
        .bind(payload)
        .bind(class)
        .bind(reason)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}
