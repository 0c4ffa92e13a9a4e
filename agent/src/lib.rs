//! idem's client programs over the HTTP contract ([`http`]): `idem-authenticator`, the software
//! stand-in for the mobile authenticator app ([`authenticator`]), and `idem-agent`, the
//! desktop agent ([`desktop`]) with the workstation's local accounts ([`accounts`]).

pub mod accounts;
pub mod authenticator;
pub mod desktop;
pub mod http;
