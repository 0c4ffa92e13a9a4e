//! The projections: each is a set of read models with its own database (an SQLite file or a
//! PostgreSQL schema), its own checkpoint, and its own way of applying events.

use std::fmt;

/// One projection of the log.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Projection {
    /// Tenants and their settings, users, access, devices, enrollment tokens, and the
    /// directory change feed; what the portals, the API and the agents read.
    Directory,
    /// Each tenant's timeline of events, with sealed values redacted.
    Audit,
}

impl Projection {
    pub const ALL: [Projection; 2] = [Projection::Directory, Projection::Audit];

    /// The name used for its files, schemas, metrics and commands.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Directory => "directory",
            Projection::Audit => "audit",
        }
    }

    /// The projection called `name`.
    pub fn from_name(name: &str) -> Option<Projection> {
        Projection::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
