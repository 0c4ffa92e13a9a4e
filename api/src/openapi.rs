//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the route tables in
//! `routes/table.rs` (the same tables the router is built from).

use axum::Json;
use serde_json::{Map, Value, json};

use crate::routes::table::{Operation, public, session, uploads};

/// Every operation of the service.
pub fn operations() -> impl Iterator<Item = &'static Operation> {
    public::OPERATIONS
        .iter()
        .chain(session::OPERATIONS)
        .chain(uploads::OPERATIONS)
}

/// The document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for operation in operations() {
        let mut parameters = Vec::new();
        for segment in operation.path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                parameters.push(json!({
                    "name": name, "in": "path", "required": true, "schema": {"type": "string"},
                }));
            }
        }
        let mut entry = json!({
            "summary": operation.summary,
            "parameters": parameters,
            "responses": {
                "2XX": {"description": "Success"},
                "4XX": {
                    "description": "Refused",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            },
        });
        if operation.session {
            entry["security"] = json!([{"bearer": []}, {"cookie": []}]);
        }
        let path = paths
            .entry(operation.path.to_owned())
            .or_insert_with(|| json!({}));
        path[operation.method] = entry;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "idem",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Identity for MSPs. The tenant of every request is its Host header.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": crate::auth::COOKIE},
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                        }},
                    },
                },
            },
        },
    })
}

/// The handler.
pub async fn document() -> Json<Value> {
    Json(build())
}
