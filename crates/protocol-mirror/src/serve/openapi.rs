//! The OpenAPI 3.1 document of the daemon (`GET /openapi.json`), built from the same
//! tables the router and the read API use, so it cannot drift from them. A test
//! compares it with the committed `openapi.json` at the top of the workspace.

use protocol_types::Resource;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, ResponseBuilder, Schema,
};

use super::read_api;

/// A field of a Protocol object, for its schema.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Flag,
    Time,
    Integer,
    Object,
    Array,
}

fn fields(resource: Resource) -> &'static [(&'static str, Kind)] {
    use Kind::*;
    match resource {
        Resource::Contact => &[
            ("username", Text),
            ("phone_number", Text),
            ("avatar_url", Text),
            ("display_name", Text),
            ("conversation_id", Text),
            ("last_active_at", Time),
            ("created_at", Time),
        ],
        Resource::Conversation => &[
            ("contact_id", Text),
            ("group_id", Text),
            ("pinned_message_id", Text),
            ("is_pinned", Flag),
            ("is_muted", Flag),
            ("last_active_at", Time),
            ("last_opened_at", Time),
            ("created_at", Time),
            ("archived_at", Time),
        ],
        Resource::Message => &[
            ("conversation_id", Text),
            ("contact", Object),
            ("message", Text),
            ("reactions", Array),
            ("attachments", Array),
            ("read_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        Resource::Group => &[
            ("name", Text),
            ("description", Text),
            ("avatar_url", Text),
            ("conversation_id", Text),
            ("contacts", Array),
            ("created_at", Time),
            ("archived_at", Time),
        ],
        Resource::Attachment => &[
            ("message_id", Text),
            ("filename", Text),
            ("file_url", Text),
            ("file_type", Text),
            ("file_size", Integer),
            ("created_at", Time),
        ],
    }
}

fn nullable(kind: Type) -> SchemaType {
    SchemaType::from_iter([kind, Type::Null])
}

fn model_schema(resource: Resource) -> Schema {
    let mut object = ObjectBuilder::new()
        .description(Some(format!(
            "A {resource} as Protocol sends it: exactly the keys received (merged), unknown keys included. Timestamps are Unix seconds."
        )))
        .property("id", ObjectBuilder::new().schema_type(Type::String))
        .required("id");
    for (name, kind) in fields(resource) {
        let schema: RefOr<Schema> = match kind {
            Kind::Text => ObjectBuilder::new()
                .schema_type(nullable(Type::String))
                .into(),
            Kind::Flag => ObjectBuilder::new()
                .schema_type(nullable(Type::Boolean))
                .into(),
            Kind::Time | Kind::Integer => ObjectBuilder::new()
                .schema_type(nullable(Type::Integer))
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Int64,
                )))
                .into(),
            Kind::Object => ObjectBuilder::new()
                .schema_type(nullable(Type::Object))
                .into(),
            // Received as `null`, an array stays `null` (ARCHITECTURE, decisions).
            Kind::Array => match (resource, *name) {
                (Resource::Message, "attachments") => ArrayBuilder::new()
                    .schema_type(nullable(Type::Array))
                    .items(Ref::from_schema_name("Attachment"))
                    .into(),
                _ => ArrayBuilder::new()
                    .schema_type(nullable(Type::Array))
                    .items(ObjectBuilder::new().schema_type(Type::Object))
                    .into(),
            },
        };
        object = object.property(*name, schema);
    }
    object.into()
}

fn schema_name(resource: Resource) -> &'static str {
    match resource {
        Resource::Contact => "Contact",
        Resource::Conversation => "Conversation",
        Resource::Message => "Message",
        Resource::Group => "Group",
        Resource::Attachment => "Attachment",
    }
}

fn json_response(description: &str, schema: impl Into<RefOr<Schema>>) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema.into())).build(),
        )
        .build()
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    json_response(description, Ref::from_schema_name("Error"))
}

/// The answer to a request whose head is over the limit, from the HTTP library, for
/// every route: no body.
fn head_too_large() -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description("The request line and headers together are over 32 KiB (no body)")
        .build()
}

fn query(
    name: &str,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn filter_description(name: &str) -> &'static str {
    match name {
        "conversation_id" => "Only objects of this conversation.",
        "group_id" => "Only conversations of this group.",
        "muted" => "Only conversations that are (true) or are not (false) muted.",
        "pinned" => "Only conversations that are (true) or are not (false) pinned.",
        "archived" => "Only objects that are (true) or are not (false) archived.",
        _ => "A filter.",
    }
}

fn read_security() -> Vec<SecurityRequirement> {
    vec![
        SecurityRequirement::new("read_token", Vec::<String>::new()),
        SecurityRequirement::default(),
    ]
}

/// The 500 of the read API: the details go to the daemon's log only.
/// A read that ran out of the request time limit (`serve --request-timeout`).
const READ_TIME_LIMIT: &str =
    "Not finished within the request time limit; retry later (see Retry-After)";

/// The 403 of a read API without a token (see `serve::host`).
const NOT_LOOPBACK: &str = "No read token is set, and the request's Host names no loopback name (localhost, 127.0.0.1, [::1]) nor the listen address's, or a proxy forwarded it (Forwarded, Via, X-Forwarded-*, X-Real-IP and the like)";

/// Every route's 400 for its `Host` header (`serve::host_refusal`).
const BAD_HOST: &str =
    "a Host header missing from an HTTP/1.1 request, given twice, or naming no host";

/// `text` with its first letter in upper case.
fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

const UNREADABLE: &str = "The replica could not be read (the details are in the daemon's log)";

/// The OpenAPI document of every route the daemon serves.
pub fn document() -> OpenApi {
    let mut components = ComponentsBuilder::new()
        .schema(
            "Error",
            ObjectBuilder::new()
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("`invalid_request`, `unauthorized`, `forbidden` (403: no read token, and a Host that names neither loopback nor the listen address), `payload_too_large`, `timeout` (408: the body did not arrive in time), `unavailable` or `api_error`")),
                )
                .property("message", ObjectBuilder::new().schema_type(Type::String))
                .required("type")
                .required("message"),
        )
        .schema(
            "WebhookAnswer",
            ObjectBuilder::new()
                .property(
                    "status",
                    ObjectBuilder::new().schema_type(Type::String).enum_values(Some([
                        "applied",
                        "stale",
                        "ignored_deleted",
                        "unsupported",
                        "duplicate",
                    ])),
                )
                .property("event_id", ObjectBuilder::new().schema_type(Type::String))
                .required("status")
                .required("event_id"),
        )
        .schema(
            "Rejection",
            ObjectBuilder::new()
                .description(Some("The 422 of an event whose payload has a field of the wrong type."))
                .property(
                    "type",
                    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["invalid_request"])),
                )
                .property(
                    "message",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("Names the field, e.g. `payload.created_at`.")),
                )
                .property(
                    "status",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["rejected", "duplicate"])),
                )
                .property("event_id", ObjectBuilder::new().schema_type(Type::String))
                .required("type")
                .required("message")
                .required("status")
                .required("event_id"),
        )
        .schema(
            "Event",
            ObjectBuilder::new()
                .description(Some("A Protocol event envelope."))
                .property("id", ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)))
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("`<resource>.<action>`, e.g. `message.updated`")),
                )
                .property("payload", ObjectBuilder::new().schema_type(Type::Object))
                .required("id")
                .required("type")
                .required("payload"),
        )
        .security_scheme(
            "read_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    let mut paths = PathsBuilder::new();
    for resource in Resource::ALL {
        let name = schema_name(resource);
        components = components.schema(name, model_schema(resource));
        let mut list = OperationBuilder::new()
            .operation_id(Some(format!("list_{}", resource.plural())))
            .summary(Some(format!("List {}, newest first", resource.plural())))
            .tag("read")
            .parameter(query(
                "limit",
                "Page size, 1 to 100 (default 10).",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(100))
                    .default(Some(serde_json::json!(10))),
            ))
            .parameter(query(
                "starting_after",
                "An object id: the page after it.",
                ObjectBuilder::new().schema_type(Type::String),
            ))
            .parameter(query(
                "ending_before",
                "An object id: the page before it.",
                ObjectBuilder::new().schema_type(Type::String),
            ));
        for filter in read_api::filters(resource) {
            let schema = match *filter {
                "muted" | "pinned" | "archived" => ObjectBuilder::new().schema_type(Type::Boolean),
                _ => ObjectBuilder::new().schema_type(Type::String),
            };
            list = list.parameter(query(filter, filter_description(filter), schema));
        }
        let list = list
            .response(
                "200",
                json_response(
                    "A page",
                    ObjectBuilder::new()
                        .property("has_more", ObjectBuilder::new().schema_type(Type::Boolean))
                        .property(
                            "data",
                            ArrayBuilder::new().items(Ref::from_schema_name(name)),
                        )
                        .required("has_more")
                        .required("data"),
                ),
            )
            .response(
                "400",
                error_response(&format!("Unknown or repeated parameter, bad limit, filter value or cursor, or both cursors; or {BAD_HOST}")),
            )
            .response("401", error_response("Missing or wrong read token"))
            .response("403", error_response(NOT_LOOPBACK))
            .response("431", head_too_large())
            .response("500", error_response(UNREADABLE))
            .response("503", error_response(READ_TIME_LIMIT))
            .securities(Some(read_security()))
            .build();
        paths = paths.path(
            format!("/v1/{}", resource.plural()),
            PathItem::new(HttpMethod::Get, list),
        );
        let get = OperationBuilder::new()
            .operation_id(Some(format!("get_{}", resource.as_str())))
            .summary(Some(format!("One {resource}")))
            .tag("read")
            .parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            )
            .response(
                "200",
                json_response("The object", Ref::from_schema_name(name)),
            )
            .response(
                "400",
                error_response(
                    &format!("A query parameter (one object takes none), or an id whose percent-escapes are not UTF-8 (a % not followed by two hex digits is the character itself); or {BAD_HOST}"),
                ),
            )
            .response("404", error_response("No such object"))
            .response("401", error_response("Missing or wrong read token"))
            .response("403", error_response(NOT_LOOPBACK))
            .response("431", head_too_large())
            .response("500", error_response(UNREADABLE))
            .response("503", error_response(READ_TIME_LIMIT))
            .securities(Some(read_security()))
            .build();
        paths = paths.path(
            format!("/v1/{}/{{id}}", resource.plural()),
            PathItem::new(HttpMethod::Get, get),
        );
    }
    let webhook = OperationBuilder::new()
        .operation_id(Some("receive_webhook"))
        .summary(Some("Receive one signed Protocol event"))
        .description(Some(
            "The body is checked in this order: size (413, from Content-Length), signature (401), envelope (400), field types (422, logged as rejected). A 2xx is sent only after the event is durably committed.",
        ))
        .tag("webhooks")
        .parameter(
            ParameterBuilder::new()
                .name(protocol_verify::HEADER_NAME)
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some("Hex HMAC-SHA256 of the raw body with the webhook secret."))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        )
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Event")))
                        .build(),
                )
                .build(),
        ))
        .response("200", json_response("Committed (or seen before)", Ref::from_schema_name("WebhookAnswer")))
        .response("400", error_response(&format!("Not an event envelope; or {BAD_HOST}")))
        .response("401", error_response("Missing or wrong signature"))
        .response("408", error_response("The body did not arrive within the request time limit"))
        .response("413", error_response("Body over the limit"))
        .response("422", json_response("A field has the wrong type; the event is logged as rejected (a redelivery gets this again, with `status` `duplicate` and the first delivery's message, whatever body it brings)", Ref::from_schema_name("Rejection")))
        .response("431", head_too_large())
        .response("503", error_response("Could not commit, busy, shutting down, or not begun within the request time limit: not stored; retry (see Retry-After)"))
        .build();
    paths = paths.path("/webhooks", PathItem::new(HttpMethod::Post, webhook));
    let plain = |id: &str, summary: &str, tag: &str, content: &[&str], secured: bool| {
        let ok = content
            .iter()
            .fold(ResponseBuilder::new().description("OK"), |ok, content| {
                ok.content(*content, ContentBuilder::new().build())
            });
        let mut operation = OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .tag(tag)
            .response("200", ok.build())
            .response("400", error_response(&upper_first(BAD_HOST)));
        if secured {
            operation = operation
                .response("401", error_response("Missing or wrong read token"))
                .response("403", error_response(NOT_LOOPBACK))
                .securities(Some(read_security()));
        } else {
            operation = operation.response(
                "503",
                error_response("The writer or the database is not healthy"),
            );
        }
        PathItem::new(HttpMethod::Get, operation.build())
    };
    paths = paths
        .path(
            "/healthz",
            plain(
                "healthz",
                "Liveness: the writer is alive and the database takes a commit",
                "operations",
                &["application/json"],
                false,
            ),
        )
        .path(
            "/metrics",
            plain(
                "metrics",
                "Prometheus metrics: OpenMetrics when the Accept header names it, else Prometheus's text format 0.0.4",
                "operations",
                &["text/plain", "application/openmetrics-text"],
                true,
            ),
        )
        .path(
            "/openapi.json",
            plain(
                "openapi",
                "This document",
                "operations",
                &["application/json"],
                true,
            ),
        );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("protocol-mirror")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A local replica of a Protocol account: the webhook endpoint Protocol posts to, and a read API shaped like Protocol's REST API. Every GET route answers HEAD too; another method on a route is a 405 with `Allow` and an `Error` body, and a path not listed here a 404 with one.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed `openapi.json` is what the code generates. After a deliberate
    /// change, regenerate it with `UPDATE_OPENAPI=1 cargo test -p protocol-mirror openapi`.
    #[test]
    fn committed_openapi_json_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.json");
        let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test -p protocol-mirror openapi` and commit it"
        );
    }

    #[test]
    fn document_lists_every_route() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        for resource in Resource::ALL {
            assert!(paths.contains_key(&format!("/v1/{}", resource.plural())));
            assert!(paths.contains_key(&format!("/v1/{}/{{id}}", resource.plural())));
        }
        for route in ["/webhooks", "/healthz", "/metrics", "/openapi.json"] {
            assert!(paths.contains_key(route), "{route}");
        }
        let params: Vec<&str> = doc["paths"]["/v1/conversations"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            params,
            [
                "limit",
                "starting_after",
                "ending_before",
                "muted",
                "archived",
                "pinned",
                "group_id"
            ]
        );
    }
}
