//! The record engine: create, read, update, delete and list for every object type,
//! driven by the type's description in `domain::objects`. Each write runs in one
//! transaction together with its audit entry, its search document and the tag
//! catalogue, so they can never disagree.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::events::{ChangeNotes, EventNote};
use super::{args, insert, list, new_id, now_ms, Arg, Backend, Result, Scoped, Sql, StoreError, WriteTx};
use crate::domain::fields::Column;
use crate::domain::objects::{diff, FieldSpec};
use crate::domain::query::{encode_cursor, Filter, Op};
use crate::domain::{rank, Changes, CustomFieldDef, FieldErrors, FieldKind, FieldValue, ListQuery, ObjectType, Record, Topic};

/// Where a deal goes: a stage (default: its own) and the neighbours it goes between.
#[derive(Debug, Clone, Default)]
pub struct DealMove {
    pub stage: Option<String>,
    pub after: Option<String>,
    pub before: Option<String>,
    /// The deal's version the move is based on.
    pub expected: Option<i64>,
    /// The pipeline the deal must be on (a command sent to that board's topic): a deal
    /// elsewhere is not found.
    pub within: Option<String>,
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Record>,
    pub next_cursor: Option<String>,
}

pub(super) fn columns(ty: ObjectType) -> String {
    let mut cols = vec!["id", "version", "created_at", "updated_at"];
    cols.extend(ty.fields().iter().map(|f| f.name));
    if ty.has_custom_fields() {
        cols.push("custom_fields");
    }
    cols.join(", ")
}

pub(super) fn decode(ty: ObjectType, row: &AnyRow) -> Result<Record> {
    let mut values = BTreeMap::new();
    for (i, spec) in ty.fields().iter().enumerate() {
        let idx = 4 + i;
        let v = match spec.kind.column() {
            Column::Int => match row.try_get::<Option<i64>, _>(idx)? {
                None => FieldValue::Null,
                Some(n) if spec.kind == FieldKind::Bool => FieldValue::Bool(n != 0),
                Some(n) => FieldValue::Int(n),
            },
            Column::Text => match row.try_get::<Option<String>, _>(idx)? {
                None if spec.kind.is_list() => FieldValue::List(Vec::new()),
                None => FieldValue::Null,
                Some(s) if spec.kind.is_list() => FieldValue::List(serde_json::from_str(&s).unwrap_or_default()),
                Some(s) => FieldValue::Text(s),
            },
        };
        values.insert(spec.name, v);
    }
    let custom = if ty.has_custom_fields() {
        let raw: String = row.try_get(4 + ty.fields().len())?;
        serde_json::from_str(&raw).unwrap_or_default()
    } else {
        Map::new()
    };
    Ok(Record {
        id: row.try_get(0)?,
        version: row.try_get(1)?,
        created_at: row.try_get(2)?,
        updated_at: row.try_get(3)?,
        values,
        custom,
    })
}

pub(crate) fn to_arg(spec: &FieldSpec, v: &FieldValue) -> Arg {
    match (spec.kind.column(), v) {
        (_, FieldValue::List(items)) => Arg::Text(Some(serde_json::to_string(items).unwrap_or_else(|_| "[]".into()))),
        (Column::Text, FieldValue::Null) if spec.kind.is_list() => Arg::Text(Some("[]".into())),
        (Column::Text, FieldValue::Null) => Arg::Text(None),
        (Column::Int, FieldValue::Null) => Arg::Int(None),
        (_, FieldValue::Text(s)) => Arg::Text(Some(s.clone())),
        (_, FieldValue::Int(n)) => Arg::Int(Some(*n)),
        (_, FieldValue::Bool(b)) => Arg::Int(Some(i64::from(*b))),
    }
}

/// Keys longer than this are a sign that cards were squeezed between the same
/// neighbours many times: the column gets fresh, evenly spread keys.
pub(super) const REBALANCE_AT: usize = 16;

/// The fields that link an activity to the records whose timeline it is on.
const ACTIVITY_LINKS: [&str; 4] = ["contact_id", "company_id", "deal_id", "lead_id"];

fn activity_link(ty: ObjectType) -> Option<&'static str> {
    match ty {
        ObjectType::Contact => Some("contact_id"),
        ObjectType::Company => Some("company_id"),
        ObjectType::Deal => Some("deal_id"),
        ObjectType::Lead => Some("lead_id"),
        _ => None,
    }
}

/// The deal's own key when it already sits in `stage` strictly between `lo` and `hi`:
/// a drop there leaves it where it is.
pub(super) fn in_gap<'a>(deal: &'a Record, stage: &str, lo: Option<&str>, hi: Option<&str>) -> Option<&'a str> {
    let own = deal.text("rank").filter(|_| deal.text("stage_id") == Some(stage))?;
    (lo.is_none_or(|lo| own > lo) && hi.is_none_or(|hi| own < hi)).then_some(own)
}

/// Records carrying a tag up to which a list filtered by it starts from them (see
/// [`Scoped::list`]); sorting that many costs about a millisecond.
const DRIVING_TAG_AT_MOST: i64 = 2000;

pub(super) fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError::Invalid(FieldErrors::single(field, message))
}

impl Scoped<'_> {
    pub(super) fn backend(&self) -> Backend {
        self.store.backend
    }

    /// An expression that orders text by bytes on both engines.
    pub(super) fn bytewise(&self, expr: &str) -> String {
        match self.backend() {
            Backend::Postgres => format!("{expr} COLLATE \"C\""),
            Backend::Sqlite => expr.to_string(),
        }
    }

    pub(crate) async fn fetch(&self, conn: &mut AnyConnection, ty: ObjectType, id: &str) -> Result<Option<Record>> {
        let mut sql = Sql::new(format!("SELECT {} FROM {} WHERE workspace_id = ", columns(ty), ty.table()));
        sql.arg(self.ws).push(" AND id = ").arg(id);
        match sql.query().fetch_optional(conn).await? {
            Some(row) => Ok(Some(decode(ty, &row)?)),
            None => Ok(None),
        }
    }

    pub async fn get(&self, ty: ObjectType, id: &str) -> Result<Record> {
        let mut conn = self.store.pool().acquire().await?;
        self.fetch(&mut conn, ty, id).await?.ok_or(StoreError::NotFound)
    }

    pub async fn list(&self, ty: ObjectType, q: &ListQuery) -> Result<Page> {
        let table = ty.table();
        let mut sql = Sql::new(format!("SELECT {} FROM ", columns(ty)));
        // A tag few records carry: the list starts from those records and sorts them,
        // instead of walking the workspace in order and checking each (which reads
        // every record when the tag is rare). A common tag is checked record by record
        // as the walk goes, which finds a page quickly.
        let tagged = q.filters.iter().position(|f| f.op == Op::Has && f.field.name == "tags");
        let mut driving = None;
        if let Some(i) = tagged {
            let tag = q.filters[i].values[0].as_text().unwrap_or_default();
            if self.tagged_at_most(ty, tag, DRIVING_TAG_AT_MOST).await? {
                sql.push("(SELECT object_id FROM record_tags WHERE workspace_id = ")
                    .arg(self.ws)
                    .push(" AND object_type = ")
                    .arg(ty.name())
                    .push(" AND tag = ")
                    .arg(tag)
                    .push(") AS rt ");
                // SQLite keeps the order of a CROSS JOIN as written; PostgreSQL plans
                // it from its statistics.
                sql.push(match self.backend() {
                    Backend::Sqlite => "CROSS JOIN ",
                    Backend::Postgres => "JOIN ",
                });
                sql.push(&format!("{table} ON {table}.id = rt.object_id"));
                driving = Some(i);
            }
        }
        if driving.is_none() {
            sql.push(table);
        }
        sql.push(" WHERE workspace_id = ").arg(self.ws);
        for (i, f) in q.filters.iter().enumerate() {
            if Some(i) != driving {
                sql.push(" AND ");
                self.filter_sql(&mut sql, ty, f);
            }
        }
        let col = q.sort.field.name;
        let text = q.sort.field.kind.column() == Column::Text;
        let id = self.bytewise("id");
        let dir = if q.sort.descending { "DESC" } else { "ASC" };
        let op = if q.sort.descending { "<" } else { ">" };
        // A sort field the query keeps to non-null values is ordered by itself too.
        let kept = q.filters.iter().any(|f| f.field.name == col && f.op == Op::IsNotNull);
        let never_null =
            matches!(col, "created_at" | "updated_at") || (q.sort.field.kind == FieldKind::Timestamp && (q.sort.field.required || kept));
        if never_null {
            // Never null: ordered by the column itself, so both engines walk the
            // workspace's index on it and stop after one page, instead of sorting every
            // row of the workspace (the default order of every list).
            if let Some(after) = &q.after {
                let n = match &after.value {
                    FieldValue::Int(n) => *n,
                    _ => 0,
                };
                sql.push(&format!(" AND ({col}, {id}) {op} (")).arg(n);
                sql.push(", ").arg(&after.id).push(")");
            }
            sql.push(&format!(" ORDER BY {col} {dir}, {id} {dir} LIMIT "));
        } else {
            let zero = if text { "''" } else { "0" };
            let null_flag = format!("(CASE WHEN {col} IS NULL THEN 1 ELSE 0 END)");
            let value = if text {
                self.bytewise(&format!("COALESCE({col}, {zero})"))
            } else {
                format!("COALESCE({col}, {zero})")
            };
            if let Some(after) = &q.after {
                sql.push(&format!(" AND ({null_flag}, {value}, {id}) {op} ("));
                sql.arg(i64::from(after.value.is_null())).push(", ");
                match (&after.value, text) {
                    (FieldValue::Text(s), _) => sql.arg(s),
                    (FieldValue::Int(n), _) => sql.arg(*n),
                    (_, true) => sql.arg(""),
                    (_, false) => sql.arg(0i64),
                };
                sql.push(", ").arg(&after.id).push(")");
            }
            sql.push(&format!(" ORDER BY {null_flag} {dir}, {value} {dir}, {id} {dir} LIMIT "));
        }
        sql.arg(i64::try_from(q.limit + 1).unwrap_or(i64::MAX));
        let rows = sql.query().fetch_all(self.store.pool()).await?;
        let mut records = rows.iter().map(|r| decode(ty, r)).collect::<Result<Vec<_>>>()?;
        let next_cursor = if records.len() > q.limit {
            records.truncate(q.limit);
            records.last().map(|last| {
                let v = match col {
                    "created_at" => FieldValue::Int(last.created_at),
                    "updated_at" => FieldValue::Int(last.updated_at),
                    _ => last.get(col).clone(),
                };
                encode_cursor(&q.sort, &v, &last.id)
            })
        } else {
            None
        };
        Ok(Page { records, next_cursor })
    }

    /// Whether at most `n` records of the type carry the tag: one short walk of an
    /// index, however many do.
    async fn tagged_at_most(&self, ty: ObjectType, tag: &str, n: i64) -> Result<bool> {
        let mut sql = Sql::new("SELECT COUNT(*) FROM (SELECT 1 FROM record_tags WHERE workspace_id = ");
        sql.arg(self.ws)
            .push(" AND object_type = ")
            .arg(ty.name())
            .push(" AND tag = ")
            .arg(tag)
            .push(" LIMIT ")
            .arg(n + 1)
            .push(") AS t");
        let count: i64 = sql.query().fetch_one(self.store.pool()).await?.try_get(0)?;
        Ok(count <= n)
    }

    fn filter_sql(&self, sql: &mut Sql, ty: ObjectType, f: &Filter) {
        let col = f.field.name;
        let arg = |v: &FieldValue| to_arg(f.field, v);
        match f.op {
            Op::Has if col == "tags" => {
                let table = ty.table();
                sql.push("EXISTS (SELECT 1 FROM record_tags rt WHERE rt.workspace_id = ")
                    .arg(self.ws)
                    .push(" AND rt.object_type = ")
                    .arg(ty.name())
                    .push(" AND rt.tag = ")
                    .arg(f.values[0].as_text().unwrap_or_default())
                    .push(&format!(" AND rt.object_id = {table}.id)"));
            }
            Op::Eq => {
                sql.push(&format!("{col} = ")).arg(arg(&f.values[0]));
            }
            Op::In => {
                sql.push(&format!("{col} IN ("));
                for (i, v) in f.values.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.arg(arg(v));
                }
                sql.push(")");
            }
            Op::Has => {
                let item = f.values[0].as_text().unwrap_or_default().to_string();
                match self.backend() {
                    Backend::Sqlite => sql
                        .push(&format!("EXISTS (SELECT 1 FROM json_each({col}) WHERE json_each.value = "))
                        .arg(item)
                        .push(")"),
                    Backend::Postgres => sql.push(&format!("({col})::jsonb @> jsonb_build_array(")).arg(item).push("::text)"),
                };
            }
            Op::Contains => {
                let needle = f.values[0].as_text().unwrap_or_default();
                let escaped: String = needle
                    .chars()
                    .flat_map(|c| if matches!(c, '%' | '_' | '\\') { vec!['\\', c] } else { vec![c] })
                    .collect();
                sql.push(&format!("LOWER({col}) LIKE "))
                    .arg(format!("%{escaped}%"))
                    .push(" ESCAPE '\\'");
            }
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                let op = match f.op {
                    Op::Gt => ">",
                    Op::Gte => ">=",
                    Op::Lt => "<",
                    _ => "<=",
                };
                sql.push(&format!("{col} {op} ")).arg(arg(&f.values[0]));
            }
            Op::IsNull if f.field.kind.is_list() => {
                sql.push(&format!("{col} = '[]'"));
            }
            Op::IsNotNull if f.field.kind.is_list() => {
                sql.push(&format!("{col} <> '[]'"));
            }
            Op::IsNull => {
                sql.push(&format!("{col} IS NULL"));
            }
            Op::IsNotNull => {
                sql.push(&format!("{col} IS NOT NULL"));
            }
        }
    }

    /// The workspace's custom field definitions for one object type.
    pub async fn custom_field_defs(&self, ty: ObjectType) -> Result<Vec<CustomFieldDef>> {
        if !ty.has_custom_fields() {
            return Ok(Vec::new());
        }
        let q = ListQuery {
            limit: 1000,
            ..ListQuery::newest_first()
        }
        .eq(
            ObjectType::CustomField
                .field("object_type")
                .ok_or_else(|| anyhow::anyhow!("object_type field"))?,
            FieldValue::Text(ty.name().into()),
        );
        let page = self.list(ObjectType::CustomField, &q).await?;
        Ok(page
            .records
            .iter()
            .filter_map(CustomFieldDef::from_record)
            .map(|(_, d)| d)
            .collect())
    }

    pub(crate) async fn create_in(&self, w: &mut WriteTx, ty: ObjectType, changes: Changes, actor: &str) -> Result<Record> {
        if ty == ObjectType::Message {
            // A message is its conversation's: it is read once, for both.
            let conversation = changes
                .get("conversation_id")
                .and_then(|v| v.as_text())
                .unwrap_or_default()
                .to_string();
            let Some(conv) = self.fetch(&mut w.tx, ObjectType::Conversation, &conversation).await? else {
                return Err(invalid("conversation_id", "no such conversation"));
            };
            return Ok(self.post_message_in(w, conv, changes, actor).await?.0);
        }
        self.insert_in(w, ty, changes, actor, false).await
    }

    /// A new record, with what every write does besides (audit, search, its event),
    /// but nothing that follows from it in other records.
    /// `prepared`: the caller filled in what the store decides and checked every
    /// reference `changes` makes, so neither is done again.
    pub(super) async fn insert_in(
        &self,
        w: &mut WriteTx,
        ty: ObjectType,
        mut changes: Changes,
        actor: &str,
        prepared: bool,
    ) -> Result<Record> {
        let id = new_id();
        let now = now_ms();
        if !prepared {
            self.prepare(&mut w.tx, ty, &id, None, &mut changes).await?;
        }
        let empty = Record {
            id: id.clone(),
            version: 0,
            created_at: now,
            updated_at: now,
            values: BTreeMap::new(),
            custom: Map::new(),
        };
        let (values, custom) = empty.merged(&changes);
        ty.check(&values).map_err(StoreError::Invalid)?;
        if !prepared {
            self.check_refs(&mut w.tx, ty, &id, None, &changes).await?;
        }

        if ty == ObjectType::AuditEntry {
            return Err(anyhow::anyhow!("the audit log is written by the store only").into());
        }
        let rec = Record {
            version: 1,
            values,
            custom,
            ..empty
        };
        let mut sql = insert(ty.table(), &format!("workspace_id, {}", columns(ty)), self.row_args(ty, &rec));
        sql.push(" RETURNING ").push(&columns(ty));
        let rec = decode(ty, &sql.query().fetch_one(&mut *w.tx).await?)?;
        self.after_write(w, ty, None, Some(&rec), actor, now).await?;
        Ok(rec)
    }

    /// A new record's row, in the order of `workspace_id, ` and [`columns`].
    pub(super) fn row_args(&self, ty: ObjectType, rec: &Record) -> Vec<Arg> {
        let mut row = args![self.ws, &rec.id, rec.version, rec.created_at, rec.updated_at];
        row.extend(
            ty.fields()
                .iter()
                .map(|spec| to_arg(spec, rec.values.get(spec.name).unwrap_or(&FieldValue::Null))),
        );
        if ty.has_custom_fields() {
            row.push(Arg::from(Value::Object(rec.custom.clone()).to_string()));
        }
        row
    }

    pub(crate) async fn update_in(
        &self,
        w: &mut WriteTx,
        ty: ObjectType,
        id: &str,
        expected: Option<i64>,
        changes: Changes,
        actor: &str,
    ) -> Result<Record> {
        let before = self.fetch(&mut w.tx, ty, id).await?.ok_or(StoreError::NotFound)?;
        self.update_from(w, ty, before, expected, changes, actor, false).await
    }

    /// Updates `before`, read in this transaction. `checked`: the caller has already
    /// resolved and checked every reference in `changes` (a move), so they are not
    /// looked up again.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn update_from(
        &self,
        w: &mut WriteTx,
        ty: ObjectType,
        before: Record,
        expected: Option<i64>,
        mut changes: Changes,
        actor: &str,
        checked: bool,
    ) -> Result<Record> {
        let id = before.id.clone();
        let id = id.as_str();
        if let Some(v) = expected {
            if v != before.version {
                return Err(StoreError::Conflict {
                    expected: v,
                    current: Box::new(before),
                });
            }
        }
        if !checked {
            self.prepare(&mut w.tx, ty, id, Some(&before), &mut changes).await?;
        }
        let (values, custom) = before.merged(&changes);
        if values == before.values && custom == before.custom {
            return Ok(before);
        }
        ty.check(&values).map_err(StoreError::Invalid)?;
        if !checked {
            self.check_refs(&mut w.tx, ty, id, Some(&before), &changes).await?;
        }

        // Strictly later than the previous write, so `updated_since` never misses it.
        let now = now_ms().max(before.updated_at + 1);
        let mut sql = Sql::new(format!("UPDATE {} SET version = version + 1, updated_at = ", ty.table()));
        sql.arg(now);
        for spec in ty.fields() {
            if values.get(spec.name) != before.values.get(spec.name) {
                sql.push(&format!(", {} = ", spec.name))
                    .arg(to_arg(spec, values.get(spec.name).unwrap_or(&FieldValue::Null)));
            }
        }
        if custom != before.custom {
            sql.push(", custom_fields = ").arg(Value::Object(custom).to_string());
        }
        sql.push(" WHERE workspace_id = ").arg(self.ws).push(" AND id = ").arg(id);
        sql.push(" AND version = ").arg(before.version);
        sql.push(" RETURNING ").push(&columns(ty));
        let after = match sql.query().fetch_optional(&mut *w.tx).await? {
            Some(row) => decode(ty, &row)?,
            None => {
                let current = self.fetch(&mut w.tx, ty, id).await?.ok_or(StoreError::NotFound)?;
                return Err(StoreError::Conflict {
                    expected: before.version,
                    current: Box::new(current),
                });
            }
        };
        self.after_write(w, ty, Some(&before), Some(&after), actor, now).await?;
        Ok(after)
    }

    pub(crate) async fn delete_in(&self, w: &mut WriteTx, ty: ObjectType, id: &str, expected: Option<i64>, actor: &str) -> Result<()> {
        let before = self.fetch(&mut w.tx, ty, id).await?.ok_or(StoreError::NotFound)?;
        if let Some(v) = expected {
            if v != before.version {
                return Err(StoreError::Conflict {
                    expected: v,
                    current: Box::new(before),
                });
            }
        }
        let now = now_ms();
        // Activities whose only link is this record would be left on no timeline:
        // they go with it, each with its own audit entry.
        if let Some(link) = activity_link(ty) {
            for orphan in self.orphaned_activities(&mut w.tx, link, id).await? {
                self.remove_row(w, ObjectType::Activity, &orphan, actor, now).await?;
            }
        }
        if ty == ObjectType::Conversation {
            self.delete_messages_of(&mut w.tx, id).await?;
        }
        self.release_references(&mut w.tx, ty, &before, now).await?;
        if ty == ObjectType::Inbox {
            let mut sql = Sql::new("DELETE FROM inbox_tokens WHERE workspace_id = ");
            sql.arg(self.ws).push(" AND inbox_id = ").arg(id);
            sql.query().execute(&mut *w.tx).await?;
        }
        self.remove_row(w, ty, &before, actor, now).await
    }

    async fn remove_row(&self, w: &mut WriteTx, ty: ObjectType, rec: &Record, actor: &str, now: i64) -> Result<()> {
        let mut sql = Sql::new(format!("DELETE FROM {} WHERE workspace_id = ", ty.table()));
        sql.arg(self.ws).push(" AND id = ").arg(&rec.id);
        sql.query().execute(&mut *w.tx).await?;
        self.after_write(w, ty, Some(rec), None, actor, now).await
    }

    /// Activities linked to the record through `link` and to nothing else.
    async fn orphaned_activities(&self, conn: &mut AnyConnection, link: &str, id: &str) -> Result<Vec<Record>> {
        let others: Vec<&str> = ACTIVITY_LINKS.iter().copied().filter(|l| *l != link).collect();
        let mut sql = Sql::new("SELECT id FROM activities WHERE workspace_id = ");
        sql.arg(self.ws).push(&format!(" AND {link} = ")).arg(id);
        for o in others {
            sql.push(&format!(" AND {o} IS NULL"));
        }
        let ids: Vec<String> = sql
            .query()
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for aid in ids {
            out.extend(self.fetch(conn, ObjectType::Activity, &aid).await?);
        }
        Ok(out)
    }

    /// Fills in what the store decides: a deal's stage and ordering key, a stage's
    /// position; and checks rules that need other records.
    async fn prepare(
        &self,
        conn: &mut AnyConnection,
        ty: ObjectType,
        id: &str,
        before: Option<&Record>,
        changes: &mut Changes,
    ) -> Result<()> {
        match ty {
            ObjectType::Deal => self.prepare_deal(conn, before, changes).await,
            ObjectType::Conversation => self.prepare_conversation(conn, id, before, changes).await,
            ObjectType::Stage if before.is_none() => {
                if changes.get("position").is_some_and(|v| !v.is_null()) {
                    return Ok(());
                }
                let pipeline = changes.get("pipeline_id").and_then(|v| v.as_text()).unwrap_or_default().to_string();
                let mut sql = Sql::new("SELECT COALESCE(MAX(position) + 1, 0) FROM stages WHERE workspace_id = ");
                sql.arg(self.ws).push(" AND pipeline_id = ").arg(pipeline);
                let next: i64 = sql.query().fetch_one(&mut *conn).await?.try_get(0)?;
                // Kept within the field's range: past it, new stages tie last (ties go by id).
                changes.set(ty, "position", FieldValue::Int(next.min(1000)));
                Ok(())
            }
            ObjectType::Company => {
                let Some(FieldValue::Text(parent)) = changes.get("parent_id").cloned() else {
                    return Ok(());
                };
                let mut cur = parent;
                for _ in 0..1000 {
                    if cur == id {
                        return Err(invalid("parent_id", "a company cannot be its own ancestor"));
                    }
                    let mut sql = Sql::new("SELECT parent_id FROM companies WHERE workspace_id = ");
                    sql.arg(self.ws).push(" AND id = ").arg(&cur);
                    match sql.query().fetch_optional(&mut *conn).await? {
                        Some(row) => match row.try_get::<Option<String>, _>(0)? {
                            Some(p) => cur = p,
                            None => return Ok(()),
                        },
                        None => return Ok(()),
                    }
                }
                Err(invalid("parent_id", "the company hierarchy is too deep"))
            }
            _ => Ok(()),
        }
    }

    async fn prepare_deal(&self, conn: &mut AnyConnection, before: Option<&Record>, changes: &mut Changes) -> Result<()> {
        let ty = ObjectType::Deal;
        let old_pipeline = before.and_then(|b| b.text("pipeline_id")).map(str::to_string);
        let pipeline = match changes.get("pipeline_id") {
            Some(FieldValue::Text(p)) => p.clone(),
            _ => old_pipeline.clone().ok_or_else(|| invalid("pipeline_id", "is required"))?,
        };
        if !self.exists(conn, ObjectType::Pipeline, &pipeline).await? {
            return Err(invalid("pipeline_id", "no such pipeline"));
        }
        let pipeline_changed = old_pipeline.as_deref() != Some(pipeline.as_str());
        let stage = match changes.get("stage_id") {
            Some(FieldValue::Text(s)) => s.clone(),
            Some(FieldValue::Null) if !pipeline_changed => return Err(invalid("stage_id", "a deal must be in a stage")),
            _ if pipeline_changed => {
                let mut sql = Sql::new("SELECT id FROM stages WHERE workspace_id = ");
                sql.arg(self.ws)
                    .push(" AND pipeline_id = ")
                    .arg(&pipeline)
                    .push(" ORDER BY position, id LIMIT 1");
                match sql.query().fetch_optional(&mut *conn).await? {
                    Some(row) => row.try_get(0)?,
                    None => return Err(invalid("pipeline_id", "the pipeline has no stages")),
                }
            }
            _ => before.and_then(|b| b.text("stage_id")).unwrap_or_default().to_string(),
        };
        let mut sql = Sql::new("SELECT pipeline_id FROM stages WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND id = ").arg(&stage);
        let stage_pipeline: Option<String> = match sql.query().fetch_optional(&mut *conn).await? {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        };
        match stage_pipeline {
            None => return Err(invalid("stage_id", "no such stage")),
            Some(p) if p != pipeline => return Err(invalid("stage_id", "the stage belongs to another pipeline")),
            Some(_) => {}
        }
        let stage_changed = before.and_then(|b| b.text("stage_id")) != Some(stage.as_str());
        if changes.get("rank").is_none() && stage_changed {
            let last = self.last_rank(conn, &stage, before.map(|b| b.id.as_str())).await?;
            let key = rank::between(last.as_deref(), None).ok_or_else(|| anyhow::anyhow!("rank space exhausted"))?;
            changes.set(ty, "rank", FieldValue::Text(key));
        }
        changes.set(ty, "pipeline_id", FieldValue::Text(pipeline));
        changes.set(ty, "stage_id", FieldValue::Text(stage));
        Ok(())
    }

    async fn last_rank(&self, conn: &mut AnyConnection, stage: &str, except: Option<&str>) -> Result<Option<String>> {
        // ORDER BY … LIMIT 1 rather than MAX: both engines read it from the end of the
        // stage's index.
        let mut sql = Sql::new("SELECT rank FROM deals WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND stage_id = ").arg(stage);
        sql.push(" AND id <> ").arg(except.unwrap_or(""));
        sql.push(&format!(" ORDER BY {} DESC LIMIT 1", self.bytewise("rank")));
        match sql.query().fetch_optional(&mut *conn).await? {
            Some(row) => Ok(row.try_get(0)?),
            None => Ok(None),
        }
    }

    pub(crate) async fn move_deal_in(&self, w: &mut WriteTx, id: &str, m: DealMove, actor: &str) -> Result<Record> {
        let DealMove {
            stage,
            after,
            before: before_id,
            expected,
            within,
        } = m;
        let to_end = after.is_none() && before_id.is_none();
        let (deal, pipeline, last) = self
            .move_context(&mut w.tx, id, stage.as_deref(), to_end)
            .await?
            .ok_or(StoreError::NotFound)?;
        if within.is_some() && deal.text("pipeline_id") != within.as_deref() {
            return Err(StoreError::NotFound);
        }
        let stage = stage.unwrap_or_else(|| deal.text("stage_id").unwrap_or_default().to_string());
        let pipeline = pipeline.ok_or_else(|| invalid("stage_id", "no such stage"))?;
        let conn: &mut AnyConnection = &mut w.tx;
        // Where the card goes, as the column is now (see `DealMove`): the gap right after
        // `after`, else right before `before`, else after the last card. The other end of
        // the gap is read, never taken from the request: two drops into one gap then get
        // two keys, the later one nearer its anchor.
        let (lo, hi) = match (last, after.as_deref(), before_id.as_deref()) {
            (Some(last), ..) => (last, None),
            (None, Some(anchor), hint) => {
                let lo = self.neighbour_rank(conn, &stage, id, Some(anchor), "after").await?;
                let lo = lo.ok_or_else(|| invalid("after", "a deal cannot be placed next to itself"))?;
                // `before` is what the client saw after the anchor: only a hint, which
                // may have moved since, but it must name a deal, not the card itself.
                if let Some(hint) = hint {
                    if hint == anchor {
                        return Err(invalid(
                            "before",
                            "names the same card as 'after': a card goes between two different cards",
                        ));
                    }
                    if hint == id {
                        return Err(invalid("before", "a deal cannot be placed next to itself"));
                    }
                    if !self.exists(conn, ObjectType::Deal, hint).await? {
                        return Err(invalid("before", "no such deal"));
                    }
                }
                let hi = self.adjacent_rank(conn, &stage, &lo, id, true).await?;
                (Some(lo), hi)
            }
            (None, None, named) => {
                let hi = self
                    .neighbour_rank(conn, &stage, id, named, "before")
                    .await?
                    .ok_or_else(|| invalid("before", "a deal cannot be placed next to itself"))?;
                let lo = self.adjacent_rank(conn, &stage, &hi, id, false).await?;
                (lo, Some(hi))
            }
        };
        let mut key = match in_gap(&deal, &stage, lo.as_deref(), hi.as_deref()) {
            // Already there: the card keeps its key and nothing is written.
            Some(own) => own.to_string(),
            None => rank::between(lo.as_deref(), hi.as_deref()).ok_or_else(|| anyhow::anyhow!("column keys out of order"))?,
        };
        if key.len() > REBALANCE_AT {
            key = self.rebalance(w, &pipeline, &stage, id, lo.as_deref(), actor).await?;
        }
        let mut changes = Changes::default();
        changes.set(ObjectType::Deal, "stage_id", FieldValue::Text(stage.clone()));
        changes.set(ObjectType::Deal, "pipeline_id", FieldValue::Text(pipeline));
        changes.set(ObjectType::Deal, "rank", FieldValue::Text(key));
        // The stage was read above and the pipeline is the stage's own.
        self.update_from(w, ObjectType::Deal, deal, expected, changes, actor, true).await
    }

    /// What a move needs to know, in one statement: the deal, the pipeline of the
    /// target stage (`stage`, or the deal's own; none if there is no such stage) and,
    /// when `to_end`, the last key of that stage's other cards (the common move, a
    /// drop at the end of a column). None if there is no such deal.
    #[allow(clippy::type_complexity)]
    async fn move_context(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        stage: Option<&str>,
        to_end: bool,
    ) -> Result<Option<(Record, Option<String>, Option<Option<String>>)>> {
        let ty = ObjectType::Deal;
        let target = |sql: &mut Sql| {
            sql.push("COALESCE(").arg(stage.map(str::to_string)).push(", deals.stage_id)");
        };
        let mut sql = Sql::new(format!(
            "SELECT {}, (SELECT s.pipeline_id FROM stages s WHERE s.workspace_id = deals.workspace_id AND s.id = ",
            columns(ty)
        ));
        target(&mut sql);
        sql.push(")");
        if to_end {
            sql.push(", (SELECT r.rank FROM deals r WHERE r.workspace_id = deals.workspace_id AND r.stage_id = ");
            target(&mut sql);
            sql.push(&format!(" AND r.id <> deals.id ORDER BY {} DESC LIMIT 1)", self.bytewise("r.rank")));
        }
        sql.push(" FROM deals WHERE workspace_id = ")
            .arg(self.ws)
            .push(" AND id = ")
            .arg(id);
        let Some(row) = sql.query().fetch_optional(&mut *conn).await? else {
            return Ok(None);
        };
        let deal = decode(ty, &row)?;
        let n = 4 + ty.fields().len() + usize::from(ty.has_custom_fields());
        let pipeline: Option<String> = row.try_get(n)?;
        let last = if to_end {
            Some(row.try_get::<Option<String>, _>(n + 1)?)
        } else {
            None
        };
        Ok(Some((deal, pipeline, last)))
    }

    /// Gives a stage's deals short, evenly spread keys in their current order, leaving
    /// a place for `moving` right after the key `after`; returns that place's key. The
    /// whole change is one `stage.rebalanced` event.
    async fn rebalance(
        &self,
        w: &mut WriteTx,
        pipeline: &str,
        stage: &str,
        moving: &str,
        after: Option<&str>,
        actor: &str,
    ) -> Result<String> {
        let mut sql = Sql::new("SELECT id, rank FROM deals WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND stage_id = ").arg(stage);
        sql.push(&format!(" ORDER BY {}", self.bytewise("rank")));
        let rows = sql.query().fetch_all(&mut *w.tx).await?;
        let mut order: Vec<(String, String)> = rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_>>()?;
        let len = order.len();
        order.retain(|(id, _)| id != moving);
        let here = order.len() < len;
        let at = after.map(|a| order.iter().filter(|(_, r)| r.as_str() <= a).count()).unwrap_or(0);
        order.insert(at, (moving.to_string(), String::new()));
        let keys = rank::spread(order.len());
        // Keys are unique in a column (an index says so, checked row by row), and a new
        // key may be one another card holds until its own turn: every card of the
        // column first takes a key no ordering key can be ('~' is not a digit).
        let mut park = Sql::new("UPDATE deals SET rank = '~' || id WHERE workspace_id = ");
        park.arg(self.ws);
        park.push(" AND stage_id = ").arg(stage);
        park.query().execute(&mut *w.tx).await?;
        let now = now_ms();
        let mut ranks = Map::new();
        for ((id, _), key) in order.iter().zip(&keys) {
            // A card moving in from another column gets its key from the move itself.
            if id == moving && !here {
                continue;
            }
            let mut upd = Sql::new("UPDATE deals SET rank = ");
            upd.arg(key).push(" WHERE workspace_id = ").arg(self.ws).push(" AND id = ").arg(id);
            upd.query().execute(&mut *w.tx).await?;
            ranks.insert(id.clone(), Value::String(key.clone()));
        }
        let topic = Topic::Board {
            pipeline_id: pipeline.to_string(),
        }
        .key();
        let data = json!({"object_type": "stage", "id": stage, "ranks": ranks});
        w.append_event(self.ws, &topic, "stage.rebalanced", data, actor, now).await?;
        Ok(keys[at].clone())
    }

    async fn neighbour_rank(
        &self,
        conn: &mut AnyConnection,
        stage: &str,
        moving: &str,
        nid: Option<&str>,
        field: &str,
    ) -> Result<Option<String>> {
        let Some(nid) = nid.filter(|n| *n != moving) else { return Ok(None) };
        let n = self
            .fetch(conn, ObjectType::Deal, nid)
            .await?
            .ok_or_else(|| invalid(field, "no such deal"))?;
        if n.text("stage_id") != Some(stage) {
            return Err(invalid(field, "that deal is not in the target stage"));
        }
        Ok(n.text("rank").map(str::to_string))
    }

    /// The rank right after (or before) `pivot` in a stage, ignoring the moving deal.
    async fn adjacent_rank(&self, conn: &mut AnyConnection, stage: &str, pivot: &str, except: &str, next: bool) -> Result<Option<String>> {
        let r = self.bytewise("rank");
        let (order, op) = if next { ("ASC", ">") } else { ("DESC", "<") };
        let mut sql = Sql::new("SELECT rank FROM deals WHERE workspace_id = ");
        sql.arg(self.ws)
            .push(" AND stage_id = ")
            .arg(stage)
            .push(&format!(" AND {r} {op} "))
            .arg(pivot);
        sql.push(" AND id <> ").arg(except);
        sql.push(&format!(" ORDER BY {r} {order} LIMIT 1"));
        match sql.query().fetch_optional(&mut *conn).await? {
            Some(row) => Ok(row.try_get(0)?),
            None => Ok(None),
        }
    }

    pub(crate) async fn exists(&self, conn: &mut AnyConnection, ty: ObjectType, id: &str) -> Result<bool> {
        let mut sql = Sql::new(format!("SELECT 1 FROM {} WHERE workspace_id = ", ty.table()));
        sql.arg(self.ws).push(" AND id = ").arg(id);
        Ok(sql.query().fetch_optional(conn).await?.is_some())
    }

    pub(crate) async fn is_member(&self, conn: &mut AnyConnection, user_id: &str) -> Result<bool> {
        let mut sql = Sql::new("SELECT 1 FROM memberships WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND user_id = ").arg(user_id);
        Ok(sql.query().fetch_optional(conn).await?.is_some())
    }

    /// Every id a write names must be a record (or member) of this workspace.
    /// Checks that the references `changes` sets exist; those `before` already held are
    /// not looked up again.
    async fn check_refs(
        &self,
        conn: &mut AnyConnection,
        ty: ObjectType,
        id: &str,
        before: Option<&Record>,
        changes: &Changes,
    ) -> Result<()> {
        let mut errors = FieldErrors::default();
        for (spec, value) in &changes.values {
            if before.is_some_and(|b| b.get(spec.name) == value) {
                continue;
            }
            match (spec.kind, value) {
                (FieldKind::Ref(target), FieldValue::Text(rid))
                    if !self.exists(conn, target, rid).await? || (target == ty && rid == id && ty != ObjectType::Company) =>
                {
                    errors.add(spec.name, format!("no such {}", target.name()));
                }
                (FieldKind::Member, FieldValue::Text(uid)) if !self.is_member(conn, uid).await? => {
                    errors.add(spec.name, "not a member of this workspace");
                }
                (FieldKind::Members, FieldValue::List(uids)) => {
                    for (i, uid) in uids.iter().enumerate() {
                        if !self.is_member(conn, uid).await? {
                            errors.add(spec.name, format!("item {i} is not a member of this workspace"));
                        }
                    }
                }
                _ => {}
            }
        }
        errors.into_result().map_err(StoreError::Invalid)
    }

    /// Before a record is deleted: refuse if records that cannot live without it
    /// exist; otherwise clear the references to it.
    async fn release_references(&self, conn: &mut AnyConnection, ty: ObjectType, rec: &Record, now: i64) -> Result<()> {
        if ty == ObjectType::Pipeline {
            if self.count_where(conn, ObjectType::Deal, "pipeline_id", &rec.id).await? > 0 {
                return Err(StoreError::InUse("the pipeline still has deals; move or delete them first".into()));
            }
            let mut sql = Sql::new("DELETE FROM stages WHERE workspace_id = ");
            sql.arg(self.ws).push(" AND pipeline_id = ").arg(&rec.id);
            sql.query().execute(&mut *conn).await?;
        }
        for other in ObjectType::ALL {
            for spec in other.fields() {
                if spec.kind != FieldKind::Ref(ty) || (ty == ObjectType::Pipeline && other == ObjectType::Stage) {
                    continue;
                }
                let blocking = spec.required || (other == ObjectType::Deal && spec.name == "stage_id");
                if blocking {
                    if self.count_where(conn, other, spec.name, &rec.id).await? > 0 {
                        return Err(StoreError::InUse(format!("{} still reference this {}", other.table(), ty.name())));
                    }
                } else {
                    let mut sql = Sql::new(format!(
                        "UPDATE {} SET {} = NULL, version = version + 1, updated_at = ",
                        other.table(),
                        spec.name
                    ));
                    sql.arg(now)
                        .push(" WHERE workspace_id = ")
                        .arg(self.ws)
                        .push(&format!(" AND {} = ", spec.name))
                        .arg(&rec.id);
                    sql.query().execute(&mut *conn).await?;
                }
            }
        }
        match ty {
            ObjectType::Tag => {
                let name = rec.text("name").unwrap_or_default().to_string();
                for other in ObjectType::ALL.into_iter().filter(|t| t.field("tags").is_some()) {
                    self.rewrite_where_has(conn, other, "tags", &name, now, |v| {
                        if let FieldValue::List(items) = v {
                            items.retain(|t| t != &name);
                        }
                    })
                    .await?;
                }
            }
            ObjectType::CustomField => {
                if let Some((target, def)) = CustomFieldDef::from_record(rec) {
                    self.drop_custom_values(conn, target, &def.key, now).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn count_where(&self, conn: &mut AnyConnection, ty: ObjectType, col: &str, value: &str) -> Result<i64> {
        let mut sql = Sql::new(format!("SELECT COUNT(*) FROM {} WHERE workspace_id = ", ty.table()));
        sql.arg(self.ws).push(&format!(" AND {col} = ")).arg(value);
        Ok(sql.query().fetch_one(&mut *conn).await?.try_get(0)?)
    }

    /// Rewrites one list field of every record whose list holds `item`.
    pub(crate) async fn rewrite_where_has(
        &self,
        conn: &mut AnyConnection,
        ty: ObjectType,
        col: &'static str,
        item: &str,
        now: i64,
        edit: impl Fn(&mut FieldValue),
    ) -> Result<()> {
        let spec = ty.field(col).ok_or_else(|| anyhow::anyhow!("{} has no field {col}", ty.name()))?;
        let mut sql = Sql::new(format!("SELECT id, {col} FROM {} WHERE workspace_id = ", ty.table()));
        sql.arg(self.ws).push(" AND ");
        self.filter_sql(
            &mut sql,
            ty,
            &Filter {
                field: spec,
                op: Op::Has,
                values: vec![FieldValue::Text(item.to_string())],
            },
        );
        let rows = sql.query().fetch_all(&mut *conn).await?;
        for row in rows {
            let id: String = row.try_get(0)?;
            let raw: String = row.try_get(1)?;
            let old: Vec<String> = serde_json::from_str(&raw).unwrap_or_default();
            let mut v = FieldValue::List(old.clone());
            edit(&mut v);
            let mut upd = Sql::new(format!("UPDATE {} SET {col} = ", ty.table()));
            upd.arg(to_arg(spec, &v)).push(", version = version + 1, updated_at = ").arg(now);
            upd.push(" WHERE workspace_id = ").arg(self.ws).push(" AND id = ").arg(&id);
            upd.query().execute(&mut *conn).await?;
            if col == "tags" {
                self.retag(conn, ty, &id, &old, v.as_list()).await?;
            }
        }
        Ok(())
    }

    /// Keeps `record_tags` in step with a record's tags going from `old` to `new`.
    async fn retag(&self, conn: &mut AnyConnection, ty: ObjectType, id: &str, old: &[String], new: &[String]) -> Result<()> {
        let gone: Vec<&str> = old.iter().filter(|t| !new.contains(t)).map(String::as_str).collect();
        if !gone.is_empty() {
            let mut sql = Sql::new("DELETE FROM record_tags WHERE workspace_id = ");
            sql.arg(self.ws)
                .push(" AND object_type = ")
                .arg(ty.name())
                .push(" AND object_id = ")
                .arg(id)
                .push(" AND tag IN (");
            list(&mut sql, &gone);
            sql.query().execute(&mut *conn).await?;
        }
        let added: Vec<&str> = new.iter().filter(|t| !old.contains(t)).map(String::as_str).collect();
        if !added.is_empty() {
            let mut sql = Sql::new("INSERT INTO record_tags (workspace_id, object_type, tag, object_id) VALUES ");
            for (i, tag) in added.into_iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" });
                sql.arg(self.ws)
                    .push(", ")
                    .arg(ty.name())
                    .push(", ")
                    .arg(tag)
                    .push(", ")
                    .arg(id)
                    .push(")");
            }
            sql.push(" ON CONFLICT DO NOTHING");
            sql.query().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn drop_custom_values(&self, conn: &mut AnyConnection, ty: ObjectType, key: &str, now: i64) -> Result<()> {
        let mut sql = Sql::new(format!("SELECT id, custom_fields FROM {} WHERE workspace_id = ", ty.table()));
        sql.arg(self.ws).push(" AND custom_fields LIKE ").arg(format!("%\"{key}\"%"));
        for row in sql.query().fetch_all(&mut *conn).await? {
            let id: String = row.try_get(0)?;
            let raw: String = row.try_get(1)?;
            let mut custom: Map<String, Value> = serde_json::from_str(&raw).unwrap_or_default();
            if custom.remove(key).is_some() {
                let mut upd = Sql::new(format!("UPDATE {} SET custom_fields = ", ty.table()));
                upd.arg(Value::Object(custom).to_string())
                    .push(", version = version + 1, updated_at = ")
                    .arg(now);
                upd.push(" WHERE workspace_id = ").arg(self.ws).push(" AND id = ").arg(id);
                upd.query().execute(&mut *conn).await?;
            }
        }
        Ok(())
    }

    /// What every write does besides the row itself: the tag catalogue, the search
    /// document and the audit entry, in the same transaction.
    pub(super) async fn after_write(
        &self,
        w: &mut WriteTx,
        ty: ObjectType,
        before: Option<&Record>,
        after: Option<&Record>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        if ty.field("tags").is_some() {
            let tags = |r: Option<&Record>| r.map(|r| r.get("tags").as_list().to_vec()).unwrap_or_default();
            let (old, new) = (tags(before), tags(after));
            for tag in new.iter().filter(|t| !old.contains(t)) {
                let mut sql = insert(
                    "tags",
                    "id, workspace_id, version, created_at, updated_at, name",
                    args![new_id(), self.ws, 1i64, now, now, tag],
                );
                sql.push(" ON CONFLICT (workspace_id, name) DO NOTHING");
                sql.query().execute(&mut *w.tx).await?;
            }
            let id = before.or(after).map(|r| r.id.as_str()).unwrap_or_default();
            self.retag(&mut w.tx, ty, id, &old, &new).await?;
        }
        let search_changed = match (before, after) {
            (Some(b), Some(a)) => b.search_text(ty) != a.search_text(ty),
            _ => true,
        };
        if ty.is_searchable() && search_changed {
            let id = before.or(after).map(|r| r.id.as_str()).unwrap_or_default();
            // A new record has no document yet.
            if before.is_some() {
                let mut sql = Sql::new("DELETE FROM search_docs WHERE workspace_id = ");
                sql.arg(self.ws).push(" AND object_id = ").arg(id);
                sql.query().execute(&mut *w.tx).await?;
            }
            if let Some(after) = after {
                let (title, body) = after.search_text(ty);
                let sql = insert(
                    "search_docs",
                    "workspace_id, object_type, object_id, title, body",
                    args![self.ws, ty.name(), id, title, body],
                );
                sql.query().execute(&mut *w.tx).await?;
            }
        }
        self.note_change(w, ty, before, after, actor, now).await
    }

    /// The audit entry and events of a write, whose rows (and search document) are
    /// written.
    pub(super) async fn note_change(
        &self,
        w: &mut WriteTx,
        ty: ObjectType,
        before: Option<&Record>,
        after: Option<&Record>,
        actor: &str,
        now: i64,
    ) -> Result<()> {
        let notes = self.change_notes(ty, before, after, actor, now);
        w.add_notes(self.ws, notes, actor, now).await
    }

    /// What a write leaves besides its rows, made without the store: its audit entry
    /// and its events (their data already serialised), to be added to the transaction
    /// by [`WriteTx::add_notes`]. One event goes on the record's topic (a deal that
    /// changes pipeline also leaves the old board), and a personal one to a member
    /// newly made owner or assignee of the record.
    pub(super) fn change_notes(
        &self,
        ty: ObjectType,
        before: Option<&Record>,
        after: Option<&Record>,
        actor: &str,
        now: i64,
    ) -> ChangeNotes {
        let action = match (before, after) {
            (None, _) => "create",
            (Some(_), Some(_)) => "update",
            (Some(_), None) => "delete",
        };
        let id = before.or(after).map(|r| r.id.clone()).unwrap_or_default();
        let changes = diff(ty, before, after);
        let audit = self.audit_row(actor, action, ty.name(), &id, &changes, now);
        let kind = crate::domain::events::kind_of(ty, before, after, &changes);
        let record = after.or(before).map(|r| r.to_json(ty)).unwrap_or(Value::Null);
        let data = json!({"object_type": ty.name(), "id": id, "record": record, "changes": changes});
        let new_topic = after.and_then(|r| Topic::of(self.ws, ty, r));
        let old_topic = before.and_then(|r| Topic::of(self.ws, ty, r));
        let mut events = Vec::new();
        if let Some(old) = &old_topic {
            if new_topic.as_ref() != Some(old) {
                // Leaving this topic: for its subscribers the record is gone.
                events.push(EventNote::new(old.key(), format!("{}.deleted", ty.name()), data.clone()));
            }
        }
        if let Some(topic) = &new_topic {
            let kind = if old_topic.is_some() && old_topic.as_ref() != Some(topic) {
                format!("{}.created", ty.name())
            } else {
                kind
            };
            events.push(EventNote::new(topic.key(), kind, data));
        }
        for field in ["owner_id", "assignee_id"] {
            let Some(FieldValue::Text(user)) = after.map(|r| r.get(field).clone()) else {
                continue;
            };
            if before.map(|b| b.get(field)) == Some(&FieldValue::Text(user.clone())) {
                continue;
            }
            let topic = Topic::User {
                workspace_id: self.ws.to_string(),
                user_id: user,
            };
            let note = json!({"object_type": ty.name(), "id": id, "field": field, "record": after.map(|r| r.to_json(ty))});
            events.push(EventNote::new(topic.key(), "assigned".into(), note));
        }
        ChangeNotes { audit, events }
    }

    /// Appends an audit entry.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn audit(
        &self,
        conn: &mut AnyConnection,
        actor: &str,
        action: &str,
        object_type: &str,
        object_id: &str,
        changes: Value,
        now: i64,
    ) -> Result<()> {
        let row = self.audit_row(actor, action, object_type, object_id, &changes, now);
        insert("audit_log", super::AUDIT_COLUMNS, row).query().execute(&mut *conn).await?;
        Ok(())
    }

    /// An audit entry's values, in the order of [`super::AUDIT_COLUMNS`].
    fn audit_row(&self, actor: &str, action: &str, object_type: &str, object_id: &str, changes: &Value, now: i64) -> Vec<Arg> {
        args![
            new_id(),
            self.ws,
            1i64,
            now,
            now,
            actor,
            action,
            object_type,
            object_id,
            changes.to_string()
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::query::ListQuery;
    use crate::store::testing::fresh_store;

    #[tokio::test]
    async fn a_tag_filter_finds_the_same_records_in_order_whether_few_or_many_carry_the_tag() {
        let (store, dir, ws) = fresh_store("tags").await;
        let s = store.scoped(&ws);
        let ty = ObjectType::Contact;
        // More contacts carry "common" than a list starts from; three carry "rare".
        let many = DRIVING_TAG_AT_MOST as usize + 10;
        let mut w = store.write().await.unwrap();
        for n in 0..many {
            let mut tags = vec!["common".to_string()];
            if n % 700 == 1 {
                tags.push("rare".into());
            }
            let mut c = Changes::default();
            c.set(ty, "name", FieldValue::Text(format!("c{n}")));
            c.set(ty, "tags", FieldValue::List(tags));
            s.create_in(&mut w, ty, c, "user:u").await.unwrap();
        }
        w.commit().await.unwrap();
        let by_tag = |tag: &str, cursor: Option<String>| {
            let mut params = vec![("tags".to_string(), tag.to_string()), ("limit".into(), "50".into())];
            params.extend(cursor.map(|c| ("cursor".to_string(), c)));
            let q = ListQuery::parse(ty, &params).unwrap();
            assert_eq!(q.filters[0].op, Op::Has);
            q
        };
        let rare = s.list(ty, &by_tag("rare", None)).await.unwrap();
        let names: Vec<_> = rare
            .records
            .iter()
            .map(|r| r.text("name").unwrap_or_default().to_string())
            .collect();
        assert_eq!(names, ["c1401", "c701", "c1"], "newest first");
        let mut seen = 0;
        let mut page = s.list(ty, &by_tag("common", None)).await.unwrap();
        loop {
            assert!(page.records.iter().all(|r| r.get("tags").as_list().contains(&"common".to_string())));
            seen += page.records.len();
            let Some(next) = page.next_cursor else { break };
            page = s.list(ty, &by_tag("common", Some(next))).await.unwrap();
        }
        assert_eq!(seen, many, "every page of the common tag, each record once");

        // Untagging and retagging keep the filter right.
        let first = rare.records[2].clone();
        let mut w = store.write().await.unwrap();
        let mut c = Changes::default();
        c.set(ty, "tags", FieldValue::List(vec!["other".into()]));
        s.update_in(&mut w, ty, &first.id, None, c, "user:u").await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(s.list(ty, &by_tag("rare", None)).await.unwrap().records.len(), 2);
        assert_eq!(s.list(ty, &by_tag("other", None)).await.unwrap().records[0].id, first.id);
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
