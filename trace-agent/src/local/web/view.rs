//! The GET routes: the page or JSON document each [`Route`] renders from the store.

use super::*;

/// `path` plus `&k=v…` parameters as a query string.
pub(super) fn with_query(path: String, params: &str) -> String {
    match params.strip_prefix('&') {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

pub(super) fn status_of<T>(v: &Option<T>) -> StatusCode {
    if v.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

#[allow(clippy::too_many_lines)] // one arm per route, each short
pub(super) fn render(ctx: &Ctx, route: &Route, api: bool, params: &[(String, String)], now_ns: i64) -> Reply {
    let store = &ctx.store;
    let param = |k: &str| params.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let window = param("window").and_then(|w| Window::parse(&w)).unwrap_or_default();
    let operation = param("operation").filter(|o| !o.is_empty());
    let status = store.status();
    let op = operation.as_deref();
    let op_q = op
        .map(|o| format!("&operation={}", html::encode_segment(o)))
        .unwrap_or_default();
    let frame = |title: &str, crumbs: Vec<(String, String)>, self_path: String, window: Option<Window>| {
        (title.to_owned(), crumbs, self_path, window)
    };
    let fail = |e: rusqlite::Error| {
        tracing::warn!(error = %e, "local web view: query failed");
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("query failed: {e}\n"),
        )
    };
    let build = |(title, crumbs, self_path, window): (String, Vec<(String, String)>, String, Option<Window>),
                 body: &dyn Fn(&Frame<'_>) -> String| {
        let f = Frame {
            title: &title,
            crumbs,
            self_path,
            window,
            status: &status,
            now_ns,
        };
        reply(StatusCode::OK, "text/html; charset=utf-8", body(&f))
    };
    let not_found = |fr, what: &str| {
        let mut r = build(fr, &|f| pages::not_found(f, what));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    match route {
        Route::Status => json(StatusCode::OK, &status),
        Route::Services => match store.read(|c| query::services(c, now_ns, window)) {
            Err(e) => fail(e),
            Ok(list) if api => json(StatusCode::OK, &list),
            Ok(list) => build(frame("Services", vec![], "/".to_owned(), Some(window)), &|f| {
                pages::services(f, &list, window)
            }),
        },
        Route::Service(service) => {
            let enc = html::encode_segment(service);
            let fr = frame(
                service,
                vec![(service.clone(), format!("/services/{enc}?window={}", window.as_str()))],
                with_query(format!("/services/{enc}"), &op_q),
                Some(window),
            );
            match store.read(|c| query::service(c, service, op, now_ns, window)) {
                Err(e) => fail(e),
                Ok(d) if api => json(status_of(&d), &d),
                Ok(Some(d)) => {
                    let monitors: Vec<_> = ctx
                        .monitors
                        .statuses(now_ns)
                        .into_iter()
                        .filter(|m| m.spec.service == *service)
                        .collect();
                    build(fr, &|f| pages::service(f, &d, window, &monitors))
                }
                Ok(None) => not_found(fr, &format!("service {service}")),
            }
        }
        Route::ServiceAnomalies(service) => match store.read(|c| query::service(c, service, op, now_ns, window)) {
            Err(e) => fail(e),
            Ok(d) => {
                let a = d.map(|d| product::ServiceAnomalies::of(&d.summary));
                json(status_of(&a), &a)
            }
        },
        Route::Resource(service, resource) => {
            let enc = html::encode_segment(service);
            let renc = html::encode_segment(resource);
            let fr = frame(
                resource,
                vec![
                    (service.clone(), format!("/services/{enc}?window={}", window.as_str())),
                    (
                        resource.clone(),
                        format!("/services/{enc}/resources/{renc}?window={}{op_q}", window.as_str()),
                    ),
                ],
                with_query(format!("/services/{enc}/resources/{renc}"), &op_q),
                Some(window),
            );
            let found = store.read(|c| {
                let d = query::resource(c, service, op, resource, now_ns, window)?;
                let v = match &d {
                    Some(_) if !api => Some(versions::versions(
                        c,
                        service,
                        op,
                        resource,
                        now_ns,
                        window,
                        (param("a").as_deref(), param("b").as_deref()),
                        versions::DEFAULT_THRESHOLD,
                    )?),
                    _ => None,
                };
                Ok((d, v))
            });
            match found {
                Err(e) => fail(e),
                Ok((d, _)) if api => json(status_of(&d), &d),
                Ok((Some(d), v)) => build(fr, &|f| pages::resource(f, &d, v.as_ref())),
                Ok((None, _)) => not_found(fr, &format!("resource {resource} of {service}")),
            }
        }
        Route::ResourceVersions(service, resource) => {
            let threshold = match param("threshold").map(|t| t.parse::<f64>()) {
                None => versions::DEFAULT_THRESHOLD,
                Some(Ok(t)) if t.is_finite() && t >= 0.0 => t,
                Some(_) => return text(StatusCode::BAD_REQUEST, "threshold: a number ≥ 0 (0.2 is ±20 %)"),
            };
            match store.read(|c| {
                versions::versions(
                    c,
                    service,
                    op,
                    resource,
                    now_ns,
                    window,
                    (param("a").as_deref(), param("b").as_deref()),
                    threshold,
                )
            }) {
                Err(e) => fail(e),
                Ok(v) => json(StatusCode::OK, &v),
            }
        }
        Route::Search => {
            let q = match SearchQuery::from_params(params) {
                Ok(q) => q,
                Err(e) if api => return text(StatusCode::BAD_REQUEST, e),
                Err(e) => {
                    let fr = frame(
                        "Search traces",
                        vec![("Search".to_owned(), "/search".to_owned())],
                        "/search".to_owned(),
                        None,
                    );
                    let mut r = build(fr, &|f| product::search(f, &SearchQuery::default(), None, Some(&e)));
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    return r;
                }
            };
            match store.read(|c| search::search(c, &q, now_ns)) {
                Err(e) => fail(e),
                Ok(found) if api => json(StatusCode::OK, &found),
                Ok(found) => {
                    let fr = frame(
                        "Search traces",
                        vec![("Search".to_owned(), "/search".to_owned())],
                        format!(
                            "/search?{}",
                            q.to_query_string()
                                .replacen(&format!("window={}", q.window.as_str()), "", 1)
                                .trim_start_matches('&')
                        ),
                        Some(q.window),
                    );
                    build(fr, &|f| product::search(f, &q, Some(&found), None))
                }
            }
        }
        Route::ServiceMap => match store.read(|c| service_map::service_map(c, now_ns, window)) {
            Err(e) => fail(e),
            Ok(m) if api => json(StatusCode::OK, &m),
            Ok(m) => build(
                frame(
                    "Service map",
                    vec![("Map".to_owned(), "/map".to_owned())],
                    "/map".to_owned(),
                    Some(window),
                ),
                &|f| product::service_map(f, &m, window),
            ),
        },
        Route::Monitors => {
            let statuses = ctx.monitors.statuses(now_ns);
            if api {
                return json(StatusCode::OK, &statuses);
            }
            let events = ctx.monitors.events();
            let downtimes = ctx.monitors.downtimes();
            let hooks = ctx.monitors.webhook_status();
            build(
                frame(
                    "Monitors",
                    vec![("Monitors".to_owned(), "/monitors".to_owned())],
                    "/monitors".to_owned(),
                    None,
                ),
                &|f| product::monitors(f, &statuses, &events, &downtimes, &hooks),
            )
        }
        Route::Ledger => {
            let snapshot = store.ledger_snapshot();
            if api {
                return json(StatusCode::OK, &snapshot);
            }
            build(
                frame(
                    "Span ledger",
                    vec![("Ledger".to_owned(), "/ledger".to_owned())],
                    "/ledger".to_owned(),
                    None,
                ),
                &|f| ledger::ledger(f, snapshot.as_ref()),
            )
        }
        Route::MonitorEvents => json(StatusCode::OK, &ctx.monitors.events()),
        Route::Downtimes => json(StatusCode::OK, &ctx.monitors.downtimes()),
        Route::Trace(id) => {
            let fr = frame(&format!("Trace {id}"), vec![], format!("/traces/{id}"), None);
            match store.read(|c| query::trace(c, *id)) {
                Err(e) => fail(e),
                Ok(t) if api => json(status_of(&t), &t),
                Ok(Some(t)) => {
                    let fr = match (&t.root_service, &t.root_resource) {
                        (Some(s), Some(r)) => frame(
                            &format!("Trace {id}"),
                            vec![
                                (s.clone(), format!("/services/{}", html::encode_segment(s))),
                                (
                                    r.clone(),
                                    format!(
                                        "/services/{}/resources/{}",
                                        html::encode_segment(s),
                                        html::encode_segment(r)
                                    ),
                                ),
                            ],
                            format!("/traces/{id}"),
                            None,
                        ),
                        _ => fr,
                    };
                    build(fr, &|f| pages::trace(f, &t))
                }
                Ok(None) => not_found(fr, &format!("trace {id}")),
            }
        }
    }
}
