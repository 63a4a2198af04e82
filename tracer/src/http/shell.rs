//! What the server and the client layers share: the settings of one layer's spans, built
//! from the tracer's configuration, and the builder methods and `Layer` impl on top of
//! them (one macro, so each layer keeps its own public type).

use crate::config::{HeaderTag, StatusRanges};
use crate::propagation::Propagator;
use crate::span::Str;
use crate::tracer::Tracer;

use super::common::QueryPolicy;

/// The settings every span of one layer (or middleware) shares, server or client.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) tracer: Tracer,
    pub(crate) propagator: Propagator,
    pub(crate) name: Str,
    pub(crate) component: Str,
    pub(crate) service: Option<Str>,
    pub(crate) query: QueryPolicy,
    pub(crate) error_statuses: StatusRanges,
    pub(crate) header_tags: Vec<HeaderTag>,
}

impl Settings {
    /// From the tracer's configuration: its propagation styles, query-string policy and
    /// header tags; `error_statuses` is the server's or the client's list.
    pub(crate) fn new(tracer: Tracer, component: &'static str, error_statuses: StatusRanges) -> Self {
        let config = tracer.config();
        Self {
            tracer,
            propagator: Propagator::from_config(config),
            name: Str::from("http.request"),
            component: Str::from(component),
            service: None,
            query: QueryPolicy::new(config.http().query_string()),
            error_statuses,
            header_tags: config.http().header_tags().to_vec(),
        }
    }
}

/// The builder methods (`with_operation_name`, `with_component`, `with_service`,
/// `with_propagator`), the `Layer` impl and the service type of a layer whose state is
/// `shared: Arc<$state>`, a `Clone` struct with a `settings: Settings` field (which it
/// dereferences to).
macro_rules! layer_shell {
    ($layer:ident, $service:ident, $state:ty, $service_default:literal) => {
        impl std::ops::Deref for $state {
            type Target = $crate::http::shell::Settings;

            fn deref(&self) -> &Self::Target {
                &self.settings
            }
        }

        impl $layer {
            /// Edits the settings, copying them when another layer or service shares them.
            fn edit(mut self, f: impl FnOnce(&mut $crate::http::shell::Settings)) -> Self {
                f(&mut std::sync::Arc::make_mut(&mut self.shared).settings);
                self
            }

            /// Sets the operation name (default `http.request`).
            #[must_use]
            pub fn with_operation_name(self, name: impl Into<Str>) -> Self {
                let name = name.into();
                self.edit(|s| s.name = name)
            }

            /// Sets the `component` tag (default `tower`; e.g. `axum`, `hyper`, `reqwest`).
            #[must_use]
            pub fn with_component(self, component: impl Into<Str>) -> Self {
                let component = component.into();
                self.edit(|s| s.component = component)
            }

            #[doc = concat!("Sets the service of the spans (default: ", $service_default, ").")]
            #[must_use]
            pub fn with_service(self, service: impl Into<Str>) -> Self {
                let service = service.into().into_shared();
                self.edit(|s| s.service = Some(service))
            }

            /// Sets the propagator (default: from `DD_TRACE_PROPAGATION_STYLE*`).
            #[must_use]
            pub fn with_propagator(self, propagator: Propagator) -> Self {
                self.edit(|s| s.propagator = propagator)
            }
        }

        impl<S> tower_layer::Layer<S> for $layer {
            type Service = $service<S>;

            fn layer(&self, inner: S) -> Self::Service {
                $service {
                    inner,
                    shared: std::sync::Arc::clone(&self.shared),
                }
            }
        }

        #[doc = concat!("The service of [`", stringify!($layer), "`].")]
        #[derive(Debug, Clone)]
        pub struct $service<S> {
            inner: S,
            shared: std::sync::Arc<$state>,
        }
    };
}
pub(crate) use layer_shell;
