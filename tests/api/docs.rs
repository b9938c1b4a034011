//! The OpenAPI document and the interactive docs, served with no network access.

use crate::helpers::*;

#[actix_web::test]
async fn the_openapi_document_describes_every_resource_and_error_code() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app
        .request(awc::http::Method::GET, "/api/v1/openapi.json", None, &[], None)
        .await
        .expect(200);
    let doc = &r.body;
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/contacts",
        "/api/v1/contacts/{id}",
        "/api/v1/companies",
        "/api/v1/leads/{id}/convert",
        "/api/v1/pipelines",
        "/api/v1/pipelines/{id}/stages",
        "/api/v1/deals/{id}/move",
        "/api/v1/activities",
        "/api/v1/tags",
        "/api/v1/teams",
        "/api/v1/custom-fields",
        "/api/v1/audit-log",
        "/api/v1/search",
        "/api/v1/imports",
        "/api/v1/exports",
        "/api/v1/auth/signup",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/me",
        "/api/v1/members",
        "/api/v1/invitations",
        "/api/v1/invitations/accept",
        "/api/v1/api-keys",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    let deal = &doc["components"]["schemas"]["Deal"]["properties"];
    assert_eq!(
        deal["amount"]["anyOf"][1]["type"], "null",
        "an optional field may be null: {}",
        deal["amount"]
    );
    assert_eq!(deal["amount"]["anyOf"][0]["type"], "integer");
    assert_eq!(deal["title"]["type"], "string");
    assert_eq!(deal["rank"]["readOnly"], true);
    let required = doc["components"]["schemas"]["DealCreate"]["required"].as_array().unwrap();
    assert!(required.contains(&serde_json::json!("title")));
    let codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap();
    assert!(codes.contains(&serde_json::json!("version_conflict")));
    let list_params = doc["paths"]["/api/v1/deals"]["get"]["parameters"].as_array().unwrap();
    assert!(list_params.iter().any(|p| p["name"] == "amount_gte"));
}

#[actix_web::test]
async fn the_interactive_docs_and_their_assets_are_served_locally() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = app.request(awc::http::Method::GET, "/docs", None, &[], None).await.expect(200);
    assert!(page.text.contains("/api/v1/openapi.json"));
    for (asset, ct) in [("swagger-ui-bundle.js", "application/javascript"), ("swagger-ui.css", "text/css")] {
        let r = app
            .request(awc::http::Method::GET, &format!("/docs/{asset}"), None, &[], None)
            .await
            .expect(200);
        assert_eq!(r.header("content-type").as_deref(), Some(ct));
        assert!(r.text.len() > 10_000);
    }
    app.request(awc::http::Method::GET, "/docs/../../etc/passwd", None, &[], None)
        .await
        .expect(404);
    app.request(awc::http::Method::GET, "/docs/index.html", None, &[], None)
        .await
        .expect(404);
}
