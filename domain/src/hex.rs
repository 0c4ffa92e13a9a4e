//! Lowercase hexadecimal, the stored and shown form of digests and key ids. One place that
//! writes it, without a temporary string per byte: digests are computed on every agent and
//! session request, and a root key's digits must not be left behind in freed memory.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lowercase hex digits of `bytes` to `out`, two per byte.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

/// The lowercase hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_has_its_two_digits() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = hex(&bytes);
        assert_eq!(text.len(), 512);
        for (byte, pair) in bytes.iter().zip(text.as_bytes().chunks(2)) {
            assert_eq!(pair, format!("{byte:02x}").as_bytes());
        }
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn appends_after_what_is_there() {
        let mut out = String::from("id:");
        push_hex(&mut out, &[0x00, 0xab, 0xff]);
        assert_eq!(out, "id:00abff");
    }
}
