//! A tenant's folded state as bytes, for the snapshots the event log keeps beside each stream:
//! a fold that starts from one reads only the events after it instead of the whole stream
//! (every workstation login is an event, so a customer's stream reaches millions).
//!
//! The bytes are JSON: `{"version": STATE_VERSION, "state": {"msp"|"customer": {...}}}`.
//! Every state type refuses unknown fields and has no defaults, so a snapshot written by a
//! build whose state had another shape does not decode; [`STATE_VERSION`] covers the changes a
//! shape does not show (a field that now means something else). A snapshot that does not
//! decode is no damage: the caller folds from the stream's first event, as without one.

use serde::{Deserialize, Serialize};

use crate::customer::CustomerTenant;
use crate::msp::MspTenant;

/// The version of the folded state's meaning. Bump it whenever a state type or what `apply`
/// makes of an event changes; the golden files under `domain/tests/state/` are named by it.
pub const STATE_VERSION: u32 = 3;

/// A tenant's state folded from its stream.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    Msp(MspTenant),
    Customer(Box<CustomerTenant>),
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum StateRef<'a> {
    Msp(&'a MspTenant),
    Customer(&'a CustomerTenant),
}

#[derive(Serialize)]
struct Written<'a> {
    version: u32,
    state: StateRef<'a>,
}

/// The version alone, read first: a state of another version may not decode at all.
#[derive(Deserialize)]
struct Version {
    version: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Read {
    #[serde(rename = "version")]
    _version: u32,
    state: TenantState,
}

/// Why a snapshot's bytes are not a state this build can use.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot's state is version {found}, this build folds version {STATE_VERSION}")]
    OtherVersion { found: u32 },
    #[error("the snapshot does not decode: {0}")]
    Malformed(String),
}

/// An MSP tenant's state as snapshot bytes.
pub fn encode_msp(state: &MspTenant) -> Result<Vec<u8>, serde_json::Error> {
    encode(StateRef::Msp(state))
}

/// A customer tenant's state as snapshot bytes.
pub fn encode_customer(state: &CustomerTenant) -> Result<Vec<u8>, serde_json::Error> {
    encode(StateRef::Customer(state))
}

/// A tenant's state, either kind, as snapshot bytes.
pub fn encode_state(state: &TenantState) -> Result<Vec<u8>, serde_json::Error> {
    encode(match state {
        TenantState::Msp(tenant) => StateRef::Msp(tenant),
        TenantState::Customer(tenant) => StateRef::Customer(tenant),
    })
}

fn encode(state: StateRef<'_>) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Written {
        version: STATE_VERSION,
        state,
    })
}

/// The state snapshot bytes hold, if they are of this build's [`STATE_VERSION`].
pub fn decode(bytes: &[u8]) -> Result<TenantState, SnapshotError> {
    let malformed = |e: serde_json::Error| SnapshotError::Malformed(e.to_string());
    let Version { version } = serde_json::from_slice(bytes).map_err(malformed)?;
    if version != STATE_VERSION {
        return Err(SnapshotError::OtherVersion { found: version });
    }
    let read: Read = serde_json::from_slice(bytes).map_err(malformed)?;
    Ok(read.state)
}
