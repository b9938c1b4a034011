//! Workspaces, users, memberships, refresh tokens and API keys.

use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{args, insert, new_id, now_ms, Result, Scoped, Sql, Store, StoreError};
use crate::domain::{FieldValue, ObjectType};

/// An invitation as its workspace's admins see it (never its token).
#[derive(Debug, Clone)]
pub struct InvitationRow {
    pub id: String,
    pub email: String,
    pub role: String,
    pub invited_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

const INVITATION_COLS: &str = "id, email, role, invited_by, created_at, expires_at";

fn invitation(r: &AnyRow) -> Result<InvitationRow> {
    Ok(InvitationRow {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        role: r.try_get(2)?,
        invited_by: r.try_get(3)?,
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
    })
}

/// A refresh token presented again means it leaked: its whole session is revoked.
/// A refresh token as stored: whose session it is, when it lapses, and whether it was
/// already used or revoked (presenting it again is then a sign of theft).
struct StoredToken {
    session: SessionRef,
    expires_at: i64,
    spent: bool,
}

async fn stored_token(conn: &mut AnyConnection, hash: &str) -> Result<Option<StoredToken>> {
    let mut sql =
        Sql::new("SELECT workspace_id, user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = ");
    sql.arg(hash);
    let Some(row) = sql.query().fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let (used, revoked): (Option<i64>, Option<i64>) = (row.try_get(4)?, row.try_get(5)?);
    Ok(Some(StoredToken {
        session: SessionRef {
            workspace_id: row.try_get(0)?,
            user_id: row.try_get(1)?,
            session_id: row.try_get(2)?,
        },
        expires_at: row.try_get(3)?,
        spent: used.is_some() || revoked.is_some(),
    }))
}

async fn reused(mut w: super::WriteTx, session: SessionRef, now: i64) -> Result<RefreshOutcome> {
    let mut sql = Sql::new("UPDATE refresh_tokens SET revoked_at = ");
    sql.arg(now)
        .push(" WHERE family_id = ")
        .arg(&session.session_id)
        .push(" AND revoked_at IS NULL");
    sql.query().execute(&mut *w.tx).await?;
    w.commit().await?;
    Ok(RefreshOutcome::Reused(session))
}

/// Who takes up an invitation: a user already signed up (and logged in), or a new one.
pub enum Joiner<'a> {
    Existing {
        user_id: &'a str,
    },
    New {
        email: &'a str,
        name: &'a str,
        password_hash: &'a str,
    },
}

/// Why an invitation cannot be taken up.
#[derive(Debug, PartialEq, Eq)]
pub enum InvitationRefused {
    /// No such token, or revoked, already accepted or expired: all alike to the caller.
    NotValid,
    /// The invitation is for another address than the joining user's.
    OtherAddress,
    /// A new user's address already has an account: log in and accept instead.
    AccountExists,
    AlreadyMember,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_by: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

pub struct NewApiKey {
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub scopes: Vec<String>,
}

/// A sign-in session: the family of refresh tokens one login started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub workspace_id: String,
    pub user_id: String,
    pub session_id: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    Rotated(SessionRef),
    /// A token that was already used or revoked: its whole family is now revoked.
    Reused(SessionRef),
    Invalid,
}

const MEMBER_COLS: &str = "m.user_id, u.email, u.name, m.role, m.created_at";

fn member(row: &AnyRow) -> Result<MemberRow> {
    Ok(MemberRow {
        user_id: row.try_get(0)?,
        email: row.try_get(1)?,
        name: row.try_get(2)?,
        role: row.try_get(3)?,
        created_at: row.try_get(4)?,
    })
}

const KEY_COLS: &str = "id, workspace_id, name, prefix, scopes, created_by, created_at, last_used_at, revoked_at";

fn api_key(row: &AnyRow) -> Result<ApiKeyRow> {
    let scopes: String = row.try_get(4)?;
    Ok(ApiKeyRow {
        id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        name: row.try_get(2)?,
        prefix: row.try_get(3)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_by: row.try_get(5)?,
        created_at: row.try_get(6)?,
        last_used_at: row.try_get(7)?,
        revoked_at: row.try_get(8)?,
    })
}

impl Store {
    async fn user_by_email_in(&self, conn: &mut AnyConnection, email: &str) -> Result<Option<UserRow>> {
        let mut sql = Sql::new("SELECT id, email, name, password_hash FROM users WHERE email = ");
        sql.arg(email);
        Ok(match sql.query().fetch_optional(conn).await? {
            Some(r) => Some(UserRow {
                id: r.try_get(0)?,
                email: r.try_get(1)?,
                name: r.try_get(2)?,
                password_hash: r.try_get(3)?,
            }),
            None => None,
        })
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>> {
        let mut conn = self.pool().acquire().await?;
        self.user_by_email_in(&mut conn, email).await
    }

    pub async fn user(&self, id: &str) -> Result<Option<UserRow>> {
        let mut sql = Sql::new("SELECT id, email, name, password_hash FROM users WHERE id = ");
        sql.arg(id);
        Ok(match sql.query().fetch_optional(self.pool()).await? {
            Some(r) => Some(UserRow {
                id: r.try_get(0)?,
                email: r.try_get(1)?,
                name: r.try_get(2)?,
                password_hash: r.try_get(3)?,
            }),
            None => None,
        })
    }

    /// Creates a workspace and its owner. The e-mail must not belong to a user yet.
    pub async fn create_workspace(&self, workspace_name: &str, email: &str, name: &str, password_hash: &str) -> Result<(String, String)> {
        let mut w = self.write().await?;
        if self.user_by_email_in(&mut w.tx, email).await?.is_some() {
            return Err(StoreError::Duplicate(
                "a user with this email already exists; log in instead".into(),
            ));
        }
        let (ws, user, now) = (new_id(), new_id(), now_ms());
        let sql = insert("workspaces", "id, name, created_at", args![&ws, workspace_name, now]);
        sql.query().execute(&mut *w.tx).await?;
        let sql = insert(
            "users",
            "id, email, name, password_hash, created_at",
            args![&user, email, name, password_hash, now],
        );
        sql.query().execute(&mut *w.tx).await?;
        let sql = insert(
            "memberships",
            "workspace_id, user_id, role, created_at",
            args![&ws, &user, "owner", now],
        );
        sql.query().execute(&mut *w.tx).await?;
        let scoped = self.scoped(&ws);
        scoped
            .audit(
                &mut w.tx,
                &format!("user:{user}"),
                "create",
                "workspace",
                &ws,
                json!({"name": [null, workspace_name]}),
                now,
            )
            .await?;
        w.commit().await?;
        Ok((ws, user))
    }

    /// Takes up the invitation whose token has `token_hash`: the joiner becomes a member
    /// with its role, in one transaction with the invitation's acceptance. Returns the
    /// workspace and the member's user id.
    pub async fn accept_invitation(
        &self,
        token_hash: &str,
        joiner: Joiner<'_>,
    ) -> Result<std::result::Result<(String, String), InvitationRefused>> {
        let now = now_ms();
        let mut w = self.write().await?;
        let mut sql = Sql::new("SELECT id, workspace_id, email, role FROM invitations WHERE token_hash = ");
        sql.arg(token_hash)
            .push(" AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > ")
            .arg(now);
        let Some(row) = sql.query().fetch_optional(&mut *w.tx).await? else {
            return Ok(Err(InvitationRefused::NotValid));
        };
        let (id, ws, email, role): (String, String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        let user_id = match joiner {
            Joiner::Existing { user_id } => {
                let mut sql = Sql::new("SELECT email FROM users WHERE id = ");
                sql.arg(user_id);
                let own: Option<String> = match sql.query().fetch_optional(&mut *w.tx).await? {
                    Some(r) => Some(r.try_get(0)?),
                    None => None,
                };
                if own.as_deref() != Some(email.as_str()) {
                    return Ok(Err(InvitationRefused::OtherAddress));
                }
                user_id.to_string()
            }
            Joiner::New {
                email: given,
                name,
                password_hash,
            } => {
                if given != email {
                    return Ok(Err(InvitationRefused::OtherAddress));
                }
                if self.user_by_email_in(&mut w.tx, given).await?.is_some() {
                    return Ok(Err(InvitationRefused::AccountExists));
                }
                let user = new_id();
                let sql = insert(
                    "users",
                    "id, email, name, password_hash, created_at",
                    args![&user, given, name, password_hash, now],
                );
                sql.query().execute(&mut *w.tx).await?;
                user
            }
        };
        let scoped = self.scoped(&ws);
        if scoped.member_in(&mut w.tx, &user_id).await?.is_some() {
            return Ok(Err(InvitationRefused::AlreadyMember));
        }
        let sql = insert(
            "memberships",
            "workspace_id, user_id, role, created_at",
            args![&ws, &user_id, &role, now],
        );
        sql.query().execute(&mut *w.tx).await?;
        let mut sql = Sql::new("UPDATE invitations SET accepted_at = ");
        sql.arg(now).push(", accepted_by = ").arg(&user_id).push(" WHERE id = ").arg(&id);
        sql.query().execute(&mut *w.tx).await?;
        let actor = format!("user:{user_id}");
        scoped
            .audit(
                &mut w.tx,
                &actor,
                "create",
                "member",
                &user_id,
                json!({"role": [null, role], "invitation": [null, id]}),
                now,
            )
            .await?;
        w.commit().await?;
        Ok(Ok((ws, user_id)))
    }

    pub async fn workspace_name(&self, ws: &str) -> Result<Option<String>> {
        let mut sql = Sql::new("SELECT name FROM workspaces WHERE id = ");
        sql.arg(ws);
        Ok(match sql.query().fetch_optional(self.pool()).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// The workspaces a user belongs to, oldest membership first.
    pub async fn workspaces_of(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let mut sql = Sql::new("SELECT workspace_id, role FROM memberships WHERE user_id = ");
        sql.arg(user_id).push(" ORDER BY created_at, workspace_id");
        let rows = sql.query().fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn role_of(&self, ws: &str, user_id: &str) -> Result<Option<String>> {
        let mut sql = Sql::new("SELECT role FROM memberships WHERE workspace_id = ");
        sql.arg(ws).push(" AND user_id = ").arg(user_id);
        Ok(match sql.query().fetch_optional(self.pool()).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    pub async fn insert_refresh_token(&self, ws: &str, user: &str, family: &str, hash: &str, expires_at: i64) -> Result<()> {
        let mut w = self.write().await?;
        let sql = insert(
            "refresh_tokens",
            "id, workspace_id, user_id, family_id, token_hash, created_at, expires_at",
            args![new_id(), ws, user, family, hash, now_ms(), expires_at],
        );
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await.map(drop)
    }

    /// Exchanges a refresh token for a new one of the same family. Presenting a token
    /// twice means it leaked: the whole family is revoked.
    pub async fn rotate_refresh_token(&self, old_hash: &str, new_hash: &str, expires_at: i64) -> Result<RefreshOutcome> {
        let now = now_ms();
        let mut w = self.write().await?;
        let Some(StoredToken {
            session,
            expires_at: expires,
            spent,
        }) = stored_token(&mut w.tx, old_hash).await?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        if spent {
            return reused(w, session, now).await;
        }
        if expires <= now {
            return Ok(RefreshOutcome::Invalid);
        }
        // The membership may have ended since the token was issued.
        let mut sql = Sql::new("SELECT 1 FROM memberships WHERE workspace_id = ");
        sql.arg(&session.workspace_id).push(" AND user_id = ").arg(&session.user_id);
        if sql.query().fetch_optional(&mut *w.tx).await?.is_none() {
            return Ok(RefreshOutcome::Invalid);
        }
        let mut sql = Sql::new("UPDATE refresh_tokens SET used_at = ");
        sql.arg(now).push(" WHERE token_hash = ").arg(old_hash).push(" AND used_at IS NULL");
        if sql.query().execute(&mut *w.tx).await?.rows_affected() == 0 {
            // Used by a concurrent refresh between the read and here: as above.
            return reused(w, session, now).await;
        }
        let sql = insert(
            "refresh_tokens",
            "id, workspace_id, user_id, family_id, token_hash, created_at, expires_at",
            args![
                new_id(),
                &session.workspace_id,
                &session.user_id,
                &session.session_id,
                new_hash,
                now,
                expires_at
            ],
        );
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await?;
        Ok(RefreshOutcome::Rotated(session))
    }

    /// Logout: revokes the family of the given refresh token. Returns its session, if
    /// the token exists.
    pub async fn revoke_refresh_family(&self, hash: &str) -> Result<Option<SessionRef>> {
        let mut w = self.write().await?;
        let mut sql = Sql::new("SELECT workspace_id, user_id, family_id FROM refresh_tokens WHERE token_hash = ");
        sql.arg(hash);
        let Some(row) = sql.query().fetch_optional(&mut *w.tx).await? else {
            return Ok(None);
        };
        let session = SessionRef {
            workspace_id: row.try_get(0)?,
            user_id: row.try_get(1)?,
            session_id: row.try_get(2)?,
        };
        let mut sql = Sql::new("UPDATE refresh_tokens SET revoked_at = ");
        sql.arg(now_ms())
            .push(" WHERE revoked_at IS NULL AND family_id = ")
            .arg(&session.session_id);
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await?;
        Ok(Some(session))
    }

    /// A session moved to another workspace, in one transaction: the presented refresh
    /// token must be current and of `user`'s session `from` (else `Invalid`, or
    /// `Reused` as in a refresh), and `user` a member of `ws`; the old session's tokens
    /// are revoked and the new session's first token stored.
    #[allow(clippy::too_many_arguments)]
    pub async fn switch_session(
        &self,
        old_hash: &str,
        user: &str,
        from: Option<&str>,
        ws: &str,
        family: &str,
        new_hash: &str,
        expires_at: i64,
    ) -> Result<RefreshOutcome> {
        let now = now_ms();
        let mut w = self.write().await?;
        let Some(StoredToken {
            session,
            expires_at: expires,
            spent,
        }) = stored_token(&mut w.tx, old_hash).await?
        else {
            return Ok(RefreshOutcome::Invalid);
        };
        if session.user_id != user || from.is_some_and(|f| f != session.session_id) {
            return Ok(RefreshOutcome::Invalid);
        }
        if spent {
            return reused(w, session, now).await;
        }
        let mut sql = Sql::new("SELECT 1 FROM memberships WHERE workspace_id = ");
        sql.arg(ws).push(" AND user_id = ").arg(user);
        if expires <= now || sql.query().fetch_optional(&mut *w.tx).await?.is_none() {
            return Ok(RefreshOutcome::Invalid);
        }
        let mut sql = Sql::new("UPDATE refresh_tokens SET revoked_at = ");
        sql.arg(now)
            .push(" WHERE revoked_at IS NULL AND family_id = ")
            .arg(&session.session_id);
        sql.query().execute(&mut *w.tx).await?;
        let sql = insert(
            "refresh_tokens",
            "id, workspace_id, user_id, family_id, token_hash, created_at, expires_at",
            args![new_id(), ws, user, family, new_hash, now, expires_at],
        );
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await?;
        Ok(RefreshOutcome::Rotated(session))
    }

    /// Whether a sign-in session has ended: any of its refresh tokens revoked (logout
    /// and reuse revoke them all).
    pub async fn session_ended(&self, session_id: &str) -> Result<bool> {
        let mut sql = Sql::new("SELECT 1 FROM refresh_tokens WHERE family_id = ");
        sql.arg(session_id).push(" AND revoked_at IS NOT NULL LIMIT 1");
        Ok(sql.query().fetch_optional(self.pool()).await?.is_some())
    }

    pub async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRow>> {
        let mut sql = Sql::new(format!("SELECT {KEY_COLS} FROM api_keys WHERE key_hash = "));
        sql.arg(hash);
        match sql.query().fetch_optional(self.pool()).await? {
            Some(r) => Ok(Some(api_key(&r)?)),
            None => Ok(None),
        }
    }

    /// Records a key's use, at most once a minute so busy integrations do not turn
    /// every read into a write.
    pub async fn touch_api_key(&self, id: &str) -> Result<()> {
        let now = now_ms();
        let mut w = self.write().await?;
        let mut sql = Sql::new("UPDATE api_keys SET last_used_at = ");
        sql.arg(now)
            .push(" WHERE id = ")
            .arg(id)
            .push(" AND (last_used_at IS NULL OR last_used_at < ")
            .arg(now - 60_000)
            .push(")");
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await.map(drop)
    }
}

impl Scoped<'_> {
    pub async fn members(&self) -> Result<Vec<MemberRow>> {
        let mut sql = Sql::new(format!(
            "SELECT {MEMBER_COLS} FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.workspace_id = "
        ));
        sql.arg(self.ws).push(" ORDER BY m.created_at, m.user_id");
        let rows = sql.query().fetch_all(self.store.pool()).await?;
        rows.iter().map(member).collect()
    }

    async fn member_in(&self, conn: &mut AnyConnection, user_id: &str) -> Result<Option<MemberRow>> {
        let mut sql = Sql::new(format!(
            "SELECT {MEMBER_COLS} FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.workspace_id = "
        ));
        sql.arg(self.ws).push(" AND m.user_id = ").arg(user_id);
        match sql.query().fetch_optional(conn).await? {
            Some(r) => Ok(Some(member(&r)?)),
            None => Ok(None),
        }
    }

    pub async fn member(&self, user_id: &str) -> Result<MemberRow> {
        let mut conn = self.store.pool().acquire().await?;
        self.member_in(&mut conn, user_id).await?.ok_or(StoreError::NotFound)
    }

    /// Adds a user to the workspace, creating the user when the e-mail is new (then
    /// `new_user` gives the name and password hash).
    /// Invites `email` with `role`: a pending invitation of the same address is
    /// replaced (a new token; the old one stops working).
    pub async fn create_invitation(
        &self,
        email: &str,
        role: &str,
        token_hash: &str,
        expires_at: i64,
        actor: &str,
    ) -> Result<InvitationRow> {
        let now = now_ms();
        let mut w = self.begin().await?;
        let mut sql = Sql::new("SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.workspace_id = ");
        sql.arg(self.ws).push(" AND u.email = ").arg(email);
        if sql.query().fetch_optional(&mut *w.tx).await?.is_some() {
            return Err(StoreError::Duplicate("this address is already a member's".into()));
        }
        let mut sql = Sql::new("UPDATE invitations SET revoked_at = ");
        sql.arg(now).push(" WHERE workspace_id = ").arg(self.ws);
        sql.push(" AND email = ")
            .arg(email)
            .push(" AND accepted_at IS NULL AND revoked_at IS NULL");
        sql.query().execute(&mut *w.tx).await?;
        let id = new_id();
        let sql = insert(
            "invitations",
            "id, workspace_id, email, role, token_hash, invited_by, created_at, expires_at",
            args![&id, self.ws, email, role, token_hash, actor, now, expires_at],
        );
        sql.query().execute(&mut *w.tx).await?;
        self.audit(
            &mut w.tx,
            actor,
            "create",
            "invitation",
            &id,
            json!({"email": [null, email], "role": [null, role]}),
            now,
        )
        .await?;
        let row = self.invitation_in(&mut w.tx, &id).await?.ok_or(StoreError::NotFound)?;
        w.commit().await?;
        Ok(row)
    }

    async fn invitation_in(&self, conn: &mut AnyConnection, id: &str) -> Result<Option<InvitationRow>> {
        let mut sql = Sql::new(format!("SELECT {INVITATION_COLS} FROM invitations WHERE workspace_id = "));
        sql.arg(self.ws).push(" AND id = ").arg(id);
        match sql.query().fetch_optional(conn).await? {
            Some(r) => Ok(Some(invitation(&r)?)),
            None => Ok(None),
        }
    }

    /// Invitations not yet accepted, revoked or expired, newest first.
    pub async fn pending_invitations(&self) -> Result<Vec<InvitationRow>> {
        let mut sql = Sql::new(format!("SELECT {INVITATION_COLS} FROM invitations WHERE workspace_id = "));
        sql.arg(self.ws)
            .push(" AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > ")
            .arg(now_ms());
        sql.push(" ORDER BY created_at DESC, id");
        let rows = sql.query().fetch_all(self.store.pool()).await?;
        rows.iter().map(invitation).collect()
    }

    /// Revokes a pending invitation; one already accepted or revoked is not found.
    pub async fn revoke_invitation(&self, id: &str, actor: &str) -> Result<()> {
        let now = now_ms();
        let mut w = self.begin().await?;
        let mut sql = Sql::new("UPDATE invitations SET revoked_at = ");
        sql.arg(now).push(" WHERE workspace_id = ").arg(self.ws).push(" AND id = ").arg(id);
        sql.push(" AND accepted_at IS NULL AND revoked_at IS NULL");
        if sql.query().execute(&mut *w.tx).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.audit(&mut w.tx, actor, "delete", "invitation", id, json!({}), now).await?;
        w.commit().await?;
        Ok(())
    }

    async fn owner_count(&self, conn: &mut AnyConnection) -> Result<i64> {
        let mut sql = Sql::new("SELECT COUNT(*) FROM memberships WHERE role = 'owner' AND workspace_id = ");
        sql.arg(self.ws);
        Ok(sql.query().fetch_one(conn).await?.try_get(0)?)
    }

    pub async fn set_role(&self, user_id: &str, role: &str, actor: &str) -> Result<MemberRow> {
        let now = now_ms();
        let mut w = self.begin().await?;
        let before = self.member_in(&mut w.tx, user_id).await?.ok_or(StoreError::NotFound)?;
        if before.role == "owner" && role != "owner" && self.owner_count(&mut w.tx).await? <= 1 {
            return Err(StoreError::InUse("a workspace must keep at least one owner".into()));
        }
        let mut sql = Sql::new("UPDATE memberships SET role = ");
        sql.arg(role)
            .push(" WHERE workspace_id = ")
            .arg(self.ws)
            .push(" AND user_id = ")
            .arg(user_id);
        sql.query().execute(&mut *w.tx).await?;
        self.audit(
            &mut w.tx,
            actor,
            "update",
            "member",
            user_id,
            json!({"role": [before.role, role]}),
            now,
        )
        .await?;
        let m = self.member_in(&mut w.tx, user_id).await?.ok_or(StoreError::NotFound)?;
        w.commit().await?;
        Ok(m)
    }

    /// Removes a member: their sessions in this workspace end, records they owned or
    /// were assigned lose that link, and they leave every team.
    pub async fn remove_member(&self, user_id: &str, actor: &str) -> Result<()> {
        let now = now_ms();
        let mut w = self.begin().await?;
        let before = self.member_in(&mut w.tx, user_id).await?.ok_or(StoreError::NotFound)?;
        if before.role == "owner" && self.owner_count(&mut w.tx).await? <= 1 {
            return Err(StoreError::InUse("a workspace must keep at least one owner".into()));
        }
        let mut sql = Sql::new("DELETE FROM memberships WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND user_id = ").arg(user_id);
        sql.query().execute(&mut *w.tx).await?;
        let mut sql = Sql::new("UPDATE refresh_tokens SET revoked_at = ");
        sql.arg(now)
            .push(" WHERE revoked_at IS NULL AND workspace_id = ")
            .arg(self.ws)
            .push(" AND user_id = ")
            .arg(user_id);
        sql.query().execute(&mut *w.tx).await?;
        for ty in ObjectType::ALL {
            for spec in ty.fields().iter().filter(|f| f.kind == crate::domain::FieldKind::Member) {
                let mut sql = Sql::new(format!(
                    "UPDATE {} SET {} = NULL, version = version + 1, updated_at = ",
                    ty.table(),
                    spec.name
                ));
                sql.arg(now)
                    .push(" WHERE workspace_id = ")
                    .arg(self.ws)
                    .push(&format!(" AND {} = ", spec.name))
                    .arg(user_id);
                sql.query().execute(&mut *w.tx).await?;
            }
        }
        self.rewrite_where_has(&mut w.tx, ObjectType::Team, "member_ids", user_id, now, |v| {
            if let FieldValue::List(items) = v {
                items.retain(|x| x != user_id);
            }
        })
        .await?;
        self.audit(
            &mut w.tx,
            actor,
            "delete",
            "member",
            user_id,
            json!({"role": [before.role, null]}),
            now,
        )
        .await?;
        w.commit().await.map(drop)
    }

    pub async fn create_api_key(&self, key: NewApiKey, actor: &str) -> Result<ApiKeyRow> {
        let now = now_ms();
        let id = new_id();
        let mut w = self.begin().await?;
        let scopes = serde_json::to_string(&key.scopes).unwrap_or_else(|_| "[]".into());
        let sql = insert(
            "api_keys",
            &format!("{KEY_COLS}, key_hash"),
            args![
                &id,
                self.ws,
                &key.name,
                &key.prefix,
                scopes,
                actor,
                now,
                None::<i64>,
                None::<i64>,
                &key.hash
            ],
        );
        sql.query().execute(&mut *w.tx).await?;
        self.audit(
            &mut w.tx,
            actor,
            "create",
            "api_key",
            &id,
            json!({"name": [null, key.name], "scopes": [null, key.scopes]}),
            now,
        )
        .await?;
        w.commit().await?;
        self.api_key(&id).await
    }

    pub async fn api_key(&self, id: &str) -> Result<ApiKeyRow> {
        let mut sql = Sql::new(format!("SELECT {KEY_COLS} FROM api_keys WHERE workspace_id = "));
        sql.arg(self.ws).push(" AND id = ").arg(id);
        match sql.query().fetch_optional(self.store.pool()).await? {
            Some(r) => api_key(&r),
            None => Err(StoreError::NotFound),
        }
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRow>> {
        let mut sql = Sql::new(format!("SELECT {KEY_COLS} FROM api_keys WHERE workspace_id = "));
        sql.arg(self.ws).push(" ORDER BY created_at DESC, id");
        let rows = sql.query().fetch_all(self.store.pool()).await?;
        rows.iter().map(api_key).collect()
    }

    pub async fn revoke_api_key(&self, id: &str, actor: &str) -> Result<()> {
        let now = now_ms();
        let mut w = self.begin().await?;
        let mut sql = Sql::new("UPDATE api_keys SET revoked_at = ");
        sql.arg(now)
            .push(" WHERE workspace_id = ")
            .arg(self.ws)
            .push(" AND id = ")
            .arg(id)
            .push(" AND revoked_at IS NULL");
        if sql.query().execute(&mut *w.tx).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.audit(&mut w.tx, actor, "delete", "api_key", id, json!({"revoked_at": [null, now]}), now)
            .await?;
        w.commit().await.map(drop)
    }
}
