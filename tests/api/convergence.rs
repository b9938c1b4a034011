//! Convergence: simulated clients issuing random concurrent moves and edits through
//! the WebSocket all end with one identical board, equal to what the store holds.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends! {
    async fn random_concurrent_moves_and_edits_converge_to_the_stored_board(app) {
        let owner = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&owner.token).await;
        for i in 0..10 {
            app.post("/deals", &owner.token, json!({"title": format!("deal {i}"), "amount": 100 * i, "currency": "EUR", "pipeline_id": pipeline})).await.expect(201);
        }
        let topic = format!("board:{pipeline}");
        let mut clients = Vec::new();
        for c in 0..5 {
            let member = app.member(&owner, "member").await;
            let mut ws = app.ws(&member.token).await;
            let mut view = View::default();
            for f in ws.subscribe(&topic, None).await {
                view.apply(&f);
            }
            clients.push((c, ws, view));
        }

        let runs = clients.into_iter().map(|(c, mut ws, mut view)| {
            let (topic, stages) = (topic.clone(), stages.clone());
            async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
                let (mut acked, mut refused) = (0, 0);
                for n in 0..30 {
                    let ids: Vec<String> = view.deals.keys().cloned().collect();
                    let deal = ids[rng.below(ids.len())].clone();
                    let id = format!("c{c}-{n}");
                    let args = if rng.below(3) == 0 {
                        // An edit, sometimes based on a version that may be stale.
                        let mut a = json!({"id": deal, "changes": {"title": format!("edited by {c} #{n}"), "amount": rng.below(10_000)}});
                        if rng.below(2) == 0 {
                            a["version"] = view.deals[&deal]["version"].clone();
                        }
                        (a, "deal.update")
                    } else {
                        let stage = &stages[rng.below(stages.len())];
                        let column: Vec<String> = view.column(stage).into_iter().filter(|d| *d != deal).collect();
                        let at = rng.below(column.len() + 1);
                        let mut a = json!({"id": deal, "stage_id": stage});
                        if at > 0 {
                            a["after"] = json!(column[at - 1]);
                        }
                        if at < column.len() && rng.below(2) == 0 {
                            a["before"] = json!(column[at]);
                        }
                        (a, "deal.move")
                    };
                    ws.send(json!({"type": "command", "id": id, "topic": topic, "op": args.1, "args": args.0})).await;
                    loop {
                        let f = pump(&mut ws, &mut view).await;
                        if f["id"] == id.as_str() {
                            match f["type"].as_str() {
                                Some("ack") => acked += 1,
                                Some("nack") => {
                                    // Concurrent changes make some commands stale; those are refused, never half-applied.
                                    assert!(matches!(f["code"].as_str(), Some("version_conflict" | "validation_failed")), "{f}");
                                    refused += 1;
                                }
                                _ => panic!("unexpected {f}"),
                            }
                            break;
                        }
                    }
                }
                (c, ws, view, acked, refused)
            }
        });
        let mut done = futures_util::future::join_all(runs).await;
        let acked: i32 = done.iter().map(|d| d.3).sum();
        assert!(acked > 100, "most commands apply: {acked} acked");

        // Everyone catches up to the topic's last seq.
        let mut late = app.ws(&owner.token).await;
        let mut reference = View::default();
        for f in late.subscribe(&topic, None).await {
            reference.apply(&f);
        }
        for (_, ws, view, _, _) in done.iter_mut() {
            while view.seq < reference.seq {
                pump(ws, view).await;
            }
            assert_eq!(view.seq, reference.seq);
        }
        // One board: every client's, the snapshot's and the store's.
        let stored = app.get(&format!("/deals?pipeline_id={pipeline}&limit=200"), &owner.token).await.expect(200);
        let stored: BTreeMap<String, Value> = stored.body["data"].as_array().unwrap().iter().map(|d| (d["id"].as_str().unwrap().to_string(), d.clone())).collect();
        assert_eq!(reference.deals, stored);
        for (c, _, view, _, _) in &done {
            assert_eq!(view.deals, stored, "client {c} diverged");
            for s in &stages {
                assert_eq!(view.column(s), reference.column(s));
            }
        }
    }
}
