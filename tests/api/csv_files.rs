//! CSV import jobs with per-row errors, and streamed CSV export.

use awc::http::Method;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends! {
    async fn an_import_creates_valid_rows_and_reports_each_invalid_row(app) {
        let s = app.signup("Acme").await;
        app.post("/custom-fields", &s.token, json!({"object_type": "contact", "key": "tier", "label": "Tier", "kind": "select", "options": ["gold", "silver"]})).await.expect(201);
        let csv = "name,emails,title,tags,custom_fields.tier\n\
                   Ada Lovelace,ada@example.test,Countess,vip;math,gold\n\
                   Bad Email,not-an-email,,,\n\
                   \"Hopper, Grace\",grace@navy.test;g@example.test,Admiral,,silver\n\
                   Wrong Tier,,,,bronze\n\
                   ,nobody@example.test,,,\n";
        let r = app.request(Method::POST, "/imports?object_type=contact&wait=true", Some(&s.token), &[], Some(("text/csv", csv.as_bytes().to_vec()))).await.expect(200);
        assert_eq!(r.body["status"], "completed");
        assert_eq!(r.body["rows_total"], 5);
        assert_eq!(r.body["rows_done"], 5);
        assert_eq!(r.body["rows_failed"], 3);
        let errors = r.body["errors"].as_array().unwrap();
        let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, vec![3, 5, 6]);
        assert!(errors[0]["errors"]["emails"].is_string(), "{}", r.text);
        assert!(errors[1]["errors"]["custom_fields.tier"].is_string(), "{}", r.text);
        assert!(errors[2]["errors"]["name"].is_string(), "{}", r.text);
        let list = app.get("/contacts?sort=name", &s.token).await.expect(200);
        let names: Vec<&str> = list.body["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["Ada Lovelace", "Hopper, Grace"]);
        assert_eq!(list.body["data"][1]["emails"], json!(["grace@navy.test", "g@example.test"]));
        assert_eq!(list.body["data"][0]["custom_fields"], json!({"tier": "gold"}));
        let job = app.get(&format!("/imports/{}", r.id()), &s.token).await.expect(200);
        assert_eq!(job.body, r.body);
        assert_eq!(ids(&app.get("/imports", &s.token).await.body), vec![r.id()]);
    }

    async fn an_import_without_waiting_is_accepted_as_a_job(app) {
        let s = app.signup("Acme").await;
        let r = app.request(Method::POST, "/imports?object_type=company", Some(&s.token), &[], Some(("text/csv", b"name,domain\nInitech,initech.test\n".to_vec()))).await.expect(202);
        assert_eq!(r.body["rows_total"], 1);
        assert!(r.body["status"] == "running" || r.body["status"] == "completed");
    }

    async fn an_export_streams_the_matching_records_and_imports_back_unchanged(app) {
        let s = app.signup("Acme").await;
        app.post("/custom-fields", &s.token, json!({"object_type": "contact", "key": "tier", "label": "Tier", "kind": "multi_select", "options": ["gold", "silver"]})).await.expect(201);
        for i in 0..250 {
            let tags = if i % 2 == 0 { json!(["even"]) } else { json!(["odd"]) };
            app.post("/contacts", &s.token, json!({"name": format!("Person {i:03}"), "emails": [format!("p{i}@example.test")], "tags": tags, "custom_fields": {"tier": ["gold", "silver"]}})).await.expect(201);
        }
        let r = app.get("/exports?object_type=contact&tags=even&sort=name", &s.token).await.expect(200);
        assert!(r.header("content-type").unwrap().starts_with("text/csv"));
        let mut reader = csv::Reader::from_reader(r.text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        assert_eq!(&headers[0], "id");
        assert!(headers.iter().any(|h| h == "custom_fields.tier"));
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 125);
        let name_col = headers.iter().position(|h| h == "name").unwrap();
        assert_eq!(&rows[0][name_col], "Person 000");
        assert_eq!(&rows[124][name_col], "Person 248");

        let other = app.signup("Elsewhere").await;
        app.post("/custom-fields", &other.token, json!({"object_type": "contact", "key": "tier", "label": "Tier", "kind": "multi_select", "options": ["gold", "silver"]})).await.expect(201);
        let imported = app.request(Method::POST, "/imports?object_type=contact&wait=true", Some(&other.token), &[], Some(("text/csv", r.text.into_bytes()))).await.expect(200);
        assert_eq!(imported.body["rows_failed"], 0, "{}", imported.text);
        let copy = app.get("/contacts?sort=name&limit=1", &other.token).await.expect(200);
        assert_eq!(copy.body["data"][0]["name"], "Person 000");
        assert_eq!(copy.body["data"][0]["custom_fields"], json!({"tier": ["gold", "silver"]}));
        assert_eq!(copy.body["data"][0]["tags"], json!(["even"]));
    }
}
