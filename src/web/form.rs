//! The one way `/hub` handlers read a POSTed form. Anything that is not an
//! urlencoded form (a `text/plain` CSRF body, JSON) is refused with 403 before
//! any field is looked at; an oversized body is a 413; a malformed one a 400.

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use serde::de::DeserializeOwned;

pub struct HubForm<T>(pub T);

impl<S, T> FromRequest<S> for HubForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(super::forbidden_form());
        }
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(HubForm(v)),
            Err(FormRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err((StatusCode::PAYLOAD_TOO_LARGE, "413 Payload Too Large: forms are small\n")
                    .into_response())
            }
            Err(e) => {
                Err((StatusCode::BAD_REQUEST, format!("400 Bad Request: {}\n", e.body_text()))
                    .into_response())
            }
        }
    }
}
