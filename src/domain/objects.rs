//! The CRM's object types and their fields. Each type is described once here; the
//! store, the REST routes, filters, sorting, search, CSV import and export all read the
//! same description, so a field added here is everywhere at once.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::access::Resource;
use super::custom_fields::CustomFieldDef;
use super::fields::{FieldErrors, FieldKind, FieldValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    Contact,
    Company,
    Lead,
    Pipeline,
    Stage,
    Deal,
    Activity,
    Tag,
    Team,
    CustomField,
    AuditEntry,
    Inbox,
    Conversation,
    Message,
    CannedResponse,
    Macro,
    SlaPolicy,
}

/// Who may write a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writable {
    /// Set on create and changed by updates.
    Always,
    /// Set on create, fixed afterwards (e.g. an activity's kind).
    OnCreate,
    /// Only the server writes it (e.g. a deal's ordering key).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchRole {
    None,
    Title,
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    None,
    Text(&'static str),
    Int(i64),
}

#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: FieldKind,
    pub required: bool,
    pub writable: Writable,
    pub sortable: bool,
    pub search: SearchRole,
    pub default: Default,
    /// Added to a refused value's message: how to write the value right.
    pub hint: Option<&'static str>,
}

const fn field(name: &'static str, kind: FieldKind) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required: false,
        writable: Writable::Always,
        sortable: false,
        search: SearchRole::None,
        default: Default::None,
        hint: None,
    }
}

impl FieldSpec {
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn sortable(mut self) -> Self {
        self.sortable = true;
        self
    }
    const fn title(mut self) -> Self {
        self.search = SearchRole::Title;
        self
    }
    const fn body(mut self) -> Self {
        self.search = SearchRole::Body;
        self
    }
    const fn on_create(mut self) -> Self {
        self.writable = Writable::OnCreate;
        self
    }
    const fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
    const fn server(mut self) -> Self {
        self.writable = Writable::Never;
        self
    }
    const fn default(mut self, d: Default) -> Self {
        self.default = d;
        self
    }
}

const NAME: FieldKind = FieldKind::Text { max: 200 };
const SHORT: FieldKind = FieldKind::Text { max: 100 };
/// Amounts are integer minor units (cents); the bound keeps sums far from overflow.
const AMOUNT: FieldKind = FieldKind::Integer {
    min: 0,
    max: 1_000_000_000_000_000,
};

pub const COMPANY_SIZES: &[&str] = &["1-10", "11-50", "51-200", "201-1000", "1001-5000", "5001+"];
pub const LEAD_STATUSES: &[&str] = &["new", "contacted", "qualified", "disqualified", "converted"];
pub const STAGE_KINDS: &[&str] = &["open", "won", "lost"];
pub const ACTIVITY_KINDS: &[&str] = &["note", "task", "call", "meeting", "email"];
pub const CUSTOM_FIELD_KINDS: &[&str] = &["text", "number", "date", "bool", "select", "multi_select", "url", "email"];
pub const CUSTOM_FIELD_OBJECTS: &[&str] = &["contact", "company", "lead", "deal", "conversation"];
pub const AUDIT_ACTIONS: &[&str] = &["create", "update", "delete"];
/// How an inbox's conversations reach it: `api`, posted by an integrator or a chat
/// widget with the inbox's token; `email`, synced from a mailbox over IMAP and
/// answered over SMTP.
pub const INBOX_CHANNELS: &[&str] = &["api", "email"];
/// How an e-mail inbox's sync is doing, said in `channel_detail` in words.
pub const CHANNEL_STATUSES: &[&str] = &["connecting", "importing", "syncing", "failing"];
pub const CONVERSATION_STATUSES: &[&str] = &["open", "pending", "snoozed", "resolved"];
/// The statuses of a conversation still to be worked.
pub const UNRESOLVED: [&str; 3] = ["open", "pending", "snoozed"];
pub const PRIORITIES: &[&str] = &["none", "low", "medium", "high", "urgent"];
pub const MESSAGE_DIRECTIONS: &[&str] = &["incoming", "outgoing"];
/// `message` goes to the customer (or came from them); a `note` is private to the
/// agents; an `activity` is a line the server writes ("Ann assigned this to Bob").
pub const MESSAGE_KINDS: &[&str] = &["message", "note", "activity"];
/// Where an outgoing message is on its way to the customer: `pending` until the
/// channel takes it, then `sent`, `delivered`, `read`, or `failed`.
pub const DELIVERY_STATUSES: &[&str] = &["pending", "sent", "delivered", "read", "failed"];

static CONTACT: &[FieldSpec] = &[
    field("name", NAME).required().sortable().title(),
    field("emails", FieldKind::Emails).body(),
    field("phones", FieldKind::Phones).body(),
    field("title", NAME).body(),
    field("company_id", FieldKind::Ref(ObjectType::Company)),
    field("owner_id", FieldKind::Member),
    field("tags", FieldKind::Labels).body(),
];

static COMPANY: &[FieldSpec] = &[
    field("name", NAME).required().sortable().title(),
    field("domain", FieldKind::Domain).sortable().body(),
    field("industry", SHORT).sortable().body(),
    field("size", FieldKind::Choice(COMPANY_SIZES)),
    field("parent_id", FieldKind::Ref(ObjectType::Company)),
    field("owner_id", FieldKind::Member),
    field("tags", FieldKind::Labels).body(),
];

static LEAD: &[FieldSpec] = &[
    field("name", NAME).required().sortable().title(),
    field("email", FieldKind::Email).sortable().body(),
    field("phone", FieldKind::Phone).body(),
    field("company_name", NAME).sortable().body(),
    field("title", NAME).body(),
    field("source", SHORT),
    field("status", FieldKind::Choice(LEAD_STATUSES))
        .required()
        .default(Default::Text("new")),
    field("owner_id", FieldKind::Member),
    field("tags", FieldKind::Labels).body(),
    field("converted_contact_id", FieldKind::Ref(ObjectType::Contact)).server(),
    field("converted_company_id", FieldKind::Ref(ObjectType::Company)).server(),
    field("converted_deal_id", FieldKind::Ref(ObjectType::Deal)).server(),
    field("converted_at", FieldKind::Timestamp).server().sortable(),
];

static PIPELINE: &[FieldSpec] = &[field("name", NAME).required().sortable()];

static STAGE: &[FieldSpec] = &[
    field("pipeline_id", FieldKind::Ref(ObjectType::Pipeline)).required().on_create(),
    field("name", NAME).required().sortable(),
    field("probability", FieldKind::Integer { min: 0, max: 100 })
        .required()
        .default(Default::Int(0)),
    field("kind", FieldKind::Choice(STAGE_KINDS))
        .required()
        .default(Default::Text("open")),
    // Columns are shown by position (ties by id); a new stage goes last unless given
    // one, and reordering is setting positions.
    field("position", FieldKind::Integer { min: 0, max: 1000 }).required().sortable(),
];

static DEAL: &[FieldSpec] = &[
    field("title", NAME).required().sortable().title(),
    field("amount", AMOUNT)
        .sortable()
        .hint("amounts are whole minor units (cents): 4200000 for 42,000.00"),
    field("currency", FieldKind::Currency),
    field("pipeline_id", FieldKind::Ref(ObjectType::Pipeline)).required(),
    // Resolved by the store to the pipeline's first stage when omitted.
    field("stage_id", FieldKind::Ref(ObjectType::Stage)),
    field("rank", FieldKind::Text { max: 1000 }).server().sortable(),
    field("owner_id", FieldKind::Member),
    field("contact_id", FieldKind::Ref(ObjectType::Contact)),
    field("company_id", FieldKind::Ref(ObjectType::Company)),
    field("expected_close_date", FieldKind::Date).sortable(),
    field("tags", FieldKind::Labels).body(),
];

static ACTIVITY: &[FieldSpec] = &[
    field("kind", FieldKind::Choice(ACTIVITY_KINDS)).required().on_create(),
    field("subject", NAME).sortable().title(),
    field("body", FieldKind::LongText).body(),
    field("contact_id", FieldKind::Ref(ObjectType::Contact)),
    field("company_id", FieldKind::Ref(ObjectType::Company)),
    field("deal_id", FieldKind::Ref(ObjectType::Deal)),
    field("lead_id", FieldKind::Ref(ObjectType::Lead)),
    field("occurred_at", FieldKind::Timestamp).sortable(),
    field("due_date", FieldKind::Date).sortable(),
    field("assignee_id", FieldKind::Member),
    field("done", FieldKind::Bool).required().default(Default::Int(0)),
    field("duration_minutes", FieldKind::Integer { min: 0, max: 100_000 }),
];

static TAG: &[FieldSpec] = &[
    field("name", FieldKind::Label).required().sortable().on_create(),
    field("color", FieldKind::Text { max: 20 }),
];

static TEAM: &[FieldSpec] = &[
    field("name", NAME).required().sortable(),
    field("description", FieldKind::Text { max: 1000 }),
    field("member_ids", FieldKind::Members),
];

static CUSTOM_FIELD: &[FieldSpec] = &[
    field("object_type", FieldKind::Choice(CUSTOM_FIELD_OBJECTS)).required().on_create(),
    field("key", FieldKind::Text { max: 40 }).required().sortable().on_create(),
    field("label", NAME).required(),
    field("kind", FieldKind::Choice(CUSTOM_FIELD_KINDS)).required().on_create(),
    field("options", FieldKind::Labels),
];

static AUDIT_ENTRY: &[FieldSpec] = &[
    field("actor_id", FieldKind::Text { max: 100 }).server(),
    field("action", FieldKind::Choice(AUDIT_ACTIONS)).server(),
    field("object_type", FieldKind::Text { max: 40 }).server(),
    field("object_id", FieldKind::Text { max: 100 }).server(),
    field("changes", FieldKind::Json).server(),
];

static INBOX: &[FieldSpec] = &[
    field("name", NAME).required().sortable(),
    field("channel", FieldKind::Choice(INBOX_CHANNELS))
        .required()
        .on_create()
        .default(Default::Text("api")),
    field("team_id", FieldKind::Ref(ObjectType::Team)),
    // An e-mail inbox's sync, as its worker last said: the status and, in words, its
    // progress or why it fails.
    field("channel_status", FieldKind::Choice(CHANNEL_STATUSES)).server(),
    field("channel_detail", FieldKind::Text { max: 1000 }).server(),
    field("auto_assign", FieldKind::Bool).required().default(Default::Int(0)),
    // At most this many open conversations per agent when assigning automatically;
    // none means no limit.
    field("max_open_per_agent", FieldKind::Integer { min: 1, max: 10_000 }),
    field("time_zone", FieldKind::Text { max: 64 })
        .required()
        .default(Default::Text("UTC"))
        .hint("an IANA time zone such as Europe/Paris"),
    // {"mon": [["09:00", "17:00"]], …}; none: always open.
    field("business_hours", FieldKind::Json),
    // ["2026-12-25", …]: closed all day.
    field("holidays", FieldKind::Json),
    field("sla_policy_id", FieldKind::Ref(ObjectType::SlaPolicy)),
];

static CONVERSATION: &[FieldSpec] = &[
    field("inbox_id", FieldKind::Ref(ObjectType::Inbox)).required().on_create(),
    field("contact_id", FieldKind::Ref(ObjectType::Contact)).required(),
    field("subject", NAME).sortable().title(),
    field("status", FieldKind::Choice(CONVERSATION_STATUSES))
        .required()
        .default(Default::Text("open")),
    field("snoozed_until", FieldKind::Timestamp)
        .sortable()
        .hint("a snoozed conversation opens again at this time, RFC 3339"),
    field("priority", FieldKind::Choice(PRIORITIES))
        .required()
        .sortable()
        .default(Default::Text("none")),
    field("assignee_id", FieldKind::Member),
    field("team_id", FieldKind::Ref(ObjectType::Team)),
    field("tags", FieldKind::Labels).body(),
    // The workspace's running number (#1042), for people to name it by.
    field("number", FieldKind::Integer { min: 1, max: i64::MAX }).server().sortable(),
    field("first_reply_at", FieldKind::Timestamp).server().sortable(),
    // When it was opened, until its first message; never empty, so lists sorted by
    // it walk an index.
    field("last_message_at", FieldKind::Timestamp).required().server().sortable(),
    // Since when the customer has waited for an answer; none when they are not waiting.
    field("waiting_since", FieldKind::Timestamp).server().sortable(),
    // The inbox's SLA policy when the conversation opened, and the deadlines it set
    // that are still to be met.
    field("sla_policy_id", FieldKind::Ref(ObjectType::SlaPolicy)).server(),
    field("first_response_due_at", FieldKind::Timestamp).server().sortable(),
    field("next_response_due_at", FieldKind::Timestamp).server().sortable(),
    field("resolution_due_at", FieldKind::Timestamp).server().sortable(),
    // A deadline was missed.
    field("sla_breached", FieldKind::Bool).server().required().default(Default::Int(0)),
];

/// SLA targets, in minutes of the inbox's business hours.
const TARGET: FieldKind = FieldKind::Integer { min: 1, max: 525_600 };

static SLA_POLICY: &[FieldSpec] = &[
    field("name", NAME).required().sortable(),
    field("first_response_minutes", TARGET),
    field("next_response_minutes", TARGET),
    field("resolution_minutes", TARGET),
    // Count only the inbox's business hours (else every hour).
    field("business_hours_only", FieldKind::Bool).required().default(Default::Int(1)),
];

static MESSAGE: &[FieldSpec] = &[
    field("conversation_id", FieldKind::Ref(ObjectType::Conversation))
        .required()
        .on_create(),
    field("inbox_id", FieldKind::Ref(ObjectType::Inbox)).server(),
    field("direction", FieldKind::Choice(MESSAGE_DIRECTIONS)).server(),
    field("kind", FieldKind::Choice(MESSAGE_KINDS))
        .required()
        .on_create()
        .default(Default::Text("message")),
    // Who wrote it: `user:<id>`, `api_key:<id>` or `contact:<id>`.
    field("author", FieldKind::Text { max: 100 }).server(),
    field("text", FieldKind::LongText).required().on_create().title(),
    // Rich text, kept only as the allow-list sanitiser leaves it.
    field("html", FieldKind::LongText).on_create(),
    // [{"name", "content_type", "size", "url"?}]: what the message carries, described.
    field("attachments", FieldKind::Json).on_create(),
    field("delivery_status", FieldKind::Choice(DELIVERY_STATUSES)).server(),
    // Why delivery failed, in the receiving server's words.
    field("delivery_error", FieldKind::Text { max: 1000 }).server(),
    // An e-mail's quoted history and signature, kept apart from its new text.
    field("quoted", FieldKind::LongText).server(),
    // Where answers to an e-mail go: its Reply-To, else its sender.
    field("reply_to", FieldKind::Text { max: 320 }).server(),
    // The channel's own id of the message, unique in the inbox: the same id posted
    // twice is one message.
    field("external_id", FieldKind::Text { max: 200 }).on_create(),
    // Members named in a note, told on their personal topic.
    field("mentions", FieldKind::Members).on_create(),
];

static CANNED_RESPONSE: &[FieldSpec] = &[
    field("shortcode", FieldKind::Text { max: 40 })
        .required()
        .sortable()
        .title()
        .hint("what an agent types after '/': a-z, 0-9, - and _"),
    field("text", FieldKind::LongText)
        .required()
        .body()
        .hint("variables: {{contact.name}}, {{contact.email}}, {{agent.name}}, {{conversation.number}}, {{conversation.subject}}, {{inbox.name}}, {{workspace.name}}"),
];

static MACRO: &[FieldSpec] = &[
    field("name", NAME).required().sortable(),
    // A list of {"type", "value"}: set_status, set_priority, assign, set_team,
    // add_labels, remove_labels, add_note, send_canned_response.
    field("actions", FieldKind::Json).required(),
];

impl ObjectType {
    pub const ALL: [ObjectType; 17] = [
        ObjectType::Contact,
        ObjectType::Company,
        ObjectType::Lead,
        ObjectType::Pipeline,
        ObjectType::Stage,
        ObjectType::Deal,
        ObjectType::Activity,
        ObjectType::Tag,
        ObjectType::Team,
        ObjectType::CustomField,
        ObjectType::AuditEntry,
        ObjectType::Inbox,
        ObjectType::Conversation,
        ObjectType::Message,
        ObjectType::CannedResponse,
        ObjectType::Macro,
        ObjectType::SlaPolicy,
    ];

    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            ObjectType::Contact => CONTACT,
            ObjectType::Company => COMPANY,
            ObjectType::Lead => LEAD,
            ObjectType::Pipeline => PIPELINE,
            ObjectType::Stage => STAGE,
            ObjectType::Deal => DEAL,
            ObjectType::Activity => ACTIVITY,
            ObjectType::Tag => TAG,
            ObjectType::Team => TEAM,
            ObjectType::CustomField => CUSTOM_FIELD,
            ObjectType::AuditEntry => AUDIT_ENTRY,
            ObjectType::Inbox => INBOX,
            ObjectType::Conversation => CONVERSATION,
            ObjectType::Message => MESSAGE,
            ObjectType::CannedResponse => CANNED_RESPONSE,
            ObjectType::Macro => MACRO,
            ObjectType::SlaPolicy => SLA_POLICY,
        }
    }

    pub fn field(self, name: &str) -> Option<&'static FieldSpec> {
        self.fields().iter().find(|f| f.name == name)
    }

    /// Singular name, used in events, audit entries and search results.
    pub fn name(self) -> &'static str {
        match self {
            ObjectType::Contact => "contact",
            ObjectType::Company => "company",
            ObjectType::Lead => "lead",
            ObjectType::Pipeline => "pipeline",
            ObjectType::Stage => "stage",
            ObjectType::Deal => "deal",
            ObjectType::Activity => "activity",
            ObjectType::Tag => "tag",
            ObjectType::Team => "team",
            ObjectType::CustomField => "custom_field",
            ObjectType::AuditEntry => "audit_entry",
            ObjectType::Inbox => "inbox",
            ObjectType::Conversation => "conversation",
            ObjectType::Message => "message",
            ObjectType::CannedResponse => "canned_response",
            ObjectType::Macro => "macro",
            ObjectType::SlaPolicy => "sla_policy",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn table(self) -> &'static str {
        match self {
            ObjectType::Contact => "contacts",
            ObjectType::Company => "companies",
            ObjectType::Lead => "leads",
            ObjectType::Pipeline => "pipelines",
            ObjectType::Stage => "stages",
            ObjectType::Deal => "deals",
            ObjectType::Activity => "activities",
            ObjectType::Tag => "tags",
            ObjectType::Team => "teams",
            ObjectType::CustomField => "custom_field_defs",
            ObjectType::AuditEntry => "audit_log",
            ObjectType::Inbox => "inboxes",
            ObjectType::Conversation => "conversations",
            ObjectType::Message => "messages",
            ObjectType::CannedResponse => "canned_responses",
            ObjectType::Macro => "macros",
            ObjectType::SlaPolicy => "sla_policies",
        }
    }

    pub fn resource(self) -> Resource {
        match self {
            ObjectType::Contact => Resource::Contacts,
            ObjectType::Company => Resource::Companies,
            ObjectType::Lead => Resource::Leads,
            ObjectType::Pipeline | ObjectType::Stage => Resource::Pipelines,
            ObjectType::Deal => Resource::Deals,
            ObjectType::Activity => Resource::Activities,
            ObjectType::Tag => Resource::Tags,
            ObjectType::Team => Resource::Teams,
            ObjectType::CustomField => Resource::CustomFields,
            ObjectType::AuditEntry => Resource::AuditLog,
            ObjectType::Inbox | ObjectType::CannedResponse | ObjectType::Macro | ObjectType::SlaPolicy => Resource::Inboxes,
            ObjectType::Conversation | ObjectType::Message => Resource::Conversations,
        }
    }

    pub fn has_custom_fields(self) -> bool {
        matches!(
            self,
            ObjectType::Contact | ObjectType::Company | ObjectType::Lead | ObjectType::Deal | ObjectType::Conversation
        )
    }

    /// The field lists are ordered by, newest first, when no `sort` is given (else
    /// `created_at`): conversations by their last activity.
    pub fn default_order(self) -> Option<&'static str> {
        (self == ObjectType::Conversation).then_some("last_message_at")
    }

    /// Types moved in and out in bulk as CSV.
    pub fn is_importable(self) -> bool {
        matches!(
            self,
            ObjectType::Contact | ObjectType::Company | ObjectType::Lead | ObjectType::Deal
        )
    }

    pub fn is_searchable(self) -> bool {
        self.fields().iter().any(|f| f.search == SearchRole::Title)
    }

    /// Says a body's field is not one of this type's, naming the closest one (a typo)
    /// or else every field a body may set.
    pub fn unknown_field(self, key: &str) -> String {
        let mut settable: Vec<&str> = self
            .fields()
            .iter()
            .filter(|f| f.writable != Writable::Never)
            .map(|f| f.name)
            .collect();
        if self.has_custom_fields() {
            settable.push("custom_fields");
        }
        match super::fields::closest(key, settable.iter().copied()) {
            Some(near) => format!("unknown field; did you mean '{near}'?"),
            None => {
                let noun = self.name().replace('_', " ");
                let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                format!("unknown field; {article} {noun} has {}", settable.join(", "))
            }
        }
    }

    /// Parses a create or update body. `defs` are the workspace's custom field
    /// definitions for this type. Every problem is reported, not just the first.
    pub fn parse_input(self, body: &Map<String, Value>, create: bool, defs: &[CustomFieldDef]) -> Result<Changes, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut changes = Changes::default();
        for (key, value) in body {
            if key == "custom_fields" && self.has_custom_fields() {
                match value {
                    Value::Object(map) => {
                        for (k, v) in map {
                            match defs.iter().find(|d| &d.key == k) {
                                None => errors.add(format!("custom_fields.{k}"), "no such custom field"),
                                Some(def) => match def.parse_value(v) {
                                    Ok(v) => {
                                        changes.custom.insert(k.clone(), v);
                                    }
                                    Err(e) => errors.add(format!("custom_fields.{k}"), e),
                                },
                            }
                        }
                    }
                    _ => errors.add("custom_fields", "expected an object"),
                }
                continue;
            }
            let Some(spec) = self.field(key) else {
                errors.add(key.clone(), self.unknown_field(key));
                continue;
            };
            match (spec.writable, create) {
                (Writable::Never, _) => {
                    errors.add(key.clone(), "is set by the server");
                    continue;
                }
                (Writable::OnCreate, false) => {
                    errors.add(key.clone(), "cannot be changed after creation");
                    continue;
                }
                _ => {}
            }
            match spec.kind.parse_json(value) {
                Ok(v) if v.is_null() && spec.required && !create => errors.add(key.clone(), "is required and cannot be cleared"),
                Ok(v) => changes.values.push((spec, v)),
                Err(e) => match spec.hint {
                    Some(hint) => errors.add(key.clone(), format!("{e}; {hint}")),
                    None => errors.add(key.clone(), e),
                },
            }
        }
        if create {
            for spec in self.fields() {
                let given = changes.values.iter().position(|(s, _)| s.name == spec.name);
                let is_null = given.map(|i| changes.values[i].1.is_null()).unwrap_or(true);
                if !is_null {
                    continue;
                }
                let default = match spec.default {
                    Default::None => None,
                    Default::Text(t) => Some(FieldValue::Text(t.to_string())),
                    Default::Int(n) if spec.kind == FieldKind::Bool => Some(FieldValue::Bool(n != 0)),
                    Default::Int(n) => Some(FieldValue::Int(n)),
                };
                match (default, given) {
                    (Some(d), Some(i)) => changes.values[i].1 = d,
                    (Some(d), None) => changes.values.push((spec, d)),
                    (None, _) if spec.required && spec.writable != Writable::Never && !self.resolved_by_store(spec.name) => {
                        errors.add(spec.name, "is required")
                    }
                    _ => {}
                }
            }
        }
        errors.into_result().map(|()| changes)
    }

    /// Required fields the store fills in when the client leaves them out.
    pub fn resolved_by_store(self, field: &str) -> bool {
        matches!((self, field), (ObjectType::Stage, "pipeline_id" | "position"))
    }

    /// Rules across fields, checked on the record as it would be after a write.
    pub fn check(self, values: &BTreeMap<&'static str, FieldValue>) -> Result<(), FieldErrors> {
        let mut errors = FieldErrors::default();
        let get = |name: &str| values.get(name).cloned().unwrap_or(FieldValue::Null);
        match self {
            ObjectType::Deal if !get("amount").is_null() && get("currency").is_null() => {
                errors.add("currency", "is required when an amount is set");
            }
            ObjectType::Activity if ["contact_id", "company_id", "deal_id", "lead_id"].iter().all(|f| get(f).is_null()) => {
                errors.add("contact_id", "an activity must be linked to a contact, a company, a deal or a lead");
            }
            ObjectType::Inbox => {
                let json = |name: &str| {
                    get(name)
                        .as_text()
                        .and_then(|t| serde_json::from_str::<Value>(t).ok())
                        .unwrap_or(Value::Null)
                };
                let zone = get("time_zone");
                if let Err((field, e)) =
                    super::hours::BusinessHours::parse(zone.as_text().unwrap_or("UTC"), &json("business_hours"), &json("holidays"))
                {
                    errors.add(field, e);
                }
            }
            ObjectType::SlaPolicy
                if ["first_response_minutes", "next_response_minutes", "resolution_minutes"]
                    .iter()
                    .all(|f| get(f).is_null()) =>
            {
                errors.add("first_response_minutes", "a policy sets at least one target");
            }
            ObjectType::CannedResponse => {
                if let Err(e) = super::inbox::check_shortcode(get("shortcode").as_text().unwrap_or("")) {
                    errors.add("shortcode", e);
                }
                if let Err(e) = super::inbox::variables(get("text").as_text().unwrap_or("")) {
                    errors.add("text", e);
                }
            }
            ObjectType::Macro => {
                let actions = get("actions");
                let parsed = actions.as_text().map(serde_json::from_str::<Value>);
                match parsed {
                    Some(Ok(v)) => {
                        if let Err(e) = super::inbox::parse_actions(&v) {
                            errors.add("actions", e);
                        }
                    }
                    _ => errors.add("actions", "expected a list of actions"),
                }
            }
            ObjectType::Message => {
                let attachments = get("attachments");
                if let Some(text) = attachments.as_text() {
                    match serde_json::from_str::<Value>(text)
                        .map_err(|e| e.to_string())
                        .and_then(|v| super::inbox::check_attachments(&v))
                    {
                        Ok(()) => {}
                        Err(e) => errors.add("attachments", e),
                    }
                }
            }
            ObjectType::Conversation => {
                let snoozed = get("status").as_text() == Some("snoozed");
                if snoozed && get("snoozed_until").is_null() {
                    errors.add("snoozed_until", "is required to snooze: when the conversation opens again");
                }
                if !snoozed && !get("snoozed_until").is_null() {
                    errors.add("snoozed_until", "is only set on a snoozed conversation");
                }
            }
            ObjectType::CustomField => {
                let key = get("key");
                let key = key.as_text().unwrap_or("");
                let key_ok = key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !key_ok {
                    errors.add("key", "must start with a lowercase letter and use only a-z, 0-9 and _");
                }
                let kind = get("kind");
                let needs_options = matches!(kind.as_text(), Some("select") | Some("multi_select"));
                if needs_options && get("options").as_list().is_empty() {
                    errors.add("options", "a select field needs at least one option");
                }
            }
            _ => {}
        }
        errors.into_result()
    }
}

/// A validated set of field assignments for a create or update.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub values: Vec<(&'static FieldSpec, FieldValue)>,
    /// Custom field values; `null` removes a value.
    pub custom: Map<String, Value>,
}

impl Changes {
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.values.iter().find(|(s, _)| s.name == name).map(|(_, v)| v)
    }

    /// The changes between nodes, already validated: `{"values": {field: value},
    /// "custom": {key: value}}`.
    pub fn to_wire(&self) -> Value {
        let values: Map<String, Value> = self
            .values
            .iter()
            .map(|(spec, v)| {
                let v = match v {
                    FieldValue::Null => Value::Null,
                    FieldValue::Text(s) => Value::from(s.as_str()),
                    FieldValue::Int(i) => Value::from(*i),
                    FieldValue::Bool(b) => Value::from(*b),
                    FieldValue::List(items) => Value::from(items.clone()),
                };
                (spec.name.to_string(), v)
            })
            .collect();
        serde_json::json!({"values": values, "custom": self.custom})
    }

    /// Reads `to_wire`'s form back for `ty`; `None` when it names a field `ty` lacks.
    pub fn from_wire(ty: ObjectType, v: &Value) -> Option<Changes> {
        let mut changes = Changes {
            custom: v["custom"].as_object().cloned().unwrap_or_default(),
            ..Changes::default()
        };
        for (name, value) in v["values"].as_object()? {
            let spec = ty.field(name)?;
            let value = match value {
                Value::Null => FieldValue::Null,
                Value::String(s) => FieldValue::Text(s.clone()),
                Value::Bool(b) => FieldValue::Bool(*b),
                Value::Number(n) => FieldValue::Int(n.as_i64()?),
                Value::Array(items) => FieldValue::List(items.iter().map(|i| i.as_str().map(str::to_string)).collect::<Option<_>>()?),
                Value::Object(_) => return None,
            };
            changes.values.push((spec, value));
        }
        Some(changes)
    }

    pub fn set(&mut self, ty: ObjectType, name: &str, value: FieldValue) {
        if let Some(slot) = self.values.iter_mut().find(|(s, _)| s.name == name) {
            slot.1 = value;
        } else if let Some(spec) = ty.field(name) {
            self.values.push((spec, value));
        }
    }
}

/// One stored record of any type.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub values: BTreeMap<&'static str, FieldValue>,
    pub custom: Map<String, Value>,
}

impl Record {
    pub fn get(&self, name: &str) -> &FieldValue {
        static NULL: FieldValue = FieldValue::Null;
        self.values.get(name).unwrap_or(&NULL)
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).as_text()
    }

    /// The record after applying `changes`, as the store would hold it.
    pub fn merged(&self, changes: &Changes) -> (BTreeMap<&'static str, FieldValue>, Map<String, Value>) {
        let mut values = self.values.clone();
        for (spec, v) in &changes.values {
            values.insert(spec.name, v.clone());
        }
        let mut custom = self.custom.clone();
        for (k, v) in &changes.custom {
            if v.is_null() {
                custom.remove(k);
            } else {
                custom.insert(k.clone(), v.clone());
            }
        }
        (values, custom)
    }

    pub fn to_json(&self, ty: ObjectType) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), Value::String(self.id.clone()));
        for spec in ty.fields() {
            out.insert(spec.name.into(), self.get(spec.name).to_json(spec.kind));
        }
        if ty.has_custom_fields() {
            out.insert("custom_fields".into(), Value::Object(self.custom.clone()));
        }
        out.insert("version".into(), Value::from(self.version));
        let ts = |ms| Value::String(super::fields::format_timestamp(ms));
        out.insert("created_at".into(), ts(self.created_at));
        if ty != ObjectType::AuditEntry {
            out.insert("updated_at".into(), ts(self.updated_at));
        }
        Value::Object(out)
    }

    /// Title and body text for the full-text index.
    pub fn search_text(&self, ty: ObjectType) -> (String, String) {
        let mut title = Vec::new();
        let mut body = Vec::new();
        for spec in ty.fields() {
            let target = match spec.search {
                SearchRole::Title => &mut title,
                SearchRole::Body => &mut body,
                SearchRole::None => continue,
            };
            match self.get(spec.name) {
                FieldValue::Text(s) => target.push(s.clone()),
                FieldValue::List(items) => target.extend(items.iter().cloned()),
                _ => {}
            }
        }
        for v in self.custom.values() {
            if let Some(s) = v.as_str() {
                body.push(s.to_string());
            }
        }
        // Punctuation separates words for both engines alike: PostgreSQL would
        // otherwise keep "ada@example.com" as one token while SQLite splits it.
        let words = |parts: Vec<String>| -> String { parts.join(" ").chars().map(|c| if c.is_alphanumeric() { c } else { ' ' }).collect() };
        (words(title), words(body))
    }
}

/// The JSON keys of the change between two versions of a record: `{field: [before, after]}`.
pub fn diff(ty: ObjectType, before: Option<&Record>, after: Option<&Record>) -> Value {
    let mut out = Map::new();
    let null = FieldValue::Null;
    for spec in ty.fields() {
        // Compared in wire form, where an absent list and an empty one are the same.
        let b = before.map(|r| r.get(spec.name)).unwrap_or(&null).to_json(spec.kind);
        let a = after.map(|r| r.get(spec.name)).unwrap_or(&null).to_json(spec.kind);
        if b != a {
            out.insert(spec.name.into(), Value::Array(vec![b, a]));
        }
    }
    if ty.has_custom_fields() {
        let empty = Map::new();
        let bc = before.map(|r| &r.custom).unwrap_or(&empty);
        let ac = after.map(|r| &r.custom).unwrap_or(&empty);
        let keys: std::collections::BTreeSet<&String> = bc.keys().chain(ac.keys()).collect();
        for k in keys {
            let (b, a) = (bc.get(k).cloned().unwrap_or(Value::Null), ac.get(k).cloned().unwrap_or(Value::Null));
            if b != a {
                out.insert(format!("custom_fields.{k}"), Value::Array(vec![b, a]));
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_create_reports_every_problem_at_once() {
        let err = ObjectType::Contact
            .parse_input(&obj(json!({"emails": ["bad"], "nickname": "x"})), true, &[])
            .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err:?}");
        assert!(err.0.contains_key("name"));
        assert!(err.0.contains_key("nickname"));
        assert!(err.0.contains_key("emails"));
    }

    #[test]
    fn defaults_fill_in_missing_fields_on_create_only() {
        let c = ObjectType::Lead.parse_input(&obj(json!({"name": "Ada"})), true, &[]).unwrap();
        assert_eq!(c.get("status"), Some(&FieldValue::Text("new".into())));
        let u = ObjectType::Lead.parse_input(&obj(json!({"name": "Ada"})), false, &[]).unwrap();
        assert_eq!(u.get("status"), None);
    }

    #[test]
    fn server_and_create_only_fields_are_protected() {
        let e = ObjectType::Deal.parse_input(&obj(json!({"rank": "a"})), false, &[]).unwrap_err();
        assert!(e.0.contains_key("rank"));
        let e = ObjectType::Activity
            .parse_input(&obj(json!({"kind": "call"})), false, &[])
            .unwrap_err();
        assert!(e.0.contains_key("kind"));
    }

    #[test]
    fn an_activity_must_be_linked_to_something() {
        let mut v = BTreeMap::new();
        v.insert("kind", FieldValue::Text("note".into()));
        assert!(ObjectType::Activity.check(&v).is_err());
        v.insert("deal_id", FieldValue::Text("x".into()));
        assert!(ObjectType::Activity.check(&v).is_ok());
    }
}
