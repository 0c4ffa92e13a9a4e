//! idem's domain: the product's rules, pure. No IO, no async, no clock: time, ids and
//! randomness come in as arguments, so every decision is deterministic and replayable.
//!
//! - [`validate`]: every field a person types or uploads (names, host labels, usernames,
//!   emails, passwords, images).
//! - [`crypto`]: the master key (root key, wrapped data keys, sealed fields) and argon2id
//!   password verifiers.

pub mod crypto;
pub mod validate;
