//! Onboarding material: digests of one-time codes (the code itself is never stored) and the
//! device public keys users register.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::ids::UserId;
use crate::validate::FieldError;

/// The stored form of an onboarding code: SHA-256 over a domain tag, the user and the code,
/// hex. Binding the user means a digest is useless for any other account.
pub fn code_digest(user: UserId, code: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"idem.onboarding-code.v1\0")
        .chain_update(user.0.as_bytes())
        .chain_update(code.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An Ed25519 public key as a device sends it: 32 bytes, base64url without padding.
pub fn public_key(field: &'static str, encoded: &str) -> Result<[u8; 32], FieldError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded.trim())
        .map_err(|_| FieldError::new(field, "must be base64url without padding"))?;
    bytes
        .try_into()
        .map_err(|_| FieldError::new(field, "must be a 32-byte Ed25519 public key"))
}
