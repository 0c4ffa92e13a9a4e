//! idem's client programs over the HTTP contract ([`http`]): `idem-authenticator`, the software
//! stand-in for the mobile authenticator app ([`authenticator`]), and `idem-agent`, the
//! desktop agent ([`desktop`]) with the workstation's local accounts ([`accounts`]) and the QR
//! codes it draws in a terminal ([`qr`]); the files they keep are written atomically ([`files`]).

pub mod accounts;
pub mod authenticator;
pub mod desktop;
pub mod files;
pub mod http;
pub mod qr;
pub mod terminal;
