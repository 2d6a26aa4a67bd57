//! `POST /webhooks`: size limit, then signature over the raw body, then parsing,
//! then the writer. Statuses as in SPEC section 3.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::writer::WriteError;
use crate::apply::{Applied, Delivery, Outcome};

/// An error answer: `{"type": ..., "message": ...}`. Messages never contain a secret,
/// a signature or the expected digest.
pub(crate) fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"type": kind, "message": message.into()});
    (status, axum::Json(body)).into_response()
}

pub(crate) fn unavailable(message: impl Into<String>) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// 413, closing the connection: the rest of an oversized body is not worth reading.
fn too_large(limit: usize) -> Response {
    let mut response = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body exceeds the limit of {limit} bytes"),
    );
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(crate) async fn receive(State(state): State<AppState>, request: Request<Body>) -> Response {
    let limit = state.config.max_body_bytes;
    // 413 is decided from Content-Length before the body is read: it wins over 401.
    if declared_length(request.headers()).is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => {
            if let Some(body_read) = parts.extensions.get::<super::BodyRead>() {
                body_read.set();
            }
            body
        }
        Err(e) => {
            // A chunked body over the limit, or a client that stopped sending.
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_big {
                too_large(limit)
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the body could not be read",
                )
            };
        }
    };
    let mut signatures = parts.headers.get_all(protocol_verify::HEADER_NAME).iter();
    let signature = match (signatures.next(), signatures.next()) {
        (Some(value), None) => Some(value.as_bytes()),
        (None, _) => None,
        (Some(_), Some(_)) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "more than one signature header",
            );
        }
    };
    if let Err(e) = state.verifier.verify_bytes(signature, &body) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
    }
    let delivery = match Delivery::parse(&body) {
        Ok(delivery) => delivery,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    let event_id = delivery.event_id().to_owned();
    let rejection = match delivery.event() {
        Err(e) => Some(e.to_string()),
        Ok(_) => None,
    };
    match state.writer.apply(delivery, crate::now()).await {
        Ok(applied) => answer(&event_id, &applied, rejection),
        Err(WriteError::Overloaded) => unavailable("the mirror is busy; retry later"),
        Err(e @ WriteError::Stopped) => unavailable(e.to_string()),
        Err(WriteError::Commit(_)) => unavailable("the event could not be stored; retry later"),
    }
}

/// 200 with the outcome, or 422 for a rejected event (also when redelivered).
fn answer(event_id: &str, applied: &Applied, rejection: Option<String>) -> Response {
    let status = match applied {
        Applied::Logged { outcome, .. } => outcome.as_str(),
        Applied::Duplicate { .. } => "duplicate",
    };
    if applied.outcome() == Outcome::Rejected {
        let message = rejection.unwrap_or_else(|| "the event was rejected".into());
        let body = json!({
            "type": "invalid_request",
            "message": message,
            "status": status,
            "event_id": event_id,
        });
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
    }
    let body = json!({"status": status, "event_id": event_id});
    (StatusCode::OK, axum::Json(body)).into_response()
}
