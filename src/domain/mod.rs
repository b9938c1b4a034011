//! Pure types and rules of the CRM: validated values, object descriptions, access
//! rules and ordering keys. Nothing here performs I/O or knows about HTTP or SQL.

pub mod access;
pub mod custom_fields;
pub mod email;
pub mod events;
pub mod fields;
pub mod hours;
pub mod inbox;
pub mod mail;
pub mod objects;
pub mod query;
pub mod rank;

pub use access::{Access, AccessChange, Resource, Role, Scope};
pub use custom_fields::CustomFieldDef;
pub use email::EmailAddress;
pub use events::{Event, Topic};
pub use fields::{FieldErrors, FieldKind, FieldValue};
pub use objects::{Changes, FieldSpec, ObjectType, Record};
pub use query::ListQuery;
