//! The software authenticator: what the mobile app does, as a library and a command
//! (`idem-authenticator`). It onboards with an email's one-time code, keeps each enrolled
//! device's Ed25519 key in a file only its owner can read, and approves QR challenges by
//! signing `idem-approve:v1:{host}:{id}:{nonce}`. It speaks only the public HTTP contract.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::files::{Mode, write_atomically};
use crate::http::{self, Client};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key file {0}: {1}")]
    KeyFile(PathBuf, String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Http(#[from] http::Error),
}

/// One enrolled device: an account on a tenant host, and the key that proves it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Device {
    /// The tenant's URL, e.g. `http://acme.localhost:8080`.
    pub url: String,
    /// Its host name without port, e.g. `acme.localhost`: what approvals sign.
    pub host: String,
    pub email: String,
    pub user_id: Uuid,
    pub device_id: Uuid,
    /// The Ed25519 secret key, base64url. Never leaves this file.
    secret_key: String,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("host", &self.host)
            .field("email", &self.email)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl Device {
    fn signing_key(&self) -> Result<SigningKey, String> {
        let bytes: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&self.secret_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("a device's secret key is damaged")?;
        Ok(SigningKey::from_bytes(&bytes))
    }
}

/// The key file: every device this authenticator enrolled.
#[derive(Default, Serialize, Deserialize)]
pub struct Keyring {
    pub devices: Vec<Device>,
}

impl Keyring {
    /// Reads the key file (an empty keyring if there is none). Refuses a file that others can
    /// read: its keys log in as their users.
    pub fn load(path: &Path) -> Result<Keyring, Error> {
        let err = |e: &dyn std::fmt::Display| Error::KeyFile(path.to_owned(), e.to_string());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Keyring::default()),
            Err(e) => return Err(err(&e)),
        };
        let mode = std::fs::metadata(path)
            .map_err(|e| err(&e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(err(&format!(
                "is readable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            )));
        }
        serde_json::from_str(&text).map_err(|e| err(&e))
    }

    /// Writes the key file atomically (a 0600 temporary file, synced, renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let err = |e: &dyn std::fmt::Display| Error::KeyFile(path.to_owned(), e.to_string());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(&e))?;
        write_atomically(path, &json, Mode::Exactly(0o600)).map_err(|e| err(&e))
    }

    /// The device to approve a challenge on `host` with: one enrolled on that host, or on the
    /// MSP whose customer it is (`{customer}-{msp}.{domain}`).
    pub fn device_for(&self, host: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.host == host).or_else(|| {
            let (label, domain) = host.split_once('.')?;
            self.devices.iter().find(|d| {
                d.host.split_once('.').is_some_and(|(msp, msp_domain)| {
                    msp_domain == domain && label.ends_with(&format!("-{msp}"))
                })
            })
        })
    }
}

/// The host name of a tenant URL, without port: what challenges are bound to.
fn host_of(url: &Url) -> Result<String, Error> {
    url.host_str()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| Error::Usage(format!("{url} has no host")))
}

/// Asks the tenant to email `email` a one-time onboarding code.
pub async fn request_code(url: &str, email: &str) -> Result<(), Error> {
    let url = http::parse_url(url)?;
    let client = Client::for_url(&url)?;
    client
        .post_json(
            &url,
            "/api/v1/onboarding/start",
            &serde_json::json!({"email": email}),
        )
        .await?;
    Ok(())
}

/// Completes onboarding with the emailed `code`: makes a new device key, registers its public
/// half, and keeps the device in `keyring`.
pub async fn enroll(
    keyring: &mut Keyring,
    url: &str,
    email: &str,
    code: &str,
    device_name: &str,
) -> Result<Device, Error> {
    let url = http::parse_url(url)?;
    let host = host_of(&url)?;
    let client = Client::for_url(&url)?;
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let key = SigningKey::from_bytes(&secret);
    let public_key = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    #[derive(Deserialize)]
    struct Enrolled {
        user_id: Uuid,
        device_id: Uuid,
    }
    let answer: Enrolled = client
        .post_json(
            &url,
            "/api/v1/onboarding/complete",
            &serde_json::json!({
                "email": email,
                "code": code.trim(),
                "device_name": device_name,
                "device_public_key": public_key,
            }),
        )
        .await?
        .json()?;
    let device = Device {
        url: url.as_str().trim_end_matches('/').to_owned(),
        host,
        email: email.trim().to_owned(),
        user_id: answer.user_id,
        device_id: answer.device_id,
        secret_key: URL_SAFE_NO_PAD.encode(secret),
    };
    keyring.devices.retain(|d| d.host != device.host);
    keyring.devices.push(device.clone());
    Ok(device)
}

/// A challenge as its QR code carries it.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub host: String,
    pub id: Uuid,
    pub nonce: String,
    /// Where to send the approval; its host must be the challenge's.
    pub origin: Option<Url>,
}

/// Reads `idem://approve?host=…&id=…&nonce=…&origin=…`.
pub fn parse_challenge(uri: &str) -> Result<Challenge, Error> {
    let bad = |why: &str| Error::Usage(format!("not an idem approval code: {why}"));
    let url = Url::parse(uri.trim()).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "idem" || url.host_str() != Some("approve") {
        return Err(bad("it must start with idem://approve?"));
    }
    let get = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let host = get("host")
        .ok_or_else(|| bad("no host"))?
        .to_ascii_lowercase();
    let id = get("id")
        .and_then(|id| Uuid::parse_str(&id).ok())
        .ok_or_else(|| bad("no challenge id"))?;
    let nonce = get("nonce").ok_or_else(|| bad("no nonce"))?;
    let origin = get("origin")
        .map(|o| Url::parse(&o).map_err(|e| bad(&e.to_string())))
        .transpose()?;
    if let Some(origin) = &origin
        && origin.host_str().map(str::to_ascii_lowercase).as_deref() != Some(host.as_str())
    {
        return Err(bad("its origin is not its host"));
    }
    Ok(Challenge {
        host,
        id,
        nonce,
        origin,
    })
}

/// Approves the challenge of a QR code with the matching enrolled device.
pub async fn approve(keyring: &Keyring, uri: &str) -> Result<Device, Error> {
    let challenge = parse_challenge(uri)?;
    let device = keyring.device_for(&challenge.host).ok_or_else(|| {
        Error::Usage(format!(
            "no device is enrolled for {} (or its MSP)",
            challenge.host
        ))
    })?;
    let origin = match challenge.origin.clone() {
        Some(origin) => origin,
        None => {
            // Same scheme and port as the enrolled tenant, on the challenge's host.
            let mut url = http::parse_url(&device.url)?;
            url.set_host(Some(&challenge.host))
                .map_err(|e| Error::Usage(e.to_string()))?;
            url
        }
    };
    let message =
        domain::session::approval_message(&challenge.host, challenge.id, &challenge.nonce);
    let key = device
        .signing_key()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let signature = URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).to_bytes());
    let client = Client::for_url(&origin)?;
    client
        .post_json(
            &origin,
            &format!("/api/v1/login/challenges/{}/approve", challenge.id),
            &serde_json::json!({"device_id": device.device_id, "signature": signature}),
        )
        .await?;
    Ok(device.clone())
}

/// Signs an approval for `challenge` with `device`'s key, for callers that post it themselves
/// (tests of forged and replayed approvals).
pub fn sign(device: &Device, host: &str, id: Uuid, nonce: &str) -> Result<String, Error> {
    let key = device.signing_key().map_err(Error::Usage)?;
    let message = domain::session::approval_message(host, id, nonce);
    Ok(URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(host: &str) -> Device {
        Device {
            url: format!("http://{host}:8080"),
            host: host.into(),
            email: "a@b.example".into(),
            user_id: Uuid::from_u128(1),
            device_id: Uuid::from_u128(2),
            secret_key: URL_SAFE_NO_PAD.encode([7u8; 32]),
        }
    }

    #[test]
    fn a_qr_code_is_read_and_its_origin_must_be_its_host() {
        let id = Uuid::from_u128(9);
        let ok = format!(
            "idem://approve?host=acme.localhost&id={id}&nonce=abc&origin=http%3A%2F%2Facme.localhost%3A8080"
        );
        let challenge = parse_challenge(&ok).unwrap();
        assert_eq!(challenge.host, "acme.localhost");
        assert_eq!(challenge.id, id);
        assert_eq!(challenge.nonce, "abc");
        assert_eq!(
            challenge.origin.unwrap().as_str(),
            "http://acme.localhost:8080/"
        );
        let foreign = format!(
            "idem://approve?host=acme.localhost&id={id}&nonce=abc&origin=http%3A%2F%2Fevil.example"
        );
        assert!(parse_challenge(&foreign).is_err());
        for bad in [
            "https://acme.localhost/approve",
            "idem://approve?host=a&nonce=n",
            "idem://approve?host=a&id=nope&nonce=n",
            "idem://approve?id=00000000-0000-0000-0000-000000000009&nonce=n",
            "",
        ] {
            assert!(parse_challenge(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_customer_host_is_approved_with_its_msps_device() {
        let keyring = Keyring {
            devices: vec![device("acme.localhost"), device("globex.localhost")],
        };
        let host = |h: &str| keyring.device_for(h).map(|d| d.host.clone());
        assert_eq!(host("acme.localhost").as_deref(), Some("acme.localhost"));
        assert_eq!(
            host("contoso-acme.localhost").as_deref(),
            Some("acme.localhost")
        );
        assert_eq!(
            host("contoso-globex.localhost").as_deref(),
            Some("globex.localhost")
        );
        assert_eq!(host("contoso-initech.localhost"), None);
        assert_eq!(host("acme.example"), None);
    }

    #[test]
    fn the_key_file_is_private_and_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/authenticator.json");
        let keyring = Keyring {
            devices: vec![device("acme.localhost")],
        };
        keyring.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Keyring::load(&path).unwrap();
        assert_eq!(loaded.devices.len(), 1);
        assert_eq!(loaded.devices[0].secret_key, keyring.devices[0].secret_key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            Keyring::load(&path).is_err(),
            "a readable key file is refused"
        );
        assert!(
            Keyring::load(&dir.path().join("none.json"))
                .unwrap()
                .devices
                .is_empty()
        );
    }
}
