//! The event log: appending events inside a write transaction, and reading them back
//! for subscribers that resume.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{args, insert, Result, Sql, Store, WriteTx};
use crate::domain::Event;

fn event(r: &AnyRow) -> Result<Event> {
    let payload: String = r.try_get(3)?;
    Ok(Event {
        topic: r.try_get(0)?,
        seq: r.try_get(1)?,
        kind: r.try_get(2)?,
        data: serde_json::from_str(&payload).unwrap_or(Value::Null),
        actor: r.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
        cause: r.try_get(5)?,
        ts: r.try_get(6)?,
    })
}

impl WriteTx {
    /// Appends an event to `topic` with the topic's next seq.
    pub(crate) async fn append_event(
        &mut self,
        workspace_id: &str,
        topic: &str,
        kind: &str,
        data: Value,
        actor: &str,
        now: i64,
    ) -> Result<Event> {
        let mut next = insert("topic_seqs", "topic, workspace_id, seq", args![topic, workspace_id, 1i64]);
        next.push(" ON CONFLICT (topic) DO UPDATE SET seq = topic_seqs.seq + 1 RETURNING seq");
        let seq: i64 = next.query().fetch_one(&mut *self.tx).await?.try_get(0)?;
        let cause = self.cause.clone();
        let row = insert(
            "event_log",
            "topic, seq, workspace_id, type, payload, actor, cause, created_at",
            args![topic, seq, workspace_id, kind, data.to_string(), actor, cause.clone(), now],
        );
        row.query().execute(&mut *self.tx).await?;
        let e = Event {
            topic: topic.to_string(),
            seq,
            kind: kind.to_string(),
            data,
            actor: actor.to_string(),
            cause,
            ts: now,
        };
        self.events.push(e.clone());
        Ok(e)
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
