//! Writes that span several records and must succeed or fail together.

use sqlx::Row;

use super::{now_ms, Result, Scoped, Sql, StoreError};
use crate::domain::{Changes, FieldErrors, FieldValue, ObjectType, Record};

/// The records a lead conversion produced.
#[derive(Debug)]
pub struct Conversion {
    pub lead: Record,
    pub contact: Record,
    pub company: Option<Record>,
    pub deal: Option<Record>,
}

impl Scoped<'_> {
    /// Creates a pipeline together with its stages, in the order given.
    pub async fn create_pipeline(&self, pipeline: Changes, stages: Vec<Changes>, actor: &str) -> Result<(Record, Vec<Record>)> {
        let mut w = self.begin().await?;
        let p = self.create_in(&mut w, ObjectType::Pipeline, pipeline, actor).await?;
        let mut created = Vec::with_capacity(stages.len());
        for mut s in stages {
            s.set(ObjectType::Stage, "pipeline_id", FieldValue::Text(p.id.clone()));
            created.push(self.create_in(&mut w, ObjectType::Stage, s, actor).await?);
        }
        w.commit().await?;
        Ok((p, created))
    }

    /// Turns a lead into a contact, a company (when the lead names one) and, if asked,
    /// a deal; the lead is marked converted and points at what it became.
    pub async fn convert_lead(&self, id: &str, deal: Option<Changes>, actor: &str) -> Result<Conversion> {
        let mut w = self.begin().await?;
        let c = self.convert_lead_in(&mut w, id, deal, actor).await?;
        w.commit().await?;
        Ok(c)
    }

    /// The conversion, inside `w`.
    pub async fn convert_lead_in(&self, w: &mut super::WriteTx, id: &str, deal: Option<Changes>, actor: &str) -> Result<Conversion> {
        let lead = self.fetch(&mut w.tx, ObjectType::Lead, id).await?.ok_or(StoreError::NotFound)?;
        if lead.text("status") == Some("converted") {
            return Err(StoreError::Duplicate("this lead was already converted".into()));
        }
        let copy = |from: &str| lead.get(from).clone();
        let company = match lead.text("company_name") {
            Some(name) => {
                let mut c = Changes::default();
                c.set(ObjectType::Company, "name", FieldValue::Text(name.to_string()));
                c.set(ObjectType::Company, "owner_id", copy("owner_id"));
                c.set(ObjectType::Company, "tags", copy("tags"));
                Some(self.create_in(w, ObjectType::Company, c, actor).await?)
            }
            None => None,
        };
        let mut c = Changes::default();
        let as_list = |v: FieldValue| match v {
            FieldValue::Text(s) => FieldValue::List(vec![s]),
            _ => FieldValue::List(Vec::new()),
        };
        c.set(ObjectType::Contact, "name", copy("name"));
        c.set(ObjectType::Contact, "emails", as_list(copy("email")));
        c.set(ObjectType::Contact, "phones", as_list(copy("phone")));
        c.set(ObjectType::Contact, "title", copy("title"));
        c.set(ObjectType::Contact, "owner_id", copy("owner_id"));
        c.set(ObjectType::Contact, "tags", copy("tags"));
        if let Some(co) = &company {
            c.set(ObjectType::Contact, "company_id", FieldValue::Text(co.id.clone()));
        }
        let contact = self.create_in(w, ObjectType::Contact, c, actor).await?;
        let deal = match deal {
            Some(mut d) => {
                d.set(ObjectType::Deal, "contact_id", FieldValue::Text(contact.id.clone()));
                if let Some(co) = &company {
                    d.set(ObjectType::Deal, "company_id", FieldValue::Text(co.id.clone()));
                }
                if d.get("owner_id").is_none() {
                    d.set(ObjectType::Deal, "owner_id", copy("owner_id"));
                }
                let deal = self.create_in(w, ObjectType::Deal, d, actor).await.map_err(|e| match e {
                    StoreError::Invalid(f) => {
                        StoreError::Invalid(FieldErrors(f.0.into_iter().map(|(k, v)| (format!("deal.{k}"), v)).collect()))
                    }
                    other => other,
                })?;
                Some(deal)
            }
            None => None,
        };
        // The lead's timeline goes with it: its activities are linked to what it became
        // (where they were not linked already), and stay on the lead's timeline too.
        let mut sql = Sql::new("SELECT id FROM activities WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND lead_id = ").arg(id).push(" ORDER BY id");
        let activities: Vec<String> = sql
            .query()
            .fetch_all(&mut *w.tx)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        for aid in activities {
            let Some(act) = self.fetch(&mut w.tx, ObjectType::Activity, &aid).await? else {
                continue;
            };
            let mut links = Changes::default();
            let mut linked = false;
            for (field, to) in [
                ("contact_id", Some(&contact.id)),
                ("company_id", company.as_ref().map(|c| &c.id)),
                ("deal_id", deal.as_ref().map(|d| &d.id)),
            ] {
                if let (Some(to), true) = (to, act.get(field).is_null()) {
                    links.set(ObjectType::Activity, field, FieldValue::Text(to.clone()));
                    linked = true;
                }
            }
            if linked {
                self.update_in(w, ObjectType::Activity, &aid, Some(act.version), links, actor)
                    .await?;
            }
        }
        let mut l = Changes::default();
        l.set(ObjectType::Lead, "status", FieldValue::Text("converted".into()));
        l.set(ObjectType::Lead, "converted_contact_id", FieldValue::Text(contact.id.clone()));
        if let Some(co) = &company {
            l.set(ObjectType::Lead, "converted_company_id", FieldValue::Text(co.id.clone()));
        }
        if let Some(d) = &deal {
            l.set(ObjectType::Lead, "converted_deal_id", FieldValue::Text(d.id.clone()));
        }
        l.set(ObjectType::Lead, "converted_at", FieldValue::Int(now_ms()));
        let lead = self.update_in(w, ObjectType::Lead, id, Some(lead.version), l, actor).await?;
        Ok(Conversion {
            lead,
            contact,
            company,
            deal,
        })
    }
}
