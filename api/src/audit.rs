//! The audit export: a tenant's log as NDJSON, one envelope a line (`seq, position, id, type,
//! schema_version, occurred_at, actor, data, prev_hash, hash`, with `tenant`), and the check
//! of such a file with nothing but the file: each line's hash is recomputed from its fields
//! with the log's own canonical encoding, and each line must chain to the one before.
//!
//! `data` is embedded byte for byte as the log stored it (it is JSON), so the recomputed hash
//! covers exactly what was hashed at commit time. Sealed fields stay sealed.

use std::io::BufRead;

use chrono::{DateTime, SecondsFormat, Utc};
use eventlog::encoding::{encode_body, hash_body};
use eventlog::{Digest32, RecordedEvent, StreamId, ZERO_HASH};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// One exported line: an event's envelope as the log holds it.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLine<'a> {
    tenant: Uuid,
    /// The event's place in its tenant's stream: 1, 2, 3, ... without gaps.
    seq: u64,
    /// Its place in the whole log (commit order across tenants).
    position: u64,
    id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    schema_version: u32,
    /// RFC 3339, UTC, nanoseconds.
    #[schemars(extend("format" = "date-time"))]
    occurred_at: String,
    actor: String,
    /// The event's data as stored, byte for byte (sealed fields stay sealed).
    #[serde(borrow)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    data: &'a RawValue,
    /// The hash of the event before (zeros for the first), hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    prev_hash: String,
    /// SHA-256 of the canonical encoding of this envelope and `prev_hash`, hex.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    hash: String,
}

/// Why an export cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("event {seq} of {tenant} holds data that is not JSON")]
pub struct NotJson {
    tenant: Uuid,
    seq: u64,
}

/// The NDJSON line of `event` (without its newline).
pub fn line(event: &RecordedEvent) -> Result<String, NotJson> {
    let not_json = || NotJson {
        tenant: event.stream.0,
        seq: event.seq,
    };
    let text = std::str::from_utf8(&event.data).map_err(|_| not_json())?;
    let data = RawValue::from_string(text.to_owned()).map_err(|_| not_json())?;
    let line = AuditLine {
        tenant: event.stream.0,
        seq: event.seq,
        position: event.position,
        id: event.id,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        occurred_at: event
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::Nanos, true),
        actor: event.actor.clone(),
        data: &data,
        prev_hash: event.prev_hash.to_hex(),
        hash: event.hash.to_hex(),
    };
    serde_json::to_string(&line).map_err(|_| not_json())
}

/// What checking an export found.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub tenant: Option<Uuid>,
    /// Lines that check, from the first up to the first that does not.
    pub events: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// The first line that does not check: its line number and why.
    pub broken: Option<(u64, String)>,
}

impl FileReport {
    pub fn is_valid(&self) -> bool {
        self.broken.is_none()
    }
}

/// Checks an export read from `input`: every line's hash recomputed from its fields, the chain
/// unbroken from seq 1 (or from the first line's `prev_hash` when the export starts later,
/// e.g. `after=N`), one tenant throughout.
pub fn verify_file(input: impl BufRead) -> std::io::Result<FileReport> {
    let mut report = FileReport {
        tenant: None,
        events: 0,
        head_seq: 0,
        head_hash: ZERO_HASH.to_hex(),
        broken: None,
    };
    let mut previous: Option<Digest32> = None;
    for (index, text) in input.lines().enumerate() {
        let text = text?;
        let number = index as u64 + 1;
        if text.trim().is_empty() {
            continue;
        }
        match check_line(&text, &mut report, previous) {
            Ok(hash) => {
                previous = Some(hash);
                report.events += 1;
                report.head_hash = hash.to_hex();
            }
            Err(reason) => {
                report.broken = Some((number, reason));
                return Ok(report);
            }
        }
    }
    Ok(report)
}

fn check_line(
    text: &str,
    report: &mut FileReport,
    previous: Option<Digest32>,
) -> Result<Digest32, String> {
    let line: AuditLine<'_> =
        serde_json::from_str(text).map_err(|e| format!("not an export line: {e}"))?;
    let digest = |field: &str, hex: &str| -> Result<Digest32, String> {
        hex.parse()
            .map_err(|_| format!("{field} is not a SHA-256 in hex"))
    };
    let prev_hash = digest("prev_hash", &line.prev_hash)?;
    let hash = digest("hash", &line.hash)?;
    match report.tenant {
        None => report.tenant = Some(line.tenant),
        Some(tenant) if tenant != line.tenant => {
            return Err(format!("belongs to tenant {}, not {tenant}", line.tenant));
        }
        Some(_) => {}
    }
    match previous {
        None if line.seq == 1 && prev_hash != ZERO_HASH => {
            return Err("seq 1 must chain from the zero hash".into());
        }
        Some(previous) if prev_hash != previous => {
            return Err(format!(
                "seq {} does not chain to the line before it",
                line.seq
            ));
        }
        Some(_) if line.seq != report.head_seq + 1 => {
            return Err(format!(
                "seq {} follows seq {}: events are missing",
                line.seq, report.head_seq
            ));
        }
        _ => {}
    }
    let occurred_at = DateTime::parse_from_rfc3339(&line.occurred_at)
        .map_err(|e| format!("occurred_at: {e}"))?
        .with_timezone(&Utc);
    let event = RecordedEvent {
        id: line.id,
        stream: StreamId(line.tenant),
        seq: line.seq,
        position: line.position,
        event_type: line.event_type,
        schema_version: line.schema_version,
        occurred_at,
        actor: line.actor,
        data: line.data.get().as_bytes().to_vec(),
        prev_hash,
        hash,
    };
    let mut body = Vec::new();
    encode_body(&event, &mut body);
    if hash_body(&body) != hash {
        return Err(format!(
            "seq {}: its hash does not match its contents",
            event.seq
        ));
    }
    report.head_seq = event.seq;
    Ok(hash)
}
