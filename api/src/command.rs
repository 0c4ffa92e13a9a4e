//! The command pipeline every write goes through: fold the tenant's stream, decide in the
//! domain, commit the events with the decision's reservations at the seq that was folded, and
//! start over if another writer got there first (optimistic concurrency).

use chrono::{DateTime, Utc};
use domain::decision::{Decision, DomainError};
use domain::event::Event;
use domain::ids::TenantId;
use eventlog::{Commit, Committed, EventLog, Expected, Reservation, StreamAppend, StreamId};
use projections::codec;
use uuid::Uuid;

use crate::app::AppState;
use crate::problem::Problem;

/// How many times a command is decided again after losing a race for its stream.
const ATTEMPTS: usize = 5;

/// A tenant's history, folded by the caller.
pub struct History {
    pub events: Vec<Event>,
    pub seq: u64,
}

/// Reads and decodes a tenant's whole stream.
pub async fn history(state: &AppState, tenant: TenantId) -> Result<History, Problem> {
    let recorded = state
        .log
        .read_stream(StreamId(tenant.0), 1, usize::MAX)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let seq = recorded.last().map_or(0, |e| e.seq);
    let events = recorded
        .iter()
        .map(codec::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::internal(&e))?;
    Ok(History { events, seq })
}

/// Runs `decide` against the tenant's current history and commits what it decides; answers
/// the commit (none if nothing was to be written) and the decision. A refusal in the decision
/// is returned after its events are committed.
pub async fn execute(
    state: &AppState,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    decide: impl Fn(&History) -> Result<Decision, DomainError>,
) -> Result<(Option<Committed>, Decision), Problem> {
    execute_plan(state, tenant, actor, now, |history| {
        decide(history).map(Plan::on_tenant)
    })
    .await
}

/// What one command writes: its decision on the tenant whose history was folded, and what it
/// writes to other streams in the same atomic commit (a customer tenant opened or deleted with
/// its MSP's record of it).
pub struct Plan {
    pub decision: Decision,
    /// Appends to new streams, which must not exist yet.
    pub new_streams: Vec<(TenantId, Decision)>,
    /// Streams deleted for good with this commit.
    pub deleted: Vec<TenantId>,
}

impl Plan {
    pub fn on_tenant(decision: Decision) -> Plan {
        Plan {
            decision,
            new_streams: Vec::new(),
            deleted: Vec::new(),
        }
    }
}

fn stream_append(
    tenant: TenantId,
    expected: Expected,
    decision: &Decision,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<StreamAppend, Problem> {
    let mut append = StreamAppend::new(StreamId(tenant.0), expected);
    for event in &decision.events {
        append = append.event(
            codec::encode(event, Uuid::now_v7(), now, actor).map_err(|e| Problem::internal(&e))?,
        );
    }
    for claim in &decision.claims {
        append = append.reserve(Reservation::new(claim.scope.clone(), claim.key.clone()));
    }
    for claim in &decision.releases {
        append = append.release(Reservation::new(claim.scope.clone(), claim.key.clone()));
    }
    Ok(append)
}

/// [`execute`] for commands that also write other streams: `plan` decides on the tenant's
/// history, and everything it plans commits atomically, or nothing does.
pub async fn execute_plan(
    state: &AppState,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    plan: impl Fn(&History) -> Result<Plan, DomainError>,
) -> Result<(Option<Committed>, Decision), Problem> {
    for _ in 0..ATTEMPTS {
        let history = history(state, tenant).await?;
        let Plan {
            decision,
            new_streams,
            deleted,
        } = plan(&history)?;
        if decision.events.is_empty() && new_streams.is_empty() && deleted.is_empty() {
            if let Some(refusal) = decision.refusal {
                return Err(refusal.into());
            }
            return Ok((None, decision));
        }
        let expected = if history.seq == 0 {
            Expected::NoStream
        } else {
            Expected::At(history.seq)
        };
        let mut commit =
            Commit::new().append(stream_append(tenant, expected, &decision, actor, now)?);
        for (other, other_decision) in &new_streams {
            commit = commit.append(stream_append(
                *other,
                Expected::NoStream,
                other_decision,
                actor,
                now,
            )?);
        }
        for gone in &deleted {
            commit = commit.delete(StreamId(gone.0));
        }
        match state.log.commit(commit).await {
            Ok(committed) => {
                if let Some(refusal) = decision.refusal {
                    return Err(refusal.into());
                }
                return Ok((Some(committed), decision));
            }
            // Someone else wrote first: decide again on what they wrote.
            Err(eventlog::Error::WrongExpectedSeq { .. }) => continue,
            Err(eventlog::Error::ReservationTaken { reservation }) => {
                return Err(
                    DomainError::Conflict(format!("{} is already taken", reservation.key)).into(),
                );
            }
            Err(eventlog::Error::StreamDeleted { .. }) => {
                return Err(Problem::not_found("no such tenant"));
            }
            Err(e) => return Err(Problem::internal(&e)),
        }
    }
    Err(DomainError::Conflict("the tenant is changing too fast; try again".into()).into())
}

/// Appends events that no invariant of the tenant's state depends on (a session started or
/// ended) without folding its history: at the stream's end, whatever it is.
pub async fn record(
    state: &AppState,
    tenant: TenantId,
    actor: &str,
    now: DateTime<Utc>,
    decision: Decision,
) -> Result<Committed, Problem> {
    let append = stream_append(tenant, Expected::Any, &decision, actor, now)?;
    match state.log.commit(Commit::from(append)).await {
        Ok(committed) => Ok(committed),
        // The tenant was deleted meanwhile.
        Err(eventlog::Error::StreamDeleted { .. }) => Err(Problem::not_found("no such tenant")),
        Err(e) => Err(Problem::internal(&e)),
    }
}
