//! The audit projection: one timeline row per event of each tenant, with the event's data as
//! JSON where sealed values and digests are replaced by `"[redacted]"`. It reads the stored
//! JSON rather than the decoded event, so an event type this build does not know still shows.

use eventlog::RecordedEvent;
use serde_json::Value;
use sqlx::AnyConnection;

use crate::error::{Error, Result};

/// Rows are written in multi-row inserts of this many (8 parameters each, well under both
/// databases' limits).
const ROWS_PER_INSERT: usize = 400;

pub(crate) struct TimelineRow {
    tenant: String,
    seq: i64,
    position: i64,
    event_id: String,
    event_type: String,
    occurred_at: String,
    actor: String,
    details: String,
}

/// Timeline rows waiting for the end of the batch.
#[derive(Default)]
pub(crate) struct AuditBatch {
    rows: Vec<TimelineRow>,
}

/// What the timeline shows of a value: sealed values and digests never appear.
pub fn redact(value: &mut Value) {
    match value {
        Value::String(s) if s.starts_with("sealed:") => *s = "[redacted]".into(),
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if key.ends_with("_digest") {
                    *field = Value::String("[redacted]".into());
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn number(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::Corrupt(format!("number {n} out of range")))
}

/// Queues the timeline row of `recorded`; a deletion in an MSP stream removes the customer's
/// timeline at once.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    batch: &mut AuditBatch,
    recorded: &RecordedEvent,
) -> Result<()> {
    let not_json = |e: serde_json::Error| Error::Apply {
        event_type: recorded.event_type.clone(),
        seq: recorded.seq,
        reason: format!("data is not JSON: {e}"),
    };
    let data = &recorded.data;
    let deletion = recorded.event_type == "CustomerTenantDeleted";
    // Most events hold nothing to redact: those are checked to be JSON without building a
    // tree, and stored as they are. Anything that might hide a sealed value or a digest (or
    // spell one with escapes) is parsed and redacted.
    let maybe_secret = [&b"sealed:"[..], b"_digest", b"\\"]
        .iter()
        .any(|needle| data.windows(needle.len()).any(|w| w == *needle));
    let (details, tree) = if deletion || maybe_secret {
        let mut tree: Value = serde_json::from_slice(data).map_err(not_json)?;
        redact(&mut tree);
        (tree.to_string(), Some(tree))
    } else {
        serde_json::from_slice::<serde::de::IgnoredAny>(data).map_err(not_json)?;
        let text = String::from_utf8(data.clone()).map_err(|e| Error::Apply {
            event_type: recorded.event_type.clone(),
            seq: recorded.seq,
            reason: format!("data is not UTF-8: {e}"),
        })?;
        (text, None)
    };
    if let Some(deleted) = tree.filter(|_| deletion) {
        let customer = deleted
            .get("customer_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Apply {
                event_type: recorded.event_type.clone(),
                seq: recorded.seq,
                reason: "has no customer_id".into(),
            })?
            .to_owned();
        batch.rows.retain(|row| row.tenant != customer);
        delete_tenant(conn, &customer).await?;
    }
    batch.rows.push(TimelineRow {
        tenant: recorded.stream.0.to_string(),
        seq: number(recorded.seq)?,
        position: number(recorded.position)?,
        event_id: recorded.id.to_string(),
        event_type: recorded.event_type.clone(),
        occurred_at: recorded.occurred_at.to_rfc3339(),
        actor: recorded.actor.clone(),
        details,
    });
    Ok(())
}

/// Writes the queued rows.
pub(crate) async fn flush(conn: &mut AnyConnection, batch: &mut AuditBatch) -> Result<()> {
    // SQLite looks numbered parameters up by name, one linear scan each: anonymous `?` keeps
    // a multi-row insert linear. PostgreSQL only knows `$n`.
    let numbered = conn.backend_name() != "SQLite";
    for chunk in batch.rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO timeline (tenant_id, seq, position, event_id, event_type, occurred_at, \
             actor, details) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for column in 0..8 {
                if column > 0 {
                    sql.push_str(", ");
                }
                if numbered {
                    sql.push_str(&format!("${}", i * 8 + column + 1));
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
        let mut query = sqlx::query(&sql);
        for row in chunk {
            query = query
                .bind(row.tenant.as_str())
                .bind(row.seq)
                .bind(row.position)
                .bind(row.event_id.as_str())
                .bind(row.event_type.as_str())
                .bind(row.occurred_at.as_str())
                .bind(row.actor.as_str())
                .bind(row.details.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    batch.rows.clear();
    Ok(())
}

/// Removes every row of `tenant`.
pub(crate) async fn delete_tenant(conn: &mut AnyConnection, tenant: &str) -> Result<()> {
    for sql in [
        "DELETE FROM timeline WHERE tenant_id = $1",
        "DELETE FROM quarantine WHERE tenant_id = $1",
    ] {
        sqlx::query(sql)
            .bind(tenant.to_owned())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
