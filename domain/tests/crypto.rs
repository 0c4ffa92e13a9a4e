//! The master key and password verifiers: round trips, and every way a ciphertext can be moved
//! or a key confused, failing clearly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use domain::crypto::{
    Argon2Params, CryptoError, DataKey, HashMemory, PasswordVerifier, RootKey, Sealed,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Small argon2id costs keep the tests quick; one test uses the defaults.
const FAST: Argon2Params = Argon2Params {
    memory_kib: 256,
    iterations: 1,
    parallelism: 1,
};

fn tenant(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

#[test]
fn sealed_values_open_only_where_they_were_sealed() {
    let key = DataKey::new(1, [7; 32]);
    let sealed = key
        .seal(tenant(1), "personal_email", b"billy@home.example", [1; 24])
        .unwrap();
    assert_eq!(
        &*key.open(tenant(1), "personal_email", &sealed).unwrap(),
        b"billy@home.example"
    );

    assert_eq!(
        key.open(tenant(2), "personal_email", &sealed).unwrap_err(),
        CryptoError::SealTampered,
        "moved to another tenant"
    );
    assert_eq!(
        key.open(tenant(1), "password_verifier", &sealed)
            .unwrap_err(),
        CryptoError::SealTampered,
        "moved to another field"
    );
    let same_bytes_other_version = DataKey::new(2, [7; 32]);
    assert_eq!(
        same_bytes_other_version
            .open(tenant(1), "personal_email", &sealed)
            .unwrap_err(),
        CryptoError::KeyVersionMismatch {
            sealed: 1,
            given: 2
        }
    );
    let relabelled = Sealed {
        key_version: 2,
        ..sealed.clone()
    };
    assert_eq!(
        same_bytes_other_version
            .open(tenant(1), "personal_email", &relabelled)
            .unwrap_err(),
        CryptoError::SealTampered,
        "the key version is bound by the associated data"
    );
    let other_key = DataKey::new(1, [8; 32]);
    assert!(
        other_key
            .open(tenant(1), "personal_email", &sealed)
            .is_err()
    );
    let mut flipped = sealed.clone();
    flipped.ciphertext[0] ^= 1;
    assert_eq!(
        key.open(tenant(1), "personal_email", &flipped).unwrap_err(),
        CryptoError::SealTampered
    );
}

#[test]
fn sealed_values_travel_as_strings_that_hide_the_plaintext() {
    let key = DataKey::new(3, [9; 32]);
    let sealed = key
        .seal(tenant(1), "personal_email", b"billy@home.example", [2; 24])
        .unwrap();
    let json = serde_json::to_string(&sealed).unwrap();
    assert!(json.starts_with("\"sealed:v1:3:"), "{json}");
    assert!(!json.contains("billy"));
    let back: Sealed = serde_json::from_str(&json).unwrap();
    assert_eq!(back, sealed);
    assert!(!format!("{sealed:?}").contains("billy"));
    for bad in [
        "\"plain\"",
        "\"sealed:v1:x:AAAA\"",
        "\"sealed:v1:1:!!!\"",
        "\"sealed:v1:1:AAAA\"",
        "\"sealed:v2:1:AAAA\"",
    ] {
        assert!(serde_json::from_str::<Sealed>(bad).is_err(), "{bad}");
    }
}

#[test]
fn data_keys_are_wrapped_by_the_root_key() {
    let root = RootKey::from_bytes([1; 32]);
    let key = DataKey::new(1, [42; 32]);
    let wrapped = key.wrap(&root, tenant(1), [3; 24]).unwrap();
    assert!(
        !wrapped.windows(32).any(|w| w == [42; 32]),
        "the key is not in clear"
    );

    let unwrapped = DataKey::unwrap(&root, tenant(1), 1, &wrapped).unwrap();
    let sealed = key.seal(tenant(1), "f", b"secret", [4; 24]).unwrap();
    assert_eq!(
        &*unwrapped.open(tenant(1), "f", &sealed).unwrap(),
        b"secret"
    );

    assert_eq!(
        DataKey::unwrap(&root, tenant(2), 1, &wrapped).unwrap_err(),
        CryptoError::WrappedKeyTampered,
        "moved to another tenant"
    );
    assert_eq!(
        DataKey::unwrap(&root, tenant(1), 2, &wrapped).unwrap_err(),
        CryptoError::WrappedKeyTampered,
        "relabelled as another version"
    );
    let mut flipped = wrapped.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(
        DataKey::unwrap(&root, tenant(1), 1, &flipped).unwrap_err(),
        CryptoError::WrappedKeyTampered
    );
    assert!(matches!(
        DataKey::unwrap(&root, tenant(1), 1, &wrapped[..40]).unwrap_err(),
        CryptoError::MalformedWrappedKey(_)
    ));
}

#[test]
fn the_wrong_root_key_is_named_as_such() {
    let root = RootKey::from_bytes([1; 32]);
    let wrong = RootKey::from_bytes([2; 32]);
    let wrapped = DataKey::new(1, [42; 32])
        .wrap(&root, tenant(1), [3; 24])
        .unwrap();
    let err = DataKey::unwrap(&wrong, tenant(1), 1, &wrapped).unwrap_err();
    assert_eq!(
        err,
        CryptoError::WrongRootKey {
            expected: root.id(),
            actual: wrong.id()
        }
    );
    assert!(err.to_string().contains("root key"), "{err}");
    assert_ne!(root.id(), wrong.id());
}

#[test]
fn a_rotation_rewraps_the_same_key_under_the_new_root_key() {
    let (old, new) = (RootKey::from_bytes([1; 32]), RootKey::from_bytes([2; 32]));
    let key = DataKey::new(3, [42; 32]);
    let wrapped = key.wrap(&old, tenant(1), [3; 24]).unwrap();
    assert!(old.wrapped(&wrapped) && !new.wrapped(&wrapped));

    let rewrapped = DataKey::rewrap(&old, &new, tenant(1), 3, &wrapped, [4; 24]).unwrap();
    assert!(new.wrapped(&rewrapped) && !old.wrapped(&rewrapped));
    assert!(matches!(
        DataKey::unwrap(&old, tenant(1), 3, &rewrapped),
        Err(CryptoError::WrongRootKey { .. })
    ));
    // The data key itself is unchanged: what it sealed still opens.
    let sealed = key.seal(tenant(1), "f", b"secret", [5; 24]).unwrap();
    let reopened = DataKey::unwrap(&new, tenant(1), 3, &rewrapped).unwrap();
    assert_eq!(&*reopened.open(tenant(1), "f", &sealed).unwrap(), b"secret");

    // What the old key does not open is not rewrapped into something that looks sound.
    assert!(matches!(
        DataKey::rewrap(&new, &old, tenant(1), 3, &wrapped, [4; 24]),
        Err(CryptoError::WrongRootKey { .. })
    ));
    assert_eq!(
        DataKey::rewrap(&old, &new, tenant(2), 3, &wrapped, [4; 24]).unwrap_err(),
        CryptoError::WrappedKeyTampered
    );
    assert!(!old.wrapped(&wrapped[..5]), "too short to name a key");
}

#[test]
fn root_key_files_round_trip_and_refuse_garbage() {
    let root = RootKey::from_bytes([0xab; 32]);
    let contents = root.to_file_contents();
    assert_eq!(contents.trim().len(), 64);
    assert_eq!(
        RootKey::from_file_contents(&contents).unwrap().id(),
        root.id()
    );
    for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(66)] {
        assert_eq!(
            RootKey::from_file_contents(bad).unwrap_err(),
            CryptoError::MalformedRootKey
        );
    }
    assert!(
        !format!("{root:?}").contains("abab"),
        "Debug does not print the key"
    );
}

#[test]
fn password_verifiers_accept_only_the_password() {
    let verifier = PasswordVerifier::create("correct horse", [5; 16], FAST).unwrap();
    assert!(verifier.verify("correct horse").unwrap());
    assert!(!verifier.verify("correct horsf").unwrap());
    assert!(!verifier.verify("").unwrap());
    assert!(!verifier.verify("Correct horse").unwrap());
    assert_eq!(verifier.params().unwrap(), FAST);
    let other_salt = PasswordVerifier::create("correct horse", [6; 16], FAST).unwrap();
    assert_ne!(verifier.as_phc(), other_salt.as_phc(), "salted");
    assert!(
        !format!("{verifier:?}").contains("argon2"),
        "Debug hides the verifier"
    );
    let parsed = PasswordVerifier::parse(verifier.as_phc()).unwrap();
    assert!(parsed.verify("correct horse").unwrap());
}

#[test]
fn kept_working_memory_gives_the_same_answers_as_fresh_memory() {
    // One memory through hashes of other passwords and other sizes, as a hashing thread's:
    // what a hash leaves behind must not change the next one.
    let larger = Argon2Params {
        memory_kib: 512,
        iterations: 2,
        parallelism: 2,
    };
    let mut memory = HashMemory::default();
    let fresh = PasswordVerifier::create("correct horse", [5; 16], FAST).unwrap();
    let big = PasswordVerifier::create_in("battery staple", [9; 16], larger, &mut memory).unwrap();
    let kept = PasswordVerifier::create_in("correct horse", [5; 16], FAST, &mut memory).unwrap();
    assert_eq!(kept.as_phc(), fresh.as_phc());
    assert!(fresh.verify_in("correct horse", &mut memory).unwrap());
    assert!(!fresh.verify_in("correct horsf", &mut memory).unwrap());
    assert!(big.verify_in("battery staple", &mut memory).unwrap());
    assert!(big.verify("battery staple").unwrap());
    assert!(!big.verify_in("correct horse", &mut memory).unwrap());
    assert!(kept.verify_in("correct horse", &mut memory).unwrap());
}

#[test]
fn default_parameters_are_owasps_argon2id() {
    let params = Argon2Params::default();
    assert_eq!(
        (params.memory_kib, params.iterations, params.parallelism),
        (19_456, 2, 1)
    );
    let verifier = PasswordVerifier::create("hunter22", [1; 16], params).unwrap();
    assert!(
        verifier
            .as_phc()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        verifier.as_phc()
    );
    assert!(verifier.verify("hunter22").unwrap());
}

#[test]
fn malformed_verifiers_are_refused() {
    for bad in [
        "",
        "plain",
        "$argon2i$v=19$m=256,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=16$m=256,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=256,t=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=x,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=256,t=1,p=1$!!$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$argon2id$v=19$m=256,t=1,p=1$AAAA$AAAA",
    ] {
        assert!(PasswordVerifier::parse(bad).is_err(), "{bad}");
    }
    assert!(matches!(
        PasswordVerifier::create(
            "x",
            [0; 16],
            Argon2Params {
                memory_kib: 1,
                iterations: 0,
                parallelism: 1
            }
        ),
        Err(CryptoError::Argon2(_))
    ));
}

proptest! {
    #[test]
    fn any_value_round_trips_and_stays_bound(
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        field in "[a-z_]{1,20}",
        t in any::<u128>(),
        key_bytes in any::<[u8; 32]>(),
        nonce in any::<[u8; 24]>(),
    ) {
        let key = DataKey::new(1, key_bytes);
        let sealed = key.seal(tenant(t), &field, &plaintext, nonce).unwrap();
        prop_assert_eq!(&*key.open(tenant(t), &field, &sealed).unwrap(), &plaintext);
        prop_assert!(key.open(tenant(t.wrapping_add(1)), &field, &sealed).is_err());
        let other_field = format!("{field}x");
        prop_assert!(key.open(tenant(t), &other_field, &sealed).is_err());
        let text: Sealed = sealed.to_string().parse().unwrap();
        prop_assert_eq!(text, sealed);
    }
}

#[test]
fn onboarding_codes_are_keyed_with_a_key_derived_from_the_root_key() {
    use hmac::{Hmac, Mac};
    type HmacSha256 = Hmac<sha2::Sha256>;
    let root_bytes = [42u8; 32];
    let root = RootKey::from_bytes(root_bytes);
    let code_key = root.code_key();

    // HMAC-SHA256 as the hmac crate computes it from a slice: the derived key, then the code.
    let mut derive = HmacSha256::new_from_slice(&root_bytes).unwrap();
    derive.update(b"idem.onboarding-code-key.v1");
    let derived = derive.finalize().into_bytes();
    let mut mac = HmacSha256::new_from_slice(&derived).unwrap();
    mac.update(b"idem.onboarding-code.v1\0");
    mac.update(b"12345678");
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(code_key.keyed("12345678"), expected);

    assert_ne!(code_key.keyed("12345678"), code_key.keyed("12345679"));
    let other = RootKey::from_bytes([43; 32]).code_key();
    assert_ne!(other.keyed("12345678"), code_key.keyed("12345678"));
    assert_eq!(format!("{code_key:?}"), "CodeKey(..)");
}
