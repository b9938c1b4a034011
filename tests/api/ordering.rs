//! Card order in a column: every drop gets a key of its own, and lands directly after
//! its anchor (`after`), or directly before `before` when no anchor is named, as the
//! column is when the drop commits, however many drops race into the same gap.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

/// Where an acknowledged drop must be, right after it commits.
#[derive(Debug, Clone)]
enum Lands {
    After(String),
    Before(String),
    Last,
}

/// The deals of a pipeline as the store lists them.
async fn stored_board(app: &TestApp, token: &str, pipeline: &str) -> BTreeMap<String, Value> {
    let r = app
        .get(&format!("/deals?pipeline_id={pipeline}&limit=200"), token)
        .await
        .expect(200);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

fn assert_keys_unique(board: &BTreeMap<String, Value>) {
    let mut seen = HashSet::new();
    for d in board.values() {
        let key = (d["stage_id"].as_str().unwrap(), d["rank"].as_str().unwrap());
        assert!(seen.insert(key), "two cards share {key:?}");
    }
}

on_both_backends! {
    async fn two_drops_into_one_gap_get_their_own_keys_the_later_one_next_to_the_anchor(app) {
        let s = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&s.token).await;
        let v = app.deal(&s.token, &pipeline, "V").await;
        let w = app.deal(&s.token, &pipeline, "W").await;
        let x = app.deal(&s.token, &pipeline, "X").await;
        let y = app.deal(&s.token, &pipeline, "Y").await;
        for d in [&x, &y] {
            app.post(&format!("/deals/{d}/move"), &s.token, json!({"stage_id": stages[1]})).await.expect(200);
        }
        // Both users saw V and W next to each other and dropped their card between them.
        for d in [&x, &y] {
            app.post(&format!("/deals/{d}/move"), &s.token, json!({"stage_id": stages[0], "after": v, "before": w}))
                .await
                .expect(200);
        }
        let mut view = View {
            deals: stored_board(&app, &s.token, &pipeline).await,
            ..View::default()
        };
        assert_keys_unique(&view.deals);
        assert_eq!(view.column(&stages[0]), [&v, &y, &x, &w].map(String::clone));

        // The cards that were dropped can be told apart: one goes between them.
        app.post(&format!("/deals/{w}/move"), &s.token, json!({"after": y, "before": x})).await.expect(200);
        view.deals = stored_board(&app, &s.token, &pipeline).await;
        assert_eq!(view.column(&stages[0]), [&v, &y, &w, &x].map(String::clone));
        // Named alone, `before` puts the card right in front of it.
        app.post(&format!("/deals/{v}/move"), &s.token, json!({"before": x})).await.expect(200);
        view.deals = stored_board(&app, &s.token, &pipeline).await;
        assert_eq!(view.column(&stages[0]), [&y, &w, &v, &x].map(String::clone));
    }

    async fn many_clients_dropping_into_the_same_few_gaps_keep_every_key_unique_and_every_drop_next_to_its_anchor(app) {
        let owner = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&owner.token).await;
        let topic = format!("board:{pipeline}");
        // Two anchors that never move, with a card after each: the gaps everyone aims at.
        let mut anchors = Vec::new();
        for n in 0..2 {
            anchors.push(app.deal(&owner.token, &pipeline, &format!("anchor {n}")).await);
            app.deal(&owner.token, &pipeline, &format!("neighbour {n}")).await;
        }
        let mut observer = app.ws(&owner.token).await;
        let mut history = View::default();
        for f in observer.subscribe(&topic, None).await {
            history.apply(&f);
        }

        // Each client drops its own three cards; WebSocket clients and REST clients at once.
        let (ws_clients, rest_clients, drops) = (6, 2, 25);
        let mut clients = Vec::new();
        for c in 0..ws_clients + rest_clients {
            let member = app.member(&owner, "member").await;
            let mut cards = Vec::new();
            for k in 0..3 {
                cards.push(app.deal(&owner.token, &pipeline, &format!("c{c} card {k}")).await);
            }
            let mut ws = app.ws(&member.token).await;
            let mut view = View::default();
            for f in ws.subscribe(&topic, None).await {
                view.apply(&f);
            }
            clients.push((c, member, cards, ws, view));
        }
        let runs = clients.into_iter().map(|(c, member, cards, mut ws, mut view)| {
            let (app, topic, stages, anchors) = (&app, topic.clone(), stages.clone(), anchors.clone());
            async move {
                let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (c as u64 + 1));
                let mut acked: Vec<(String, Lands)> = Vec::new();
                for n in 0..drops {
                    let card = cards[rng.below(cards.len())].clone();
                    let anchor = anchors[rng.below(anchors.len())].clone();
                    let (args, lands) = match rng.below(6) {
                        // After the anchor, naming what this client sees after it (often stale).
                        0..=2 => {
                            let column: Vec<String> = view.column(&stages[0]).into_iter().filter(|d| *d != card).collect();
                            let mut a = json!({"id": card, "stage_id": stages[0], "after": anchor});
                            if let Some(next) = column.iter().position(|d| *d == anchor).and_then(|i| column.get(i + 1)) {
                                a["before"] = json!(next);
                            }
                            (a, Lands::After(anchor))
                        }
                        3 => (json!({"id": card, "stage_id": stages[0], "before": anchor}), Lands::Before(anchor)),
                        // The end of a column: drops queued together run as one batch.
                        _ => (json!({"id": card, "stage_id": stages[1 + rng.below(2)]}), Lands::Last),
                    };
                    let id = format!("c{c}-{n}");
                    if c < ws_clients {
                        ws.send(json!({"type": "command", "id": id, "topic": topic, "op": "deal.move", "args": args})).await;
                        loop {
                            let f = pump(&mut ws, &mut view).await;
                            if f["id"] == id.as_str() {
                                assert_eq!(f["type"], "ack", "{f}");
                                if !f["noop"].as_bool().unwrap() {
                                    acked.push((id, lands));
                                }
                                break;
                            }
                        }
                    } else {
                        let path = format!("/deals/{card}/move");
                        let mut body = args.clone();
                        body.as_object_mut().unwrap().remove("id");
                        let r = app.post_with(&path, &member.token, &[("x-mutation-id", &id)], body).await.expect(200);
                        assert!(r.body["rank"].is_string());
                        acked.push((id, lands));
                    }
                }
                (c, ws, view, acked)
            }
        });
        let mut done = futures_util::future::join_all(runs).await;

        // Replays the board's history from before the first drop: right after each
        // drop's event, the card is where its drop put it.
        let expected: HashMap<String, Lands> = done.iter().flat_map(|d| d.3.iter().cloned()).collect();
        let mut checked = 0;
        let stored = stored_board(&app, &owner.token, &pipeline).await;
        while history.deals != stored {
            let f = pump(&mut observer, &mut history).await;
            let Some(lands) = f["cause"].as_str().and_then(|c| expected.get(c)) else { continue };
            if f["kind"] != "deal.moved" {
                continue;
            }
            let card = f["data"]["id"].as_str().unwrap();
            let stage = f["data"]["record"]["stage_id"].as_str().unwrap();
            let column = history.column(stage);
            let at = column.iter().position(|d| d == card).unwrap();
            match lands {
                Lands::After(anchor) => assert_eq!(at.checked_sub(1).map(|i| &column[i]), Some(anchor), "{f}"),
                Lands::Before(anchor) => assert_eq!(column.get(at + 1), Some(anchor), "{f}"),
                Lands::Last => assert_eq!(at + 1, column.len(), "{f}"),
            }
            checked += 1;
        }
        // REST answers do not say whether a drop changed anything; those that did not
        // made no event.
        assert!(checked > expected.len() / 2, "checked {checked} of {} drops", expected.len());

        // One board, with one key per card: every client's, the stream's and the store's.
        assert_keys_unique(&stored);
        assert_eq!(history.deals, stored);
        for (c, ws, view, _) in done.iter_mut() {
            while view.seq < history.seq {
                pump(ws, view).await;
            }
            assert_eq!(view.deals, stored, "client {c} diverged");
        }
    }
}
