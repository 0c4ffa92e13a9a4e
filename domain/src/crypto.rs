//! The master key and password verifiers.
//!
//! - The operator's **root key** (256 bits) wraps each tenant's **data keys**. Wrapped keys live
//!   in the log's key store, never in the log, so destroying them shreds the tenant's sealed data
//!   in every copy of the log.
//! - A data key **seals** sensitive fields (password verifiers, personal emails, shared-account
//!   secrets) with XChaCha20-Poly1305; the associated data binds each ciphertext to its tenant,
//!   its field and its key version, so a ciphertext moved anywhere else fails to open.
//! - Passwords become **argon2id verifiers** (OWASP parameters by default) in the PHC string
//!   format, compared in constant time.
//! - One-time onboarding codes (8 digits) are **keyed** with a key derived from the root key
//!   before the domain digests them ([`CodeKey`]), so the digests in the log, which admins and
//!   auditors read, cannot be searched for the code offline.
//!
//! Randomness (keys, nonces, salts) comes in as arguments: this crate does no IO.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error(
        "the root key (id {actual}) is not the one that wrapped this tenant's key (id {expected}): \
         start the service with the root key file it was created with"
    )]
    WrongRootKey { expected: String, actual: String },
    #[error("a wrapped data key is damaged or was moved from another tenant or version")]
    WrappedKeyTampered,
    #[error("a wrapped data key is malformed: {0}")]
    MalformedWrappedKey(&'static str),
    #[error("the root key file must hold 64 hexadecimal digits")]
    MalformedRootKey,
    #[error("sealed with data key version {sealed}, but key version {given} was given")]
    KeyVersionMismatch { sealed: u32, given: u32 },
    #[error("a sealed value does not open: it is damaged, or belongs to another tenant or field")]
    SealTampered,
    #[error("a sealed value is malformed: {0}")]
    MalformedSeal(&'static str),
    #[error("a password verifier is malformed: {0}")]
    MalformedVerifier(&'static str),
    /// XChaCha20-Poly1305 refuses only inputs of about 256 GiB.
    #[error("encryption failed: the input is too large")]
    Encrypt,
    #[error("invalid argon2 parameters: {0}")]
    Argon2(String),
}

/// 256 bits of key material, wiped from memory when dropped.
#[derive(Clone)]
struct KeyBytes(Zeroizing<[u8; 32]>);

impl KeyBytes {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_ref().into())
    }
}

/// The operator's root key: it wraps every tenant's data keys.
#[derive(Clone)]
pub struct RootKey(KeyBytes);

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey(id {})", self.id())
    }
}

impl RootKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        RootKey(KeyBytes(Zeroizing::new(bytes)))
    }

    /// Reads a root key file's contents: 64 hexadecimal digits, surrounding whitespace allowed.
    pub fn from_file_contents(contents: &str) -> Result<Self, CryptoError> {
        let hex = contents.trim();
        if hex.len() != 64 {
            return Err(CryptoError::MalformedRootKey);
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let digits = std::str::from_utf8(pair).map_err(|_| CryptoError::MalformedRootKey)?;
            bytes[i] = u8::from_str_radix(digits, 16).map_err(|_| CryptoError::MalformedRootKey)?;
        }
        Ok(RootKey(KeyBytes(bytes)))
    }

    /// The contents of a root key file for this key.
    pub fn to_file_contents(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(65));
        crate::hex::push_hex(&mut out, self.0.0.as_ref());
        out.push('\n');
        out
    }

    /// A public fingerprint of the key (16 hex digits of a SHA-256), stored with every wrapped
    /// key so that the wrong root key is named as such rather than reported as tampering.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"idem.root-key-id.v1\0")
            .chain_update(self.0.0.as_ref())
            .finalize();
        crate::hex::hex(&digest[..8])
    }

    /// Whether `wrapped` names this key as the one it was wrapped with (the id it carries;
    /// [`DataKey::unwrap`] is what authenticates it).
    pub fn wrapped(&self, wrapped: &[u8]) -> bool {
        wrapped.get(1..1 + ROOT_ID_LEN) == Some(root_id_bytes(self).as_slice())
    }
}

impl RootKey {
    /// The key that one-time onboarding codes are keyed with, derived from this root key
    /// (HMAC-SHA256 of a label), so the root key itself only ever wraps data keys.
    pub fn code_key(&self) -> CodeKey {
        let key = hmac_sha256(&self.0.0, &[b"idem.onboarding-code-key.v1"]);
        CodeKey(KeyBytes(Zeroizing::new(key)))
    }
}

/// The key one-time codes are keyed with (see [`RootKey::code_key`]).
#[derive(Clone)]
pub struct CodeKey(KeyBytes);

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(..)")
    }
}

impl CodeKey {
    /// The code as the domain sees it: HMAC-SHA256 of what the person typed (or was sent), hex.
    /// An 8-digit code has 10⁸ values, which anyone holding its digest could try in a second;
    /// keyed, each try needs this key, which lives beside the log, never in it.
    pub fn keyed(&self, code: &str) -> String {
        let mac = hmac_sha256(&self.0.0, &[b"idem.onboarding-code.v1\0", code.as_bytes()]);
        crate::hex::hex(&mac)
    }
}

/// HMAC-SHA256 of `parts` (concatenated) under a 32-byte key. HMAC pads a key shorter than
/// SHA-256's 64-byte block with zeros, so handing it the padded block is the same MAC, without
/// the length check that makes `new_from_slice` fallible.
fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// One version of a tenant's data key (the "master key" of the product).
#[derive(Clone)]
pub struct DataKey {
    version: u32,
    key: KeyBytes,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(version {})", self.version)
    }
}

const WRAP_FORMAT: u8 = 1;
const ROOT_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;

impl DataKey {
    /// A data key from 32 random bytes.
    pub fn new(version: u32, random: [u8; 32]) -> Self {
        DataKey {
            version,
            key: KeyBytes(Zeroizing::new(random)),
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Wraps this key under `root` for `tenant`: format byte ‖ root key id (8) ‖ nonce (24) ‖
    /// ciphertext. The associated data binds it to the tenant and the key version.
    pub fn wrap(
        &self,
        root: &RootKey,
        tenant: Uuid,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CryptoError> {
        let aad = wrap_aad(tenant, self.version);
        let root_id = root_id_bytes(root);
        let sealed = root
            .0
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: self.key.0.as_ref(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(1 + ROOT_ID_LEN + NONCE_LEN + sealed.len());
        out.push(WRAP_FORMAT);
        out.extend_from_slice(&root_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The key stored as `wrapped` for `tenant` at `version` under `old`, wrapped again under
    /// `new`: what a root key rotation stores in its place. Fails as [`DataKey::unwrap`] does,
    /// so a damaged or foreign key is never rewrapped into one that looks sound.
    pub fn rewrap(
        old: &RootKey,
        new: &RootKey,
        tenant: Uuid,
        version: u32,
        wrapped: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CryptoError> {
        DataKey::unwrap(old, tenant, version, wrapped)?.wrap(new, tenant, nonce)
    }

    /// Unwraps a key stored for `tenant` at `version`.
    pub fn unwrap(
        root: &RootKey,
        tenant: Uuid,
        version: u32,
        wrapped: &[u8],
    ) -> Result<Self, CryptoError> {
        let header = 1 + ROOT_ID_LEN + NONCE_LEN;
        if wrapped.len() != header + 32 + 16 {
            return Err(CryptoError::MalformedWrappedKey("wrong length"));
        }
        if wrapped[0] != WRAP_FORMAT {
            return Err(CryptoError::MalformedWrappedKey("unknown format"));
        }
        let stored_id = &wrapped[1..1 + ROOT_ID_LEN];
        if stored_id != root_id_bytes(root) {
            return Err(CryptoError::WrongRootKey {
                expected: crate::hex::hex(stored_id),
                actual: root.id(),
            });
        }
        let nonce = XNonce::from_slice(&wrapped[1 + ROOT_ID_LEN..header]);
        let aad = wrap_aad(tenant, version);
        let mut plain = root
            .0
            .cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &wrapped[header..],
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::WrappedKeyTampered)?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain);
        plain.zeroize();
        Ok(DataKey {
            version,
            key: KeyBytes(key),
        })
    }

    /// Seals `plaintext` as the value of `field` of `tenant`.
    pub fn seal(
        &self,
        tenant: Uuid,
        field: &str,
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Sealed, CryptoError> {
        let aad = seal_aad(tenant, field, self.version);
        let ciphertext = self
            .key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(Sealed {
            key_version: self.version,
            nonce,
            ciphertext,
        })
    }

    /// Opens a value sealed for `field` of `tenant` with this key.
    pub fn open(
        &self,
        tenant: Uuid,
        field: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.key_version != self.version {
            return Err(CryptoError::KeyVersionMismatch {
                sealed: sealed.key_version,
                given: self.version,
            });
        }
        let aad = seal_aad(tenant, field, self.version);
        self.key
            .cipher()
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::SealTampered)
    }
}

fn root_id_bytes(root: &RootKey) -> [u8; ROOT_ID_LEN] {
    let digest = Sha256::new()
        .chain_update(b"idem.root-key-id.v1\0")
        .chain_update(root.0.0.as_ref())
        .finalize();
    let mut id = [0u8; ROOT_ID_LEN];
    id.copy_from_slice(&digest[..ROOT_ID_LEN]);
    id
}

fn wrap_aad(tenant: Uuid, version: u32) -> Vec<u8> {
    let mut aad = b"idem.wrap.v1\0".to_vec();
    aad.extend_from_slice(tenant.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn seal_aad(tenant: Uuid, field: &str, version: u32) -> Vec<u8> {
    let mut aad = b"idem.seal.v1\0".to_vec();
    aad.extend_from_slice(tenant.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(field.as_bytes());
    aad
}

/// A sealed field as events carry it. In JSON it is the string
/// `sealed:v1:{key version}:{base64url(nonce ‖ ciphertext)}`, which says what it is to an
/// auditor reading an export and holds nothing readable without the tenant's key.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealed(key version {}, {} bytes)",
            self.key_version,
            self.ciphertext.len()
        )
    }
}

impl fmt::Display for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut body = self.nonce.to_vec();
        body.extend_from_slice(&self.ciphertext);
        write!(
            f,
            "sealed:v1:{}:{}",
            self.key_version,
            URL_SAFE_NO_PAD.encode(body)
        )
    }
}

impl std::str::FromStr for Sealed {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("sealed:v1:")
            .ok_or(CryptoError::MalformedSeal("missing the sealed:v1: prefix"))?;
        let (version, body) = rest
            .split_once(':')
            .ok_or(CryptoError::MalformedSeal("missing the key version"))?;
        let key_version = version
            .parse()
            .map_err(|_| CryptoError::MalformedSeal("the key version is not a number"))?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::MalformedSeal("the body is not base64url"))?;
        if body.len() < NONCE_LEN + 16 {
            return Err(CryptoError::MalformedSeal("too short"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[..NONCE_LEN]);
        Ok(Sealed {
            key_version,
            nonce,
            ciphertext: body[NONCE_LEN..].to_vec(),
        })
    }
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Argon2Params {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

const HASH_LEN: usize = 32;

fn argon2(params: Argon2Params) -> Result<argon2::Argon2<'static>, CryptoError> {
    let params = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(HASH_LEN),
    )
    .map_err(|e| CryptoError::Argon2(e.to_string()))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// Argon2id's working memory (`memory_kib` of it), kept by a thread that hashes many passwords
/// in turn: allocating and clearing 19 MiB for every hash costs about a tenth of the hash. Each
/// hash overwrites what the last one left; it is zeroed when dropped.
#[derive(Default)]
pub struct HashMemory(Vec<argon2::Block>);

impl HashMemory {
    /// The first `count` blocks, grown (never shrunk) on first use of larger parameters.
    fn blocks(&mut self, count: usize) -> &mut [argon2::Block] {
        if self.0.len() < count {
            self.0.resize(count, argon2::Block::default());
        }
        &mut self.0[..count]
    }
}

impl Drop for HashMemory {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for HashMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashMemory({} KiB)", self.0.len())
    }
}

/// An argon2id password verifier in PHC string format
/// (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`). It is secret: seal it before it enters an event.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordVerifier(Zeroizing<String>);

impl fmt::Debug for PasswordVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordVerifier(..)")
    }
}

impl PasswordVerifier {
    /// Hashes `password` with `salt` (16 random bytes).
    pub fn create(
        password: &str,
        salt: [u8; 16],
        params: Argon2Params,
    ) -> Result<Self, CryptoError> {
        Self::create_in(password, salt, params, &mut HashMemory::default())
    }

    /// [`PasswordVerifier::create`] in working memory kept by the caller.
    pub fn create_in(
        password: &str,
        salt: [u8; 16],
        params: Argon2Params,
        memory: &mut HashMemory,
    ) -> Result<Self, CryptoError> {
        let mut hash = Zeroizing::new([0u8; HASH_LEN]);
        let argon2 = argon2(params)?;
        argon2
            .hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                hash.as_mut(),
                memory.blocks(argon2.params().block_count()),
            )
            .map_err(|e| CryptoError::Argon2(e.to_string()))?;
        Ok(PasswordVerifier(Zeroizing::new(format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            params.memory_kib,
            params.iterations,
            params.parallelism,
            STANDARD_NO_PAD.encode(salt),
            STANDARD_NO_PAD.encode(hash.as_ref())
        ))))
    }

    /// Reads a verifier from its PHC string.
    pub fn parse(phc: &str) -> Result<Self, CryptoError> {
        parse_phc(phc)?;
        Ok(PasswordVerifier(Zeroizing::new(phc.to_owned())))
    }

    pub fn as_phc(&self) -> &str {
        &self.0
    }

    /// The parameters it was made with (to rehash after a policy change).
    pub fn params(&self) -> Result<Argon2Params, CryptoError> {
        parse_phc(&self.0).map(|p| p.params)
    }

    /// Whether `password` matches, comparing the hashes in constant time.
    pub fn verify(&self, password: &str) -> Result<bool, CryptoError> {
        self.verify_in(password, &mut HashMemory::default())
    }

    /// [`PasswordVerifier::verify`] in working memory kept by the caller.
    pub fn verify_in(&self, password: &str, memory: &mut HashMemory) -> Result<bool, CryptoError> {
        let phc = parse_phc(&self.0)?;
        let mut computed = Zeroizing::new(vec![0u8; phc.hash.len()]);
        let argon2 = argon2(phc.params)?;
        argon2
            .hash_password_into_with_memory(
                password.as_bytes(),
                &phc.salt,
                computed.as_mut(),
                memory.blocks(argon2.params().block_count()),
            )
            .map_err(|e| CryptoError::Argon2(e.to_string()))?;
        Ok(bool::from(computed.as_slice().ct_eq(phc.hash.as_slice())))
    }
}

struct Phc {
    params: Argon2Params,
    salt: Vec<u8>,
    hash: Zeroizing<Vec<u8>>,
}

fn parse_phc(phc: &str) -> Result<Phc, CryptoError> {
    let malformed = CryptoError::MalformedVerifier;
    let parts: Vec<&str> = phc.split('$').collect();
    let ["", "argon2id", "v=19", params, salt, hash] = parts.as_slice() else {
        return Err(malformed(
            "expected $argon2id$v=19$m=..,t=..,p=..$salt$hash",
        ));
    };
    let mut values = [None; 3];
    for pair in params.split(',') {
        let (name, value) = pair.split_once('=').ok_or(malformed("bad parameter"))?;
        let value: u32 = value
            .parse()
            .map_err(|_| malformed("bad parameter value"))?;
        let slot = match name {
            "m" => 0,
            "t" => 1,
            "p" => 2,
            _ => return Err(malformed("unknown parameter")),
        };
        values[slot] = Some(value);
    }
    let [Some(memory_kib), Some(iterations), Some(parallelism)] = values else {
        return Err(malformed("missing a parameter"));
    };
    let salt = STANDARD_NO_PAD
        .decode(salt)
        .map_err(|_| malformed("salt is not base64"))?;
    let hash = Zeroizing::new(
        STANDARD_NO_PAD
            .decode(hash)
            .map_err(|_| malformed("hash is not base64"))?,
    );
    if salt.len() < 8 || hash.len() < 16 {
        return Err(malformed("salt or hash too short"));
    }
    Ok(Phc {
        params: Argon2Params {
            memory_kib,
            iterations,
            parallelism,
        },
        salt,
        hash,
    })
}
