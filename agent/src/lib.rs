//! idem's client programs. Today: `idem-authenticator`, the software stand-in for the mobile
//! authenticator app ([`authenticator`]), over the HTTP contract ([`http`]).

pub mod accounts;
pub mod authenticator;
pub mod http;
