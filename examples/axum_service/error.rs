//! The service's errors, as HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// A request's failure as an HTTP response.
#[derive(Debug)]
pub(super) enum AppError {
    /// The request is malformed (422).
    Invalid(String),
    /// No such row (404).
    NotFound,
    /// A unique constraint refused it (409).
    Conflict(String),
    /// The database is busy (another process holds its lock, no connection came free in
    /// time) or closed, the service shutting down: worth retrying later (503).
    Unavailable(String),
    /// Anything else (500).
    Internal(String),
}

impl From<DieselError> for AppError {
    fn from(error: DieselError) -> Self {
        if let Some(inner) = litemux_diesel::litemux_error(&error)
            && (inner.is_busy()
                || matches!(
                    *inner,
                    litemux::Error::Closed | litemux::Error::Timeout { .. }
                ))
        {
            return AppError::Unavailable(inner.to_string());
        }
        match error {
            DieselError::NotFound => AppError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                AppError::Conflict(info.message().to_owned())
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// A request axum could not read (its body, query or path): `422`, with axum's own words.
macro_rules! invalid_from {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for AppError {
            fn from(rejection: $rejection) -> Self {
                AppError::Invalid(rejection.body_text())
            }
        }
    )*};
}

invalid_from!(
    axum::extract::rejection::JsonRejection,
    axum::extract::rejection::QueryRejection,
    axum::extract::rejection::PathRejection
);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::Invalid(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found".to_owned()),
            AppError::Conflict(m) => (StatusCode::CONFLICT, m),
            AppError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            AppError::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
