//! What `decide` answers: the events to append, the unique keys to claim or give back in the
//! same atomic commit, and, rarely, a refusal to report after the events are recorded (a wrong
//! onboarding code is refused, and the failed try is recorded so that tries add up).

use crate::event::Event;
use crate::validate::FieldError;

/// A unique key the commit must take or give back (a host label, an email in a tenant).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Claim {
    pub scope: String,
    pub key: String,
}

impl Claim {
    pub fn new(scope: impl Into<String>, key: impl Into<String>) -> Self {
        Claim {
            scope: scope.into(),
            key: key.into(),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Decision {
    pub events: Vec<Event>,
    pub claims: Vec<Claim>,
    pub releases: Vec<Claim>,
    /// Append the events, then answer with this error.
    pub refusal: Option<DomainError>,
}

impl Decision {
    /// Nothing to do: the command is already in effect.
    pub fn none() -> Self {
        Decision::default()
    }

    pub fn event(event: impl Into<Event>) -> Self {
        Decision {
            events: vec![event.into()],
            ..Decision::default()
        }
    }

    pub fn and(mut self, event: impl Into<Event>) -> Self {
        self.events.push(event.into());
        self
    }

    pub fn claim(mut self, claim: Claim) -> Self {
        self.claims.push(claim);
        self
    }

    pub fn release(mut self, claim: Claim) -> Self {
        self.releases.push(claim);
        self
    }

    pub fn refuse(mut self, error: DomainError) -> Self {
        self.refusal = Some(error);
        self
    }
}

/// Why a command was refused. Each maps to one HTTP status at the api's edge.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DomainError {
    /// Fields that fail their rules (422), each with its message.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// No such resource (404).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The state does not allow it (409).
    #[error("{0}")]
    Conflict(String),
    /// Credentials or codes that do not check out (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The stored history does not fold: a bug or damage, never the caller's fault.
    #[error("the stored history is inconsistent: {0}")]
    Corrupt(String),
}

/// Keeps a validated field's value, or records its error so that a command reports every
/// invalid field at once.
pub(crate) fn field<T>(errors: &mut Vec<FieldError>, result: Result<T, FieldError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// Folds a stream: `first` turns its first event into a state (or refuses it), `apply` takes
/// every later one. `None` for an empty stream. `kind` names the stream in errors.
pub(crate) fn replay<'a, S>(
    events: impl IntoIterator<Item = &'a Event>,
    kind: &str,
    first: impl Fn(&Event) -> Option<S>,
    apply: impl Fn(&mut S, &Event) -> Result<(), DomainError>,
) -> Result<Option<S>, DomainError> {
    let mut state: Option<S> = None;
    for event in events {
        match &mut state {
            None => {
                state = Some(first(event).ok_or_else(|| {
                    DomainError::Corrupt(format!("{kind} stream starts with {}", event.type_name()))
                })?);
            }
            Some(tenant) => apply(tenant, event)?,
        }
    }
    Ok(state)
}
