//! Idempotency keys: the first outcome of a POST is kept for a day and replayed to
//! retries carrying the same key, so a retried create never makes a duplicate.

use sqlx::Row;

use super::{args, insert, now_ms, Result, Scoped, Sql};

const KEEP_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

#[derive(Debug)]
pub enum IdempotencyBegin {
    /// First use: run the request, then `idempotency_finish`.
    New,
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key has not finished yet.
    InProgress,
}

impl Scoped<'_> {
    pub async fn idempotency_begin(&self, principal: &str, key: &str, request_hash: &str) -> Result<IdempotencyBegin> {
        let now = now_ms();
        let mut w = self.begin().await?;
        let mut sql = Sql::new("DELETE FROM idempotency_keys WHERE workspace_id = ");
        sql.arg(self.ws)
            .push(" AND principal_id = ")
            .arg(principal)
            .push(" AND created_at < ")
            .arg(now - KEEP_MS);
        sql.query().execute(&mut *w.tx).await?;
        let mut sql = insert(
            "idempotency_keys",
            "workspace_id, principal_id, key, request_hash, created_at",
            args![self.ws, principal, key, request_hash, now],
        );
        sql.push(" ON CONFLICT (workspace_id, principal_id, key) DO NOTHING");
        if sql.query().execute(&mut *w.tx).await?.rows_affected() == 1 {
            w.commit().await?;
            return Ok(IdempotencyBegin::New);
        }
        let mut sql = Sql::new("SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE workspace_id = ");
        sql.arg(self.ws)
            .push(" AND principal_id = ")
            .arg(principal)
            .push(" AND key = ")
            .arg(key);
        let row = sql.query().fetch_one(&mut *w.tx).await?;
        w.commit().await?;
        let hash: String = row.try_get(0)?;
        let status: Option<i64> = row.try_get(1)?;
        let body: Option<String> = row.try_get(2)?;
        Ok(match (hash == request_hash, status, body) {
            (false, _, _) => IdempotencyBegin::Mismatch,
            (true, Some(status), Some(body)) => IdempotencyBegin::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(200),
                body,
            }),
            _ => IdempotencyBegin::InProgress,
        })
    }

    pub async fn idempotency_finish(&self, principal: &str, key: &str, response: &StoredResponse) -> Result<()> {
        let mut w = self.begin().await?;
        let mut sql = Sql::new("UPDATE idempotency_keys SET status_code = ");
        sql.arg(i64::from(response.status)).push(", response_body = ").arg(&response.body);
        sql.push(" WHERE workspace_id = ")
            .arg(self.ws)
            .push(" AND principal_id = ")
            .arg(principal)
            .push(" AND key = ")
            .arg(key);
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await.map(drop)
    }

    /// Forgets a key whose request failed on the server's side, so a retry runs again.
    pub async fn idempotency_abandon(&self, principal: &str, key: &str) -> Result<()> {
        let mut w = self.begin().await?;
        let mut sql = Sql::new("DELETE FROM idempotency_keys WHERE workspace_id = ");
        sql.arg(self.ws)
            .push(" AND principal_id = ")
            .arg(principal)
            .push(" AND key = ")
            .arg(key);
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await.map(drop)
    }
}
