//! Domain events to log events and back: the one place that knows both shapes.

use chrono::{DateTime, Utc};
use domain::event::{DecodeError, Event};
use eventlog::{NewEvent, RecordedEvent};
use uuid::Uuid;

/// A log event carrying `event`, made by `actor` (e.g. `user:{id}`, `operator`) at `at`.
pub fn encode(
    event: &Event,
    id: Uuid,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<NewEvent, serde_json::Error> {
    Ok(NewEvent {
        id,
        event_type: event.type_name().to_owned(),
        schema_version: event.schema_version(),
        occurred_at: at,
        actor: actor.to_owned(),
        data: event.to_json()?,
    })
}

/// The domain event a log event carries, upcast to the current schema.
pub fn decode(recorded: &RecordedEvent) -> Result<Event, DecodeError> {
    Event::from_stored(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.data,
    )
}
