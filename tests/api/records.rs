//! The CRM records through the REST API: CRUD, versions, idempotency, lists,
//! pipelines and deal moves, custom fields, leads, timelines and the audit log.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends! {
    async fn a_contact_can_be_created_read_updated_listed_and_deleted(app) {
        let s = app.signup("Acme").await;
        let created = app.post("/contacts", &s.token, json!({"name": "Ada Lovelace", "emails": ["Ada@Example.com"], "phones": ["+44 20 7946 0958"], "title": "Analyst", "tags": ["vip"]})).await.expect(201);
        assert_eq!(created.body["emails"], json!(["ada@example.com"]));
        assert_eq!(created.body["version"], 1);
        let id = created.id();
        let got = app.get(&format!("/contacts/{id}"), &s.token).await.expect(200);
        assert_eq!(got.header("etag").as_deref(), Some("\"1\""));
        assert_eq!(got.body, created.body);
        let updated = app.patch(&format!("/contacts/{id}"), &s.token, json!({"title": "Countess", "version": 1})).await.expect(200);
        assert_eq!(updated.body["title"], "Countess");
        assert_eq!(updated.body["name"], "Ada Lovelace");
        assert_eq!(updated.body["version"], 2);
        let list = app.get("/contacts", &s.token).await.expect(200);
        assert_eq!(ids(&list.body), vec![id.clone()]);
        app.delete(&format!("/contacts/{id}"), &s.token).await.expect(204);
        app.get(&format!("/contacts/{id}"), &s.token).await.expect(404);
        app.delete(&format!("/contacts/{id}"), &s.token).await.expect(404);
    }

    async fn an_update_based_on_a_stale_version_gets_409_with_the_current_record(app) {
        let s = app.signup("Acme").await;
        let id = app.post("/companies", &s.token, json!({"name": "Initech"})).await.expect(201).id();
        app.patch(&format!("/companies/{id}"), &s.token, json!({"industry": "Software", "version": 1})).await.expect(200);
        let stale = app.patch(&format!("/companies/{id}"), &s.token, json!({"industry": "Paper", "version": 1})).await.expect(409);
        assert_eq!(stale.code(), "version_conflict");
        assert_eq!(stale.body["error"]["details"]["current_version"], 2);
        assert_eq!(stale.body["error"]["details"]["current"]["industry"], "Software");
        // The same through If-Match.
        let r = app.request(awc::http::Method::PATCH, &format!("/companies/{id}"), Some(&s.token), &[("if-match", "\"1\"")], Some(("application/json", br#"{"industry":"Paper"}"#.to_vec()))).await.expect(409);
        assert_eq!(r.code(), "version_conflict");
        let r = app.request(awc::http::Method::PATCH, &format!("/companies/{id}"), Some(&s.token), &[("if-match", "\"2\"")], Some(("application/json", br#"{"industry":"Paper"}"#.to_vec()))).await.expect(200);
        assert_eq!(r.body["version"], 3);
        let r = app.request(awc::http::Method::DELETE, &format!("/companies/{id}"), Some(&s.token), &[("if-match", "\"2\"")], None).await.expect(409);
        assert_eq!(r.code(), "version_conflict");
    }

    async fn a_retried_post_with_the_same_idempotency_key_creates_one_record(app) {
        let s = app.signup("Acme").await;
        let body = json!({"name": "Once"});
        let first = app.post_with("/contacts", &s.token, &[("idempotency-key", "k-1")], body.clone()).await.expect(201);
        let again = app.post_with("/contacts", &s.token, &[("idempotency-key", "k-1")], body.clone()).await.expect(201);
        assert_eq!(first.body, again.body);
        assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(ids(&app.get("/contacts", &s.token).await.body).len(), 1);
        let other = app.post_with("/contacts", &s.token, &[("idempotency-key", "k-1")], json!({"name": "Different"})).await.expect(422);
        assert_eq!(other.code(), "idempotency_key_reused");
        // A refused request is an outcome as well, replayed the same way.
        let bad = app.post_with("/contacts", &s.token, &[("idempotency-key", "k-2")], json!({"name": ""})).await.expect(422);
        let bad_again = app.post_with("/contacts", &s.token, &[("idempotency-key", "k-2")], json!({"name": ""})).await.expect(422);
        assert_eq!(bad.body, bad_again.body);
        assert_eq!(app.post_with("/contacts", &s.token, &[("idempotency-key", "")], body).await.expect(400).code(), "invalid_idempotency_key");
    }

    async fn lists_page_through_every_record_once_in_the_requested_order(app) {
        let s = app.signup("Acme").await;
        let mut names = Vec::new();
        for i in 0..23 {
            // Some share a name so the id breaks ties.
            let name = format!("Contact {:02}", i % 20);
            app.post("/contacts", &s.token, json!({"name": name})).await.expect(201);
            names.push(name);
        }
        names.sort();
        for sort in ["name", "-name", "-created_at", "updated_at"] {
            let mut seen: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/contacts?limit=5&sort={sort}&cursor={c}"),
                    None => format!("/contacts?limit=5&sort={sort}"),
                };
                let page = app.get(&path, &s.token).await.expect(200);
                seen.extend(page.body["data"].as_array().unwrap().iter().cloned());
                match page.body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            let mut ids: Vec<&str> = seen.iter().map(|r| r["id"].as_str().unwrap()).collect();
            assert_eq!(ids.len(), 23, "sort {sort}");
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 23, "no duplicates with sort {sort}");
            if sort == "name" {
                let got: Vec<&str> = seen.iter().map(|r| r["name"].as_str().unwrap()).collect();
                assert_eq!(got, names);
            }
        }
        let wrong = app.get("/contacts?sort=name", &s.token).await;
        let c = wrong.body["next_cursor"].as_str().map(String::from);
        assert!(c.is_none());
        let first = app.get("/contacts?limit=5&sort=name", &s.token).await;
        let c = first.body["next_cursor"].as_str().unwrap();
        assert_eq!(app.get(&format!("/contacts?sort=-name&cursor={c}"), &s.token).await.expect(400).code(), "invalid_cursor");
    }

    async fn filters_select_by_equality_membership_text_and_ranges(app) {
        let s = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&s.token).await;
        let mk = |title: &str, amount: i64, date: &str, tags: Value, stage: &str| json!({"title": title, "amount": amount, "currency": "EUR", "expected_close_date": date, "tags": tags, "pipeline_id": pipeline, "stage_id": stage});
        app.post("/deals", &s.token, mk("Small renewal", 1_000, "2026-01-15", json!(["renewal"]), &stages[0])).await.expect(201);
        app.post("/deals", &s.token, mk("Big Expansion", 50_000, "2026-03-01", json!(["vip", "expansion"]), &stages[1])).await.expect(201);
        app.post("/deals", &s.token, mk("Huge platform deal", 900_000, "2026-06-30", json!(["vip"]), &stages[1])).await.expect(201);
        let titles = |r: &Response| -> Vec<String> {
            let mut t: Vec<String> = r.body["data"].as_array().unwrap().iter().map(|d| d["title"].as_str().unwrap().to_string()).collect();
            t.sort();
            t
        };
        assert_eq!(titles(&app.get("/deals?tags=vip", &s.token).await.expect(200)), vec!["Big Expansion", "Huge platform deal"]);
        assert_eq!(titles(&app.get(&format!("/deals?stage_id={}", stages[0]), &s.token).await.expect(200)), vec!["Small renewal"]);
        assert_eq!(titles(&app.get("/deals?title_contains=EXPAN", &s.token).await.expect(200)), vec!["Big Expansion"]);
        assert_eq!(titles(&app.get("/deals?amount_gte=1000&amount_lt=900000", &s.token).await.expect(200)), vec!["Big Expansion", "Small renewal"]);
        assert_eq!(titles(&app.get("/deals?expected_close_date_gt=2026-02-01&expected_close_date_lte=2026-06-30", &s.token).await.expect(200)), vec!["Big Expansion", "Huge platform deal"]);
        assert_eq!(titles(&app.get(&format!("/deals?stage_id_in={},{}", stages[0], stages[2]), &s.token).await.expect(200)), vec!["Small renewal"]);
        assert_eq!(titles(&app.get("/deals?owner_id_is_null=true&tags=renewal", &s.token).await.expect(200)), vec!["Small renewal"]);
        assert_eq!(titles(&app.get("/deals?title_contains=%25", &s.token).await.expect(200)), Vec::<String>::new());
        let sorted = app.get("/deals?sort=-amount", &s.token).await.expect(200);
        let amounts: Vec<i64> = sorted.body["data"].as_array().unwrap().iter().map(|d| d["amount"].as_i64().unwrap()).collect();
        assert_eq!(amounts, vec![900_000, 50_000, 1_000]);
    }

    async fn updated_since_returns_only_records_changed_after_the_instant(app) {
        let s = app.signup("Acme").await;
        let a = app.post("/contacts", &s.token, json!({"name": "A"})).await.expect(201);
        let b = app.post("/contacts", &s.token, json!({"name": "B"})).await.expect(201);
        let since = a.body["updated_at"].as_str().unwrap().to_string();
        let later = app.patch(&format!("/contacts/{}", a.id()), &s.token, json!({"title": "changed"})).await.expect(200);
        let changed = app.get(&format!("/contacts?updated_since={}", later.body["updated_at"].as_str().unwrap().replace('+', "%2B")), &s.token).await.expect(200);
        assert!(ids(&changed.body).is_empty());
        let changed = app.get(&format!("/contacts?updated_since={since}"), &s.token).await.expect(200);
        let got = ids(&changed.body);
        assert!(got.contains(&a.id()));
        let _ = b;
    }

    async fn a_new_deal_lands_last_in_the_first_stage_and_moves_between_neighbours(app) {
        let s = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&s.token).await;
        let mut deals = Vec::new();
        for t in ["one", "two", "three"] {
            let d = app.post("/deals", &s.token, json!({"title": t, "pipeline_id": pipeline})).await.expect(201);
            assert_eq!(d.body["stage_id"], stages[0].as_str());
            deals.push(d.id());
        }
        let order = |r: &Response| -> Vec<String> { r.body["data"].as_array().unwrap().iter().map(|d| d["title"].as_str().unwrap().to_string()).collect() };
        let path = format!("/deals?stage_id={}&sort=rank", stages[0]);
        assert_eq!(order(&app.get(&path, &s.token).await), vec!["one", "two", "three"]);
        // "three" between "one" and "two".
        app.post(&format!("/deals/{}/move", deals[2]), &s.token, json!({"after": deals[0], "before": deals[1]})).await.expect(200);
        assert_eq!(order(&app.get(&path, &s.token).await), vec!["one", "three", "two"]);
        // "two" to the top, naming only the card it goes before.
        app.post(&format!("/deals/{}/move", deals[1]), &s.token, json!({"before": deals[0]})).await.expect(200);
        assert_eq!(order(&app.get(&path, &s.token).await), vec!["two", "one", "three"]);
        // "one" right after "two", naming only the card it follows.
        app.post(&format!("/deals/{}/move", deals[0]), &s.token, json!({"after": deals[1]})).await.expect(200);
        assert_eq!(order(&app.get(&path, &s.token).await), vec!["two", "one", "three"]);
        // Across stages.
        let moved = app.post(&format!("/deals/{}/move", deals[0]), &s.token, json!({"stage_id": stages[2]})).await.expect(200);
        assert_eq!(moved.body["stage_id"], stages[2].as_str());
        assert_eq!(order(&app.get(&path, &s.token).await), vec!["two", "three"]);
        // Neighbours must be in the target stage.
        let r = app.post(&format!("/deals/{}/move", deals[1]), &s.token, json!({"stage_id": stages[1], "after": deals[2]})).await.expect(422);
        assert_eq!(r.code(), "validation_failed");
        let r = app.post(&format!("/deals/{}/move", deals[1]), &s.token, json!({"after": deals[2], "before": deals[1]})).await;
        assert!(r.status == 200 || r.status == 422, "{}", r.text);
        let r = app.post(&format!("/deals/{}/move", deals[1]), &s.token, json!({"after": deals[2], "before": deals[2]})).await.expect(422);
        assert_eq!(r.code(), "validation_failed");
    }

    async fn many_moves_between_the_same_two_cards_keep_a_strict_order(app) {
        let s = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&s.token).await;
        let a = app.post("/deals", &s.token, json!({"title": "a", "pipeline_id": pipeline})).await.expect(201).id();
        let b = app.post("/deals", &s.token, json!({"title": "b", "pipeline_id": pipeline})).await.expect(201).id();
        let c = app.post("/deals", &s.token, json!({"title": "c", "pipeline_id": pipeline})).await.expect(201).id();
        let d = app.post("/deals", &s.token, json!({"title": "d", "pipeline_id": pipeline})).await.expect(201).id();
        let mut ws = app.ws(&s.token).await;
        ws.subscribe(&format!("board:{pipeline}"), None).await;
        // c and d take turns squeezing in right after a, far more often than the gap
        // between two keys can be halved in a key of reasonable length.
        for i in 0..300 {
            let mover = if i % 2 == 0 { &c } else { &d };
            app.post(&format!("/deals/{mover}/move"), &s.token, json!({"after": a})).await.expect(200);
        }
        let list = app.get("/deals?sort=rank", &s.token).await.expect(200);
        let titles: Vec<&str> = list.body["data"].as_array().unwrap().iter().map(|d| d["title"].as_str().unwrap()).collect();
        assert_eq!(titles, vec!["a", "d", "c", "b"]);
        let longest = list.body["data"].as_array().unwrap().iter().map(|d| d["rank"].as_str().unwrap().len()).max().unwrap();
        assert!(longest <= 17, "keys stay short: {longest}");
        let _ = b;
        // Rebalancing the column was one event each time, not one per card.
        let mut rebalanced = 0;
        loop {
            let f = ws.recv().await;
            if f["kind"] == "stage.rebalanced" {
                rebalanced += 1;
                // Every card of the column, the moving one included (at its new place).
                assert_eq!(f["data"]["ranks"].as_object().unwrap().len(), 4);
            }
            if f["data"]["id"] == d.as_str() && f["cause"].is_null() && f["data"]["record"]["rank"] == list.body["data"][1]["rank"] {
                break;
            }
        }
        assert!(rebalanced > 0);
    }

    async fn a_deal_must_be_in_a_stage_of_its_own_pipeline(app) {
        let s = app.signup("Acme").await;
        let (p1, _) = app.pipeline(&s.token).await;
        let (_, stages2) = app.pipeline(&s.token).await;
        let r = app.post("/deals", &s.token, json!({"title": "x", "pipeline_id": p1, "stage_id": stages2[0]})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["stage_id"].is_string());
        let r = app.post("/deals", &s.token, json!({"title": "x", "pipeline_id": p1, "stage_id": uuid::Uuid::new_v4().to_string()})).await.expect(422);
        assert_eq!(r.body["error"]["details"]["fields"]["stage_id"], "no such stage");
        let r = app.post("/deals", &s.token, json!({"title": "x", "pipeline_id": p1, "amount": 10})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["currency"].is_string());
    }

    async fn stages_and_pipelines_still_holding_deals_cannot_be_deleted(app) {
        let s = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&s.token).await;
        let deal = app.post("/deals", &s.token, json!({"title": "x", "pipeline_id": pipeline})).await.expect(201).id();
        assert_eq!(app.delete(&format!("/pipelines/{pipeline}/stages/{}", stages[0]), &s.token).await.expect(409).code(), "in_use");
        assert_eq!(app.delete(&format!("/pipelines/{pipeline}"), &s.token).await.expect(409).code(), "in_use");
        app.delete(&format!("/pipelines/{pipeline}/stages/{}", stages[1]), &s.token).await.expect(204);
        let added = app.post(&format!("/pipelines/{pipeline}/stages"), &s.token, json!({"name": "Lost", "kind": "lost"})).await.expect(201);
        assert_eq!(added.body["position"], 4);
        let renamed = app.patch(&format!("/pipelines/{pipeline}/stages/{}", added.id()), &s.token, json!({"name": "Closed lost"})).await.expect(200);
        assert_eq!(renamed.body["name"], "Closed lost");
        let got = app.get(&format!("/pipelines/{pipeline}"), &s.token).await.expect(200);
        assert_eq!(got.body["stages"].as_array().unwrap().len(), 4);
        app.delete(&format!("/deals/{deal}"), &s.token).await.expect(204);
        app.delete(&format!("/pipelines/{pipeline}"), &s.token).await.expect(204);
        app.get(&format!("/pipelines/{pipeline}/stages"), &s.token).await.expect(404);
    }

    async fn custom_fields_are_validated_on_every_write_and_removed_with_their_definition(app) {
        let s = app.signup("Acme").await;
        let def = app.post("/custom-fields", &s.token, json!({"object_type": "contact", "key": "tier", "label": "Tier", "kind": "select", "options": ["gold", "silver"]})).await.expect(201);
        app.post("/custom-fields", &s.token, json!({"object_type": "contact", "key": "tier", "label": "Again", "kind": "text"})).await.expect(409);
        app.post("/custom-fields", &s.token, json!({"object_type": "contact", "key": "Bad Key", "label": "x", "kind": "text"})).await.expect(422);
        app.post("/custom-fields", &s.token, json!({"object_type": "contact", "key": "empty", "label": "x", "kind": "select"})).await.expect(422);
        app.post("/custom-fields", &s.token, json!({"object_type": "deal", "key": "score", "label": "Score", "kind": "number"})).await.expect(201);
        let bad = app.post("/contacts", &s.token, json!({"name": "A", "custom_fields": {"tier": "bronze"}})).await.expect(422);
        assert!(bad.body["error"]["details"]["fields"]["custom_fields.tier"].is_string());
        let unknown = app.post("/contacts", &s.token, json!({"name": "A", "custom_fields": {"score": 3}})).await.expect(422);
        assert_eq!(unknown.body["error"]["details"]["fields"]["custom_fields.score"], "no such custom field");
        let c = app.post("/contacts", &s.token, json!({"name": "A", "custom_fields": {"tier": "gold"}})).await.expect(201);
        assert_eq!(c.body["custom_fields"], json!({"tier": "gold"}));
        app.patch(&format!("/contacts/{}", c.id()), &s.token, json!({"custom_fields": {"tier": "platinum"}})).await.expect(422);
        let cleared = app.patch(&format!("/contacts/{}", c.id()), &s.token, json!({"custom_fields": {"tier": null}})).await.expect(200);
        assert_eq!(cleared.body["custom_fields"], json!({}));
        app.patch(&format!("/contacts/{}", c.id()), &s.token, json!({"custom_fields": {"tier": "silver"}})).await.expect(200);
        app.delete(&format!("/custom-fields/{}", def.id()), &s.token).await.expect(204);
        let after = app.get(&format!("/contacts/{}", c.id()), &s.token).await.expect(200);
        assert_eq!(after.body["custom_fields"], json!({}));
    }

    async fn a_lead_converts_into_a_contact_a_company_and_a_deal_at_once(app) {
        let s = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&s.token).await;
        let lead = app.post("/leads", &s.token, json!({"name": "Linus", "email": "linus@example.test", "company_name": "Kernel Inc", "tags": ["inbound"]})).await.expect(201);
        assert_eq!(lead.body["status"], "new");
        let bad = app.post(&format!("/leads/{}/convert", lead.id()), &s.token, json!({"deal": {"pipeline_id": pipeline, "amount": 5}})).await.expect(422);
        assert!(bad.body["error"]["details"]["fields"]["deal.currency"].is_string());
        assert_eq!(ids(&app.get("/contacts", &s.token).await.body).len(), 0, "a failed conversion leaves nothing behind");
        let conv = app.post(&format!("/leads/{}/convert", lead.id()), &s.token, json!({"deal": {"pipeline_id": pipeline, "amount": 5000, "currency": "EUR"}})).await.expect(200);
        let b = &conv.body;
        assert_eq!(b["lead"]["status"], "converted");
        assert_eq!(b["contact"]["emails"], json!(["linus@example.test"]));
        assert_eq!(b["contact"]["company_id"], b["company"]["id"]);
        assert_eq!(b["deal"]["title"], "Kernel Inc");
        assert_eq!(b["deal"]["stage_id"], stages[0].as_str());
        assert_eq!(b["deal"]["contact_id"], b["contact"]["id"]);
        assert_eq!(b["lead"]["converted_deal_id"], b["deal"]["id"]);
        let again = app.post(&format!("/leads/{}/convert", lead.id()), &s.token, json!({})).await.expect(409);
        assert_eq!(again.code(), "already_exists");
    }

    async fn every_mutation_is_recorded_in_the_audit_log_with_before_and_after(app) {
        let s = app.signup("Acme").await;
        let id = app.post("/companies", &s.token, json!({"name": "Globex"})).await.expect(201).id();
        app.patch(&format!("/companies/{id}"), &s.token, json!({"name": "Globex Corp"})).await.expect(200);
        app.delete(&format!("/companies/{id}"), &s.token).await.expect(204);
        let log = app.get(&format!("/audit-log?object_id={id}"), &s.token).await.expect(200);
        let entries = log.body["data"].as_array().unwrap();
        let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, vec!["delete", "update", "create"]);
        assert_eq!(entries[1]["changes"]["name"], json!(["Globex", "Globex Corp"]));
        assert_eq!(entries[0]["changes"]["name"], json!(["Globex Corp", null]));
        assert_eq!(entries[2]["actor_id"], format!("user:{}", s.user_id));
    }

    async fn activities_form_the_timeline_of_the_records_they_are_linked_to(app) {
        let s = app.signup("Acme").await;
        let contact = app.post("/contacts", &s.token, json!({"name": "Grace"})).await.expect(201).id();
        let other = app.post("/contacts", &s.token, json!({"name": "Other"})).await.expect(201).id();
        app.post("/activities", &s.token, json!({"kind": "note", "body": "met at conf", "contact_id": contact, "occurred_at": "2026-10-01T09:00:00Z"})).await.expect(201);
        let task = app.post("/activities", &s.token, json!({"kind": "task", "subject": "send deck", "due_date": "2026-12-01", "assignee_id": s.user_id, "contact_id": contact, "occurred_at": "2026-10-02T09:00:00Z"})).await.expect(201);
        assert_eq!(task.body["done"], false);
        app.post("/activities", &s.token, json!({"kind": "call", "contact_id": other, "occurred_at": "2026-11-01T10:00:00Z", "duration_minutes": 15})).await.expect(201);
        app.post("/activities", &s.token, json!({"kind": "note", "body": "orphan"})).await.expect(422);
        let tl = app.get(&format!("/contacts/{contact}/timeline?sort=-occurred_at"), &s.token).await.expect(200);
        let kinds: Vec<&str> = tl.body["data"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, vec!["task", "note"]);
        app.patch(&format!("/activities/{}", task.id()), &s.token, json!({"done": true})).await.expect(200);
        let open = app.get(&format!("/contacts/{contact}/timeline?kind=task&done=false"), &s.token).await.expect(200);
        assert!(ids(&open.body).is_empty());
        app.get(&format!("/contacts/{}/timeline", uuid::Uuid::new_v4()), &s.token).await.expect(404);

        // Deleting the contact takes the activities that were only on its timeline;
        // one also linked to a deal stays, on the deal's timeline.
        let (pipeline, _) = app.pipeline(&s.token).await;
        let deal = app.post("/deals", &s.token, json!({"title": "d", "pipeline_id": pipeline})).await.expect(201).id();
        let shared = app.post("/activities", &s.token, json!({"kind": "meeting", "contact_id": contact, "deal_id": deal})).await.expect(201).id();
        app.delete(&format!("/contacts/{contact}"), &s.token).await.expect(204);
        app.get(&format!("/activities/{}", task.id()), &s.token).await.expect(404);
        let kept = app.get(&format!("/activities/{shared}"), &s.token).await.expect(200);
        assert!(kept.body["contact_id"].is_null());
        assert_eq!(ids(&app.get(&format!("/deals/{deal}/timeline"), &s.token).await.body), vec![shared.clone()]);
        let log = app.get(&format!("/audit-log?object_id={}", task.id()), &s.token).await.expect(200);
        assert_eq!(log.body["data"][0]["action"], "delete");
    }

    async fn deleting_a_company_clears_the_references_to_it(app) {
        let s = app.signup("Acme").await;
        let parent = app.post("/companies", &s.token, json!({"name": "Parent"})).await.expect(201).id();
        let child = app.post("/companies", &s.token, json!({"name": "Child", "parent_id": parent})).await.expect(201).id();
        let contact = app.post("/contacts", &s.token, json!({"name": "Emp", "company_id": parent})).await.expect(201).id();
        let cycle = app.patch(&format!("/companies/{parent}"), &s.token, json!({"parent_id": child})).await.expect(422);
        assert!(cycle.body["error"]["details"]["fields"]["parent_id"].is_string());
        app.delete(&format!("/companies/{parent}"), &s.token).await.expect(204);
        let c = app.get(&format!("/contacts/{contact}"), &s.token).await.expect(200);
        assert!(c.body["company_id"].is_null());
        assert_eq!(c.body["version"], 2);
        assert!(app.get(&format!("/companies/{child}"), &s.token).await.body["parent_id"].is_null());
    }

    async fn tags_used_on_records_join_the_catalogue_and_deleting_a_tag_removes_it_everywhere(app) {
        let s = app.signup("Acme").await;
        let c = app.post("/contacts", &s.token, json!({"name": "T", "tags": ["vip", "beta"]})).await.expect(201).id();
        let tags = app.get("/tags?sort=name", &s.token).await.expect(200);
        let names: Vec<&str> = tags.body["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["beta", "vip"]);
        let vip = tags.body["data"][1]["id"].as_str().unwrap().to_string();
        app.patch(&format!("/tags/{vip}"), &s.token, json!({"color": "#ff0000"})).await.expect(200);
        app.patch(&format!("/tags/{vip}"), &s.token, json!({"name": "renamed"})).await.expect(422);
        app.post("/tags", &s.token, json!({"name": "vip"})).await.expect(409);
        app.delete(&format!("/tags/{vip}"), &s.token).await.expect(204);
        let after = app.get(&format!("/contacts/{c}"), &s.token).await.expect(200);
        assert_eq!(after.body["tags"], json!(["beta"]));
    }

    async fn teams_hold_only_members_of_the_workspace(app) {
        let s = app.signup("Acme").await;
        let agent = app.member(&s, "agent").await;
        let team = app.post("/teams", &s.token, json!({"name": "Support", "member_ids": [agent.user_id]})).await.expect(201);
        assert_eq!(team.body["member_ids"], json!([agent.user_id]));
        let other = app.signup("Other").await;
        let r = app.post("/teams", &s.token, json!({"name": "Mixed", "member_ids": [other.user_id]})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["member_ids"].is_string());
        app.delete(&format!("/members/{}", agent.user_id), &s.token).await.expect(204);
        assert_eq!(app.get(&format!("/teams/{}", team.id()), &s.token).await.body["member_ids"], json!([]));
    }

    async fn records_are_fetched_by_id_many_at_once_and_only_from_their_own_workspace(app) {
        let s = app.signup("Acme").await;
        let other = app.signup("Other").await;
        let mut ids = Vec::new();
        for name in ["Ada", "Bob", "Cyd"] {
            ids.push(app.post("/contacts", &s.token, json!({"name": name})).await.expect(201).id());
        }
        let foreign = app.post("/contacts", &other.token, json!({"name": "Eve"})).await.expect(201).id();
        let r = app.get(&format!("/contacts?id_in={},{},{foreign}&limit=100", ids[0], ids[2]), &s.token).await.expect(200);
        let mut names: Vec<&str> = r.body["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["Ada", "Cyd"]);
        let r = app.get(&format!("/contacts?id={}", ids[1]), &s.token).await.expect(200);
        assert_eq!(r.body["data"][0]["name"], "Bob");
        app.get("/contacts?id_contains=a", &s.token).await.expect(400);
    }

    async fn stages_are_reordered_by_setting_their_positions_and_every_view_follows(app) {
        let s = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&s.token).await;
        let mut ws = app.ws(&s.token).await;
        ws.subscribe(&format!("board:{pipeline}"), None).await;
        // The last stage first: one write each, every stage keeping its version rule.
        let ids = |body: &serde_json::Value| -> Vec<String> {
            body["stages"].as_array().unwrap().iter().map(|st| st["id"].as_str().unwrap().to_string()).collect()
        };
        let before = app.get(&format!("/pipelines/{pipeline}"), &s.token).await.expect(200).body;
        assert_eq!(ids(&before), stages);
        let last = &before["stages"][3];
        let moved = app
            .patch(&format!("/pipelines/{pipeline}/stages/{}", stages[3]), &s.token, json!({"position": 0, "version": last["version"]}))
            .await
            .expect(200);
        assert_eq!(moved.body["position"], 0);
        for (i, id) in stages[..3].iter().enumerate() {
            app.patch(&format!("/pipelines/{pipeline}/stages/{id}"), &s.token, json!({"position": i + 1})).await.expect(200);
        }
        let after = app.get(&format!("/pipelines/{pipeline}"), &s.token).await.expect(200).body;
        let reordered = [&stages[3], &stages[0], &stages[1], &stages[2]].map(|id| id.as_str());
        assert_eq!(ids(&after), reordered);
        // The board's followers hear of each change; a fresh snapshot has the new order.
        let event = ws.recv().await;
        assert_eq!((event["kind"].as_str(), event["data"]["id"].as_str()), (Some("stage.updated"), Some(stages[3].as_str())));
        let mut fresh = app.ws(&s.token).await;
        let frames = fresh.subscribe(&format!("board:{pipeline}"), None).await;
        let snapshot = frames.iter().find(|f| f["type"] == "snapshot").unwrap();
        let order: Vec<&str> = snapshot["state"]["stages"].as_array().unwrap().iter().map(|st| st["id"].as_str().unwrap()).collect();
        assert_eq!(order, reordered);
        // Out of range, it is refused with the field named.
        let r = app.patch(&format!("/pipelines/{pipeline}/stages/{}", stages[0]), &s.token, json!({"position": -1})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["position"].is_string());
    }

    async fn a_leads_timeline_goes_with_it_when_it_is_converted_and_when_it_is_deleted(app) {
        let s = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&s.token).await;
        let lead = app.post("/leads", &s.token, json!({"name": "Linus", "company_name": "Kernel Inc"})).await.expect(201).id();
        let call = app.post("/activities", &s.token, json!({"kind": "call", "subject": "first call", "lead_id": lead})).await.expect(201).id();
        let note = app.post("/activities", &s.token, json!({"kind": "note", "body": "likes penguins", "lead_id": lead})).await.expect(201).id();
        let mut on_lead = ids(&app.get(&format!("/leads/{lead}/timeline"), &s.token).await.expect(200).body);
        on_lead.sort();
        let mut both = vec![call.clone(), note.clone()];
        both.sort();
        assert_eq!(on_lead, both);

        // Converted: the contact, the company and the deal it became have its activities
        // on their timelines, and the lead keeps them too.
        let conv = app.post(&format!("/leads/{lead}/convert"), &s.token, json!({"deal": {"pipeline_id": pipeline}})).await.expect(200).body;
        for (family, id) in [("contacts", &conv["contact"]["id"]), ("companies", &conv["company"]["id"]), ("deals", &conv["deal"]["id"])] {
            let mut got = ids(&app.get(&format!("/{family}/{}/timeline", id.as_str().unwrap()), &s.token).await.expect(200).body);
            got.sort();
            assert_eq!(got, both, "{family}");
        }
        assert_eq!(ids(&app.get(&format!("/leads/{lead}/timeline"), &s.token).await.body).len(), 2);
        let moved = app.get(&format!("/activities/{call}"), &s.token).await.expect(200).body;
        assert_eq!((moved["lead_id"].as_str(), moved["version"].as_i64()), (Some(lead.as_str()), Some(2)));

        // Deleting a lead takes the activities only it held.
        let other = app.post("/leads", &s.token, json!({"name": "Ada"})).await.expect(201).id();
        let only = app.post("/activities", &s.token, json!({"kind": "note", "body": "x", "lead_id": other})).await.expect(201).id();
        app.delete(&format!("/leads/{other}"), &s.token).await.expect(204);
        app.get(&format!("/activities/{only}"), &s.token).await.expect(404);
        app.get(&format!("/leads/{other}/timeline"), &s.token).await.expect(404);
    }
}
