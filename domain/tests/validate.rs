//! Every validator, with the edge cases a hostile user would try.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use domain::validate::{self, ImageFormat, ImageLimits, PasswordPolicy};

fn refused<T: std::fmt::Debug>(result: Result<T, validate::FieldError>, field: &str) -> String {
    let err = result.expect_err("must be refused");
    assert_eq!(err.field, field);
    assert!(!err.message.is_empty());
    err.message
}

#[test]
fn tenant_names_accept_dns_labels() {
    for ok in ["acme", "a", "customer1", "big-msp-2", &"a".repeat(63)] {
        assert_eq!(validate::tenant_name("name", ok).unwrap(), ok);
    }
    assert_eq!(validate::tenant_name("name", "  acme \n").unwrap(), "acme");
}

#[test]
fn tenant_names_refuse_what_is_not_a_plain_label() {
    let long = "a".repeat(64);
    for bad in [
        "",
        "   ",
        "Acme",
        "ac_me",
        "ac.me",
        "ac me",
        "acmé",
        "-acme",
        "acme-",
        "ac--me",
        "xn--acme",
        "аcme", // Cyrillic а: looks like "acme"
        "ac\0me",
        "acme/../x",
        "*",
        &long,
    ] {
        refused(validate::tenant_name("name", bad), "name");
    }
}

#[test]
fn tenant_names_refuse_reserved_words() {
    for reserved in ["www", "api", "admin", "login", "localhost"] {
        let message = refused(validate::tenant_name("name", reserved), "name");
        assert!(message.contains("reserved"), "{message}");
    }
    assert!(validate::tenant_name("name", "www2").is_ok());
}

#[test]
fn customer_labels_must_fit_one_dns_label() {
    let msp = "m".repeat(30);
    assert_eq!(
        validate::customer_host_label(&"c".repeat(32), &msp)
            .unwrap()
            .len(),
        63
    );
    let message = refused(validate::customer_host_label(&"c".repeat(33), &msp), "name");
    assert!(message.contains("at most 32"), "{message}");
}

#[test]
fn display_names_are_trimmed_unicode_without_invisible_tricks() {
    assert_eq!(
        validate::display_name("display_name", "  Acme Corp  ").unwrap(),
        "Acme Corp"
    );
    assert!(validate::display_name("display_name", "Ünïcødé 株式会社 🚀").is_ok());
    assert!(validate::display_name("display_name", &"é".repeat(100)).is_ok());
    for bad in [
        "",
        "   ",
        "\t\n",
        &"é".repeat(101),
        "a\nb",
        "evil\u{202e}gpj.exe",
        "zero\u{200b}width",
        "bom\u{feff}",
        "nul\0",
    ] {
        refused(validate::display_name("display_name", bad), "display_name");
    }
}

#[test]
fn person_names_are_bounded() {
    assert!(validate::person_name("first_name", "Billy").is_ok());
    refused(
        validate::person_name("first_name", &"x".repeat(65)),
        "first_name",
    );
    refused(validate::person_name("last_name", " "), "last_name");
}

#[test]
fn usernames_follow_windows_rules() {
    for ok in [
        "billy",
        "Billy.Jones",
        "b",
        "bílly",
        "o'brien",
        "a b",
        &"x".repeat(20),
        "admin$",
    ] {
        assert_eq!(validate::username(ok).unwrap(), ok);
    }
    refused(validate::username(&"x".repeat(21)), "username");
    // Twenty UTF-16 units: ten emoji are twenty units; one more letter is too many.
    assert!(validate::username(&"😀".repeat(10)).is_ok());
    refused(
        validate::username(&format!("{}a", "😀".repeat(10))),
        "username",
    );
    for c in [
        '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@',
    ] {
        let message = refused(validate::username(&format!("bil{c}ly")), "username");
        assert!(message.contains(c), "{message}");
    }
    for bad in [
        "",
        ".",
        "...",
        "   ",
        ". .",
        " billy",
        "billy ",
        "bil\tly",
        "bil\nly",
        "bil\0ly",
        "a\u{200b}b",
    ] {
        refused(validate::username(bad), "username");
    }
}

/// Whether `raw` matches `pattern` (from the API document) and is at most `max` characters
/// (its `maxLength`).
fn described(pattern: &str, max: usize, raw: &str) -> bool {
    regex::Regex::new(pattern).unwrap().is_match(raw) && raw.chars().count() <= max
}

/// The API document's description of a username.
fn described_as_a_username(raw: &str) -> bool {
    described(&validate::username_pattern(), validate::MAX_USERNAME, raw)
}

#[test]
fn the_documented_username_pattern_refuses_what_the_validator_refuses_for_its_characters() {
    for ok in [
        "Billy",
        "j.doe",
        "a b",
        "Zoë",
        "x",
        "idem-admin",
        "O'Brien",
        "名前",
        "a.",
        "_",
    ] {
        assert!(validate::username(ok).is_ok(), "{ok:?}");
        assert!(described_as_a_username(ok), "{ok:?}");
    }
    for bad in [
        "",
        " a",
        "a ",
        "a/b",
        "a\\b",
        "a[b",
        "a]b",
        "a:b",
        "a;b",
        "a|b",
        "a=b",
        "a,b",
        "a+b",
        "a*b",
        "a?b",
        "a<b",
        "a>b",
        "a@b",
        "a\"b",
        "a\u{0}b",
        "a\tb",
        "a\u{7f}",
        "a\u{85}b",
        "a\u{200b}b",
        "\u{202e}ab",
        "ab\u{2060}",
        "\u{feff}",
        "abcdefghijklmnopqrstu",
    ] {
        assert!(validate::username(bad).is_err(), "{bad:?}");
        assert!(!described_as_a_username(bad), "{bad:?}");
    }
}

#[test]
fn the_documented_name_patterns_are_the_validators() {
    let person = validate::text_pattern(validate::MAX_PERSON_NAME);
    let display = validate::text_pattern(validate::MAX_DISPLAY_NAME);
    // The document gives no maxLength for names: surrounding spaces are trimmed, not counted.
    let person_ok = |raw: &str| described(&person, usize::MAX, raw);
    for ok in [
        "Zoë",
        "a",
        "Jean-Luc",
        "  padded\t",
        "\u{a0}x\u{3000}",
        "名前",
        "a b",
    ] {
        assert!(validate::person_name("n", ok).is_ok(), "{ok:?}");
        assert!(person_ok(ok), "{ok:?}");
    }
    let long = "x".repeat(validate::MAX_PERSON_NAME);
    let padded = format!("  {long}  ");
    assert!(validate::person_name("n", &padded).is_ok());
    assert!(person_ok(&padded));
    for bad in [
        "",
        " ",
        "\t\n",
        "a\u{0}b",
        "a\tb",
        "a\u{200b}",
        "\u{feff}a",
        &format!("{long}x"),
    ] {
        assert!(validate::person_name("n", bad).is_err(), "{bad:?}");
        assert!(!person_ok(bad), "{bad:?}");
    }
    let hundred = "y".repeat(validate::MAX_DISPLAY_NAME);
    assert!(described(&display, usize::MAX, &hundred));
    assert!(!described(&display, usize::MAX, &format!("{hundred}y")));
}

#[test]
fn the_documented_tenant_name_pattern_lets_by_every_name_accepted() {
    let pattern = validate::tenant_name_pattern();
    let described = |raw: &str| described(&pattern, usize::MAX, raw);
    let longest = "a".repeat(63);
    for ok in [
        "acme",
        "a",
        "contoso-2",
        " acme\t",
        "\u{a0}x1\u{3000}",
        &longest,
    ] {
        assert!(validate::tenant_name("name", ok).is_ok(), "{ok:?}");
        assert!(described(ok), "{ok:?}");
    }
    for bad in [
        "",
        " ",
        "Acme",
        "-acme",
        "acme-",
        "ac me",
        "acmé",
        "a_b",
        "a.b",
        &format!("{longest}a"),
    ] {
        assert!(validate::tenant_name("name", bad).is_err(), "{bad:?}");
        assert!(!described(bad), "{bad:?}");
    }
    // Let by, refused by the service for reasons a pattern does not hold.
    for passed in ["a--b", "www"] {
        assert!(validate::tenant_name("name", passed).is_err(), "{passed:?}");
        assert!(described(passed), "{passed:?}");
    }
}

#[test]
fn the_documented_password_rule_refuses_control_characters_only() {
    let policy = PasswordPolicy::default();
    assert_eq!(policy.min_chars, validate::LEAST_MIN_PASSWORD_CHARS);
    assert_eq!(policy.max_chars, validate::MAX_PASSWORD_CHARS);
    let pattern = validate::password_pattern();
    for ok in ["correct horse", "Pässwörd 名前!", "a\u{200b}bcdefgh"] {
        assert!(policy.check(ok).is_ok(), "{ok:?}");
        assert!(
            described(&pattern, validate::MAX_PASSWORD_CHARS, ok),
            "{ok:?}"
        );
    }
    for bad in ["correct\thorse", "correct\u{7f}horse", "correct\u{85}horse"] {
        assert!(policy.check(bad).is_err(), "{bad:?}");
        assert!(
            !described(&pattern, validate::MAX_PASSWORD_CHARS, bad),
            "{bad:?}"
        );
    }
}

proptest::proptest! {
    /// The name patterns say exactly what the validators accept, trimming included.
    #[test]
    fn the_name_patterns_match_exactly_the_names_accepted(raw in "\\PC{0,70}|[ -~]{0,70}|[\\x00-\\x{ff}]{0,70}|[a. \\t\\x{85}\\x{a0}\\x{2000}-\\x{2070}\\x{3000}\\x{fe00}-\\x{feff}]{0,70}") {
        let person = validate::text_pattern(validate::MAX_PERSON_NAME);
        proptest::prop_assert_eq!(
            validate::person_name("n", &raw).is_ok(),
            described(&person, usize::MAX, &raw),
            "{:?}", raw
        );
        let display = validate::text_pattern(validate::MAX_DISPLAY_NAME);
        proptest::prop_assert_eq!(
            validate::display_name("n", &raw).is_ok(),
            described(&display, usize::MAX, &raw),
            "{:?}", raw
        );
    }

    /// Never stricter than the service: every tenant name it accepts, padded or not, keeps to
    /// the document.
    #[test]
    fn the_tenant_name_pattern_is_never_stricter(raw in "[ \t]{0,2}[a-z0-9-]{1,64}[ \t\\x{a0}]{0,2}|[a-z0-9 .A-Z-]{0,70}") {
        if validate::tenant_name("name", &raw).is_ok() {
            proptest::prop_assert!(
                described(&validate::tenant_name_pattern(), usize::MAX, &raw),
                "{:?}", raw
            );
        }
    }

    /// Never stricter than the service: a client that keeps to the document is never refused
    /// a username for its characters (only names of dots alone, which the pattern lets by).
    #[test]
    fn every_username_the_validator_accepts_is_described(raw in "\\PC{0,22}|[ -~]{0,22}|[\\x00-\\x{ff}]{0,22}|[a. \\x{2000}-\\x{2070}\\x{fe00}-\\x{feff}]{0,22}") {
        if validate::username(&raw).is_ok() {
            proptest::prop_assert!(described_as_a_username(&raw), "{:?}", raw);
        }
        if described_as_a_username(&raw) && raw.encode_utf16().count() <= validate::MAX_USERNAME {
            let only_dots_and_spaces = raw.chars().all(|c| c == '.' || c == ' ');
            proptest::prop_assert_eq!(validate::username(&raw).is_ok(), !only_dots_and_spaces, "{:?}", raw);
        }
    }
}

#[test]
fn usernames_compare_case_insensitively() {
    assert_eq!(
        validate::username_key("Billy"),
        validate::username_key("BILLY")
    );
    assert_eq!(
        validate::username_key("ÉMILE"),
        validate::username_key("émile")
    );
    assert_ne!(
        validate::username_key("billy"),
        validate::username_key("billy2")
    );
}

#[test]
fn emails_accept_real_addresses_and_lowercase_the_domain() {
    assert_eq!(
        validate::email("email", "billy@acme.example").unwrap(),
        "billy@acme.example"
    );
    assert_eq!(
        validate::email("email", "  Billy.Jones+it@Sub.Acme.EXAMPLE ").unwrap(),
        "Billy.Jones+it@sub.acme.example"
    );
    assert!(validate::email("email", &format!("{}@acme.example", "a".repeat(64))).is_ok());
    assert_eq!(
        validate::email_key("Billy@Acme.Example"),
        "billy@acme.example"
    );
}

#[test]
fn emails_refuse_malformed_and_hostile_input() {
    let long_local = format!("{}@acme.example", "a".repeat(65));
    let long_total = format!("a@{}.example", "b".repeat(250));
    for bad in [
        "",
        "billy",
        "billy@",
        "@acme.com",
        "billy@acme",
        "bil..ly@acme.com",
        ".billy@acme.com",
        "billy.@acme.com",
        "billy@acme..com",
        "billy@-acme.com",
        "billy@acme-.com",
        "bi lly@acme.com",
        "billy@acme.123",
        "\"quoted\"@acme.com",
        "a@b@c.com",
        "billy@[127.0.0.1]",
        "billy@acme.com\r\nBcc: x@y.com",
        "bïlly@acme.com",
        "billy@acme_corp.com",
        &long_local,
        &long_total,
    ] {
        refused(validate::email("email", bad), "email");
    }
}

#[test]
fn passwords_follow_the_policy_and_are_never_echoed() {
    let policy = PasswordPolicy::default();
    assert!(policy.check("12345678").is_ok());
    assert!(policy.check(&"p".repeat(128)).is_ok());
    assert!(
        policy.check("pässwörd").is_ok(),
        "counted in characters, not bytes"
    );
    assert!(policy.check("correct horse battery staple").is_ok());
    for bad in [
        "",
        "1234567",
        "äöüäöüä",
        &"p".repeat(129),
        "password\0",
        "pass\nword",
        "pass\u{7}word",
    ] {
        let message = refused(policy.check(bad), "password");
        assert!(
            bad.is_empty() || !message.contains(bad),
            "the message quotes the password"
        );
    }
    let strict = PasswordPolicy {
        min_chars: 12,
        max_chars: 64,
    };
    refused(strict.check("elevenchars"), "password");
    assert!(strict.check(&"x".repeat(64)).is_ok());
}

/// A PNG signature and IHDR chunk of the given size (enough for the validator).
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(b"IHDR");
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bytes
}

/// A JPEG: SOI, an APP0 segment, then a start-of-frame segment of the given marker and size.
fn jpeg(sof: u8, width: u16, height: u16) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10];
    bytes.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    bytes.extend_from_slice(&[0xff, sof, 0x00, 0x11, 0x08]);
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    bytes.extend_from_slice(&[0xff, 0xd9]);
    bytes
}

#[test]
fn images_are_recognised_by_content() {
    let limits = ImageLimits::default();
    let info = validate::image("logo", &png(200, 80), limits).unwrap();
    assert_eq!(
        (info.format, info.width, info.height),
        (ImageFormat::Png, 200, 80)
    );
    for sof in [0xc0, 0xc2] {
        let info = validate::image("background", &jpeg(sof, 1920, 1080), limits).unwrap();
        assert_eq!(
            (info.format, info.width, info.height),
            (ImageFormat::Jpeg, 1920, 1080)
        );
    }
    assert_eq!(ImageFormat::Png.media_type(), "image/png");
}

#[test]
fn images_refuse_other_content_whatever_their_name() {
    let limits = ImageLimits::default();
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".to_vec();
    let gif = b"GIF89a\x01\x00\x01\x00".to_vec();
    let truncated_png = png(10, 10)[..20].to_vec();
    let mut wrong_chunk = png(10, 10);
    wrong_chunk[12..16].copy_from_slice(b"IDAT");
    let jpeg_without_frame = vec![0xff, 0xd8, 0xff, 0xda, 0x00, 0x02, 0xff, 0xd9];
    let jpeg_zero_length = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x00];
    for (what, bytes) in [
        ("svg", svg),
        ("gif", gif),
        ("empty", Vec::new()),
        ("truncated png", truncated_png),
        ("png without IHDR first", wrong_chunk),
        ("jpeg without a frame", jpeg_without_frame),
        ("jpeg with a zero-length segment", jpeg_zero_length),
        ("zero width", png(0, 10)),
        ("too wide", png(4097, 10)),
        ("too tall jpeg", jpeg(0xc0, 10, 5000)),
    ] {
        let result = validate::image("logo", &bytes, limits);
        assert!(result.is_err(), "{what} was accepted");
    }
    let mut big = png(10, 10);
    big.resize(limits.max_bytes + 1, 0);
    let message = refused(validate::image("background", &big, limits), "background");
    assert!(message.contains("bytes"), "{message}");
}
