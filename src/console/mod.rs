//! The web console: a single-page application served at `/` by every node, from files embedded in
//! the binary (docs/console.md).
//!
//! Why here, in the node: an operator who can reach a node's API can open its console — no
//! separate server, no CDN, nothing fetched at run time — and the console is same-origin with the
//! API, so the API's browser guard ([`crate::api::guard`]: `Host`, `Origin`, JSON writes) needs no
//! exception, and the console needs no cookie (it sends the operator's token as a bearer header).
//! It uses only the public `/api/v1` routes, like any other client.
//!
//! What is served:
//! - `/console/{version}/{file}`: the assets (ES modules, CSS, the vendored Preact and htm). The
//!   version is a hash of every asset, so an asset's address changes with its content and can be
//!   cached for good (`immutable`); an old version's address still answers, uncached.
//! - a `GET` of `/` or of a page's address (`/apps/42`, `/traffic`): the app shell (one HTML page
//!   naming the current version), so that every page's address survives a reload and can be
//!   shared; the script picks the page from the path. It is revalidated on every load (`ETag`).
//! - everything else (`/api/…`, other paths, other methods) falls through to the API's JSON
//!   errors, unchanged.
//!
//! Every console answer carries a strict Content-Security-Policy (scripts, styles and requests
//! from this origin only, no inline script, no framing), `X-Content-Type-Options: nosniff` and
//! `Referrer-Policy: no-referrer`.
//!
//! Must never: call the store or any node internals (the console is an API client), or answer
//! under `/api/`.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

/// The policy of every console answer: nothing but this origin, no inline script or style, no
/// plugins, no framing, no `<base>` rewriting, no form posts (the console sends JSON with fetch).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:literal) => {
        Asset { path: $path, content_type: $type, bytes: include_bytes!(concat!("assets/", $path)) }
    };
}

/// Every file the console loads, besides the shell.
static ASSETS: &[Asset] = &[
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("overview.js", "text/javascript; charset=utf-8"),
    asset!("apps.js", "text/javascript; charset=utf-8"),
    asset!("tasks.js", "text/javascript; charset=utf-8"),
    asset!("schedules.js", "text/javascript; charset=utf-8"),
    asset!("workflows.js", "text/javascript; charset=utf-8"),
    asset!("traffic.js", "text/javascript; charset=utf-8"),
    asset!("events.js", "text/javascript; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("vendor/preact.mjs", "text/javascript; charset=utf-8"),
    asset!("vendor/hooks.mjs", "text/javascript; charset=utf-8"),
    asset!("vendor/htm.mjs", "text/javascript; charset=utf-8"),
];

/// The shell's template: `{{VERSION}}` is replaced by [`version`].
const SHELL: &str = include_str!("assets/index.html");

/// A hash of every asset (FNV-1a, 64 bits, as 16 hex digits): the part of the assets' addresses
/// that changes when any of them does. Not a security measure, a cache key.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in ASSETS.iter().flat_map(|a| a.path.as_bytes().iter().chain(a.bytes)).chain(SHELL.as_bytes()) {
            h ^= u64::from(*byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    })
}

fn shell() -> &'static str {
    static SHELL_PAGE: OnceLock<String> = OnceLock::new();
    SHELL_PAGE.get_or_init(|| SHELL.replace("{{VERSION}}", version()))
}

/// The headers every console answer carries.
fn secured(
    mut builder: actix_web::HttpResponseBuilder,
    content_type: &str,
    cache: &str,
) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::CONTENT_TYPE, content_type.to_string()))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, cache.to_string()));
    builder
}

/// `GET /console/{version}/{file}`.
async fn asset(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (wanted, file) = path.into_inner();
    let Some(a) = ASSETS.iter().find(|a| a.path == file) else {
        return crate::api::error::not_found(req).await;
    };
    // An older page may still ask for its version's files: it gets today's, uncached.
    let cache = if wanted == version() { "public, max-age=31536000, immutable" } else { "no-cache" };
    secured(HttpResponse::Ok(), a.content_type, cache).body(a.bytes)
}

/// The first segments of the console's page addresses (`/` besides): the shell answers these
/// and what lies under them, and nothing else, so a mistyped URL or a probe gets the API's JSON
/// 404 rather than a page (docs/api.md#errors).
const PAGES: [&str; 6] = ["apps", "tasks", "schedules", "workflows", "traffic", "events"];

/// Is this a path the console's shell answers (a `GET` or `HEAD` of `/` or of a console page's
/// address, [`PAGES`])?
fn is_page(method: &Method, path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    (method == Method::GET || method == Method::HEAD) && (path == "/" || PAGES.contains(&first))
}

/// The server's default service: the shell for console pages, the API's JSON 404/405 otherwise.
pub async fn fallback(req: HttpRequest) -> HttpResponse {
    if !is_page(req.method(), req.path()) {
        return crate::api::error::not_found(req).await;
    }
    let etag = format!("\"{}\"", version());
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let builder = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    let mut builder = secured(builder, "text/html; charset=utf-8", "no-cache");
    builder.insert_header((header::ETAG, etag));
    if fresh {
        builder.finish()
    } else {
        builder.body(shell())
    }
}

/// Register the asset route (the shell is [`fallback`], the server's default service).
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/console/{version}/{file:.*}", web::get().to(asset)).route("/favicon.ico", web::get().to(favicon));
}

/// No icon (the console's page declares an empty one): a browser showing one of the node's other
/// answers (`/readyz`, `/metrics`) asks for `/favicon.ico`, and gets "nothing", not a 404.
async fn favicon() -> HttpResponse {
    HttpResponse::NoContent().insert_header((header::CACHE_CONTROL, "public, max-age=86400")).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_everything_but_the_api_and_the_assets() {
        for page in [
            "/",
            "/apps",
            "/apps/42",
            "/apps/new",
            "/tasks/7",
            "/schedules",
            "/workflows",
            "/workflows/3",
            "/workflows/runs/12",
            "/traffic",
            "/events",
        ] {
            assert!(is_page(&Method::GET, page), "{page}");
            assert!(is_page(&Method::HEAD, page), "{page}");
        }
        for other in ["/api", "/api/v1/nothing", "/api/v2", "/console/x/none.js", "/no/such/page", "/appsx", "//"] {
            assert!(!is_page(&Method::GET, other), "{other}");
        }
        assert!(!is_page(&Method::POST, "/apps"));
        assert!(!is_page(&Method::DELETE, "/"));
    }

    #[test]
    fn the_shell_names_the_current_version_and_no_inline_script() {
        let page = shell();
        assert!(page.contains(&format!("/console/{}/app.js", version())), "{page}");
        assert!(!page.contains("{{VERSION}}"));
        // Every <script> has a src: the policy allows no inline script.
        assert_eq!(page.matches("<script").count(), page.matches("<script type=\"module\" src=").count());
    }
}
