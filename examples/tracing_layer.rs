//! `tracing` → Datadog: `#[instrument]` and `info_span!` spans recorded by our tracer
//! through `tracer::layer::DatadogLayer`, with log lines carrying `dd.trace_id` and
//! `dd.span_id` (`WithLogCorrelation`).
//!
//! ```text
//! DD_SERVICE=layer-demo cargo run --example tracing_layer
//! ```
//!
//! Sends one trace of four spans to the agent at `DD_TRACE_AGENT_URL` (default
//! `http://127.0.0.1:8126`), flushes and exits.

use std::time::Duration;

use tracing::{Instrument as _, info, info_span, instrument};
use tracing_subscriber::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("cart {0} not found")]
struct NotFound(u64);

#[instrument(fields(span.type = "sql", service.name = "carts-db", resource.name = "SELECT * FROM carts WHERE id = ?"))]
async fn load_cart(id: u64) -> Result<u64, NotFound> {
    tokio::task::yield_now().await;
    if id == 0 { Err(NotFound(id)) } else { Ok(id * 3) }
}

#[instrument(skip_all, fields(otel.kind = "internal"))]
async fn render(items: u64) -> String {
    info!(items, "rendering");
    format!("{items} items")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tracer = tracer::Tracer::new(tracer::TracerConfig::from_env()?)?;
    tracing_subscriber::registry()
        .with(tracer::layer::DatadogLayer::new(tracer))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .event_format(tracer::layer::WithLogCorrelation::new(tracing_subscriber::fmt::format()))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .init();

    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(
        async {
            let items = match load_cart(7).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(error = &e as &(dyn std::error::Error + 'static), "cart lookup failed");
                    0
                }
            };
            let body = render(items).await;
            info!(%body, "responding");
        }
        .instrument(info_span!(
            "http.request",
            resource.name = "GET /cart/{id}",
            span.type = "web",
            otel.kind = "server",
            http.method = "GET",
            http.route = "/cart/{id}",
            http.status_code = "200",
        )),
    );

    tracer.shutdown(Duration::from_secs(5))?;
    let health = tracer.health();
    info!(sent = health.spans_sent, "done");
    Ok(())
}
