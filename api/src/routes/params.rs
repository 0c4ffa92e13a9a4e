//! Query-string parameters as an extractor whose refusals are problems: a parameter of the
//! wrong type is a 422 naming it, like an invalid body field (axum's own `Query` answers such
//! a request with a plain-text 400).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// The request's query string, decoded as `T`.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        decode(parts.uri.query().unwrap_or_default()).map(Params)
    }
}

/// Decodes a query string (without its `?`).
pub fn decode<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let deserializer =
        serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        let message = error.into_inner().to_string();
        if field.is_empty() || field == "." {
            Problem::bad_request(format!("the query string: {message}"))
        } else {
            Problem::invalid(&field, &message)
        }
    })
}
