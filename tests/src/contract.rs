//! The API's answers held to its own OpenAPI document: every answer a test receives through
//! [`crate::Platform::call`] has the success status the document gives its operation (201,
//! 204, ...), its JSON body is validated against the operation's schema, and every problem
//! against the problem schema. A 2xx JSON answer of an operation the document gives no
//! answer schema fails too, so a route cannot answer what the contract does not describe.
//! An NDJSON answer (the audit export) has each line validated against its line schema
//! ([`check_lines`]).

use std::sync::LazyLock;

use jsonschema::{Draft, Validator};
use reqwest::Method;
use serde_json::{Value, json};

/// One operation of the document: how its path is matched, and its answer's schema.
struct Operation {
    method: String,
    template: String,
    /// The path's segments; `None` for a parameter.
    segments: Vec<Option<String>>,
    /// The status of a success.
    status: u16,
    answer: Option<Validator>,
    /// The schema of each line of an NDJSON answer.
    lines: Option<Validator>,
    /// The schema of a JSON request body, if the operation takes one.
    request: Option<Validator>,
}

struct Contract {
    operations: Vec<Operation>,
    problem: Validator,
}

static CONTRACT: LazyLock<Contract> = LazyLock::new(load);

/// A validator of `schema`, whose references point into the document's components.
fn validator(schema: &Value, components: &Value) -> Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "#/$defs/answer",
        "$defs": {"answer": schema},
        "components": components,
    });
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("the document's schema {schema} does not compile: {e}"))
}

fn load() -> Contract {
    let document = api::openapi::build();
    let components = &document["components"];
    let mut operations = Vec::new();
    for (template, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let (status, success) = responses
                .iter()
                .find_map(|(code, answer)| Some((code.parse::<u16>().ok()?, answer)))
                .unwrap_or_else(|| panic!("{method} {template} has no success status"));
            let schema = &success["content"]["application/json"]["schema"];
            let lines = &success["content"]["application/x-ndjson"]["schema"];
            let request = &operation["requestBody"]["content"]["application/json"]["schema"];
            operations.push(Operation {
                method: method.to_uppercase(),
                template: template.clone(),
                segments: template
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                    .collect(),
                status,
                answer: (!schema.is_null()).then(|| validator(schema, components)),
                lines: (!lines.is_null()).then(|| validator(lines, components)),
                request: (!request.is_null()).then(|| validator(request, components)),
            });
        }
    }
    let problem = validator(&json!({"$ref": "#/components/schemas/Problem"}), components);
    Contract {
        operations,
        problem,
    }
}

/// The operation `method path` is, preferring literal segments over parameters.
fn operation(method: &Method, path: &str) -> Option<&'static Operation> {
    let segments: Vec<&str> = path.split('/').collect();
    CONTRACT
        .operations
        .iter()
        .filter(|op| op.method == method.as_str() && op.segments.len() == segments.len())
        .filter(|op| {
            op.segments
                .iter()
                .zip(&segments)
                .all(|(template, segment)| template.as_deref().is_none_or(|t| t == *segment))
        })
        .max_by_key(|op| op.segments.iter().filter(|s| s.is_some()).count())
}

fn assert_valid(validator: &Validator, body: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the OpenAPI document: {errors:#?}\nanswer: {body:#}"
    );
}

/// Checks an NDJSON answer to `method path`, whose text is `text`: a success must be one the
/// document describes as NDJSON, and each line must match the document's line schema.
pub fn check_lines(method: &Method, path: &str, status: u16, content_type: &str, text: &str) {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !(200..300).contains(&status) {
        return;
    }
    assert_eq!(media_type, "application/x-ndjson", "{method} {path}");
    let operation =
        operation(method, path).unwrap_or_else(|| panic!("{method} {path} is not in the document"));
    let what = format!("{method} {} ({path})", operation.template);
    assert_eq!(status, operation.status, "{what}");
    let lines = operation
        .lines
        .as_ref()
        .unwrap_or_else(|| panic!("{what} answered NDJSON the document does not describe"));
    for (number, line) in text.lines().enumerate() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{what}: line {} is not JSON: {e}", number + 1));
        assert_valid(lines, &value, &format!("{what}, line {}", number + 1));
    }
}

/// Checks a JSON request body sent to `method path` against the operation's request schema:
/// the operation must be in the document and take a JSON body.
pub fn check_request(method: &Method, path: &str, body: &Value) {
    let operation =
        operation(method, path).unwrap_or_else(|| panic!("{method} {path} is not in the document"));
    let what = format!("the request of {method} {} ({path})", operation.template);
    let request = operation
        .request
        .as_ref()
        .unwrap_or_else(|| panic!("{what} has a JSON body the document does not describe"));
    assert_valid(request, body, &what);
}

/// Checks an answer to `method path` against the document; paths the document does not have
/// (portal pages, `/sso`) are not its business.
pub fn check(method: &Method, path: &str, status: u16, content_type: &str, body: &Value) {
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if media_type == "application/problem+json" {
        assert_valid(
            &CONTRACT.problem,
            body,
            &format!("the problem {status} of {method} {path}"),
        );
        return;
    }
    // A success, or the redirect of an operation that answers with one (not a 304 to a
    // conditional request).
    if !(200..300).contains(&status) && status != 303 {
        return;
    }
    let Some(operation) = operation(method, path) else {
        return;
    };
    let what = format!("{method} {} ({path})", operation.template);
    assert_eq!(
        status, operation.status,
        "{what} succeeded with another status than the document's"
    );
    if media_type == "application/x-ndjson" {
        // Read as JSON by the caller: one line parsed whole, several kept as text.
        let text = match body {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        return check_lines(method, path, status, content_type, &text);
    }
    if media_type != "application/json" {
        return;
    }
    let Some(answer) = &operation.answer else {
        let shown: String = body.to_string().chars().take(300).collect();
        panic!("{what} answered JSON the document does not describe: {shown}");
    };
    assert_valid(answer, body, &what);
}
