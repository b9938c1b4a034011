//! Convergence: simulated clients issuing random concurrent moves and edits through
//! the WebSocket all end with one identical board, equal to what the store holds.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One client's view of the board, built only from the frames it received.
#[derive(Default)]
struct View {
    seq: i64,
    deals: BTreeMap<String, Value>,
}

impl View {
    fn apply(&mut self, f: &Value) {
        match f["type"].as_str() {
            Some("snapshot") => {
                self.seq = f["seq"].as_i64().unwrap();
                self.deals = f["state"]["deals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| (d["id"].as_str().unwrap().to_string(), d.clone()))
                    .collect();
            }
            Some("event") => {
                let seq = f["seq"].as_i64().unwrap();
                assert_eq!(seq, self.seq + 1, "events arrive without gaps: {f}");
                self.seq = seq;
                if f["kind"] == "stage.rebalanced" {
                    for (deal, rank) in f["data"]["ranks"].as_object().unwrap() {
                        self.deals.get_mut(deal).unwrap()["rank"] = rank.clone();
                    }
                } else if f["data"]["object_type"] == "deal" {
                    let id = f["data"]["id"].as_str().unwrap().to_string();
                    if f["kind"].as_str().unwrap().ends_with(".deleted") {
                        self.deals.remove(&id);
                    } else {
                        self.deals.insert(id, f["data"]["record"].clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// Deal ids of a stage in board order.
    fn column(&self, stage: &str) -> Vec<String> {
        let mut ds: Vec<&Value> = self.deals.values().filter(|d| d["stage_id"] == stage).collect();
        ds.sort_by(|a, b| a["rank"].as_str().cmp(&b["rank"].as_str()));
        ds.iter().map(|d| d["id"].as_str().unwrap().to_string()).collect()
    }
}

/// Receives one frame and applies it; returns it.
async fn pump(ws: &mut Ws, view: &mut View) -> Value {
    let f = ws.recv().await;
    view.apply(&f);
    f
}

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
