//! The ranges of regular user and group ids, as the system's `etc/login.defs` sets them
//! (`UID_MIN`, `UID_MAX`, `GID_MIN`, `GID_MAX`), with shadow-utils' defaults where it is
//! silent. An account whose uid is outside the user range belongs to the system; a new
//! account gets an id inside both ranges, as `useradd` gives it.

use std::ops::RangeInclusive;
use std::path::Path;

use super::AccountError;

/// shadow-utils' defaults, which Debian's `login.defs` also writes out.
const DEFAULT_MIN: u32 = 1000;
const DEFAULT_MAX: u32 = 60_000;

/// The regular id ranges of one system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdRanges {
    pub uid: RangeInclusive<u32>,
    pub gid: RangeInclusive<u32>,
}

impl Default for IdRanges {
    fn default() -> IdRanges {
        IdRanges {
            uid: DEFAULT_MIN..=DEFAULT_MAX,
            gid: DEFAULT_MIN..=DEFAULT_MAX,
        }
    }
}

/// A number as shadow-utils' `getdef` reads one (`strtoul` with base 0): decimal, `0x` hex,
/// or octal with a leading `0`.
fn number(text: &str) -> Option<u32> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if text.len() > 1
        && let Some(octal) = text.strip_prefix('0')
    {
        u32::from_str_radix(octal, 8).ok()
    } else {
        text.parse().ok()
    }
}

impl IdRanges {
    /// Reads `path` (the defaults if it does not exist). A value that is not a number, or a
    /// range whose minimum is above its maximum, is an error naming the file: guessing could
    /// make a system account the agent's to open.
    pub fn read(path: &Path) -> Result<IdRanges, AccountError> {
        match std::fs::read_to_string(path) {
            Ok(text) => IdRanges::parse(&text)
                .map_err(|why| AccountError::Invalid(format!("{}: {why}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IdRanges::default()),
            Err(e) => Err(AccountError::Io(path.to_owned(), e)),
        }
    }

    /// The ranges in `login.defs` text: `NAME VALUE` lines, `#` comments; the last line of a
    /// name counts, as in shadow-utils.
    pub fn parse(text: &str) -> Result<IdRanges, String> {
        let mut ranges = IdRanges::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(name), value) = (words.next(), words.next()) else {
                continue;
            };
            let (range, is_min) = match name {
                "UID_MIN" => (&mut ranges.uid, true),
                "UID_MAX" => (&mut ranges.uid, false),
                "GID_MIN" => (&mut ranges.gid, true),
                "GID_MAX" => (&mut ranges.gid, false),
                _ => continue,
            };
            let value = value
                .and_then(number)
                .ok_or_else(|| format!("{name} is not a number"))?;
            *range = if is_min {
                value..=*range.end()
            } else {
                *range.start()..=value
            };
        }
        for (name, range) in [("UID", &ranges.uid), ("GID", &ranges.gid)] {
            if range.is_empty() {
                return Err(format!("{name}_MIN is above {name}_MAX"));
            }
        }
        Ok(ranges)
    }

    /// The ids a new account may take: regular as a user and as a group, so that its own
    /// group can share its number.
    pub fn shared(&self) -> RangeInclusive<u32> {
        *self.uid.start().max(self.gid.start())..=*self.uid.end().min(self.gid.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_come_from_login_defs_with_shadow_defaults_where_it_is_silent() {
        let text = "# comment UID_MIN 5\n\
                    UID_MIN\t\t 2000\n\
                    UID_MAX 0x7530\n\
                    GID_MIN 0144\n\
                    MAIL_DIR /var/mail\n\
                    UID_MIN 1500\n";
        assert_eq!(
            IdRanges::parse(text),
            Ok(IdRanges {
                uid: 1500..=30_000,
                gid: 100..=60_000,
            })
        );
        assert_eq!(IdRanges::parse(""), Ok(IdRanges::default()));
        assert_eq!(IdRanges::default().uid, 1000..=60_000);
        assert_eq!(
            IdRanges::parse("UID_MIN 1500\nUID_MAX 30000\nGID_MIN 100\n")
                .unwrap()
                .shared(),
            1500..=30_000
        );
    }

    #[test]
    fn a_value_that_is_not_a_number_or_an_empty_range_is_refused() {
        assert_eq!(
            IdRanges::parse("UID_MIN lots\n"),
            Err("UID_MIN is not a number".into())
        );
        assert_eq!(
            IdRanges::parse("GID_MAX\n"),
            Err("GID_MAX is not a number".into())
        );
        assert_eq!(
            IdRanges::parse("UID_MIN 5000\nUID_MAX 4000\n"),
            Err("UID_MIN is above UID_MAX".into())
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("login.defs");
        std::fs::write(&path, "GID_MIN 09\n").unwrap();
        let refused = IdRanges::read(&path).unwrap_err().to_string();
        assert!(
            refused.contains("login.defs: GID_MIN is not a number"),
            "{refused}"
        );
        assert_eq!(
            IdRanges::read(&dir.path().join("missing")).unwrap(),
            IdRanges::default()
        );
    }
}
