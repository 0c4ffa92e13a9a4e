//! Onboarding material: digests of one-time codes (the code itself is never stored) and the
//! device public keys users register.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::decision::{Decision, DomainError, field};
use crate::event::{
    AuthenticatorRevoked, DeviceEnrolled, OnboardingCodeIssued, OnboardingCodeRejected,
};
use crate::ids::{DeviceId, UserId};
use crate::validate;
use crate::validate::FieldError;

/// The stored form of an onboarding code: SHA-256 over a domain tag, the user and the code,
/// hex. Binding the user means a digest is useless for any other account. The code this
/// sees is already keyed ([`crate::crypto::CodeKey::keyed`], by the api, which holds the
/// key), so that the digest, which the log's readers see, cannot be searched for the code.
pub fn code_digest(user: UserId, code: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"idem.onboarding-code.v1\0")
        .chain_update(user.0.as_bytes())
        .chain_update(code.as_bytes())
        .finalize();
    crate::hex::hex(&digest)
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

/// How long an onboarding code lives.
pub const CODE_LIFETIME: Duration = Duration::minutes(15);
/// Wrong tries that end an onboarding code.
pub const CODE_TRIES: u32 = 5;
/// The most phones one user may enrol.
pub const MAX_PHONES: usize = 5;

/// An onboarding code waiting to be entered.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingCode {
    pub digest: String,
    pub expires_at: DateTime<Utc>,
    pub failures: u32,
}

/// An enrolled authenticator (a phone).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub id: DeviceId,
    pub name: String,
    pub public_key: String,
}

/// A user's onboarding state, the same for technicians and directory users.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    pub pending_code: Option<PendingCode>,
    pub devices: BTreeMap<DeviceId, Device>,
}

impl Enrollment {
    pub fn is_onboarded(&self) -> bool {
        !self.devices.is_empty()
    }

    pub fn code_issued(&mut self, e: &OnboardingCodeIssued) {
        self.pending_code = Some(PendingCode {
            digest: e.code_digest.clone(),
            expires_at: e.expires_at,
            failures: 0,
        });
    }

    pub fn code_rejected(&mut self) {
        if let Some(code) = &mut self.pending_code {
            code.failures += 1;
            if code.failures >= CODE_TRIES {
                self.pending_code = None;
            }
        }
    }

    /// Revokes the enrolled authenticator `device` of `user`.
    pub fn revoke(&self, user: UserId, device: DeviceId) -> Result<Decision, DomainError> {
        if !self.devices.contains_key(&device) {
            return Err(DomainError::NotFound("authenticator"));
        }
        Ok(Decision::event(AuthenticatorRevoked {
            user_id: user,
            device_id: device,
        }))
    }

    /// Applies an [`AuthenticatorRevoked`]; `false` if the device was not enrolled.
    pub fn authenticator_revoked(&mut self, e: &AuthenticatorRevoked) -> bool {
        self.devices.remove(&e.device_id).is_some()
    }

    pub fn device_enrolled(&mut self, e: &DeviceEnrolled) {
        self.pending_code = None;
        self.devices.insert(
            e.device_id,
            Device {
                id: e.device_id,
                name: e.device_name.clone(),
                public_key: e.public_key.clone(),
            },
        );
    }

    /// Issues a code to a user who has yet to onboard.
    pub fn issue(&self, user: UserId, code: &str, now: DateTime<Utc>) -> Decision {
        if self.is_onboarded() {
            return Decision::none();
        }
        Decision::event(OnboardingCodeIssued {
            user_id: user,
            code_digest: code_digest(user, code),
            expires_at: now + CODE_LIFETIME,
        })
    }

    /// Issues a code for another phone to a user who has one (at most [`MAX_PHONES`]): the
    /// code completes onboarding like a first one, and the new phone joins the others.
    pub fn issue_another(
        &self,
        user: UserId,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Decision, DomainError> {
        if !self.is_onboarded() {
            return Err(DomainError::Conflict(
                "no phone is enrolled yet: onboard one with a code from /api/v1/onboarding/start"
                    .into(),
            ));
        }
        if self.devices.len() >= MAX_PHONES {
            return Err(DomainError::Conflict(format!(
                "at most {MAX_PHONES} phones: remove one first"
            )));
        }
        Ok(Decision::event(OnboardingCodeIssued {
            user_id: user,
            code_digest: code_digest(user, code),
            expires_at: now + CODE_LIFETIME,
        }))
    }

    /// Checks a code and, if right, enrolls the device. A wrong code is refused and recorded.
    pub fn complete(
        &self,
        user: UserId,
        attempt: Attempt,
        device_taken: bool,
    ) -> Result<Decision, DomainError> {
        let refused = || DomainError::Unauthenticated("the code is wrong or has expired".into());
        let pending = self.pending_code.as_ref().ok_or_else(refused)?;
        if pending.expires_at <= attempt.now {
            return Err(refused());
        }
        let digest = code_digest(user, &attempt.code);
        if !bool::from(digest.as_bytes().ct_eq(pending.digest.as_bytes())) {
            return Ok(Decision::event(OnboardingCodeRejected { user_id: user }).refuse(refused()));
        }
        let mut errors = Vec::new();
        let device_name = field(
            &mut errors,
            validate::display_name("device_name", &attempt.device_name),
        );
        field(
            &mut errors,
            public_key("device_public_key", &attempt.public_key),
        );
        let Some(device_name) = device_name.filter(|_| errors.is_empty()) else {
            return Err(DomainError::Invalid(errors));
        };
        if device_taken {
            return Err(DomainError::Conflict("the device id is taken".into()));
        }
        Ok(Decision::event(DeviceEnrolled {
            user_id: user,
            device_id: attempt.device_id,
            device_name,
            public_key: attempt.public_key,
        }))
    }
}

/// What a device sends to complete onboarding.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Attempt {
    pub code: String,
    pub device_id: DeviceId,
    pub device_name: String,
    pub public_key: String,
    pub now: DateTime<Utc>,
}
