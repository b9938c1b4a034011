//! Who may do what: workspace roles, API-key scopes and the resource families they
//! guard. Every route names the permission it needs; nothing else decides access.

use std::fmt;
use std::str::FromStr;

/// A change to who may act, which every open connection it concerns applies at once:
/// its commands are checked against the new rights, the topics it may no longer read
/// are ended, and a credential that no longer works closes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccessChange {
    /// A member's role changed, or they left the workspace.
    Member { workspace_id: String, user_id: String },
    /// An API key was revoked.
    ApiKey { workspace_id: String, key_id: String },
    /// A sign-in session ended (logout, or a refresh token presented twice).
    Session {
        workspace_id: String,
        user_id: String,
        session_id: String,
    },
}

impl AccessChange {
    pub fn workspace_id(&self) -> &str {
        match self {
            AccessChange::Member { workspace_id, .. }
            | AccessChange::ApiKey { workspace_id, .. }
            | AccessChange::Session { workspace_id, .. } => workspace_id,
        }
    }
}

/// A member's role in a workspace, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Owner,
    Admin,
    Member,
    Agent,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Owner, Role::Admin, Role::Member, Role::Agent, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Agent => "agent",
            Role::Viewer => "viewer",
        }
    }

    /// The permission table. Viewers read everything a member may read; agents (support)
    /// work people and conversations but not the sales pipeline; members work all CRM
    /// records and conversations; admins also shape the workspace (pipelines, inboxes,
    /// custom fields, members, keys, audit, bulk export); owners additionally manage
    /// other owners.
    pub fn allows(self, resource: Resource, access: Access) -> bool {
        use Resource::*;
        match (self, access) {
            (Role::Owner, _) | (Role::Admin, _) => true,
            (_, Access::Read) => !matches!(resource, ApiKeys | AuditLog | Exports),
            (Role::Member, Access::Write) => {
                matches!(
                    resource,
                    Contacts | Companies | Leads | Deals | Activities | Tags | Teams | Imports | Conversations
                )
            }
            (Role::Agent, Access::Write) => matches!(resource, Contacts | Companies | Leads | Activities | Tags | Conversations),
            (Role::Viewer, Access::Write) => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}': expected one of owner, admin, member, agent, viewer"))
    }
}

/// A family of endpoints guarded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Contacts,
    Companies,
    Leads,
    Pipelines,
    Deals,
    Activities,
    Tags,
    CustomFields,
    Teams,
    Members,
    ApiKeys,
    AuditLog,
    Imports,
    Exports,
    /// Inboxes and their channels' settings.
    Inboxes,
    /// Conversations and their messages.
    Conversations,
}

impl Resource {
    pub const ALL: [Resource; 16] = [
        Resource::Contacts,
        Resource::Companies,
        Resource::Leads,
        Resource::Pipelines,
        Resource::Deals,
        Resource::Activities,
        Resource::Tags,
        Resource::CustomFields,
        Resource::Teams,
        Resource::Members,
        Resource::ApiKeys,
        Resource::AuditLog,
        Resource::Imports,
        Resource::Exports,
        Resource::Inboxes,
        Resource::Conversations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Contacts => "contacts",
            Resource::Companies => "companies",
            Resource::Leads => "leads",
            Resource::Pipelines => "pipelines",
            Resource::Deals => "deals",
            Resource::Activities => "activities",
            Resource::Tags => "tags",
            Resource::CustomFields => "custom_fields",
            Resource::Teams => "teams",
            Resource::Members => "members",
            Resource::ApiKeys => "api_keys",
            Resource::AuditLog => "audit_log",
            Resource::Imports => "imports",
            Resource::Exports => "exports",
            Resource::Inboxes => "inboxes",
            Resource::Conversations => "conversations",
        }
    }

    /// API keys may be granted any family except managing keys themselves, so a leaked
    /// key can never mint more keys.
    pub fn grantable_to_api_keys(self) -> bool {
        !matches!(self, Resource::ApiKeys)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
}

/// An API-key scope such as `contacts:read` or `deals:write` (write implies read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource: Resource,
    pub access: Access,
}

impl Scope {
    pub fn permits(self, resource: Resource, access: Access) -> bool {
        self.resource == resource && (self.access == Access::Write || access == Access::Read)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = match self.access {
            Access::Read => "read",
            Access::Write => "write",
        };
        write!(f, "{}:{}", self.resource.as_str(), a)
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (r, a) = s
            .split_once(':')
            .ok_or_else(|| format!("scope '{s}' must look like 'contacts:read'"))?;
        let resource = Resource::ALL
            .into_iter()
            .find(|x| x.as_str() == r)
            .filter(|x| x.grantable_to_api_keys())
            .ok_or_else(|| {
                let grantable: Vec<&str> = Resource::ALL
                    .into_iter()
                    .filter(|x| x.grantable_to_api_keys())
                    .map(|x| x.as_str())
                    .collect();
                format!(
                    "scope '{s}' names an unknown or ungrantable resource '{r}'; use one of {}",
                    grantable.join(", ")
                )
            })?;
        let access = match a {
            "read" => Access::Read,
            "write" => Access::Write,
            _ => return Err(format!("scope '{s}' must end in ':read' or ':write'")),
        };
        Ok(Scope { resource, access })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_read_records_but_never_write() {
        for r in Resource::ALL {
            assert!(!Role::Viewer.allows(r, Access::Write), "{r:?}");
        }
        assert!(Role::Viewer.allows(Resource::Deals, Access::Read));
        assert!(!Role::Viewer.allows(Resource::AuditLog, Access::Read));
    }

    #[test]
    fn only_admins_and_owners_manage_the_workspace() {
        for role in [Role::Member, Role::Agent, Role::Viewer] {
            for r in [Resource::Pipelines, Resource::CustomFields, Resource::Members, Resource::ApiKeys] {
                assert!(!role.allows(r, Access::Write), "{role} {r:?}");
            }
        }
        assert!(Role::Admin.allows(Resource::ApiKeys, Access::Write));
    }

    #[test]
    fn scopes_parse_and_write_implies_read() {
        let s: Scope = "deals:write".parse().unwrap();
        assert!(s.permits(Resource::Deals, Access::Read));
        assert!(!s.permits(Resource::Contacts, Access::Read));
        assert!("api_keys:write".parse::<Scope>().is_err());
        assert!("deals:admin".parse::<Scope>().is_err());
    }
}
