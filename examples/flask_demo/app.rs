//! The Flask demo's routes in axum, shared by `examples/flask_demo.rs` and the tests that
//! drive it (`tests/http_*.rs` include this file).
//!
//! | route | returns |
//! |---|---|
//! | `/` | `Entrypoint to the Application` |
//! | `/api/apm` | `Getting APM Started` |
//! | `/api/trace` | `Posting Traces` |
//! | `/api/error` | 500, through the application's error type |
//!
//! Each handler makes child spans (a template render, a simulated database query with a
//! short delay), so the traces have children under the request span.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracer::Tracer;
use tracer::http::{HandlerError, ServerLayer};

/// The demo's database failing (what `/api/error` runs into).
#[derive(Debug, thiserror::Error)]
#[error("database timeout after {0} ms")]
pub(crate) struct DbTimeout(pub(crate) u64);

/// The application's error type: answered as a 500 whose cause reaches the request span.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// A query failed.
    #[error("the demo database is unavailable")]
    Db(#[source] DbTimeout),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n").into_response();
        response.extensions_mut().insert(HandlerError::new(&self));
        response
    }
}

/// A simulated query: a `sql` child span of the current span, lasting 0.2-1.7 ms.
async fn query(tracer: Tracer, sql: &'static str, fail: bool) -> Result<(), DbTimeout> {
    let mut span = tracer
        .span("sqlite.query")
        .resource(sql)
        .span_type("sql")
        .tag("db.system", "sqlite")
        .tag("span.kind", "client")
        .start();
    // Random-ish from the span id, so concurrent requests do not march in step.
    let micros = 200 + span.span_id().to_u64() % 1500;
    tokio::time::sleep(Duration::from_micros(micros)).await;
    if fail {
        let err = DbTimeout(micros / 1000 + 1);
        span.set_error(&err);
        return Err(err);
    }
    Ok(())
}

/// A handler body: a query, then a template render; both are children of the request
/// span, which is current while the handler runs.
async fn page(tracer: Tracer, template: &'static str, sql: &'static str, fail: bool) -> Result<(), AppError> {
    query(tracer, sql, fail).await.map_err(AppError::Db)?;
    let _render = tracer.span("template.render").resource(template).start();
    Ok(())
}

/// The demo's router, traced: the layer sits on the `Router` after the routes, so each
/// request's resource is its route template.
pub(crate) fn router(tracer: Tracer) -> Router {
    Router::new()
        .route(
            "/",
            get(move || async move {
                page(tracer, "index.html", "SELECT 1", false).await?;
                Ok::<_, AppError>("Entrypoint to the Application")
            }),
        )
        .route(
            "/api/apm",
            get(move || async move {
                page(tracer, "apm.html", "SELECT * FROM guides WHERE topic = ?", false).await?;
                Ok::<_, AppError>("Getting APM Started")
            }),
        )
        .route(
            "/api/trace",
            get(move || async move {
                page(tracer, "trace.html", "INSERT INTO traces VALUES (?, ?)", false).await?;
                Ok::<_, AppError>("Posting Traces")
            }),
        )
        .route(
            "/api/error",
            get(move || async move {
                page(tracer, "error.html", "SELECT * FROM missing_table", true).await?;
                Ok::<_, AppError>("unreachable")
            }),
        )
        .layer(ServerLayer::axum(tracer))
}
