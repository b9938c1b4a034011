//! Full-text search: ranked, prefix-matching, across types, within what the caller
//! may read.

use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

fn found(r: &Response) -> Vec<(String, String)> {
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["object_type"].as_str().unwrap().to_string(),
                h["title"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

on_both_backends! {
    async fn search_finds_records_of_every_type_by_word_prefix_best_match_first(app) {
        let s = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&s.token).await;
        app.post("/contacts", &s.token, json!({"name": "Zed Shaw", "emails": ["zed@rocketmail.io"]})).await.expect(201);
        app.post("/contacts", &s.token, json!({"name": "Rocket Raccoon"})).await.expect(201);
        app.post("/companies", &s.token, json!({"name": "Rocketry Ltd", "domain": "rocketry.io"})).await.expect(201);
        app.post("/deals", &s.token, json!({"title": "Rocket fuel supply", "pipeline_id": pipeline})).await.expect(201);
        let c = app.post("/contacts", &s.token, json!({"name": "Unrelated"})).await.expect(201).id();
        app.post("/activities", &s.token, json!({"kind": "note", "subject": "Launch notes", "body": "the rocket launch slipped", "contact_id": c})).await.expect(201);
        app.post("/leads", &s.token, json!({"name": "Rocket Lead"})).await.expect(201);

        let r = app.get("/search?q=rocket", &s.token).await.expect(200);
        let hits = found(&r);
        let kinds: std::collections::BTreeSet<&str> = hits.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["activity", "company", "contact", "deal", "lead"].into_iter().collect());
        let pos = |title: &str| hits.iter().position(|(_, t)| t == title).unwrap_or_else(|| panic!("{title} not found in {hits:?}"));
        // A match in the name outranks a match in an e-mail address.
        assert!(pos("Rocket Raccoon") < pos("Zed Shaw"), "{hits:?}");

        let r = app.get("/search?q=rocket%20fuel", &s.token).await.expect(200);
        assert_eq!(found(&r), vec![("deal".to_string(), "Rocket fuel supply".to_string())]);
        let r = app.get("/search?q=rock&types=company", &s.token).await.expect(200);
        assert_eq!(found(&r), vec![("company".to_string(), "Rocketry Ltd".to_string())]);
        let r = app.get("/search?q=nothingmatches", &s.token).await.expect(200);
        assert!(found(&r).is_empty());
        // Query syntax characters are only separators, never operators.
        app.get("/search?q=%22rocket%22%20OR%20*%20NEAR(a)%20-x%20%26%20!", &s.token).await.expect(200);
    }

    async fn search_follows_edits_and_deletes(app) {
        let s = app.signup("Acme").await;
        let id = app.post("/contacts", &s.token, json!({"name": "Margaret Hamilton"})).await.expect(201).id();
        assert_eq!(found(&app.get("/search?q=hamilton", &s.token).await).len(), 1);
        app.patch(&format!("/contacts/{id}"), &s.token, json!({"name": "Margaret Heafield"})).await.expect(200);
        assert!(found(&app.get("/search?q=hamilton", &s.token).await).is_empty());
        assert_eq!(found(&app.get("/search?q=heafield", &s.token).await).len(), 1);
        app.delete(&format!("/contacts/{id}"), &s.token).await.expect(204);
        assert!(found(&app.get("/search?q=heafield", &s.token).await).is_empty());
    }

    async fn search_only_returns_types_the_caller_may_read(app) {
        let s = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&s.token).await;
        app.post("/contacts", &s.token, json!({"name": "Apollo Contact"})).await.expect(201);
        app.post("/deals", &s.token, json!({"title": "Apollo Deal", "pipeline_id": pipeline})).await.expect(201);
        let key = app.post("/api-keys", &s.token, json!({"name": "k", "scopes": ["contacts:read"]})).await.expect(201).body["key"].as_str().unwrap().to_string();
        let r = app.get("/search?q=apollo", &key).await.expect(200);
        assert_eq!(found(&r), vec![("contact".to_string(), "Apollo Contact".to_string())]);
        app.get("/search?q=apollo&types=deal", &key).await.expect(403);
    }
}
