//! The event log: appending events inside a write transaction, and reading them back
//! for subscribers that resume.

use std::sync::Arc;

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{args, insert, Arg, Result, Sql, Store, WriteTx};
use crate::domain::Event;

/// The kinds of a member's own events that reach them by e-mail when they ask for it.
pub const NOTIFIED_BY_EMAIL: [&str; 2] = ["assigned", "mentioned"];

fn event(r: &AnyRow) -> Result<Event> {
    let payload: String = r.try_get(3)?;
    Ok(Event {
        topic: r.try_get(0)?,
        seq: r.try_get(1)?,
        kind: r.try_get(2)?,
        data: Arc::new(serde_json::from_str(&payload).unwrap_or(Value::Null)),
        actor: r.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
        cause: r.try_get(5)?,
        ts: r.try_get(6)?,
    })
}

/// What a write leaves besides its rows: its audit entry's values and its events.
/// Made apart from the transaction (see `Scoped::change_notes`), so that a run of
/// writes can make them while the store is busy with the run's rows.
pub(crate) struct ChangeNotes {
    pub audit: Vec<Arg>,
    pub events: Vec<EventNote>,
}

/// An event yet to be given its seq, its data already serialised for the log.
pub(crate) struct EventNote {
    pub topic: String,
    pub kind: String,
    pub data: Value,
    pub payload: String,
}

impl EventNote {
    pub fn new(topic: String, kind: String, data: Value) -> EventNote {
        let payload = data.to_string();
        EventNote {
            topic,
            kind,
            data,
            payload,
        }
    }
}

impl WriteTx {
    /// Adds a write's audit entry and appends its events, in order.
    pub(crate) async fn add_notes(&mut self, workspace_id: &str, notes: ChangeNotes, actor: &str, now: i64) -> Result<()> {
        self.audits.push(notes.audit);
        for e in notes.events {
            self.append_noted(workspace_id, e, actor, now).await?;
        }
        Ok(())
    }

    /// Appends an event to `topic` with the topic's next seq, which it returns. The
    /// event log's row is written at commit.
    pub(crate) async fn append_event(
        &mut self,
        workspace_id: &str,
        topic: &str,
        kind: &str,
        data: Value,
        actor: &str,
        now: i64,
    ) -> Result<i64> {
        let note = EventNote::new(topic.to_string(), kind.to_string(), data);
        self.append_noted(workspace_id, note, actor, now).await
    }

    async fn append_noted(&mut self, workspace_id: &str, note: EventNote, actor: &str, now: i64) -> Result<i64> {
        let EventNote {
            topic,
            kind,
            data,
            payload,
        } = note;
        let topic = topic.as_str();
        if let Some((fenced, _)) = &self.fence {
            // A fenced write is its board owner's; another board has its own owner, which
            // alone may write there.
            if fenced != topic && (topic.starts_with("board:") || topic.starts_with("inbox:")) {
                return Err(super::StoreError::Invalid(crate::domain::FieldErrors::single(
                    "pipeline_id",
                    "a deal cannot change pipeline while the server runs as a cluster; create it in the other pipeline instead",
                )));
            }
        }
        let token = self.fence.as_ref().filter(|(t, _)| t == topic).map(|(_, token)| *token);
        let seq = match self.seq_counter(topic) {
            // This transaction holds the topic's row, checked against the same token.
            Some(c) if c.token == token || token.is_none() => {
                c.last += 1;
                c.last
            }
            held => {
                // First event of the topic here (or under another token): take the
                // seq in the store, where the row's lock and the fence are. Seqs this
                // transaction handed out but has not stored yet go in with it.
                let pending = held.map(|c| c.last - c.stored).unwrap_or(0);
                let mut next = insert("topic_seqs", "topic, workspace_id, seq", args![topic, workspace_id, 1i64]);
                next.push(" ON CONFLICT (topic) DO UPDATE SET seq = topic_seqs.seq + ")
                    .arg(1 + pending);
                // The fence: a fenced topic's row exists (its owner claimed it), and the
                // seq is only taken while the writer's token is still the row's.
                if let Some(token) = token {
                    next.push(" WHERE topic_seqs.fence = ").arg(token);
                }
                next.push(" RETURNING seq");
                let next = next.on(self.tx.backend());
                let seq: i64 = match next.query().fetch_optional(&mut *self.tx).await? {
                    Some(row) => row.try_get(0)?,
                    None => return Err(super::StoreError::Fenced(topic.to_string())),
                };
                self.hold_seq_counter(
                    topic,
                    super::SeqCounter {
                        stored: seq,
                        last: seq,
                        token,
                    },
                );
                seq
            }
        };
        if let Some(user) = topic.strip_prefix("user:").and_then(|rest| rest.split_once(':')).map(|(_, u)| u) {
            if NOTIFIED_BY_EMAIL.contains(&kind.as_str()) {
                // Only for a member who asked for it: the statement adds nothing
                // otherwise.
                let mut sql = Sql::new(
                    "INSERT INTO notify_outbox (id, workspace_id, user_id, kind, data, state, attempts, next_at, created_at) SELECT ",
                );
                sql.arg(super::new_id())
                    .push(", workspace_id, user_id, ")
                    .arg(kind.as_str())
                    .push(", ")
                    .arg(payload.clone())
                    .push(", 'queued', 0, ")
                    .arg(now)
                    .push(", ")
                    .arg(now)
                    .push(" FROM memberships WHERE workspace_id = ")
                    .arg(workspace_id)
                    .push(" AND user_id = ")
                    .arg(user)
                    .push(" AND notify_email = 1");
                sql.query().execute(&mut *self.tx).await?;
            }
        }
        let cause = self.cause.clone();
        self.event_rows
            .push(args![topic, seq, workspace_id, kind.as_str(), payload, actor, cause.clone(), now]);
        self.events.push(Event {
            topic: topic.to_string(),
            seq,
            kind,
            data: Arc::new(data),
            actor: actor.to_string(),
            cause,
            ts: now,
        });
        Ok(seq)
    }
}

impl Store {
    /// Events of `topic` after `since`, oldest first, at most `limit`.
    pub async fn events_after(&self, topic: &str, since: i64, limit: i64) -> Result<Vec<Event>> {
        let mut sql = Sql::new("SELECT topic, seq, type, payload, actor, cause, created_at FROM event_log WHERE topic = ");
        sql.arg(topic)
            .push(" AND seq > ")
            .arg(since)
            .push(" ORDER BY seq LIMIT ")
            .arg(limit);
        let rows = sql.query().fetch_all(self.pool()).await?;
        rows.iter().map(event).collect()
    }

    /// Makes this node the owner of `topic` in the store: raises the topic's fencing
    /// token and returns it. Writes fenced by an older token fail from now on; one
    /// already running holds the row, so this waits for it and the new owner sees it.
    /// `owner_url` is where the new owner takes forwarded writes.
    pub async fn claim_fence(&self, topic: &str, workspace_id: &str, owner_url: &str) -> Result<i64> {
        let mut sql = insert(
            "topic_seqs",
            "topic, workspace_id, seq, fence, owner_url",
            args![topic, workspace_id, 0i64, 1i64, owner_url],
        );
        sql.push(" ON CONFLICT (topic) DO UPDATE SET fence = topic_seqs.fence + 1, owner_url = excluded.owner_url RETURNING fence");
        let mut w = self.write().await?;
        if self.backend() == super::Backend::Postgres {
            // Bounded: a claim waits for a write holding the row, not for ever.
            sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *w.tx).await?;
        }
        let fence: i64 = sql.query().fetch_one(&mut *w.tx).await?.try_get(0)?;
        w.commit().await?;
        Ok(fence)
    }

    /// Where the node that last claimed `topic` takes forwarded writes.
    pub async fn topic_owner(&self, topic: &str) -> Result<Option<String>> {
        let mut sql = Sql::new("SELECT owner_url FROM topic_seqs WHERE topic = ");
        sql.arg(topic);
        match sql.query().fetch_optional(self.pool()).await? {
            Some(r) => Ok(r.try_get(0)?),
            None => Ok(None),
        }
    }

    /// The last seq of `topic` (0 before its first event).
    pub async fn topic_seq(&self, topic: &str) -> Result<i64> {
        let mut sql = Sql::new("SELECT seq FROM topic_seqs WHERE topic = ");
        sql.arg(topic);
        match sql.query().fetch_optional(self.pool()).await? {
            Some(r) => Ok(r.try_get(0)?),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fresh_store;
    use crate::store::StoreError;

    #[tokio::test]
    async fn a_write_fenced_by_a_superseded_token_is_refused_by_the_store() {
        let (store, dir, ws) = fresh_store("fence").await;
        let topic = "board:p1";
        let append = |token: i64| {
            let store = store.clone();
            let ws = ws.clone();
            async move {
                let mut w = store.write().await?;
                w.fenced_by(Some((topic.to_string(), token)));
                let seq = w.append_event(&ws, topic, "deal.moved", Value::Null, "user:u", 0).await?;
                w.commit().await?;
                Ok::<i64, StoreError>(seq)
            }
        };
        let first = store.claim_fence(topic, &ws, "http://a").await.unwrap();
        assert_eq!(append(first).await.unwrap(), 1);
        let second = store.claim_fence(topic, &ws, "http://b").await.unwrap();
        assert!(second > first);
        assert!(matches!(append(first).await, Err(StoreError::Fenced(t)) if t == topic));
        assert_eq!(append(second).await.unwrap(), 2, "the refused write took no seq");
        assert_eq!(store.topic_owner(topic).await.unwrap().as_deref(), Some("http://b"));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_write_rolled_back_in_a_batch_leaves_no_event_audit_entry_or_seq_gap() {
        // A batch's transaction, whose first savepoint is taken with it, and a plain one.
        for batch in [true, false] {
            rolled_back_write_leaves_nothing(batch).await;
        }
    }

    async fn rolled_back_write_leaves_nothing(batch: bool) {
        let (store, dir, ws) = fresh_store("batch").await;
        let topic = "board:p1";
        let audits = |store: Store| async move {
            let n: i64 = sqlx::query_scalar::<sqlx::Any, i64>("SELECT COUNT(*) FROM audit_log WHERE object_type = 'probe'")
                .fetch_one(store.pool())
                .await
                .unwrap();
            n
        };
        let mut w = if batch { store.write_batch().await } else { store.write().await }.unwrap();
        let mut seqs = Vec::new();
        for (n, keep) in [true, false, true, true].into_iter().enumerate() {
            w.savepoint().await.unwrap();
            seqs.push(w.append_event(&ws, topic, "deal.moved", Value::Null, "user:u", 0).await.unwrap());
            w.audits.push(args![
                format!("a{n}"),
                &ws,
                1i64,
                0i64,
                0i64,
                "user:u",
                "update",
                "probe",
                "x",
                "{}"
            ]);
            if keep && n == 0 {
                w.release_savepoint().await.unwrap();
            } else if keep {
                // Released by the next savepoint, or by the commit.
                w.keep();
            } else {
                w.rollback_to_savepoint().await.unwrap();
            }
        }
        assert_eq!(seqs, [1, 2, 2, 3], "the rolled-back write's seq is handed out again");
        let events = w.commit().await.unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let logged: Vec<i64> = store.events_after(topic, 0, 10).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(logged, [1, 2, 3]);
        assert_eq!(store.topic_seq(topic).await.unwrap(), 3);
        assert_eq!(audits(store.clone()).await, 3);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
