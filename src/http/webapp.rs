//! The web app: its files are compiled into the binary from `web/` and served as they
//! are (JavaScript modules, no build step). They live under `/assets/<build>/`, where
//! `<build>` is a hash of every file's name and content, so a browser may keep them
//! for a year and still never runs a mix of two versions; the page that names them
//! (`/` and every path of the app) is never cached and carries a strict
//! Content-Security-Policy: scripts and styles only from these files, nothing inline.

use std::collections::HashMap;
use std::io::Write;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code};
use super::Site;

/// Every file of the app, with its content type. Modules import one another by
/// relative paths, which resolve inside the same `/assets/<build>/`.
const FILES: &[(&str, &str, &[u8])] = &[
    ("app.js", "text/javascript", include_bytes!("../../web/app.js")),
    ("api.js", "text/javascript", include_bytes!("../../web/api.js")),
    ("dom.js", "text/javascript", include_bytes!("../../web/dom.js")),
    ("session.js", "text/javascript", include_bytes!("../../web/session.js")),
    ("live.js", "text/javascript", include_bytes!("../../web/live.js")),
    ("board.js", "text/javascript", include_bytes!("../../web/board.js")),
    ("ui.js", "text/javascript", include_bytes!("../../web/ui.js")),
    ("bell.js", "text/javascript", include_bytes!("../../web/bell.js")),
    ("records.js", "text/javascript", include_bytes!("../../web/records.js")),
    ("record.js", "text/javascript", include_bytes!("../../web/record.js")),
    ("inbox.js", "text/javascript", include_bytes!("../../web/inbox.js")),
    ("settings.js", "text/javascript", include_bytes!("../../web/settings.js")),
    ("style.css", "text/css", include_bytes!("../../web/style.css")),
    ("records.css", "text/css", include_bytes!("../../web/records.css")),
    ("inbox.css", "text/css", include_bytes!("../../web/inbox.css")),
    ("settings.css", "text/css", include_bytes!("../../web/settings.css")),
    ("icon.svg", "image/svg+xml", include_bytes!("../../web/icon.svg")),
];

const PAGE: &str = include_str!("../../web/index.html");

/// What the page may load and do. `connect-src 'self'` covers the app's WebSocket on
/// the same host; `frame-ancestors 'none'` keeps the app out of other sites' frames.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    content_type: &'static str,
    plain: Bytes,
    /// The same bytes gzip-compressed, sent to browsers that accept it.
    gzip: Bytes,
}

pub struct WebAssets {
    /// The hash in every asset's path.
    pub build: String,
    page: Bytes,
    files: HashMap<&'static str, Asset>,
}

impl WebAssets {
    /// The compiled-in files, or, with `dir`, the same files read from that folder.
    pub fn load(dir: Option<&std::path::Path>) -> anyhow::Result<WebAssets> {
        let read = |name: &str, compiled: &'static [u8]| -> anyhow::Result<Bytes> {
            match dir {
                None => Ok(Bytes::from_static(compiled)),
                Some(dir) => {
                    let path = dir.join(name);
                    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                    Ok(Bytes::from(bytes))
                }
            }
        };
        let mut hash = Sha256::new();
        let mut contents = Vec::with_capacity(FILES.len());
        for (name, content_type, compiled) in FILES {
            let bytes = read(name, compiled)?;
            hash.update(name.as_bytes());
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(&bytes);
            contents.push((*name, *content_type, bytes));
        }
        let build: String = hash.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
        let mut files = HashMap::new();
        for (name, content_type, plain) in contents {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&plain)?;
            files.insert(
                name,
                Asset {
                    content_type,
                    plain,
                    gzip: Bytes::from(gz.finish()?),
                },
            );
        }
        let page = read("index.html", PAGE.as_bytes())?;
        let page = String::from_utf8(page.to_vec())?.replace("{{assets}}", &format!("/assets/{build}"));
        Ok(WebAssets {
            build,
            page: Bytes::from(page),
            files,
        })
    }
}

/// The app's page: for `/` and for any other path a browser navigates to that is not
/// the API's (the app routes on the client, so a reload of `/boards/…` lands here).
pub fn page(site: &Site) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .body(site.web.page.clone())
}

pub async fn index(site: web::Data<Site>) -> HttpResponse {
    page(&site)
}

/// Whether a request that matched no route is a browser navigating in the app.
pub fn is_navigation(req: &HttpRequest) -> bool {
    req.method() == actix_web::http::Method::GET
        && !req.path().starts_with("/api/")
        && !req.path().starts_with("/assets/")
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

pub async fn asset(site: web::Data<Site>, req: HttpRequest, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (build, name) = path.into_inner();
    let web = &site.web;
    // An older build's files are gone: its page is reloaded, not mixed with these.
    let file = web
        .files
        .get(name.as_str())
        .filter(|_| build == web.build)
        .ok_or_else(|| ApiError::new(Code::NotFound))?;
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut reply = HttpResponse::Ok();
    reply
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(file.content_type)))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::VARY, "Accept-Encoding"));
    if gzip {
        reply.insert_header((header::CONTENT_ENCODING, "gzip"));
        Ok(reply.body(file.gzip.clone()))
    } else {
        Ok(reply.body(file.plain.clone()))
    }
}
