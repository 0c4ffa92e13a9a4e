//! Validators for everything a person types or uploads: tenant names and host labels, display
//! names, Windows usernames, email addresses, passwords, and branding images. Each returns the
//! normalised value or a [`FieldError`] naming the field and saying what is wrong in words a
//! portal can show next to it.

use std::fmt;

/// What is wrong with one field of a command.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// The longest DNS label.
pub const MAX_HOST_LABEL: usize = 63;

/// Names no tenant may take: they are, or may become, the platform's own hosts.
pub const RESERVED_NAMES: &[&str] = &[
    "www",
    "api",
    "admin",
    "app",
    "apps",
    "auth",
    "login",
    "sso",
    "mail",
    "smtp",
    "imap",
    "pop",
    "ftp",
    "ns",
    "ns1",
    "ns2",
    "dns",
    "status",
    "static",
    "assets",
    "cdn",
    "docs",
    "help",
    "support",
    "billing",
    "portal",
    "dashboard",
    "console",
    "metrics",
    "health",
    "localhost",
    "idem",
    "root",
    "system",
    "test",
    // The operator log's name in `idemd export` and `verify` (`crate::operator`).
    "operator",
];

/// A tenant name: lowercase `a-z`, `0-9` and `-`, no leading, trailing or doubled `-`, not
/// reserved, at most 63 octets. An MSP's name is its whole host label; a customer's label is
/// `{customer}-{msp}`, checked by [`customer_host_label`].
///
/// Doubled hyphens are refused because labels of the form `xn--...` are punycode, and a name
/// that looks like another name in a browser's address bar is a phishing tool.
pub fn tenant_name(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if name.len() > MAX_HOST_LABEL {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_HOST_LABEL} characters"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(FieldError::new(
            field,
            format!(
                "may contain only lowercase letters a-z, digits and '-', not {}",
                describe(bad)
            ),
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(FieldError::new(field, "must not start or end with '-'"));
    }
    if name.contains("--") {
        return Err(FieldError::new(field, "must not contain '--'"));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(FieldError::new(field, format!("'{name}' is reserved")));
    }
    Ok(name.to_owned())
}

/// The host label of a customer tenant, `{customer}-{msp}`, which must fit one DNS label.
pub fn customer_host_label(customer: &str, msp: &str) -> Result<String, FieldError> {
    let label = format!("{customer}-{msp}");
    if label.len() > MAX_HOST_LABEL {
        return Err(FieldError::new(
            "name",
            format!(
                "with the MSP's name the host label '{label}' is {} characters; at most \
                 {MAX_HOST_LABEL} fit, so the name may have at most {}",
                label.len(),
                MAX_HOST_LABEL.saturating_sub(msp.len() + 1)
            ),
        ));
    }
    Ok(label)
}

pub const MAX_DISPLAY_NAME: usize = 100;
pub const MAX_PERSON_NAME: usize = 64;

// The validators' rules as regular expressions, for the API document's `pattern`s: ECMA-262
// (JSON Schema's dialect), which Python's `re` (schemathesis) and Rust's `regex` (the tests,
// `domain/tests/validate.rs`) read alike. Each describes what its validator accepts, or more,
// never less: a client that keeps to the document is never refused for its characters.

/// The characters `str::trim` removes (Unicode's White_Space), as the body of a class.
const TRIMMED: &str = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// The characters [`display_name`] and [`username`] refuse (`is_invisible_control`).
const INVISIBLE: &str = r"\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff";
/// The characters [`username`] refuses besides those (Windows forbids them).
const USERNAME_FORBIDDEN_CLASS: &str = r#""/\\\[\]:;|=,+*?<>@"#;

/// [`display_name`]'s rule for at most `max` characters (at least 2; [`MAX_DISPLAY_NAME`],
/// or [`MAX_PERSON_NAME`] for [`person_name`]) as a regular expression: exactly what it
/// accepts.
pub fn text_pattern(max: usize) -> String {
    let inner = max.saturating_sub(2);
    format!(
        "^[{TRIMMED}]*[^{TRIMMED}{INVISIBLE}]([^{INVISIBLE}]{{0,{inner}}}[^{TRIMMED}{INVISIBLE}])?[{TRIMMED}]*$"
    )
}

/// [`tenant_name`]'s rule as a regular expression, without a `maxLength` (surrounding
/// spaces are trimmed, not counted): 1 to 63 of `a-z`, `0-9` and `-`, neither first nor last.
/// It lets by what [`tenant_name`] refuses for other reasons: `--` inside, reserved names.
pub fn tenant_name_pattern() -> String {
    let inner = MAX_HOST_LABEL - 2;
    format!("^[{TRIMMED}]*[a-z0-9]([a-z0-9-]{{0,{inner}}}[a-z0-9])?[{TRIMMED}]*$")
}

/// [`username`]'s rule as a regular expression, with a `maxLength` of [`MAX_USERNAME`]: no
/// forbidden or invisible character, no space first or last. It lets by what [`username`]
/// refuses for other reasons: names of dots alone, and names of up to 20 characters that
/// take more than 20 UTF-16 units.
pub fn username_pattern() -> String {
    let refused = format!("{USERNAME_FORBIDDEN_CLASS}{INVISIBLE}");
    format!("^[^ {refused}]([^{refused}]*[^ {refused}])?$")
}

/// What [`PasswordPolicy::check`] refuses whatever the deployment's lengths: a control
/// character. (The document gives the lengths every deployment allows.)
pub fn password_pattern() -> String {
    r"^[^\x00-\x1f\x7f-\x9f]*$".to_owned()
}

/// Free text shown as a title: trimmed, 1 to 100 characters, no control characters.
pub fn display_name(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if text.chars().count() > MAX_DISPLAY_NAME {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_DISPLAY_NAME} characters"),
        ));
    }
    if let Some(bad) = text.chars().find(|c| is_invisible_control(*c)) {
        return Err(FieldError::new(
            field,
            format!("must not contain {}", describe(bad)),
        ));
    }
    Ok(text.to_owned())
}

/// A person's first or last name: like a display name, at most 64 characters.
pub fn person_name(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let text = display_name(field, raw)?;
    if text.chars().count() > MAX_PERSON_NAME {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_PERSON_NAME} characters"),
        ));
    }
    Ok(text)
}

/// The longest Windows user name (the SAM account name).
pub const MAX_USERNAME: usize = 20;
const USERNAME_FORBIDDEN: &[char] = &[
    '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@',
];

/// A Windows username: 1 to 20 characters, none of `" / \ [ ] : ; | = , + * ? < > @` nor a
/// control character, not only dots and spaces, no leading or trailing space. Returns it as
/// typed; compare with [`username_key`].
pub fn username(raw: &str) -> Result<String, FieldError> {
    const FIELD: &str = "username";
    if raw.is_empty() {
        return Err(FieldError::new(FIELD, "must not be empty"));
    }
    // Windows counts UTF-16 code units: an emoji takes two of the twenty.
    if raw.encode_utf16().count() > MAX_USERNAME {
        return Err(FieldError::new(
            FIELD,
            format!("must be at most {MAX_USERNAME} characters (a Windows limit)"),
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| USERNAME_FORBIDDEN.contains(c) || c.is_control() || is_invisible_control(*c))
    {
        return Err(FieldError::new(
            FIELD,
            format!("must not contain {}", describe(bad)),
        ));
    }
    if raw.chars().all(|c| c == '.' || c == ' ') {
        return Err(FieldError::new(FIELD, "must not be only dots or spaces"));
    }
    if raw.starts_with(' ') || raw.ends_with(' ') {
        return Err(FieldError::new(FIELD, "must not start or end with a space"));
    }
    Ok(raw.to_owned())
}

/// The form in which usernames are compared: Windows treats them case-insensitively.
pub fn username_key(username: &str) -> String {
    username.to_lowercase()
}

pub const MAX_EMAIL: usize = 254;

/// An email address as people type it for a mailbox they own: `local@domain`, with a dot-atom
/// local part of at most 64 octets and a domain of DNS labels (at least two), at most 254
/// octets in all. Quoted local parts and IP literals are refused: nobody onboards with them.
/// Returns the address with its domain lowercased; compare with [`email_key`].
pub fn email(field: &'static str, raw: &str) -> Result<String, FieldError> {
    let address = raw.trim();
    let invalid = |why: &str| {
        Err(FieldError::new(
            field,
            format!("is not a valid email address: {why}"),
        ))
    };
    if address.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if address.len() > MAX_EMAIL {
        return invalid("longer than 254 characters");
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return invalid("it has no '@'");
    };
    if local.is_empty() || local.len() > 64 {
        return invalid("the part before '@' must be 1 to 64 characters");
    }
    let atom = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    if !local.chars().all(|c| atom(c) || c == '.')
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return invalid("the part before '@' has a character or dot that is not allowed");
    }
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return invalid("the domain needs a dot, as in example.com");
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= MAX_HOST_LABEL
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return invalid("the domain is not a valid host name");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return invalid("the domain is not a valid host name");
    }
    Ok(format!("{local}@{domain}"))
}

/// The form in which email addresses are compared: whole address, lowercase.
pub fn email_key(email: &str) -> String {
    email.to_lowercase()
}

/// The least minimum length a deployment may set (`IDEM_PASSWORD_MIN_LENGTH`).
pub const LEAST_MIN_PASSWORD_CHARS: usize = 8;
/// The longest password.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// The password rules of a deployment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PasswordPolicy {
    pub min_chars: usize,
    pub max_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_chars: LEAST_MIN_PASSWORD_CHARS,
            max_chars: MAX_PASSWORD_CHARS,
        }
    }
}

impl PasswordPolicy {
    /// Checks a password's length (in characters) and that it holds no control characters,
    /// which no keyboard at a Windows logon screen can type. The error never quotes it.
    pub fn check(&self, password: &str) -> Result<(), FieldError> {
        const FIELD: &str = "password";
        let chars = password.chars().count();
        if chars < self.min_chars {
            return Err(FieldError::new(
                FIELD,
                format!("must be at least {} characters", self.min_chars),
            ));
        }
        if chars > self.max_chars {
            return Err(FieldError::new(
                FIELD,
                format!("must be at most {} characters", self.max_chars),
            ));
        }
        if password.chars().any(char::is_control) {
            return Err(FieldError::new(
                FIELD,
                "must not contain control characters",
            ));
        }
        Ok(())
    }
}

/// Formats branding images may have.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }
}

/// Limits on uploaded images.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ImageLimits {
    pub max_bytes: usize,
    pub max_width: u32,
    pub max_height: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_bytes: 2 << 20,
            max_width: 4096,
            max_height: 4096,
        }
    }
}

/// A checked image: its format and size, read from its content (never from its name).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

/// Identifies a PNG or JPEG by its bytes and checks its size and dimensions.
pub fn image(
    field: &'static str,
    bytes: &[u8],
    limits: ImageLimits,
) -> Result<ImageInfo, FieldError> {
    if bytes.len() > limits.max_bytes {
        return Err(FieldError::new(
            field,
            format!(
                "is {} bytes; at most {} are allowed",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let info = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        png_info(bytes)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        jpeg_info(bytes)
    } else {
        None
    };
    let Some(info) = info else {
        return Err(FieldError::new(field, "must be a PNG or JPEG image"));
    };
    if info.width == 0 || info.height == 0 {
        return Err(FieldError::new(field, "has no pixels"));
    }
    if info.width > limits.max_width || info.height > limits.max_height {
        return Err(FieldError::new(
            field,
            format!(
                "is {}×{} pixels; at most {}×{} are allowed",
                info.width, info.height, limits.max_width, limits.max_height
            ),
        ));
    }
    Ok(info)
}

/// A PNG's dimensions from its IHDR chunk, which must come first.
fn png_info(bytes: &[u8]) -> Option<ImageInfo> {
    let ihdr = bytes.get(8..33)?;
    if &ihdr[4..8] != b"IHDR" || u32::from_be_bytes(ihdr[0..4].try_into().ok()?) != 13 {
        return None;
    }
    Some(ImageInfo {
        format: ImageFormat::Png,
        width: u32::from_be_bytes(ihdr[8..12].try_into().ok()?),
        height: u32::from_be_bytes(ihdr[12..16].try_into().ok()?),
    })
}

/// A JPEG's dimensions from its first start-of-frame segment, walking the marker segments.
fn jpeg_info(bytes: &[u8]) -> Option<ImageInfo> {
    let mut i = 2;
    loop {
        // Markers may be padded with 0xff fill bytes.
        while *bytes.get(i)? == 0xff && *bytes.get(i + 1)? == 0xff {
            i += 1;
        }
        if *bytes.get(i)? != 0xff {
            return None;
        }
        let marker = *bytes.get(i + 1)?;
        let len = usize::from(u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]));
        if len < 2 {
            return None;
        }
        // SOF0..SOF15, except DHT (c4), JPG (c8) and DAC (cc), carry the frame size.
        if (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc) {
            let sof = bytes.get(i + 4..i + 9)?;
            return Some(ImageInfo {
                format: ImageFormat::Jpeg,
                height: u32::from(u16::from_be_bytes([sof[1], sof[2]])),
                width: u32::from(u16::from_be_bytes([sof[3], sof[4]])),
            });
        }
        if marker == 0xda || marker == 0xd9 {
            return None; // image data or end before any frame header
        }
        i += 2 + len;
    }
}

/// Format-control and other invisible characters that make two strings look alike.
fn is_invisible_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// A character as an error message shows it.
fn describe(c: char) -> String {
    if c.is_control() || is_invisible_control(c) || c.is_whitespace() {
        format!("the character U+{:04X}", u32::from(c))
    } else {
        format!("'{c}'")
    }
}
