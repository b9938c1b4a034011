//! Durability: a server killed with SIGKILL under concurrent writes loses no
//! acknowledged change, and its event log has every one exactly once, in seq order.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::*;

async fn post(client: &awc::Client, url: &str, token: &str, body: Value) -> Option<(u16, Value)> {
    let mut res = client.post(url).bearer_auth(token).send_json(&body).await.ok()?;
    let status = res.status().as_u16();
    let body = res.json::<Value>().limit(1 << 20).await.ok()?;
    Some((status, body))
}

async fn sigkill_under_load_loses_no_acknowledged_write(backend: Backend) {
    // The test app only provides a fresh store; the servers are separate processes.
    let app = TestApp::spawn(backend).await;
    let server = Server::start(&app.settings, &[]);
    let client = awc::Client::builder().timeout(std::time::Duration::from_secs(30)).finish();
    let base = format!("{}/api/v1", server.address);
    let (_, s) = post(
        &client,
        &format!("{base}/auth/signup"),
        "",
        json!({"workspace_name": "Crash", "name": "C", "email": "c@crash.test", "password": "correct horse battery"}),
    )
    .await
    .unwrap();
    let token = s["access_token"].as_str().unwrap().to_string();
    let (_, p) = post(
        &client,
        &format!("{base}/pipelines"),
        &token,
        json!({"name": "P", "stages": [{"name": "A"}, {"name": "B"}]}),
    )
    .await
    .unwrap();
    let pipeline = p["id"].as_str().unwrap().to_string();
    let stages: Vec<String> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();

    // Eight writers create and move deals until the server dies under them.
    let acked: Rc<RefCell<Vec<(String, String)>>> = Rc::default();
    let kill_after = 300;
    let server = Rc::new(RefCell::new(Some(server)));
    let writers = (0..8).map(|w| {
        let (client, base, token, pipeline, stages, acked, server) = (
            client.clone(),
            base.clone(),
            token.clone(),
            pipeline.clone(),
            stages.clone(),
            acked.clone(),
            server.clone(),
        );
        async move {
            for i in 0.. {
                let title = format!("w{w}-{i}");
                let Some((201, d)) = post(
                    &client,
                    &format!("{base}/deals"),
                    &token,
                    json!({"title": title, "pipeline_id": pipeline}),
                )
                .await
                else {
                    break;
                };
                let id = d["id"].as_str().unwrap().to_string();
                acked.borrow_mut().push((id.clone(), "deal.created".into()));
                let Some((200, _)) = post(&client, &format!("{base}/deals/{id}/move"), &token, json!({"stage_id": stages[1]})).await else {
                    break;
                };
                acked.borrow_mut().push((id, "deal.moved".into()));
                if acked.borrow().len() >= kill_after {
                    if let Some(s) = server.borrow_mut().take() {
                        s.kill9();
                    }
                }
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let acked = acked.borrow().clone();
    assert!(acked.len() >= kill_after, "only {} writes were acknowledged", acked.len());

    // Restarted, the server has every acknowledged write.
    let restarted = Server::start(&app.settings, &[]);
    let base = format!("{}/api/v1", restarted.address);
    let mut verified = 0;
    for (id, kind) in acked.iter().filter(|(_, k)| k == "deal.created") {
        let mut res = client.get(format!("{base}/deals/{id}")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "acknowledged {kind} of {id} is missing");
        let deal: Value = res.json().await.unwrap();
        verified += 1;
        if acked.iter().any(|(i, k)| i == id && k == "deal.moved") {
            assert_eq!(deal["stage_id"], stages[1].as_str(), "acknowledged move of {id} is missing");
            verified += 1;
        }
    }

    // The event log holds each acknowledged write exactly once, seqs without a gap.
    let url = match &app.settings.database_url {
        Some(u) => u.expose().to_string(),
        None => format!("sqlite://{}", app.settings.data_dir.join("shoal.db").display()),
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let rows = sqlx::query("SELECT seq, type, payload FROM event_log WHERE topic = $1 ORDER BY seq")
        .bind(format!("board:{pipeline}"))
        .fetch_all(&pool)
        .await
        .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(0)).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "seqs are contiguous from 1");
    let mut logged: HashMap<(String, String), usize> = HashMap::new();
    for r in &rows {
        let payload: Value = serde_json::from_str(&r.get::<String, _>(2)).unwrap();
        let id = payload["id"].as_str().unwrap_or_default().to_string();
        *logged.entry((id, r.get::<String, _>(1))).or_default() += 1;
    }
    for (id, kind) in &acked {
        assert_eq!(logged.get(&(id.clone(), kind.clone())), Some(&1), "{kind} of {id} is logged once");
    }
    let distinct: BTreeSet<&(String, String)> = acked.iter().collect();
    assert_eq!(distinct.len(), acked.len());
    eprintln!(
        "crash test ({backend:?}): {} writes acknowledged before SIGKILL, {verified} found after restart, each logged once; {} events in the log, seqs 1..={}",
        acked.len(),
        rows.len(),
        seqs.len()
    );
    pool.close().await;
    drop(restarted);
}

#[actix_web::test]
async fn sigkill_under_load_loses_no_acknowledged_write_on_sqlite() {
    sigkill_under_load_loses_no_acknowledged_write(Backend::Sqlite).await;
}

#[actix_web::test]
async fn sigkill_under_load_loses_no_acknowledged_write_on_postgres() {
    sigkill_under_load_loses_no_acknowledged_write(Backend::Postgres).await;
}
