//! Per-request tag values that repeat, made once per thread: a route template (axum's
//! `MatchedPath` is a fresh `&str` each request), its resource (`GET /users/{id}`), and the
//! `User-Agent`. Each comes back as a shared string, so a request allocates nothing for
//! them and the export worker finds them in its v0.5 string table by address.
//!
//! Bounded: [`MAX_ROUTES`] routes per thread (route templates are few by nature; past the
//! bound a route is built per request, as before), [`USER_AGENTS`] user agents per thread
//! (replaced in turn).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::span::Str;

/// Route templates remembered per thread.
pub(crate) const MAX_ROUTES: usize = 512;

/// User agents remembered per thread.
const USER_AGENTS: usize = 8;

/// Longest user agent remembered (longer ones are copied per request).
const MAX_USER_AGENT: usize = 256;

/// The standard methods, in the order of [`method_index`].
const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// Slots of the per-thread cache of recent (route, method) pairs, looked up before the map.
const RECENT: usize = 16;

#[derive(Default)]
struct Routes {
    by_template: HashMap<Box<str>, Entry>,
    /// Recent hits, direct-mapped by [`recent_slot`]: a hit costs a string compare instead
    /// of hashing the template.
    recent: [Option<Recent>; RECENT],
}

struct Recent {
    method: usize,
    route: Str,
    resource: Str,
}

/// The slot of `(template, method)` in [`Routes::recent`]: a cheap mix of the length, two
/// bytes and the method (templates of one app differ in length or in their last bytes).
fn recent_slot(template: &str, method: usize) -> usize {
    let b = template.as_bytes();
    let mid = b.get(b.len() / 2).copied().unwrap_or(0);
    let last = b.last().copied().unwrap_or(0);
    (b.len().wrapping_mul(7) ^ usize::from(mid).wrapping_mul(3) ^ usize::from(last) ^ method.wrapping_mul(5)) % RECENT
}

struct Entry {
    route: Str,
    /// `"<method> <route>"` per standard method, made on first use.
    resources: [Option<Str>; METHODS.len()],
}

#[derive(Default)]
struct Agents {
    seen: [Option<Arc<str>>; USER_AGENTS],
    next: usize,
}

thread_local! {
    static ROUTES: RefCell<Routes> = RefCell::new(Routes::default());
    static AGENTS: RefCell<Agents> = RefCell::new(Agents::default());
}

fn method_index(method: &str) -> Option<usize> {
    METHODS.iter().position(|m| *m == method)
}

fn shared(s: &str) -> Str {
    Str::from(Arc::<str>::from(s))
}

/// The route template `template` as a shared string, and the resource `"<method>
/// <template>"`: both made once per thread and route.
pub(crate) fn route_and_resource(method: &str, template: &str) -> (Str, Str) {
    let found = ROUTES.try_with(|routes| {
        let mut routes = routes.try_borrow_mut().ok()?;
        let index = method_index(method);
        let slot = index.map(|i| recent_slot(template, i));
        if let Some(Some(hit)) = slot.and_then(|s| routes.recent.get(s)) {
            if Some(hit.method) == index && hit.route.as_str() == template {
                return Some((hit.route.clone(), hit.resource.clone()));
            }
        }
        let full = routes.by_template.len() >= MAX_ROUTES;
        let entry = match routes.by_template.get_mut(template) {
            Some(e) => e,
            None if full => return None,
            None => routes.by_template.entry(template.into()).or_insert_with(|| Entry {
                route: shared(template),
                resources: Default::default(),
            }),
        };
        let route = entry.route.clone();
        let resource = match index.and_then(|i| entry.resources.get_mut(i)) {
            Some(r) => r
                .get_or_insert_with(|| shared(&super::common::join(method, template)))
                .clone(),
            None => return Some((route, Str::from(super::common::join(method, template)))),
        };
        if let (Some(s), Some(i)) = (slot, index) {
            if let Some(recent) = routes.recent.get_mut(s) {
                *recent = Some(Recent {
                    method: i,
                    route: route.clone(),
                    resource: resource.clone(),
                });
            }
        }
        Some((route, resource))
    });
    found
        .ok()
        .flatten()
        .unwrap_or_else(|| (shared(template), Str::from(super::common::join(method, template))))
}

/// `"<method> 404"`, the resource of a request no route matched.
pub(crate) fn not_found(method: &str) -> Str {
    const NOT_FOUND: [&str; 9] = [
        "GET 404",
        "POST 404",
        "PUT 404",
        "DELETE 404",
        "HEAD 404",
        "OPTIONS 404",
        "PATCH 404",
        "CONNECT 404",
        "TRACE 404",
    ];
    match method_index(method).and_then(|i| NOT_FOUND.get(i)) {
        Some(s) => Str::from(*s),
        None => Str::from(super::common::join(method, "404")),
    }
}

/// The user agent `ua` as a shared string, from a small per-thread cache.
pub(crate) fn user_agent(ua: &str) -> Str {
    if ua.len() > MAX_USER_AGENT {
        return Str::from(ua.to_owned());
    }
    let found = AGENTS.try_with(|agents| {
        let mut agents = agents.try_borrow_mut().ok()?;
        if let Some(hit) = agents.seen.iter().flatten().find(|s| &***s == ua) {
            return Some(Str::from(Arc::clone(hit)));
        }
        let new: Arc<str> = Arc::from(ua);
        let slot = agents.next % USER_AGENTS;
        agents.next = agents.next.wrapping_add(1);
        if let Some(s) = agents.seen.get_mut(slot) {
            *s = Some(Arc::clone(&new));
        }
        Some(Str::from(new))
    });
    found.ok().flatten().unwrap_or_else(|| Str::from(ua.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_resources_are_made_once_per_thread() {
        let (r1, res1) = route_and_resource("GET", "/users/{id}");
        let (r2, res2) = route_and_resource("GET", "/users/{id}");
        let (r3, res3) = route_and_resource("POST", "/users/{id}");
        assert_eq!((r1.as_str(), res1.as_str()), ("/users/{id}", "GET /users/{id}"));
        assert_eq!(res3.as_str(), "POST /users/{id}");
        let addr = |s: &Str| s.as_shared().map(|a| a.as_ptr());
        assert!(addr(&r1).is_some());
        assert_eq!(addr(&r1), addr(&r2), "the same shared route");
        assert_eq!(addr(&res1), addr(&res2), "the same shared resource");
        assert_eq!(addr(&r1), addr(&r3));
        assert_ne!(addr(&res1), addr(&res3));
        // A non-standard method still gets its resource.
        let (_, odd) = route_and_resource("PURGE", "/users/{id}");
        assert_eq!(odd.as_str(), "PURGE /users/{id}");
        // Through the recent-pairs cache: the same shared strings, and no mix-up between
        // templates or methods that share a slot.
        for _ in 0..3 {
            for (m, t) in [
                ("GET", "/a/{id}"),
                ("POST", "/a/{id}"),
                ("GET", "/b/{id}"),
                ("GET", "/users/{id}"),
            ] {
                let (r, res) = route_and_resource(m, t);
                assert_eq!((r.as_str(), res.as_str()), (t, format!("{m} {t}").as_str()));
            }
        }
        let (r4, res4) = route_and_resource("GET", "/users/{id}");
        assert_eq!(addr(&r1), addr(&r4));
        assert_eq!(addr(&res1), addr(&res4));
        assert_eq!(not_found("GET").as_str(), "GET 404");
        assert_eq!(not_found("PURGE").as_str(), "PURGE 404");
    }

    #[test]
    fn routes_past_the_bound_are_still_right() {
        std::thread::spawn(|| {
            for i in 0..MAX_ROUTES + 10 {
                let t = format!("/r{i}/{{id}}");
                let (route, resource) = route_and_resource("GET", &t);
                assert_eq!(route.as_str(), t);
                assert_eq!(resource.as_str(), format!("GET {t}"));
            }
            ROUTES.with(|r| assert_eq!(r.borrow().by_template.len(), MAX_ROUTES));
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    }

    #[test]
    fn user_agents_are_shared_and_bounded() {
        std::thread::spawn(|| {
            let a = user_agent("curl/8.0");
            let b = user_agent("curl/8.0");
            assert_eq!(a.as_shared().map(|s| s.as_ptr()), b.as_shared().map(|s| s.as_ptr()));
            for i in 0..3 * USER_AGENTS {
                assert_eq!(user_agent(&format!("agent-{i}")).as_str(), format!("agent-{i}"));
            }
            AGENTS.with(|a| assert_eq!(a.borrow().seen.iter().flatten().count(), USER_AGENTS));
            let long = "x".repeat(MAX_USER_AGENT + 1);
            assert_eq!(user_agent(&long).as_str(), long);
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
}
