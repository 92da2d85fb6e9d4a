//! The OpenAPI document, completed, and the route table derived from it.
//!
//! Why it exists: the document is the API's contract, and a client (or schemathesis, which
//! checks every answer against it) must find there every status a route can answer, not only
//! its successes. The handlers declare what is particular to them (200, 201, 404 of a missing
//! id, 409); the answers every route shares — a malformed request, a refused credential, `Host`
//! or `Origin` (docs/api.md#browsers), a refused body, an unavailable database — come from the
//! middleware and the extractors, so they are added here by rule, from what each operation
//! takes (a body, parameters, an id in its path). The same document says which methods each
//! path takes, so a request with another method gets a 405 naming them instead of a 404.
//!
//! Must never: replace a response a handler declared (its description and schema are more
//! precise); list a route that is not served (tests/api.rs serves every documented route).

use actix_web::http::Method;
use utoipa::openapi::path::{Operation, OperationBuilder, ParameterIn, PathItem};
use utoipa::openapi::schema::Ref;
use utoipa::openapi::{Content, HttpMethod, OpenApi, Response, ResponseBuilder};

/// The fixed parts of the document; paths and schemas are collected from the handlers.
pub fn base() -> OpenApi {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
    use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApiBuilder, SecurityRequirement};
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Rota admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("Applications, tasks, events and cluster of a Rota node. Errors are JSON {\"error\": {\"code\", \"message\"}}.")),
        )
        .components(Some(
            ComponentsBuilder::new().security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer))).build(),
        ))
        .security(Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]))
        .build()
}

/// The routes served outside `/api/v1` (health, metrics, the document itself): open to anyone
/// who passes the `Host` and `Origin` checks, so they carry no security requirement.
fn open_routes() -> Vec<(&'static str, Operation)> {
    let open = utoipa::openapi::security::SecurityRequirement::default;
    let json = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", Content::new(Some(utoipa::openapi::ObjectBuilder::new())))
            .build()
    };
    vec![
        (
            "/api/v1/openapi.json",
            OperationBuilder::new()
                .summary(Some("This document"))
                .security(open())
                .response("200", json("The OpenAPI 3 document"))
                .build(),
        ),
        (
            "/livez",
            OperationBuilder::new()
                .summary(Some("Liveness: 200 while the process serves HTTP"))
                .security(open())
                .response("200", json("Alive: {\"status\": \"ok\"}"))
                .build(),
        ),
        (
            "/readyz",
            OperationBuilder::new()
                .summary(Some("Readiness: the database answers and this node is a member that may act"))
                .security(open())
                .response("200", json("Ready, with every check"))
                .response("503", json("Not ready, with every failing check and its reason"))
                .build(),
        ),
        (
            "/metrics",
            OperationBuilder::new()
                .summary(Some("Prometheus metrics, in the format `Accept` asks for"))
                .security(open())
                .response(
                    "200",
                    super::metrics::CONTENT_TYPES
                        .into_iter()
                        .fold(
                            ResponseBuilder::new().description(
                                "Metrics: OpenMetrics when `Accept` asks for `application/openmetrics-text`, \
                                 the Prometheus text format 0.0.4 otherwise",
                            ),
                            |r, t| r.content(t, Content::new(Some(utoipa::openapi::ObjectBuilder::new()))),
                        )
                        .build(),
                )
                .build(),
        ),
    ]
}

/// Add the open routes and every shared answer to a document collected from the handlers.
pub fn complete(doc: &mut OpenApi) {
    for (path, op) in open_routes() {
        doc.paths.paths.insert(path.into(), PathItem::new(HttpMethod::Get, op));
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/v1/") && path != "/api/v1/openapi.json";
        for op in operations(item).into_iter().flatten() {
            for (status, description) in shared_answers(op, api) {
                op.responses.responses.entry(status.to_string()).or_insert_with(|| error_response(description).into());
            }
        }
    }
}

fn operations(item: &mut PathItem) -> [Option<&mut Operation>; 5] {
    [item.get.as_mut(), item.post.as_mut(), item.put.as_mut(), item.patch.as_mut(), item.delete.as_mut()]
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
        .build()
}

/// The statuses an operation can answer besides its own, by what it takes.
fn shared_answers(op: &Operation, api: bool) -> Vec<(u16, &'static str)> {
    let params = op.parameters.iter().flatten().filter_map(|p| match p {
        utoipa::openapi::RefOr::T(p) => Some(p.parameter_in.clone()),
        utoipa::openapi::RefOr::Ref(_) => None,
    });
    let (mut path_params, mut query_params) = (false, false);
    for place in params {
        path_params |= place == ParameterIn::Path;
        query_params |= place == ParameterIn::Query;
    }
    let body = op.request_body.is_some();
    let mut out = vec![
        (400, "Malformed request: a path or query value of the wrong type, an unknown query parameter or a body that is not JSON"),
        (403, "Refused: a foreign `Origin`, or (with tokens) a token whose scope does not allow this"),
        (421, "Refused: a `Host` this node does not answer to (no-token mode)"),
        (500, "Failed on the node's side"),
    ];
    if api {
        out.push((401, "Missing or unknown token (token mode)"));
        out.push((503, "The database is unavailable"));
    }
    if path_params {
        out.push((404, "No such resource"));
    }
    if body || query_params {
        out.push((422, "A field or parameter is invalid; each is named"));
    }
    if body {
        out.push((413, "The body exceeds `api.max_body_bytes`"));
        out.push((415, "The body is not sent as `application/json`"));
    }
    out
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Fixed(String),
    Param,
}

/// Which methods each path takes, from the completed document.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<(Vec<Segment>, Vec<Method>)>);

impl Routes {
    /// The table of a completed document.
    pub fn of(doc: &OpenApi) -> Routes {
        let mut table = Vec::new();
        for (path, item) in &doc.paths.paths {
            let template = path
                .trim_start_matches('/')
                .split('/')
                .map(|s| if s.starts_with('{') { Segment::Param } else { Segment::Fixed(s.to_string()) })
                .collect();
            let methods = [
                (item.get.is_some(), Method::GET),
                (item.post.is_some(), Method::POST),
                (item.put.is_some(), Method::PUT),
                (item.patch.is_some(), Method::PATCH),
                (item.delete.is_some(), Method::DELETE),
            ]
            .into_iter()
            .filter_map(|(has, m)| has.then_some(m))
            .collect();
            table.push((template, methods));
        }
        Routes(table)
    }

    /// The methods `path` takes, if it is a served path; fixed segments win over parameters, as
    /// the router matches them (`/apps/{id}` never answers for `/apps/by-name`).
    pub fn allowed(&self, path: &str) -> Option<Vec<Method>> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut best: Option<(usize, &Vec<Method>)> = None;
        for (template, methods) in &self.0 {
            if template.len() != segments.len() {
                continue;
            }
            let mut fixed = 0;
            let fits = template.iter().zip(&segments).all(|(t, s)| match t {
                Segment::Fixed(f) => {
                    fixed += 1;
                    f == s
                }
                Segment::Param => !s.is_empty(),
            });
            if fits && best.is_none_or(|(n, _)| fixed > n) {
                best = Some((fixed, methods));
            }
        }
        best.map(|(_, m)| m.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> OpenApi {
        let mut doc = base();
        let get = || OperationBuilder::new().response("200", Response::new("ok")).build();
        let mut apps = PathItem::new(HttpMethod::Get, get());
        apps.post = Some(
            OperationBuilder::new()
                .request_body(Some(utoipa::openapi::request_body::RequestBody::new()))
                .response("201", Response::new("created"))
                .build(),
        );
        doc.paths.paths.insert("/api/v1/apps".into(), apps);
        let by_id = OperationBuilder::new()
            .parameter(utoipa::openapi::path::ParameterBuilder::new().name("id").parameter_in(ParameterIn::Path))
            .response("200", Response::new("ok"))
            .response("404", Response::new("this application does not exist"))
            .build();
        doc.paths.paths.insert("/api/v1/apps/{id}".into(), PathItem::new(HttpMethod::Get, by_id));
        doc.paths.paths.insert("/api/v1/apps/by-name".into(), PathItem::new(HttpMethod::Post, get()));
        complete(&mut doc);
        doc
    }

    #[test]
    fn shared_answers_follow_what_an_operation_takes_and_keep_declared_ones() {
        let doc = doc();
        let codes = |path: &str, post: bool| -> Vec<String> {
            let item = &doc.paths.paths[path];
            let op = if post { item.post.as_ref() } else { item.get.as_ref() }.unwrap();
            op.responses.responses.keys().cloned().collect()
        };
        assert_eq!(codes("/api/v1/apps", true), ["201", "400", "401", "403", "413", "415", "421", "422", "500", "503"]);
        assert_eq!(codes("/api/v1/apps", false), ["200", "400", "401", "403", "421", "500", "503"]);
        assert_eq!(codes("/livez", false), ["200", "400", "403", "421", "500"]);
        let item = &doc.paths.paths["/api/v1/apps/{id}"];
        let kept = &item.get.as_ref().unwrap().responses.responses["404"];
        let utoipa::openapi::RefOr::T(kept) = kept else { panic!("a declared response became a reference") };
        assert_eq!(kept.description, "this application does not exist");
    }

    #[test]
    fn the_route_table_names_the_methods_of_a_path() {
        let routes = Routes::of(&doc());
        assert_eq!(routes.allowed("/api/v1/apps"), Some(vec![Method::GET, Method::POST]));
        assert_eq!(routes.allowed("/api/v1/apps/7"), Some(vec![Method::GET]));
        assert_eq!(routes.allowed("/api/v1/apps/by-name"), Some(vec![Method::POST]), "fixed segments win");
        assert_eq!(routes.allowed("/readyz"), Some(vec![Method::GET]));
        for unknown in ["/api/v1/apps/7/x", "/api/v1/nothing", "/api/v1/apps/", "/"] {
            assert_eq!(routes.allowed(unknown), None, "{unknown}");
        }
    }
}
