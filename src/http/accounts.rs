//! Sign-up, sessions, the current principal, members and API keys.

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Code};
use super::extract::{authenticate, path_id, Actor, JsonBody, Principal};
use super::idempotency::idempotent;
use crate::app::AppState;
use crate::auth::{random_token, token_digest, Claims, API_KEY_PREFIX};
use crate::domain::fields::format_timestamp;
use crate::domain::{Access, AccessChange, EmailAddress, FieldErrors, Resource, Role, Scope};
use crate::store::{
    ApiKeyRow, InvitationRefused, InvitationRow, Joiner, MemberRow, NewApiKey, RefreshOutcome, SessionRef, StoreError, UserRow,
};

type State = web::Data<AppState>;
type Reply = Result<HttpResponse, ApiError>;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/signup").route(web::post().to(signup)))
        .service(web::resource("/auth/login").route(web::post().to(login)))
        .service(web::resource("/auth/refresh").route(web::post().to(refresh)))
        .service(web::resource("/auth/logout").route(web::post().to(logout)))
        .service(web::resource("/auth/switch").route(web::post().to(switch_workspace)))
        .service(web::resource("/me").route(web::get().to(me)))
        .service(web::resource("/members").route(web::get().to(list_members)))
        .service(
            web::resource("/invitations")
                .route(web::get().to(list_invitations))
                .route(web::post().to(invite)),
        )
        .service(web::resource("/invitations/accept").route(web::post().to(accept_invitation)))
        .service(web::resource("/invitations/{id}").route(web::delete().to(revoke_invitation)))
        .service(
            web::resource("/members/{user_id}")
                .route(web::get().to(get_member))
                .route(web::patch().to(update_member))
                .route(web::delete().to(remove_member)),
        )
        .service(
            web::resource("/api-keys")
                .route(web::get().to(list_keys))
                .route(web::post().to(create_key)),
        )
        .service(
            web::resource("/api-keys/{id}")
                .route(web::get().to(get_key))
                .route(web::delete().to(revoke_key)),
        );
}

fn email(field: &str, raw: &str) -> Result<EmailAddress, ApiError> {
    EmailAddress::parse(raw).map_err(|e| FieldErrors::single(field, e).into())
}

fn check_password(p: &str) -> Result<(), ApiError> {
    let n = p.chars().count();
    if !(10..=1024).contains(&n) {
        return Err(FieldErrors::single("password", "must be 10 to 1024 characters").into());
    }
    Ok(())
}

fn check_name(field: &str, s: &str) -> Result<String, ApiError> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 200 || s.chars().any(char::is_control) {
        return Err(FieldErrors::single(field, "must be 1 to 200 characters on one line").into());
    }
    Ok(s.to_string())
}

/// Hashing is deliberately slow and memory-hungry; it runs on the password pool, and a
/// full pool is answered `overloaded` rather than queued without bound.
async fn with_hasher<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&crate::auth::PasswordHashing, &mut crate::auth::HashMemory) -> T + Send + 'static,
) -> Result<T, ApiError> {
    state.passwords.run(f).await.map_err(|_| ApiError {
        retry_after_secs: Some(1),
        ..ApiError::msg(Code::Overloaded, "too many sign-ins at once; retry in a second")
    })
}

async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    with_hasher(state, move |h, memory| h.hash_in(&password, memory))
        .await?
        .map_err(ApiError::internal)
}

async fn verify_password(state: &AppState, password: String, hash: String) -> Result<bool, ApiError> {
    with_hasher(state, move |h, memory| h.verify_in(&password, &hash, memory)).await
}

/// Issues an access token of sign-in session `family` and, unless the refresh token
/// was just rotated (`refresh`), the session's first refresh token (a new session when
/// `family` is None).
async fn session(state: &AppState, user_id: &str, ws: &str, family: Option<&str>, refresh: Option<String>) -> Result<Value, ApiError> {
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(state.settings.access_token_ttl_secs).unwrap_or(900);
    let family = family.map(str::to_string).unwrap_or_else(crate::store::new_id);
    let access = state.tokens.sign(&Claims {
        sub: user_id.to_string(),
        ws: ws.to_string(),
        iat: now,
        exp: now + ttl,
        sid: Some(family.clone()),
    });
    let refresh = match refresh {
        Some(r) => r,
        None => {
            let r = random_token()?;
            let expires = crate::store::now_ms() + i64::try_from(state.settings.refresh_token_ttl_secs).unwrap_or(0) * 1000;
            state
                .store
                .insert_refresh_token(ws, user_id, &family, &token_digest(&r), expires)
                .await?;
            r
        }
    };
    Ok(json!({
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": ttl,
        "refresh_token": refresh,
        "workspace_id": ws,
        "user_id": user_id,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignupRequest {
    /// A new workspace, of which the new user is the owner…
    workspace_name: Option<String>,
    /// …or an invitation to an existing one, which the new user joins.
    invitation_token: Option<String>,
    name: String,
    email: String,
    password: String,
    /// Keep the refresh token in an HttpOnly cookie rather than in the answer (the
    /// web app): see [`session_reply`].
    #[serde(default)]
    refresh_cookie: bool,
}

async fn signup(state: State, req: HttpRequest, body: JsonBody) -> Reply {
    let r: SignupRequest = body.parse()?;
    let cookie = r.refresh_cookie;
    let name = check_name("name", &r.name)?;
    let email = email("email", &r.email)?;
    check_password(&r.password)?;
    match (r.workspace_name, r.invitation_token) {
        (Some(ws_name), None) => {
            let ws_name = check_name("workspace_name", &ws_name)?;
            let hash = hash_password(&state, r.password).await?;
            let (ws, user) = state.store.create_workspace(&ws_name, email.as_str(), &name, &hash).await?;
            session_reply(
                &state,
                &req,
                StatusCode::CREATED,
                session(&state, &user, &ws, None, None).await?,
                cookie,
            )
        }
        (None, Some(token)) => {
            let hash = hash_password(&state, r.password).await?;
            let joiner = Joiner::New {
                email: email.as_str(),
                name: &name,
                password_hash: &hash,
            };
            let (ws, user) = join(&state, &token, joiner).await?;
            session_reply(
                &state,
                &req,
                StatusCode::CREATED,
                session(&state, &user, &ws, None, None).await?,
                cookie,
            )
        }
        _ => Err(FieldErrors::single(
            "workspace_name",
            "give either workspace_name (to create a workspace) or invitation_token (to join one you were invited to)",
        )
        .into()),
    }
}

/// How long an invitation can be accepted.
const INVITATION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// Takes up an invitation; the error says how to go on when it cannot be.
async fn join(state: &AppState, token: &str, joiner: Joiner<'_>) -> Result<(String, String), ApiError> {
    match state.store.accept_invitation(&token_digest(token), joiner).await? {
        Ok((ws, user)) => {
            state.directory.access_changed(member_changed(&ws, &user)).await;
            Ok((ws, user))
        }
        Err(InvitationRefused::NotValid) => Err(ApiError::msg(
            Code::NotFound,
            "no such invitation: it may have expired, been revoked or been used; ask for a new one",
        )),
        Err(InvitationRefused::OtherAddress) => Err(ApiError::msg(
            Code::Forbidden,
            "this invitation is for another e-mail address: sign in (or sign up) with the address it was sent to",
        )),
        Err(InvitationRefused::AccountExists) => Err(ApiError::msg(
            Code::AlreadyExists,
            "an account with this e-mail exists: log in, then accept the invitation with POST /invitations/accept",
        )),
        Err(InvitationRefused::AlreadyMember) => Err(ApiError::msg(Code::AlreadyExists, "you are already a member of this workspace")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
    workspace_id: Option<String>,
    #[serde(default)]
    refresh_cookie: bool,
}

fn wrong_credentials() -> ApiError {
    ApiError::msg(Code::InvalidCredentials, "wrong email or password")
}

/// The user an e-mail and password belong to.
async fn check_credentials(state: &AppState, email: &str, password: String) -> Result<UserRow, ApiError> {
    let Ok(email) = EmailAddress::parse(email) else {
        return Err(wrong_credentials());
    };
    let user = state.store.user_by_email(email.as_str()).await?;
    // Without a user, still spend the time of a hash check so that response time
    // does not reveal which e-mails have accounts.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| state.dummy_hash.clone());
    let ok = verify_password(state, password, hash).await?;
    user.filter(|_| ok).ok_or_else(wrong_credentials)
}

async fn login(state: State, req: HttpRequest, body: JsonBody) -> Reply {
    let r: LoginRequest = body.parse()?;
    let bad = wrong_credentials;
    let user = check_credentials(&state, &r.email, r.password).await?;
    let workspaces = state.store.workspaces_of(&user.id).await?;
    let ws = match r.workspace_id {
        Some(w) => workspaces
            .iter()
            .find(|(id, _)| *id == w)
            .map(|(id, _)| id.clone())
            .ok_or_else(bad)?,
        None => workspaces.first().map(|(id, _)| id.clone()).ok_or_else(bad)?,
    };
    session_reply(
        &state,
        &req,
        StatusCode::OK,
        session(&state, &user.id, &ws, None, None).await?,
        r.refresh_cookie,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    /// Absent: the refresh token is the web app's cookie.
    refresh_token: Option<String>,
}

/// The cookie that holds a browser's refresh token: sent only to the auth endpoints,
/// never readable by scripts, never sent from another site.
const REFRESH_COOKIE: &str = "shoal_refresh";
/// A random value the app's script reads and echoes in `X-CSRF-Token` when it uses
/// the refresh cookie: a page of another origin can neither read it nor set the header.
const CSRF_COOKIE: &str = "shoal_csrf";
const CSRF_HEADER: &str = "x-csrf-token";

/// A session's answer. With `cookie`, its refresh token goes into an HttpOnly,
/// SameSite=Strict cookie (Secure when the request came over HTTPS) instead of the
/// body, with a fresh CSRF value beside it; the access token stays in the body, for
/// the app to hold in memory.
fn session_reply(state: &AppState, req: &HttpRequest, status: StatusCode, mut session: Value, cookie: bool) -> Reply {
    let mut reply = HttpResponse::build(status);
    if cookie {
        let refresh = session
            .as_object_mut()
            .and_then(|o| o.remove("refresh_token"))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let secure = req.connection_info().scheme() == "https";
        // The cookies last as long as the refresh token does.
        let lifetime = i64::try_from(state.settings.refresh_token_ttl_secs).unwrap_or(i64::MAX);
        reply
            .cookie(session_cookie(REFRESH_COOKIE, refresh, true, secure, lifetime))
            .cookie(session_cookie(CSRF_COOKIE, random_token()?, false, secure, lifetime));
    }
    Ok(reply.insert_header((header::CACHE_CONTROL, "no-store")).json(session))
}

fn session_cookie(name: &'static str, value: String, http_only: bool, secure: bool, lifetime_secs: i64) -> Cookie<'static> {
    Cookie::build(name, value)
        .path(if http_only { "/api/v1/auth" } else { "/" })
        .http_only(http_only)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::seconds(lifetime_secs))
        .finish()
}

/// The refresh token a request presents: in its body, or as the app's cookie, which
/// counts only with the CSRF value echoed in `X-CSRF-Token`. Also says which it was.
fn presented_refresh(req: &HttpRequest, body: Option<String>) -> Result<(String, bool), ApiError> {
    if let Some(token) = body {
        return Ok((token, false));
    }
    let Some(token) = req.cookie(REFRESH_COOKIE).map(|c| c.value().to_string()) else {
        return Err(ApiError::msg(
            Code::InvalidCredentials,
            "give refresh_token, or sign in again (the web app's session cookie is absent)",
        ));
    };
    let echoed = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match (req.cookie(CSRF_COOKIE), echoed) {
        (Some(c), Some(h)) if !h.is_empty() && c.value() == h => Ok((token, true)),
        _ => Err(ApiError::msg(
            Code::Forbidden,
            "a refresh by cookie needs the shoal_csrf cookie's value in the X-CSRF-Token header",
        )),
    }
}

/// Cookies that end the browser's session.
fn cleared_cookies(reply: &mut actix_web::HttpResponseBuilder) {
    for (name, http_only) in [(REFRESH_COOKIE, true), (CSRF_COOKIE, false)] {
        let mut c = session_cookie(name, String::new(), http_only, false, 0);
        c.make_removal();
        reply.cookie(c);
    }
}

async fn refresh(state: State, req: HttpRequest, body: JsonBody) -> Reply {
    let r: RefreshRequest = body.parse()?;
    let (presented, cookie) = presented_refresh(&req, r.refresh_token)?;
    let next = random_token()?;
    let expires = crate::store::now_ms() + i64::try_from(state.settings.refresh_token_ttl_secs).unwrap_or(0) * 1000;
    match state
        .store
        .rotate_refresh_token(&token_digest(&presented), &token_digest(&next), expires)
        .await?
    {
        RefreshOutcome::Rotated(s) => {
            let session = session(&state, &s.user_id, &s.workspace_id, Some(&s.session_id), Some(next)).await?;
            session_reply(&state, &req, StatusCode::OK, session, cookie)
        }
        RefreshOutcome::Reused(s) => {
            state.directory.access_changed(session_ended(s)).await;
            Err(ApiError::new(Code::RefreshTokenReused))
        }
        RefreshOutcome::Invalid => Err(ApiError::msg(Code::InvalidCredentials, "the refresh token is not valid")),
    }
}

async fn logout(state: State, req: HttpRequest, body: JsonBody) -> Reply {
    let r: RefreshRequest = body.parse()?;
    let (presented, cookie) = presented_refresh(&req, r.refresh_token)?;
    match state.store.revoke_refresh_family(&token_digest(&presented)).await? {
        Some(s) => {
            state.directory.access_changed(session_ended(s)).await;
            let mut reply = HttpResponse::NoContent();
            if cookie {
                cleared_cookies(&mut reply);
            }
            Ok(reply.finish())
        }
        None => Err(ApiError::msg(Code::InvalidCredentials, "the refresh token is not valid")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchRequest {
    workspace_id: String,
    /// Absent: the refresh token is the web app's cookie (with its CSRF header).
    refresh_token: Option<String>,
    #[serde(default)]
    refresh_cookie: bool,
}

/// Moves a signed-in user to another workspace they belong to without asking for the
/// password again. It takes the session's current refresh token, as a refresh does (an
/// access token alone, which also travels in WebSocket URLs, cannot mint a lasting
/// session); the new session replaces the old in one transaction, and the old one's
/// tokens stop working and its sockets close, so a browser holds one session.
async fn switch_workspace(state: State, req: HttpRequest, p: Principal, body: JsonBody) -> Reply {
    let r: SwitchRequest = body.parse()?;
    let Actor::User { id: user_id, .. } = &p.actor else {
        return Err(ApiError::msg(
            Code::Forbidden,
            "an API key belongs to one workspace; sign in as a user to switch",
        ));
    };
    if r.workspace_id == p.workspace_id {
        return Err(FieldErrors::single("workspace_id", "is the workspace this session is in already").into());
    }
    let (presented, cookie) = presented_refresh(&req, r.refresh_token)?;
    let member = state
        .store
        .workspaces_of(user_id)
        .await?
        .iter()
        .any(|(id, _)| *id == r.workspace_id);
    if !member {
        return Err(ApiError::msg(
            Code::NotFound,
            "you are not a member of that workspace; GET /me lists yours",
        ));
    }
    let family = crate::store::new_id();
    let next = random_token()?;
    let expires = crate::store::now_ms() + i64::try_from(state.settings.refresh_token_ttl_secs).unwrap_or(0) * 1000;
    match state
        .store
        .switch_session(
            &token_digest(&presented),
            user_id,
            p.session_id.as_deref(),
            &r.workspace_id,
            &family,
            &token_digest(&next),
            expires,
        )
        .await?
    {
        RefreshOutcome::Rotated(old) => {
            state.directory.access_changed(session_ended(old)).await;
            let answer = session(&state, user_id, &r.workspace_id, Some(&family), Some(next)).await?;
            session_reply(&state, &req, StatusCode::OK, answer, r.refresh_cookie || cookie)
        }
        RefreshOutcome::Reused(old) => {
            state.directory.access_changed(session_ended(old)).await;
            Err(ApiError::new(Code::RefreshTokenReused))
        }
        RefreshOutcome::Invalid => Err(ApiError::msg(
            Code::InvalidCredentials,
            "the refresh token is not valid for this session",
        )),
    }
}

fn session_ended(s: SessionRef) -> AccessChange {
    AccessChange::Session {
        workspace_id: s.workspace_id,
        user_id: s.user_id,
        session_id: s.session_id,
    }
}

/// A member's role or membership changed: their open connections apply it at once.
fn member_changed(workspace_id: &str, user_id: &str) -> AccessChange {
    AccessChange::Member {
        workspace_id: workspace_id.to_string(),
        user_id: user_id.to_string(),
    }
}

async fn me(state: State, p: Principal) -> Reply {
    let ws_name = state.store.workspace_name(&p.workspace_id).await?;
    let workspace = json!({"id": p.workspace_id, "name": ws_name});
    let body = match &p.actor {
        Actor::User { id, role } => {
            let u = state.store.user(id).await?.ok_or_else(|| ApiError::new(Code::InvalidCredentials))?;
            // Every workspace the user belongs to, for the app's workspace switch.
            let mut workspaces = Vec::new();
            for (ws, role) in state.store.workspaces_of(id).await? {
                let name = state.store.workspace_name(&ws).await?;
                workspaces.push(json!({"id": ws, "name": name, "role": role}));
            }
            json!({"kind": "user", "user": {"id": u.id, "email": u.email, "name": u.name}, "role": role.as_str(), "workspace": workspace, "workspaces": workspaces})
        }
        Actor::ApiKey { id, .. } => {
            let k = p.scoped(&state.store).api_key(id).await?;
            json!({"kind": "api_key", "api_key": key_json(&k), "workspace": workspace})
        }
    };
    Ok(HttpResponse::Ok().json(body))
}

fn member_json(m: &MemberRow) -> Value {
    json!({"user_id": m.user_id, "email": m.email, "name": m.name, "role": m.role, "joined_at": format_timestamp(m.created_at)})
}

async fn list_members(state: State, p: Principal) -> Reply {
    p.require(Resource::Members, Access::Read)?;
    let members = p.scoped(&state.store).members().await?;
    Ok(HttpResponse::Ok().json(json!({"data": members.iter().map(member_json).collect::<Vec<_>>(), "next_cursor": null})))
}

async fn get_member(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(Resource::Members, Access::Read)?;
    let m = p.scoped(&state.store).member(&path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(member_json(&m)))
}

fn parse_role(raw: &str) -> Result<Role, ApiError> {
    raw.parse().map_err(|e: String| FieldErrors::single("role", e).into())
}

/// Only owners make, unmake or remove owners.
fn check_owner_rule(p: &Principal, involves_owner: bool) -> Result<(), ApiError> {
    let (_, role) = p.user()?;
    if involves_owner && role != Role::Owner {
        return Err(ApiError::msg(
            Code::Forbidden,
            "only an owner can grant, change or remove the owner role",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invite {
    email: String,
    role: String,
}

fn invitation_json(i: &InvitationRow) -> Value {
    json!({
        "id": i.id,
        "email": i.email,
        "role": i.role,
        "invited_by": i.invited_by,
        "created_at": format_timestamp(i.created_at),
        "expires_at": format_timestamp(i.expires_at),
    })
}

/// Invites an e-mail address to the workspace with a role. Nothing about the person is
/// looked up or shown: they accept with the token, which is shown only here.
async fn invite(state: State, p: Principal, req: HttpRequest, body: JsonBody) -> Reply {
    p.require(Resource::Members, Access::Write)?;
    idempotent(&state, &p, &req, &body.0, || async {
        let r: Invite = body.parse()?;
        let role = parse_role(&r.role)?;
        check_owner_rule(&p, role == Role::Owner)?;
        let email = email("email", &r.email)?;
        let token = random_token()?;
        let expires = crate::store::now_ms() + INVITATION_TTL_MS;
        let row = p
            .scoped(&state.store)
            .create_invitation(email.as_str(), role.as_str(), &token_digest(&token), expires, &p.actor_id())
            .await?;
        let mut v = invitation_json(&row);
        // The only time the token is shown: the store keeps its digest.
        v["token"] = Value::String(token);
        Ok((StatusCode::CREATED, v))
    })
    .await
}

async fn list_invitations(state: State, p: Principal) -> Reply {
    p.require(Resource::Members, Access::Write)?;
    let rows = p.scoped(&state.store).pending_invitations().await?;
    Ok(HttpResponse::Ok().json(json!({"data": rows.iter().map(invitation_json).collect::<Vec<_>>(), "next_cursor": null})))
}

async fn revoke_invitation(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(Resource::Members, Access::Write)?;
    p.scoped(&state.store).revoke_invitation(&path_id(&id)?, &p.actor_id()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Accept {
    token: String,
    /// Without an access token: the account's credentials (a user who belongs to no
    /// workspace any more has no access token to send).
    email: Option<String>,
    password: Option<String>,
    #[serde(default)]
    refresh_cookie: bool,
}

/// A user with an account takes up an invitation sent to their address, signed in by
/// an access token or by e-mail and password; answered with a session in the workspace
/// they joined.
async fn accept_invitation(state: State, req: HttpRequest, body: JsonBody) -> Reply {
    let r: Accept = body.parse()?;
    let user_id = match (r.email, r.password) {
        (None, None) => {
            let p = authenticate(&state, &req).await?;
            p.user()?.0.to_string()
        }
        (Some(e), Some(pw)) => check_credentials(&state, &e, pw).await?.id,
        _ => return Err(FieldErrors::single("password", "give both email and password, or neither and an access token").into()),
    };
    let (ws, user) = join(&state, &r.token, Joiner::Existing { user_id: &user_id }).await?;
    session_reply(
        &state,
        &req,
        StatusCode::OK,
        session(&state, &user, &ws, None, None).await?,
        r.refresh_cookie,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateMember {
    role: String,
}

async fn update_member(state: State, p: Principal, id: web::Path<String>, body: JsonBody) -> Reply {
    p.require(Resource::Members, Access::Write)?;
    let id = path_id(&id)?;
    let r: UpdateMember = body.parse()?;
    let role = parse_role(&r.role)?;
    let scoped = p.scoped(&state.store);
    let current = scoped.member(&id).await?;
    check_owner_rule(&p, role == Role::Owner || current.role == "owner")?;
    let m = scoped.set_role(&id, role.as_str(), &p.actor_id()).await?;
    state.directory.access_changed(member_changed(&p.workspace_id, &id)).await;
    Ok(HttpResponse::Ok().json(member_json(&m)))
}

async fn remove_member(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(Resource::Members, Access::Write)?;
    let id = path_id(&id)?;
    let scoped = p.scoped(&state.store);
    let current = scoped.member(&id).await?;
    check_owner_rule(&p, current.role == "owner")?;
    scoped.remove_member(&id, &p.actor_id()).await?;
    state.directory.access_changed(member_changed(&p.workspace_id, &id)).await;
    Ok(HttpResponse::NoContent().finish())
}

fn key_json(k: &ApiKeyRow) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": k.scopes,
        "created_by": k.created_by,
        "created_at": format_timestamp(k.created_at),
        "last_used_at": k.last_used_at.map(format_timestamp),
        "revoked_at": k.revoked_at.map(format_timestamp),
    })
}

async fn list_keys(state: State, p: Principal) -> Reply {
    p.require(Resource::ApiKeys, Access::Read)?;
    let keys = p.scoped(&state.store).api_keys().await?;
    Ok(HttpResponse::Ok().json(json!({"data": keys.iter().map(key_json).collect::<Vec<_>>(), "next_cursor": null})))
}

async fn get_key(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(Resource::ApiKeys, Access::Read)?;
    let k = p.scoped(&state.store).api_key(&path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(key_json(&k)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    scopes: Vec<String>,
}

async fn create_key(state: State, p: Principal, req: HttpRequest, body: JsonBody) -> Reply {
    p.require(Resource::ApiKeys, Access::Write)?;
    p.user()?;
    idempotent(&state, &p, &req, &body.0, || async {
        let r: CreateKey = body.parse()?;
        let name = check_name("name", &r.name)?;
        if r.scopes.is_empty() || r.scopes.len() > 50 {
            return Err(FieldErrors::single("scopes", "give 1 to 50 scopes such as 'contacts:read'").into());
        }
        let mut scopes = Vec::new();
        for (i, s) in r.scopes.iter().enumerate() {
            let scope: Scope = s
                .parse()
                .map_err(|e: String| ApiError::from(FieldErrors::single(format!("scopes[{i}]"), e)))?;
            if !scopes.contains(&scope.to_string()) {
                scopes.push(scope.to_string());
            }
        }
        let secret = format!("{API_KEY_PREFIX}{}", random_token()?);
        let prefix: String = secret.chars().take(API_KEY_PREFIX.len() + 6).collect();
        let row = p
            .scoped(&state.store)
            .create_api_key(
                NewApiKey {
                    name,
                    prefix,
                    hash: token_digest(&secret),
                    scopes,
                },
                &p.actor_id(),
            )
            .await
            .map_err(|e| match e {
                StoreError::Duplicate(_) => ApiError::internal(anyhow::anyhow!("api key collision")),
                other => other.into(),
            })?;
        let mut v = key_json(&row);
        // The only time the key is shown: the store keeps its digest.
        v["key"] = Value::String(secret);
        Ok((StatusCode::CREATED, v))
    })
    .await
}

async fn revoke_key(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(Resource::ApiKeys, Access::Write)?;
    p.user()?;
    let id = path_id(&id)?;
    p.scoped(&state.store).revoke_api_key(&id, &p.actor_id()).await?;
    let change = AccessChange::ApiKey {
        workspace_id: p.workspace_id.clone(),
        key_id: id,
    };
    state.directory.access_changed(change).await;
    Ok(HttpResponse::NoContent().finish())
}
