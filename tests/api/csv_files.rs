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
        assert_eq!(r.body["rows_processed"], 5);
        assert_eq!((r.body["rows_created"].as_i64(), r.body["rows_updated"].as_i64(), r.body["rows_skipped"].as_i64()), (Some(2), Some(0), Some(0)));
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

    async fn importing_the_same_file_twice_creates_each_record_once(app) {
        let s = app.signup("Acme").await;
        let csv = "name,emails\nAda Lovelace,ada@example.test\nGrace Hopper,GRACE@navy.test\nNo Email,\n";
        let import = |body: &'static str| app.request(Method::POST, "/imports?object_type=contact&wait=true", Some(&s.token), &[], Some(("text/csv", body.as_bytes().to_vec())));
        let first = import(csv).await.expect(200);
        assert_eq!((first.body["mode"].as_str(), first.body["key"].as_str()), (Some("skip"), Some("emails")));
        assert_eq!(first.body["rows_created"], 3, "{}", first.text);

        let second = import(csv).await.expect(200);
        // Rows without a key cannot be matched: they are new each time.
        let counts = ["rows_created", "rows_updated", "rows_skipped", "rows_failed"].map(|k| second.body[k].as_i64().unwrap());
        assert_eq!(counts, [1, 0, 2, 0], "{}", second.text);
        let list = app.get("/contacts?limit=50", &s.token).await.expect(200);
        assert_eq!(list.body["data"].as_array().unwrap().len(), 4);
    }

    async fn an_import_updates_creates_skips_or_refuses_matching_rows_as_its_mode_says(app) {
        let s = app.signup("Acme").await;
        let (app, token) = (&app, &s.token);
        let run = |query: &str, body: &str| {
            let path = format!("/imports?object_type=company&wait=true&{query}");
            let body = body.as_bytes().to_vec();
            async move { app.request(Method::POST, &path, Some(token), &[], Some(("text/csv", body))).await }
        };
        run("", "name,domain,industry\nInitech,initech.test,Software\n").await.expect(200);
        let counts = |r: &Response| ["rows_created", "rows_updated", "rows_skipped", "rows_failed"].map(|k| r.body[k].as_i64().unwrap());

        let created = run("mode=create", "name,domain\nInitech,INITECH.test\nHooli,hooli.test\n").await.expect(200);
        assert_eq!(counts(&created), [1, 0, 0, 1], "{}", created.text);
        let why = created.body["errors"][0]["errors"]["domain"].as_str().unwrap();
        assert!(why.contains("mode=skip, update or upsert"), "{why}");

        let updated = run("mode=update", "name,domain,industry\nInitech,initech.test,Consulting\nUmbrella,umbrella.test,Pharma\n").await.expect(200);
        assert_eq!(counts(&updated), [0, 1, 1, 0], "{}", updated.text);
        let upserted = run("mode=upsert", "name,domain,industry\nInitech,initech.test,Consulting\nUmbrella,umbrella.test,Pharma\n").await.expect(200);
        assert_eq!(counts(&upserted), [1, 0, 1, 0], "the unchanged row is skipped: {}", upserted.text);
        let initech = app.get("/companies?domain=initech.test", &s.token).await.expect(200);
        assert_eq!(initech.body["data"].as_array().unwrap().len(), 1);
        assert_eq!(initech.body["data"][0]["industry"], "Consulting");

        // Two rows of one file with one key: the second says which line it repeats.
        let twice = run("mode=upsert", "name,domain\nA,dup.test\nB,dup.test\n").await.expect(200);
        assert_eq!(counts(&twice), [1, 0, 0, 1], "{}", twice.text);
        assert!(twice.body["errors"][0]["errors"]["row"].as_str().unwrap().contains("line 2"), "{}", twice.text);

        // Re-importing an export by id updates in place.
        let id = initech.body["data"][0]["id"].as_str().unwrap();
        let by_id = run("key=id&mode=update", &format!("id,name\n{id},Initech Ltd\n")).await.expect(200);
        assert_eq!(counts(&by_id), [0, 1, 0, 0], "{}", by_id.text);

        let r = run("mode=merge", "name\nx\n").await.expect(400);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("create, skip, update, upsert"), "{}", r.text);
        let r = run("key=nickname", "name\nx\n").await.expect(400);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("domain"), "{}", r.text);
        let r = run("key=none&mode=upsert", "name\nx\n").await.expect(400);
        assert_eq!(r.code(), "invalid_query");
    }

    async fn an_import_may_come_as_a_multipart_upload_as_browsers_and_curl_send_files(app) {
        let s = app.signup("Acme").await;
        let boundary = "shoal-test-boundary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"people.csv\"\r\nContent-Type: text/csv\r\n\r\n\
             name,emails\nAda Lovelace,ada@example.test\n\r\n--{boundary}--\r\n"
        );
        let ct = format!("multipart/form-data; boundary={boundary}");
        let r = app.request(Method::POST, "/imports?object_type=contact&wait=true", Some(&s.token), &[], Some((ct.as_str(), body.into_bytes()))).await.expect(200);
        assert_eq!(r.body["rows_created"], 1, "{}", r.text);
        let r = app.request(Method::POST, "/imports?object_type=contact", Some(&s.token), &[], Some(("application/json", b"{}".to_vec()))).await.expect(415);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("multipart/form-data"));
    }
}
