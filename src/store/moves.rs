//! Moves of deals queued together, written as a set.
//!
//! Dragging cards is the busiest write a board has, and a move on its own costs three
//! statements in sequence (a savepoint, a read of the deal and its target column, the
//! update). A run of moves instead reads every deal and target stage it names in two
//! statements, checks and places each move in memory, in order, against the board as
//! the moves before it left it, and updates every moved deal in one statement. Each
//! move still gets its own answer, events and audit entry, exactly as it would alone.
//!
//! The run takes the moves it can place from what it read: drops at the end of a
//! column. A drop next to a named card needs that card's neighbour in the column as it
//! is at that moment, and a column whose keys have grown too long needs a rebalance;
//! such a move, and what follows it, is left to the caller to run alone.
//!
//! Keys stay unique in a column (an index checks it row by row as the run's one update
//! goes): a card never takes a key that a card moved in the same run held before it.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use sqlx::{Column as _, Row};

use super::records::{columns, decode, in_gap, invalid, DealMove, REBALANCE_AT};
use super::{derived_table, list, now_ms, Arg, Backend, Result, Scoped, Sql, StoreError, WriteTx};
use crate::domain::{rank, Changes, FieldValue, ObjectType, Record};

/// Deals per update statement: well under both engines' limits on bound parameters.
const CHUNK: usize = 128;

/// The columns of a row of the update's derived table: the deal, its version in the
/// row and after the run, and its new time, stage, pipeline and key.
const ROW_COLUMNS: [&str; 7] = ["id", "ov", "nv", "ua", "st", "pl", "rk"];

/// One move of a run, with what the persister knows of its job.
pub struct QueuedMove<'a> {
    pub id: &'a str,
    pub to: &'a DealMove,
    pub actor: &'a str,
    pub cause: Option<String>,
    pub fence: Option<(String, i64)>,
}

impl DealMove {
    /// Whether a run can place this move from what it reads: a drop at the end of a
    /// column.
    pub fn runs_in_batch(&self) -> bool {
        self.after.is_none() && self.before.is_none()
    }
}

/// A move's outcome, and the range of the transaction's events it made.
pub type Placed = (Result<Record>, Range<usize>);

/// A move decided in its run: answered without a write, or the deal before and after.
enum Step {
    Answer(Result<Record>),
    Write(Box<(Record, Record)>),
}

/// What one move comes to, decided in memory.
enum Plan {
    /// Refused, or nothing to change: answered without a write.
    Answer(Result<Record>),
    /// The deal as it will be, and the key it takes in `stage`.
    Write { after: Record, stage: String, key: String },
    /// Needs statements of its own: the caller runs it alone.
    Alone,
}

/// What the run read, kept up to date as it places moves: the deals it names and the
/// stages they go to.
struct Board {
    deals: HashMap<String, Record>,
    stages: HashMap<String, Column>,
    /// Stage and key of each moved deal as its row holds them until the run's update.
    vacated: HashSet<(String, String)>,
}

/// A stage as the run knows it.
struct Column {
    pipeline: String,
    /// Its highest cards, highest first: every card above the last one listed is
    /// listed.
    top: Vec<(String, String)>,
    /// Cards below the last one listed may exist.
    more: bool,
}

/// How many of a column's highest cards are read, and kept track of.
const TOP: usize = 8;

impl Column {
    /// The highest key among the column's cards other than `except`; `Err` when that is
    /// not known (the cards listed were all moved away during the run).
    fn last_except(&self, except: &str) -> std::result::Result<Option<String>, ()> {
        match self.top.iter().find(|(id, _)| id != except) {
            Some((_, key)) => Ok(Some(key.clone())),
            None if self.more => Err(()),
            None => Ok(None),
        }
    }

    fn remove(&mut self, id: &str) {
        self.top.retain(|(d, _)| d != id);
    }

    /// A card placed at `key`: listed if it is among the highest known.
    fn place(&mut self, id: &str, key: &str) {
        self.remove(id);
        let above_last = self.top.last().is_none_or(|(_, last)| key > last.as_str());
        if above_last || !self.more {
            let at = self.top.iter().take_while(|(_, k)| k.as_str() >= key).count();
            self.top.insert(at, (id.to_string(), key.to_string()));
        }
        if self.top.len() > TOP {
            self.top.truncate(TOP);
            self.more = true;
        }
    }
}

impl Scoped<'_> {
    /// Runs `moves` in order, as many as it can place (see the module's text). Returns
    /// one outcome per move taken, for a prefix of `moves`; the first move not taken,
    /// if any, is the caller's to run alone. An error means the run's statements
    /// failed: the caller rolls back to before the run.
    pub(crate) async fn move_run(&self, w: &mut WriteTx, moves: &[QueuedMove<'_>]) -> Result<Vec<Placed>> {
        let ty = ObjectType::Deal;
        let mut board = self.read_board(w, moves).await?;
        // Each move is decided first, against the board as the moves before it left
        // it; then the deals are updated; then each move's event and audit entry are
        // made, in order (the deal's row is locked before the topic's seq, as when a
        // move runs alone).
        let mut steps: Vec<(&QueuedMove<'_>, Step)> = Vec::with_capacity(moves.len());
        // Per deal written, its version in the row (which the update checks) and its
        // pipeline there.
        let mut stored: HashMap<String, (i64, Option<String>)> = HashMap::new();
        for m in moves {
            let (after, stage, key) = match board.plan(m) {
                Plan::Answer(r) => {
                    steps.push((m, Step::Answer(r)));
                    continue;
                }
                Plan::Alone => break,
                Plan::Write { after, stage, key } => (after, stage, key),
            };
            let before = board.deals[m.id].clone();
            stored.entry(after.id.clone()).or_insert_with(|| {
                if let (Some(s), Some(k)) = (before.text("stage_id"), before.text("rank")) {
                    board.vacated.insert((s.to_string(), k.to_string()));
                }
                (before.version, before.text("pipeline_id").map(str::to_string))
            });
            if let Some(old) = before.text("stage_id").and_then(|s| board.stages.get_mut(s)) {
                old.remove(m.id);
            }
            if let Some(column) = board.stages.get_mut(&stage) {
                column.place(m.id, &key);
            }
            board.deals.insert(after.id.clone(), after.clone());
            steps.push((m, Step::Write(Box::new((before, after)))));
        }
        let mut written: Vec<(&String, &(i64, Option<String>))> = stored.iter().collect();
        written.sort_unstable_by_key(|(id, _)| *id);
        for chunk in written.chunks(CHUNK) {
            let mut sql = Sql::new("UPDATE deals SET version = v.nv, updated_at = v.ua, stage_id = v.st, rank = v.rk");
            // Set only when it changes: SQLite rewrites the index entries of every
            // column an update sets.
            if chunk
                .iter()
                .any(|(id, (_, was))| board.deals[*id].text("pipeline_id") != was.as_deref())
            {
                sql.push(", pipeline_id = v.pl");
            }
            sql.push(" FROM ");
            let rows = chunk.iter().map(|(id, (version, _))| {
                let d = &board.deals[*id];
                let text = |name: &str| Arg::Text(d.text(name).map(str::to_string));
                vec![
                    Arg::from(*id),
                    Arg::from(*version),
                    Arg::from(d.version),
                    Arg::from(d.updated_at),
                    text("stage_id"),
                    text("pipeline_id"),
                    text("rank"),
                ]
            });
            derived_table(&mut sql, rows, &ROW_COLUMNS);
            sql.push(" WHERE deals.workspace_id = ").arg(self.ws);
            sql.push(" AND deals.id = v.id AND deals.version = v.ov");
            let done = sql.on(self.backend()).query().execute(&mut *w.tx).await?.rows_affected();
            if done != chunk.len() as u64 {
                // Every write of a board passes its one writer, so this is a bug or a
                // hand edit; the caller runs the moves one by one, which re-reads.
                return Err(StoreError::Other(anyhow::anyhow!(
                    "{} of {} moved deals changed outside the batch",
                    chunk.len() as u64 - done,
                    chunk.len()
                )));
            }
        }
        let mut placed = Vec::with_capacity(steps.len());
        for (m, step) in steps {
            let mark = w.events_len();
            match step {
                Step::Answer(answer) => placed.push((answer, mark..mark)),
                Step::Write(moved) => {
                    let (before, after) = *moved;
                    w.caused_by(m.cause.clone());
                    w.fenced_by(m.fence.clone());
                    self.after_write(w, ty, Some(&before), Some(&after), m.actor, after.updated_at)
                        .await?;
                    placed.push((Ok(after), mark..w.events_len()));
                }
            }
        }
        Ok(placed)
    }

    /// Reads every deal the moves name and every stage they go to, with each stage's
    /// highest key: two statements, sent together on SQLite.
    async fn read_board(&self, w: &mut WriteTx, moves: &[QueuedMove<'_>]) -> Result<Board> {
        let ty = ObjectType::Deal;
        let taken = || moves.iter().take_while(|m| m.to.runs_in_batch());
        let mut ids: Vec<&str> = Vec::new();
        for m in taken() {
            ids.push(m.id);
        }
        // Stages named by the moves, and deals that stay in their own.
        let mut named: Vec<&str> = taken().filter_map(|m| m.to.stage.as_deref()).collect();
        let mut own: Vec<&str> = taken().filter(|m| m.to.stage.is_none()).map(|m| m.id).collect();
        for list in [&mut ids, &mut named, &mut own] {
            list.sort_unstable();
            list.dedup();
        }
        let mut sql = Sql::new(format!("SELECT {} FROM deals WHERE workspace_id = ", columns(ty)));
        sql.arg(self.ws).push(" AND id IN (");
        list(&mut sql, &ids);
        // Per stage, the ids and keys of its highest cards.
        let top = |column: &str, offset: usize| {
            format!(
                "(SELECT r.{column} FROM deals r WHERE r.workspace_id = s.workspace_id AND r.stage_id = s.id \
                 ORDER BY {} DESC, r.id DESC LIMIT 1 OFFSET {offset})",
                self.bytewise("r.rank")
            )
        };
        let tops: Vec<String> = (0..TOP).flat_map(|n| [top("id", n), top("rank", n)]).collect();
        let mut stages_sql = Sql::new(format!(
            "SELECT s.id, s.pipeline_id AS pipeline_id, {} FROM stages s WHERE s.workspace_id = ",
            tops.join(", ")
        ));
        stages_sql.arg(self.ws).push(" AND (");
        if !named.is_empty() {
            stages_sql.push("s.id IN (");
            list(&mut stages_sql, &named);
        }
        if !own.is_empty() {
            stages_sql.push(if named.is_empty() { "" } else { " OR " });
            stages_sql
                .push("s.id IN (SELECT d.stage_id FROM deals d WHERE d.workspace_id = ")
                .arg(self.ws);
            stages_sql.push(" AND d.id IN (");
            list(&mut stages_sql, &own);
            stages_sql.push(")");
        }
        stages_sql.push(")");
        let rows = match self.backend() {
            // One round trip to the worker thread for both.
            Backend::Sqlite => {
                sql.push("; ").append(stages_sql);
                sql.on(Backend::Sqlite).query().fetch_all(&mut *w.tx).await?
            }
            // PostgreSQL runs one statement per execution.
            Backend::Postgres => {
                let mut rows = sql.query().fetch_all(&mut *w.tx).await?;
                rows.extend(stages_sql.query().fetch_all(&mut *w.tx).await?);
                rows
            }
        };
        let mut board = Board {
            deals: HashMap::with_capacity(ids.len()),
            stages: HashMap::new(),
            vacated: HashSet::new(),
        };
        for row in rows {
            // A stage's row names its second column; a deal's second is its version.
            // (Counting columns would break the day a deal has as many as a stage.)
            if row.columns().get(1).is_some_and(|c| c.name() == "pipeline_id") {
                let mut top = Vec::with_capacity(TOP);
                for n in 0..TOP {
                    let id: Option<String> = row.try_get(2 + 2 * n)?;
                    let key: Option<String> = row.try_get(3 + 2 * n)?;
                    if let (Some(id), Some(key)) = (id, key) {
                        top.push((id, key));
                    }
                }
                let column = Column {
                    pipeline: row.try_get(1)?,
                    more: top.len() == TOP,
                    top,
                };
                board.stages.insert(row.try_get::<String, _>(0)?, column);
            } else {
                let r = decode(ty, &row)?;
                board.deals.insert(r.id.clone(), r);
            }
        }
        Ok(board)
    }
}

impl Board {
    /// Decides one move against the board as the run has left it, with the checks and
    /// errors of a move run alone, in the same order.
    fn plan(&self, m: &QueuedMove<'_>) -> Plan {
        if !m.to.runs_in_batch() {
            return Plan::Alone;
        }
        let ty = ObjectType::Deal;
        let Some(deal) = self.deals.get(m.id) else {
            return Plan::Answer(Err(StoreError::NotFound));
        };
        if m.to.within.as_deref().is_some_and(|p| deal.text("pipeline_id") != Some(p)) {
            return Plan::Answer(Err(StoreError::NotFound));
        }
        let stage =
            m.to.stage
                .clone()
                .unwrap_or_else(|| deal.text("stage_id").unwrap_or_default().to_string());
        let Some(column) = self.stages.get(&stage) else {
            return Plan::Answer(Err(invalid("stage_id", "no such stage")));
        };
        let pipeline = &column.pipeline;
        // The end of the column: after the highest key of its other cards.
        let Ok(last) = column.last_except(m.id) else {
            return Plan::Alone;
        };
        let key = match in_gap(deal, &stage, last.as_deref(), None) {
            Some(own) => own.to_string(),
            None => {
                let Some(mut key) = rank::between(last.as_deref(), None) else {
                    return Plan::Answer(Err(StoreError::Other(anyhow::anyhow!("column keys out of order"))));
                };
                // Still held in the store by a card this run moves away: the next one.
                while self.vacated.contains(&(stage.clone(), key.clone())) {
                    key = rank::between(Some(&key), None).unwrap_or_default();
                }
                key
            }
        };
        if key.len() > REBALANCE_AT {
            return Plan::Alone;
        }
        if let Some(v) = m.to.expected {
            if v != deal.version {
                return Plan::Answer(Err(StoreError::Conflict {
                    expected: v,
                    current: Box::new(deal.clone()),
                }));
            }
        }
        let mut changes = Changes::default();
        changes.set(ty, "stage_id", FieldValue::Text(stage.clone()));
        changes.set(ty, "pipeline_id", FieldValue::Text(pipeline.clone()));
        changes.set(ty, "rank", FieldValue::Text(key.clone()));
        let (values, custom) = deal.merged(&changes);
        if values == deal.values && custom == deal.custom {
            return Plan::Answer(Ok(deal.clone()));
        }
        if let Err(e) = ty.check(&values) {
            return Plan::Answer(Err(StoreError::Invalid(e)));
        }
        let after = Record {
            id: deal.id.clone(),
            version: deal.version + 1,
            created_at: deal.created_at,
            // Strictly later than the previous write, so `updated_since` never misses it.
            updated_at: now_ms().max(deal.updated_at + 1),
            values,
            custom,
        };
        Plan::Write { after, stage, key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::Persister;
    use crate::store::testing::fresh_store;
    use crate::store::Store;

    async fn create(store: &Store, ws: &str, ty: ObjectType, fields: &[(&str, &str)]) -> Record {
        let input = fields.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        let changes = ty.parse_input(&input, true, &[]).unwrap();
        let mut w = store.write().await.unwrap();
        let r = store.scoped(ws).create_in(&mut w, ty, changes, "user:u").await.unwrap();
        w.commit().await.unwrap();
        r
    }

    fn to(stage: &str, after: Option<&str>, before: Option<&str>, expected: Option<i64>) -> DealMove {
        DealMove {
            stage: Some(stage.to_string()),
            after: after.map(str::to_string),
            before: before.map(str::to_string),
            expected,
            within: None,
        }
    }

    /// A pipeline with two stages, A and B.
    async fn board(store: &Store, ws: &str) -> (String, String, String) {
        let pipeline = create(store, ws, ObjectType::Pipeline, &[("name", "Sales")]).await.id;
        let mut stages = Vec::new();
        for name in ["A", "B"] {
            stages.push(
                create(store, ws, ObjectType::Stage, &[("name", name), ("pipeline_id", &pipeline)])
                    .await
                    .id,
            );
        }
        let b = stages.pop().unwrap_or_default();
        (pipeline, stages.pop().unwrap_or_default(), b)
    }

    /// Queues the moves before the persister runs, so that they reach it as one
    /// batch, each caused by `m<its index>`, and waits for their answers.
    async fn one_batch(store: &Store, ws: &str, moves: &[(&str, DealMove)]) -> Vec<Result<(serde_json::Value, Vec<crate::domain::Event>)>> {
        let persister = Persister::start(store.clone());
        let pending: Vec<_> = moves
            .iter()
            .enumerate()
            .map(|(n, (id, m))| {
                persister
                    .submit_move(
                        Some(format!("m{n}")),
                        None,
                        ws.to_string(),
                        "user:u".into(),
                        id.to_string(),
                        m.clone(),
                    )
                    .unwrap()
            })
            .collect();
        let mut answers = Vec::new();
        for p in pending {
            answers.push(p.outcome().await);
        }
        answers
    }

    #[tokio::test]
    async fn moves_queued_together_are_placed_in_order_each_with_its_own_answer_event_and_audit_entry() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (store, dir, ws) = fresh_store("moves").await;
                let (pipeline, a, b) = board(&store, &ws).await;
                let mut deals = Vec::new();
                for title in ["d1", "d2", "d3"] {
                    let d = create(
                        &store,
                        &ws,
                        ObjectType::Deal,
                        &[("title", title), ("pipeline_id", &pipeline), ("stage_id", &a)],
                    )
                    .await;
                    deals.push(d.id);
                }
                let (d1, d2, d3) = (deals[0].as_str(), deals[1].as_str(), deals[2].as_str());
                let audits_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();

                let moves = [
                    (d1, to(&b, None, None, None)),
                    (d2, to(&b, None, None, Some(1))),
                    (d3, to(&b, Some(d1), Some(d2), None)),
                    // Based on d1's first version, which the first move replaced.
                    (d1, to(&a, None, None, Some(1))),
                    ("no-such-deal", to(&a, None, None, None)),
                    (
                        d2,
                        DealMove {
                            within: Some("another-pipeline".into()),
                            ..to(&a, None, None, None)
                        },
                    ),
                    (d1, to(&a, None, None, Some(2))),
                    // Next to one card only: run on its own, after the others.
                    (d3, to(&b, Some(d2), None, None)),
                    (d2, to(&b, Some(d2), Some(d3), None)),
                ];
                let answers = one_batch(&store, &ws, &moves).await;

                let ok = |n: usize| {
                    answers[n]
                        .as_ref()
                        .map(|(deal, _)| deal.clone())
                        .unwrap_or_else(|e| panic!("move {n}: {e}"))
                };
                assert_eq!(ok(0)["stage_id"], b.as_str());
                assert_eq!(ok(0)["version"], 2);
                assert!(
                    ok(1)["rank"].as_str() > ok(0)["rank"].as_str(),
                    "the later drop at the end lands after"
                );
                assert!(ok(2)["rank"].as_str() > ok(0)["rank"].as_str() && ok(2)["rank"].as_str() < ok(1)["rank"].as_str());
                assert!(matches!(&answers[3], Err(StoreError::Conflict { expected: 1, current }) if current.version == 2));
                assert!(matches!(answers[4], Err(StoreError::NotFound)));
                assert!(
                    matches!(answers[5], Err(StoreError::NotFound)),
                    "a deal off the given board is not found"
                );
                assert_eq!((ok(6)["stage_id"].as_str(), ok(6)["version"].as_i64()), (Some(a.as_str()), Some(3)));
                assert!(ok(7)["rank"].as_str() > ok(1)["rank"].as_str());
                assert!(
                    matches!(&answers[8], Err(StoreError::Invalid(_))),
                    "a card cannot go next to itself"
                );

                // Each accepted move made one event, in the order queued, under its cause.
                let events = store.events_after(&format!("board:{pipeline}"), 0, 100).await.unwrap();
                let moved: Vec<_> = events
                    .iter()
                    .filter(|e| e.kind == "deal.moved")
                    .map(|e| e.cause.clone().unwrap_or_default())
                    .collect();
                assert_eq!(moved, ["m0", "m1", "m2", "m6", "m7"]);
                assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1), "seqs have no gap");
                for n in [0, 1, 2, 6, 7] {
                    let (_, evs) = answers[n].as_ref().unwrap();
                    assert_eq!(evs.len(), 1);
                    assert_eq!(evs[0].data["record"], ok(n));
                }
                let audits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
                assert_eq!(audits - audits_before, 5);

                // What is stored is what was answered last for each deal.
                let scoped = store.scoped(&ws);
                for (id, n) in [(d1, 6), (d2, 1), (d3, 7)] {
                    let stored = scoped.get(ObjectType::Deal, id).await.unwrap().to_json(ObjectType::Deal);
                    assert_eq!(stored, ok(n));
                }
                store.close().await;
                let _ = std::fs::remove_dir_all(dir);
            })
            .await;
    }

    #[tokio::test]
    async fn a_run_never_gives_a_card_the_key_a_card_it_moved_away_still_holds_in_the_store() {
        let (store, dir, ws) = fresh_store("vacated").await;
        let (pipeline, a, b) = board(&store, &ws).await;
        let deal = |title: &'static str, stage: String| {
            let (store, ws, pipeline) = (store.clone(), ws.clone(), pipeline.clone());
            async move {
                let fields = [("title", title), ("pipeline_id", pipeline.as_str()), ("stage_id", stage.as_str())];
                create(&store, &ws, ObjectType::Deal, &fields).await
            }
        };
        deal("first", a.clone()).await;
        let last = deal("last", a.clone()).await;
        let incoming = deal("incoming", b.clone()).await;
        // The last card of A leaves; then a card comes in at the end of A, where the
        // key after A's other card is the one the leaving card's row still holds.
        let (out, back) = (to(&b, None, None, None), to(&a, None, None, None));
        let moves = [
            QueuedMove {
                id: &last.id,
                to: &out,
                actor: "user:u",
                cause: None,
                fence: None,
            },
            QueuedMove {
                id: &incoming.id,
                to: &back,
                actor: "user:u",
                cause: None,
                fence: None,
            },
        ];
        let mut w = store.write().await.unwrap();
        let placed = store
            .scoped(&ws)
            .move_run(&mut w, &moves)
            .await
            .expect("the run's one update succeeds");
        w.commit().await.unwrap();

        assert_eq!(placed.len(), 2);
        let came = placed[1].0.as_ref().unwrap();
        assert_eq!(came.text("stage_id"), Some(a.as_str()));
        assert!(came.text("rank") > last.text("rank"), "after the key the leaving card held");
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_drop_at_the_end_of_a_column_skips_the_card_itself_as_a_move_alone_does() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (store, dir, ws) = fresh_store("ends").await;
                let (pipeline, a, b) = board(&store, &ws).await;
                // More cards than a run reads of a column.
                let mut c = Vec::new();
                for n in 0..TOP + 3 {
                    let title = format!("c{n}");
                    let fields = [("title", title.as_str()), ("pipeline_id", &pipeline), ("stage_id", &a)];
                    c.push(create(&store, &ws, ObjectType::Deal, &fields).await.id);
                }
                let last = c.len() - 1;
                let mut moves = vec![
                    // Already last: nothing changes, as alone.
                    (c[last].clone(), to(&a, None, None, Some(1))),
                    (c[0].clone(), to(&a, None, None, Some(1))),
                    (c[last].clone(), to(&a, None, None, Some(1))),
                    (c[last].clone(), to(&a, None, None, Some(2))),
                ];
                // Every card the run read of A leaves it; the next one down was not
                // read, so the last drop runs alone.
                for id in [&c[last], &c[0]].into_iter().chain(&c[3..last]) {
                    moves.push((id.clone(), to(&b, None, None, None)));
                }
                moves.push((c[1].clone(), to(&a, None, None, None)));
                let moves: Vec<(&str, DealMove)> = moves.iter().map(|(id, m)| (id.as_str(), m.clone())).collect();
                let answers = one_batch(&store, &ws, &moves).await;
                let ok = |n: usize| {
                    answers[n]
                        .as_ref()
                        .map(|(deal, events)| (deal.clone(), events.len()))
                        .unwrap_or_else(|e| panic!("move {n}: {e}"))
                };
                assert_eq!(
                    (ok(0).0["version"].as_i64(), ok(0).1),
                    (Some(1), 0),
                    "a card already last stays as it is"
                );
                assert_eq!(ok(1).0["version"], 2);
                assert!(ok(2).0["rank"].as_str() > ok(1).0["rank"].as_str(), "the last card goes after c0");
                assert_eq!(ok(2).0["version"], 2);
                assert_eq!((ok(3).0["version"].as_i64(), ok(3).1), (Some(2), 0));
                let scoped = store.scoped(&ws);
                let c2_rank = scoped.get(ObjectType::Deal, &c[2]).await.unwrap().text("rank").map(str::to_string);
                let final_drop = moves.len() - 1;
                assert!(
                    ok(final_drop).0["rank"].as_str() > c2_rank.as_deref(),
                    "c1 lands after c2, now A's highest"
                );
                for (id, n) in [(&c[1], final_drop), (&c[last], 4), (&c[0], 5)] {
                    assert_eq!(scoped.get(ObjectType::Deal, id).await.unwrap().to_json(ObjectType::Deal), ok(n).0);
                }
                store.close().await;
                let _ = std::fs::remove_dir_all(dir);
            })
            .await;
    }
}
