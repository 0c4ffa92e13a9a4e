//! The HTTP handlers, one module per part of the contract.

pub mod health;
pub mod onboarding;
pub mod signup;

use crate::problem::Problem;

/// Any path the contract does not have.
pub async fn not_found() -> Problem {
    Problem::not_found("no such route")
}
