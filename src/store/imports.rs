//! CSV import jobs and their progress.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{args, insert, new_id, now_ms, Result, Scoped, Sql, Store, StoreError};

#[derive(Debug, Clone)]
pub struct ImportJob {
    pub id: String,
    pub object_type: String,
    pub mode: String,
    /// The field rows are matched on with the records already there; none: every row
    /// is new.
    pub key_field: Option<String>,
    pub status: String,
    pub rows_total: i64,
    pub counts: ImportCounts,
    pub errors: Value,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What became of the rows so far: each row processed is counted once, in one of
/// these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub created: i64,
    pub updated: i64,
    pub skipped: i64,
    pub failed: i64,
}

impl ImportCounts {
    pub fn processed(&self) -> i64 {
        self.created + self.updated + self.skipped + self.failed
    }
}

const COLS: &str = "id, object_type, mode, key_field, status, rows_total, rows_created, rows_updated, rows_skipped, rows_failed, errors, created_by, created_at, updated_at";

fn job(r: &AnyRow) -> Result<ImportJob> {
    let errors: String = r.try_get(10)?;
    Ok(ImportJob {
        id: r.try_get(0)?,
        object_type: r.try_get(1)?,
        mode: r.try_get(2)?,
        key_field: r.try_get(3)?,
        status: r.try_get(4)?,
        rows_total: r.try_get(5)?,
        counts: ImportCounts {
            created: r.try_get(6)?,
            updated: r.try_get(7)?,
            skipped: r.try_get(8)?,
            failed: r.try_get(9)?,
        },
        errors: serde_json::from_str(&errors).unwrap_or(Value::Array(vec![])),
        created_by: r.try_get(11)?,
        created_at: r.try_get(12)?,
        updated_at: r.try_get(13)?,
    })
}

impl Store {
    /// Jobs that were running when the process stopped cannot resume their stream;
    /// mark them failed at start-up so nobody waits on them forever.
    pub async fn fail_interrupted_imports(&self) -> Result<u64> {
        let mut w = self.write().await?;
        let mut sql = Sql::new("UPDATE import_jobs SET status = 'failed', updated_at = ");
        sql.arg(now_ms()).push(" WHERE status = 'running'");
        let n = sql.query().execute(&mut *w.tx).await?.rows_affected();
        w.commit().await?;
        Ok(n)
    }
}

impl Scoped<'_> {
    pub async fn create_import_job(
        &self,
        object_type: &str,
        mode: &str,
        key_field: Option<&str>,
        rows_total: i64,
        actor: &str,
    ) -> Result<ImportJob> {
        let now = now_ms();
        let id = new_id();
        let mut w = self.begin().await?;
        let sql = insert(
            "import_jobs",
            "workspace_id, id, object_type, mode, key_field, status, rows_total, rows_done, rows_failed, errors, created_by, created_at, updated_at",
            args![self.ws, &id, object_type, mode, key_field.map(str::to_string), "running", rows_total, 0i64, 0i64, "[]", actor, now, now],
        );
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await?;
        self.import_job(&id).await
    }

    pub async fn update_import_job(&self, id: &str, status: &str, counts: ImportCounts, errors: &Value) -> Result<()> {
        let mut w = self.begin().await?;
        let mut sql = Sql::new("UPDATE import_jobs SET status = ");
        sql.arg(status).push(", rows_done = ").arg(counts.processed());
        sql.push(", rows_created = ").arg(counts.created);
        sql.push(", rows_updated = ").arg(counts.updated);
        sql.push(", rows_skipped = ").arg(counts.skipped);
        sql.push(", rows_failed = ").arg(counts.failed);
        sql.push(", errors = ")
            .arg(errors.to_string())
            .push(", updated_at = ")
            .arg(now_ms());
        sql.push(" WHERE workspace_id = ").arg(self.ws).push(" AND id = ").arg(id);
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await.map(drop)
    }

    pub async fn import_job(&self, id: &str) -> Result<ImportJob> {
        let mut sql = Sql::new(format!("SELECT {COLS} FROM import_jobs WHERE workspace_id = "));
        sql.arg(self.ws).push(" AND id = ").arg(id);
        match sql.query().fetch_optional(self.store.pool()).await? {
            Some(r) => job(&r),
            None => Err(StoreError::NotFound),
        }
    }

    pub async fn import_jobs(&self) -> Result<Vec<ImportJob>> {
        let mut sql = Sql::new(format!("SELECT {COLS} FROM import_jobs WHERE workspace_id = "));
        sql.arg(self.ws).push(" ORDER BY created_at DESC, id LIMIT 100");
        let rows = sql.query().fetch_all(self.store.pool()).await?;
        rows.iter().map(job).collect()
    }
}
