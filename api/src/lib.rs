//! idemd, the HTTP service: it resolves each request's tenant from its Host header, turns
//! commands into events through the domain, commits them to the event log, and answers reads
//! from the projections. Errors leave as problem+json (`problem`).

pub mod app;
pub mod audit;
pub mod auth;
pub mod body_deadline;
pub mod cache;
pub mod challenges;
pub mod client_addr;
pub mod command;
pub mod config;
pub mod control;
pub mod feed;
pub mod hashing;
pub mod host;
pub mod key_mirror;
pub mod limits;
pub mod log_pipe;
pub mod mail;
pub mod metrics;
pub mod metrics_token;
pub mod openapi;
pub mod operator;
pub mod operator_identity;
pub mod operator_log;
pub mod per_address;
pub mod portal;
pub mod problem;
pub mod process_stats;
pub mod redelete;
pub mod root_key;
pub mod routes;
pub mod serve;
pub mod snapshots;

pub use app::{Server, StartError};
pub use config::{Config, Settings};
