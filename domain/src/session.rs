//! Portal logins: what an authenticator signs to approve a QR challenge, how the signature is
//! checked, and the decision that starts a session on a tenant's host. Tokens and nonces come
//! in from the caller (randomness is IO); only their digests are ever stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::decision::{Decision, DomainError};
use crate::event::{SessionEnded, SessionMethod, SessionStarted};
use crate::ids::{DeviceId, TenantId, UserId};
use crate::onboarding;

/// How long a QR challenge can be approved.
pub const CHALLENGE_LIFETIME: Duration = Duration::minutes(2);
/// How long an SSO hand-off URL can be opened.
pub const HANDOFF_LIFETIME: Duration = Duration::seconds(60);
/// How long a portal session lasts (it ends earlier on logout, or when the user loses access).
pub const SESSION_LIFETIME: Duration = Duration::hours(12);

/// The exact bytes an authenticator signs to approve challenge `id` on `host`.
pub fn approval_message(host: &str, id: Uuid, nonce: &str) -> String {
    format!("idem-approve:v1:{host}:{id}:{nonce}")
}

/// Checks an Ed25519 signature (base64url, 64 bytes) over `message` with a device's public
/// key as it was enrolled. Strict verification: no malleable or small-order forgeries.
pub fn verify_signature(
    public_key: &str,
    message: &[u8],
    signature: &str,
) -> Result<(), DomainError> {
    let refused = || DomainError::Unauthenticated("the approval's signature does not check".into());
    let key = onboarding::public_key("public_key", public_key)
        .map_err(|e| DomainError::Corrupt(format!("an enrolled device key: {e}")))?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| refused())?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(signature.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(refused)?;
    key.verify_strict(message, &Signature::from_bytes(&signature))
        .map_err(|_| refused())
}

/// The stored form of a session token (or any bearer secret): SHA-256 with a domain tag, hex.
/// Tokens are 256 random bits, so no salt or stretching is needed.
pub fn token_digest(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"idem.session-token.v1\0")
        .chain_update(token.as_bytes())
        .finalize();
    crate::hex::hex(&digest)
}

/// The anti-forgery token of a session's forms: derived from the session token one way, so
/// it proves the form came from a page that session was shown, and reveals nothing of the
/// token. Hex, like the digest, under a tag of its own so the two never coincide.
pub fn csrf_token(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"idem.csrf.v1\0")
        .chain_update(token.as_bytes())
        .finalize();
    crate::hex::hex(&digest)
}

/// Whether `offered` is the anti-forgery token of the session `token`, in constant time.
pub fn csrf_matches(token: &str, offered: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = csrf_token(token);
    expected.len() == offered.len() && bool::from(expected.as_bytes().ct_eq(offered.as_bytes()))
}

/// The session to start for a user identified by a QR approval or an SSO hand-off.
pub struct NewSession {
    pub session_id: Uuid,
    pub user: UserId,
    pub msp: Option<TenantId>,
    pub device: Option<DeviceId>,
    pub method: SessionMethod,
    /// The token handed to the client; only its digest is recorded.
    pub token: String,
    pub now: DateTime<Utc>,
}

/// The event that starts a session on the host's tenant.
pub fn start(session: &NewSession) -> Decision {
    Decision::event(SessionStarted {
        session_id: session.session_id,
        user_id: session.user,
        msp_id: session.msp,
        device_id: session.device,
        method: session.method,
        token_digest: token_digest(&session.token),
        expires_at: session.now + SESSION_LIFETIME,
    })
}

/// Logout.
pub fn end(session_id: Uuid) -> Decision {
    Decision::event(SessionEnded { session_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> (SigningKey, String) {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let public = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
        (signing, public)
    }

    fn sign(key: &SigningKey, message: &str) -> String {
        URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).to_bytes())
    }

    #[test]
    fn a_csrf_token_belongs_to_its_session_only_and_is_not_the_digest() {
        let token = "session-token-a";
        let csrf = csrf_token(token);
        assert!(csrf_matches(token, &csrf));
        assert!(!csrf_matches("session-token-b", &csrf));
        assert!(!csrf_matches(token, &csrf[..63]));
        assert!(!csrf_matches(token, ""));
        assert_ne!(csrf, token_digest(token));
        assert!(!csrf.contains(token));
    }

    #[test]
    fn a_signature_checks_only_for_its_key_and_its_exact_message() {
        let (signing, public) = key(7);
        let (_, other_public) = key(8);
        let id = Uuid::from_u128(42);
        let message = approval_message("acme.localhost", id, "n0nce");
        assert_eq!(
            message,
            "idem-approve:v1:acme.localhost:00000000-0000-0000-0000-00000000002a:n0nce"
        );
        let signature = sign(&signing, &message);
        assert!(verify_signature(&public, message.as_bytes(), &signature).is_ok());
        // Another device's key, another host, another nonce: refused.
        assert!(verify_signature(&other_public, message.as_bytes(), &signature).is_err());
        let foreign = approval_message("evil.localhost", id, "n0nce");
        assert!(verify_signature(&public, foreign.as_bytes(), &signature).is_err());
        let replayed = approval_message("acme.localhost", id, "other");
        assert!(verify_signature(&public, replayed.as_bytes(), &signature).is_err());
        // Garbage signatures are refused, never a panic.
        for bad in ["", "!!", "AAAA", &"A".repeat(86), &signature[..40]] {
            assert!(matches!(
                verify_signature(&public, message.as_bytes(), bad),
                Err(DomainError::Unauthenticated(_))
            ));
        }
    }

    #[test]
    fn a_session_records_the_token_digest_not_the_token() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let decision = start(&NewSession {
            session_id: Uuid::from_u128(1),
            user: UserId(Uuid::from_u128(2)),
            msp: None,
            device: None,
            method: SessionMethod::Qr,
            token: "secret-token".into(),
            now,
        });
        let json = String::from_utf8(decision.events[0].to_json().unwrap()).unwrap();
        assert!(!json.contains("secret-token"));
        assert!(json.contains(&token_digest("secret-token")));
        assert_ne!(token_digest("secret-token"), token_digest("secret-tokem"));
        assert!(json.contains("2027-01-15T20:00:00Z"), "{json}");
    }
}
