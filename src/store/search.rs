//! Ranked full-text search across contacts, companies, leads, deals and activities:
//! FTS5 with bm25 on SQLite, a weighted tsvector with ts_rank on PostgreSQL.

use sqlx::Row;

use super::{Backend, Result, Scoped, Sql};
use crate::domain::ObjectType;

#[derive(Debug, Clone)]
pub struct SearchHit {
    pub object_type: String,
    pub id: String,
    pub title: String,
    pub score: f64,
}

impl Scoped<'_> {
    /// Every term must match (as a prefix), best matches first. `terms` are already
    /// reduced to letters and digits, so they cannot inject query syntax.
    pub async fn search(&self, terms: &[String], types: &[ObjectType], limit: i64) -> Result<Vec<SearchHit>> {
        let mut sql = match self.store.backend {
            Backend::Sqlite => {
                let q: Vec<String> = terms.iter().map(|t| format!("\"{t}\"*")).collect();
                let mut sql = Sql::new(
                    "SELECT d.object_type, d.object_id, d.title, -bm25(search_fts, 10.0, 1.0) AS score \
                     FROM search_fts JOIN search_docs d ON d.doc_id = search_fts.rowid WHERE search_fts MATCH ",
                );
                sql.arg(q.join(" ")).push(" AND d.workspace_id = ").arg(self.ws);
                sql
            }
            Backend::Postgres => {
                let q: Vec<String> = terms.iter().map(|t| format!("{t}:*")).collect();
                let mut sql = Sql::new(
                    "SELECT d.object_type, d.object_id, d.title, ts_rank(d.tsv, q)::float8 AS score \
                     FROM search_docs d, to_tsquery('simple', ",
                );
                sql.arg(q.join(" & "))
                    .push(") q WHERE d.tsv @@ q AND d.workspace_id = ")
                    .arg(self.ws);
                sql
            }
        };
        if !types.is_empty() {
            sql.push(" AND d.object_type IN (");
            for (i, t) in types.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.arg(t.name());
            }
            sql.push(")");
        }
        sql.push(" ORDER BY score DESC, d.object_id LIMIT ").arg(limit);
        let rows = sql.query().fetch_all(self.store.pool()).await?;
        rows.iter()
            .map(|r| {
                Ok(SearchHit {
                    object_type: r.try_get(0)?,
                    id: r.try_get(1)?,
                    title: r.try_get(2)?,
                    score: r.try_get(3)?,
                })
            })
            .collect()
    }
}
