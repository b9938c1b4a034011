//! Interactive API documentation at `/docs`: Swagger UI, unpacked at start-up from the
//! release archive that ships as a crate, so it works with no network at all.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;

use super::error::{ApiError, Code};
use super::Site;

/// The files of the Swagger UI distribution that the page uses.
const FILES: [(&str, &str); 3] = [
    ("swagger-ui-bundle.js", "application/javascript"),
    ("swagger-ui.css", "text/css"),
    ("favicon-32x32.png", "image/png"),
];

pub struct DocsAssets {
    files: HashMap<&'static str, (&'static str, Bytes)>,
}

impl DocsAssets {
    pub fn load() -> anyhow::Result<Self> {
        let mut archive = zip::ZipArchive::new(Cursor::new(utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED))?;
        let mut files = HashMap::new();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i)?;
            let name = entry.name().to_string();
            let Some((file, ct)) = FILES.iter().find(|(f, _)| name.ends_with(&format!("/dist/{f}"))) else {
                continue;
            };
            let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
            entry.read_to_end(&mut bytes)?;
            files.insert(*file, (*ct, Bytes::from(bytes)));
        }
        anyhow::ensure!(files.len() == FILES.len(), "the Swagger UI archive lacks some files");
        Ok(DocsAssets { files })
    }
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Shoal API</title>
  <link rel="icon" href="/docs/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="api"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({ url: "/api/v1/openapi.json", dom_id: "#api", deepLinking: true, persistAuthorization: true });
  </script>
</body>
</html>
"##;

pub async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

pub async fn asset(site: web::Data<Site>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (ct, bytes) = site.docs.files.get(name.as_str()).ok_or_else(|| ApiError::new(Code::NotFound))?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, *ct))
        .insert_header((CACHE_CONTROL, "public, max-age=86400"))
        .body(bytes.clone()))
}
