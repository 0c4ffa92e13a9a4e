//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the route tables in
//! `routes/table.rs` (the same tables the router is built from).

use axum::Json;
use axum::extract::State;
use domain::validate::{self, PasswordPolicy};
use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::app::Shared;
use crate::routes::table::{Operation, public, session, uploads};

/// Every operation of the service.
pub fn operations() -> impl Iterator<Item = &'static Operation> {
    public::OPERATIONS
        .iter()
        .chain(session::OPERATIONS)
        .chain(uploads::OPERATIONS)
}

/// The generators of the request and the response schemas: JSON Schema 2020-12 (OpenAPI 3.1's
/// dialect), with named types under the document's components. Requests are described as
/// they are decoded (a field with a default may be left out), answers as they are encoded.
fn generators() -> (SchemaGenerator, SchemaGenerator) {
    let settings = SchemaSettings::draft2020_12().with(|settings| {
        settings.definitions_path = "/components/schemas".into();
        settings.meta_schema = None;
    });
    (
        settings.clone().for_deserialize().into_generator(),
        settings.for_serialize().into_generator(),
    )
}

/// The query parameters of an object schema: one per property.
fn query_parameters(schema: &Schema) -> Vec<Value> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"));
            // An optional field is nullable in a JSON body; a query string has no null.
            if let Some(types) = property.get_mut("type").and_then(Value::as_array_mut) {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    property["type"] = only.clone();
                }
            }
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": property,
            });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

/// The branding upload's body (multipart, read part by part rather than decoded).
fn branding_upload() -> Value {
    let image = json!({
        "type": "string",
        "format": "binary",
        "description": "PNG or JPEG, at most 2 MiB and 4096x4096 pixels",
    });
    let image_types = json!({"contentType": "image/png, image/jpeg"});
    json!({
        "required": true,
        "content": {"multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "background": image,
                    "logo": image,
                    "text": {"type": "string", "description": "The login screen's text; empty removes it"},
                },
            },
            "encoding": {"background": image_types, "logo": image_types},
        }},
    })
}

/// The document.
pub fn build() -> Value {
    let (mut generator, mut answers) = generators();
    let mut paths = Map::new();
    for operation in operations() {
        let mut parameters: Vec<Value> = path_parameters(operation.path)
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        if let Some(query) = operation.query {
            parameters.extend(query_parameters(&query(&mut generator)));
        }
        let reads = operation.method == "get";
        let mut success = json!({"description": match operation.status {
            201 => "Created",
            202 => "Accepted",
            204 => "Done; no content",
            303 => "Redirected",
            _ => "Success",
        }});
        if let Some(response) = operation.response {
            success["content"] = json!({"application/json": {"schema": response(&mut answers)}});
        }
        if let Some(lines) = operation.lines {
            // OpenAPI 3.1 has no schema for the items of a sequence: the schema is a line's.
            success["description"] = json!("Success: one object of the schema a line");
            success["content"] = json!({"application/x-ndjson": {"schema": lines(&mut answers)}});
        }
        if !reads {
            success["headers"] =
                json!({"Idem-Position": {"$ref": "#/components/headers/IdemPosition"}});
        }
        let problem = |description: &str| {
            json!({
                "description": description,
                "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            })
        };
        let mut responses = Map::new();
        responses.insert(operation.status.to_string(), success);
        responses.insert("4XX".into(), problem("Refused (429: rate limited)"));
        responses.insert(
            "5XX".into(),
            problem("Failed (503: busy or stopping, try again; 500: logged, never explained)"),
        );
        let mut entry = json!({
            "operationId": operation_id(operation.method, operation.path),
            "summary": operation.summary,
            "parameters": parameters,
            "responses": responses,
        });
        if operation.session {
            entry["security"] = json!([{"bearer": []}, {"cookie": []}]);
        }
        if let Some(body) = operation.body {
            entry["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": body(&mut generator)}},
            });
        } else if operation.method == "put" && operation.path == "/api/v1/branding" {
            entry["requestBody"] = branding_upload();
        }
        let path = paths
            .entry(operation.path.to_owned())
            .or_insert_with(|| json!({}));
        path[operation.method] = entry;
    }
    let mut schemas = generator.take_definitions(true);
    // A type both decoded and answered is named once: the tests check that both descriptions
    // of such a name agree.
    for (name, schema) in answers.take_definitions(true) {
        schemas.entry(name).or_insert(schema);
    }
    schemas.insert("Problem".to_owned(), problem_schema());
    add_links(&mut paths, &schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "idem",
            "version": env!("CARGO_PKG_VERSION"),
            // Not a parameter of each read: a declared header makes fuzzers expect requests
            // with other headers refused, which no HTTP service behind a proxy can do.
            "description": "Identity for MSPs. The tenant of every request is its Host header. \
                            Any read sent with `Idem-Min-Position: N` (an `Idem-Position` a \
                            write answered) is served once the read models have reached log \
                            position N, or after a few seconds; a value that is not a whole \
                            number is a 400.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": crate::auth::COOKIE},
            },
            "schemas": schemas,
            "headers": {
                "IdemPosition": {
                    "description": "The log position of the write, when it wrote anything: a \
                                    later read sent with `Idem-Min-Position` sees it",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "RetryAfter": {
                    "description": "On 429 and 503: seconds to wait before trying again",
                    "schema": {"type": "integer", "minimum": 0},
                },
            },
        },
    })
}

/// An operation's id: its method and its path's segments past `/api/v1`, braces dropped
/// (`get_users_id` for `GET /api/v1/users/{id}`); the tests check that no two are alike.
fn operation_id(method: &str, path: &str) -> String {
    let segments = path
        .trim_start_matches("/api/v1")
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            segment
                .trim_matches(|c| c == '{' || c == '}')
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        });
    std::iter::once(method.to_owned())
        .chain(segments)
        .collect::<Vec<_>>()
        .join("_")
}

/// The path parameters of a path pattern, in order.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// OpenAPI links from each creating call (`201`) to the operations under the path of what
/// it created: `POST /api/v1/users` answers the user's `id`, which
/// `GET /api/v1/users/{id}` and the others take. A link is made where the answer has a field
/// named as the one path parameter the target adds; the target's other parameters come from
/// the creating request's own path. Clients (and stateful fuzzers) follow them to chain calls.
fn add_links(paths: &mut Map<String, Value>, schemas: &Map<String, Value>) {
    let mut found: Vec<(String, Value)> = Vec::new();
    for (from_path, from_methods) in paths.iter() {
        let Some(created) = from_methods.get("post") else {
            continue;
        };
        let Some(answer) = created["responses"]["201"]["content"]["application/json"].get("schema")
        else {
            continue;
        };
        let mut links = Map::new();
        for (to_path, to_methods) in paths.iter() {
            let Some(under) = to_path
                .strip_prefix(from_path.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                continue;
            };
            let Some(added) = under
                .split('/')
                .next()
                .and_then(|s| s.strip_prefix('{'))
                .and_then(|s| s.strip_suffix('}'))
            else {
                continue;
            };
            if !has_property(answer, schemas, added) {
                continue;
            }
            let mut parameters = Map::new();
            for name in path_parameters(to_path) {
                let source = match path_parameters(from_path).any(|known| known == name) {
                    true => format!("$request.path.{name}"),
                    false if name == added => format!("$response.body#/{name}"),
                    false => continue,
                };
                parameters.insert(name.to_owned(), Value::String(source));
            }
            if path_parameters(to_path).count() != parameters.len() {
                continue;
            }
            let targets = to_methods.as_object().into_iter().flat_map(Map::values);
            for id in targets.filter_map(|target| target["operationId"].as_str()) {
                links.insert(
                    id.to_owned(),
                    json!({"operationId": id, "parameters": parameters}),
                );
            }
        }
        if !links.is_empty() {
            found.push((from_path.clone(), Value::Object(links)));
        }
    }
    for (path, links) in found {
        paths[&path]["post"]["responses"]["201"]["links"] = links;
    }
}

/// Whether every value of `schema` (`$ref`s into `schemas` followed, each alternative of an
/// `anyOf` or `oneOf`) has the property `name`.
fn has_property(schema: &Value, schemas: &Map<String, Value>, name: &str) -> bool {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference
            .strip_prefix("#/components/schemas/")
            .and_then(|named| schemas.get(named))
            .is_some_and(|named| has_property(named, schemas, name));
    }
    if schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|properties| properties.contains_key(name))
    {
        return true;
    }
    ["anyOf", "oneOf"].iter().any(|key| {
        schema
            .get(*key)
            .and_then(Value::as_array)
            .is_some_and(|alternatives| {
                !alternatives.is_empty()
                    && alternatives.iter().all(|a| has_property(a, schemas, name))
            })
    })
}

/// RFC 9457's problem, as every error is answered.
fn problem_schema() -> Value {
    json!({
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
    })
}

/// The document as a deployment with `policy` serves it: every new password's length
/// (the fields with [`validate::password_pattern`]) is the policy's, not the least one the
/// service allows, so a client held to the document sends no password this deployment
/// refuses for its length.
pub fn build_for(policy: &PasswordPolicy) -> Value {
    let mut document = build();
    let pattern = Value::from(validate::password_pattern());
    let mut pending = vec![&mut document];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(fields) => {
                if fields.get("pattern") == Some(&pattern) {
                    fields.insert("minLength".into(), policy.min_chars.into());
                    fields.insert("maxLength".into(), policy.max_chars.into());
                }
                pending.extend(fields.values_mut());
            }
            Value::Array(items) => pending.extend(items.iter_mut()),
            _ => {}
        }
    }
    document
}

/// The handler: the document with this deployment's password policy.
pub async fn document(State(state): State<Shared>) -> Json<Value> {
    Json(build_for(&state.config.password_policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_names_its_problems_and_the_position_header() {
        let document = build();
        let mut writes = 0;
        for (path, methods) in document["paths"].as_object().unwrap() {
            for (method, operation) in methods.as_object().unwrap() {
                let what = format!("{method} {path}");
                let responses = &operation["responses"];
                for class in ["4XX", "5XX"] {
                    assert_eq!(
                        responses[class]["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{what} {class}"
                    );
                    assert_eq!(
                        responses[class]["headers"]["Retry-After"]["$ref"],
                        "#/components/headers/RetryAfter",
                        "{what} {class}"
                    );
                }
                let success = responses
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(code, _)| code.parse::<u16>().is_ok())
                    .map(|(_, answer)| answer)
                    .unwrap();
                if method == "get" {
                    assert!(success.get("headers").is_none(), "{what}");
                } else {
                    writes += 1;
                    assert_eq!(
                        success["headers"]["Idem-Position"]["$ref"],
                        "#/components/headers/IdemPosition",
                        "{what}"
                    );
                }
            }
        }
        assert!(writes > 20);
        let components = &document["components"];
        assert_eq!(
            components["headers"]["IdemPosition"]["schema"]["type"],
            "integer"
        );
        let description = document["info"]["description"].as_str().unwrap();
        assert!(description.contains("Idem-Min-Position"), "{description}");
    }

    #[test]
    fn new_passwords_are_described_with_the_deployments_policy() {
        let schemas = |document: &Value| document["components"]["schemas"].clone();
        let stricter = schemas(&build_for(&PasswordPolicy {
            min_chars: 16,
            max_chars: 64,
        }));
        for (schema, field) in [
            ("PasswordBody", "password"),
            ("DirectoryNewUser", "password"),
            ("PasswordChangeRequest", "new_password"),
        ] {
            let described = &stricter[schema]["properties"][field];
            assert_eq!(
                (&described["minLength"], &described["maxLength"]),
                (&json!(16), &json!(64)),
                "{schema}.{field}: {described}"
            );
        }
        // A password that is checked, not set, has no length to meet.
        for (schema, field) in [
            ("LoginRequest", "password"),
            ("PasswordChangeRequest", "password"),
        ] {
            assert_eq!(stricter[schema]["properties"][field].get("minLength"), None);
        }
        // The default policy is what the static document says.
        assert_eq!(build_for(&PasswordPolicy::default()), build());
    }

    #[test]
    fn what_a_call_creates_links_to_the_operations_on_it() {
        let document = build();
        let paths = document["paths"].as_object().unwrap();
        let mut operations = std::collections::BTreeMap::new();
        for (path, methods) in paths {
            for (method, operation) in methods.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap();
                assert!(
                    operations.insert(id, path.as_str()).is_none(),
                    "{method} {path}: operationId {id} is taken"
                );
            }
        }
        assert_eq!(operations["get_users_id"], "/api/v1/users/{id}");
        let mut linked = 0;
        for (path, methods) in paths {
            for operation in methods.as_object().unwrap().values() {
                for answer in operation["responses"].as_object().unwrap().values() {
                    let Some(links) = answer.get("links") else {
                        continue;
                    };
                    for (name, link) in links.as_object().unwrap() {
                        linked += 1;
                        let target = operations[link["operationId"].as_str().unwrap()];
                        assert_eq!(name, link["operationId"].as_str().unwrap());
                        let given: Vec<&String> =
                            link["parameters"].as_object().unwrap().keys().collect();
                        let mut wanted: Vec<&str> = path_parameters(target).collect();
                        wanted.sort_unstable();
                        assert_eq!(given, wanted, "{path} → {target}");
                        for (parameter, source) in link["parameters"].as_object().unwrap() {
                            let source = source.as_str().unwrap();
                            let from_request = source == format!("$request.path.{parameter}")
                                && path_parameters(path).any(|p| p == parameter);
                            let from_answer = source == format!("$response.body#/{parameter}");
                            assert!(from_request || from_answer, "{path} → {target}: {source}");
                        }
                    }
                }
            }
        }
        let links = |path: &str| paths[path]["post"]["responses"]["201"]["links"].clone();
        let users = links("/api/v1/users");
        for id in [
            "get_users_id",
            "patch_users_id",
            "delete_users_id",
            "put_users_id_password",
            "post_users_id_passwordless",
            "post_users_id_admin",
            "delete_users_id_auditor",
        ] {
            assert_eq!(
                users[id],
                json!({"operationId": id, "parameters": {"id": "$response.body#/id"}}),
                "{id}"
            );
        }
        assert_eq!(
            links("/api/v1/customers/{name}/technicians")["delete_customers_name_technicians_user_id"]
                ["parameters"],
            json!({"name": "$request.path.name", "user_id": "$response.body#/user_id"})
        );
        let customers = links("/api/v1/customers");
        assert_eq!(
            customers["get_customers_name_technicians"]["parameters"],
            json!({"name": "$response.body#/name"})
        );
        assert!(
            customers
                .get("delete_customers_name_technicians_user_id")
                .is_none(),
            "a customer's answer names no technician"
        );
        assert!(
            links("/api/v1/signup").is_null(),
            "nothing lives under /api/v1/signup"
        );
        assert!(linked >= 19, "{linked} links");
    }

    #[test]
    fn a_name_both_decoded_and_answered_is_described_alike() {
        let (mut requests, mut answers) = generators();
        for operation in operations() {
            for schema in [operation.body, operation.query].into_iter().flatten() {
                schema(&mut requests);
            }
            for schema in [operation.response, operation.lines].into_iter().flatten() {
                schema(&mut answers);
            }
        }
        let requests = requests.take_definitions(true);
        let answers = answers.take_definitions(true);
        assert!(!answers.is_empty());
        // Two types of one name would be told apart by a number: name one of them.
        for name in requests.keys().chain(answers.keys()) {
            assert!(
                !name.ends_with(|c: char| c.is_ascii_digit()),
                "{name}: two types share a name"
            );
        }
        for (name, schema) in &answers {
            if let Some(request) = requests.get(name) {
                assert_eq!(schema, request, "{name} is described two ways");
            }
        }
    }
}
