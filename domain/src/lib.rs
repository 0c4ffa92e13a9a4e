//! idem's domain: the product's rules, pure. No IO, no async, no clock: time, ids and
//! randomness come in as arguments, so every decision is deterministic and replayable.
//!
//! - [`validate`]: every field a person types or uploads (names, host labels, usernames,
//!   emails, passwords, images).
//! - [`crypto`]: the master key (root key, wrapped data keys, sealed fields) and argon2id
//!   password verifiers.
//! - [`event`]: the event catalogue, with schema versions and upcasting.
//! - [`msp`]: the MSP tenant: state folded from its events, and `decide` for its commands.
//! - [`customer`]: the customer tenant and its cloud directory, likewise.
//! - [`session`]: QR approvals (what is signed, how it is checked) and portal sessions.
//! - [`authz`]: who may run which command on which tenant, decided by one function.
//! - [`decision`]: what `decide` answers (events, unique claims, refusals).
//! - [`hex`]: the lowercase hex form of digests and key ids.
//! - [`operator`]: the operator log, the deployment's own stream of operator actions.
//! - [`snapshot`]: a tenant's folded state as bytes, for the log's snapshots.

pub mod authz;
pub mod crypto;
pub mod customer;
pub mod decision;
pub mod event;
pub mod hex;
pub mod ids;
pub mod msp;
pub mod onboarding;
pub mod operator;
pub mod session;
pub mod snapshot;
pub mod validate;
