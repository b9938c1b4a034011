//! The e-mail channel's commands: an inbox's mail servers (passwords sealed at rest,
//! never answered back), a connection test that says in words what failed, what the
//! sync worker writes (fetched mail, how the channel is doing) and the attachments it
//! keeps, and what the SMTP sender needs of a queued reply.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code};
use super::principal::Principal;
use super::writes::{self, Author, Write};
use super::AppState;
use crate::domain::mail::MailAttachment;
use crate::domain::{Access, EmailAddress, FieldErrors, ObjectType};
use crate::mail::{smtp, Endpoint, MailError, Security};
use crate::store::{MailAccount, MailBatch};

/// Who the sync worker's and the sender's writes are by.
pub const ACTOR: &str = "system:mail";

/// An inbox's IMAP server, as a client sends it (no `Debug`: it holds a password).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapInput {
    pub host: String,
    pub port: Option<u16>,
    pub security: String,
    pub username: String,
    /// Unset on an update: the saved one is kept.
    pub password: Option<String>,
    pub folder: Option<String>,
    /// How far back the first import goes, in days.
    pub import_days: Option<i64>,
    /// For a server without IDLE: how often to look for new mail, in seconds.
    pub poll_secs: Option<i64>,
}

/// An inbox's SMTP server, as a client sends it (no `Debug`: it holds a password).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpInput {
    pub host: String,
    pub port: Option<u16>,
    pub security: String,
    pub username: Option<String>,
    /// Unset on an update: the saved one is kept.
    pub password: Option<String>,
}

/// An e-mail inbox's servers and address, as a client sends them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailInput {
    pub imap: ImapInput,
    pub smtp: SmtpInput,
    pub from_name: Option<String>,
    pub from_address: String,
}

const MAX_HOST: usize = 253;
const MAX_CREDENTIAL: usize = 500;

fn check_host(errors: &mut FieldErrors, field: &str, host: &str, security: &str) {
    let valid = !host.is_empty()
        && host.len() <= MAX_HOST
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !valid {
        errors.add(format!("{field}.host"), "a host name or IP address");
    }
    match Security::parse(security) {
        None => errors.add(format!("{field}.security"), format!("one of {}", Security::NAMES.join(", "))),
        Some(Security::None) if !crate::mail::is_loopback_host(host) => errors.add(
            format!("{field}.security"),
            "'none' sends the password in the clear: only for a server on this machine (127.0.0.1, ::1, localhost); use 'tls' or 'starttls'",
        ),
        Some(_) => {}
    }
}

impl MailInput {
    /// The account to save, with passwords sealed; `saved` gives the passwords an
    /// update leaves out.
    fn validate(self, state: &AppState, workspace_id: &str, inbox_id: &str, saved: Option<&MailAccount>) -> Result<MailAccount, ApiError> {
        let mut errors = FieldErrors::default();
        let i = self.imap;
        let s = self.smtp;
        check_host(&mut errors, "imap", i.host.trim(), &i.security);
        check_host(&mut errors, "smtp", s.host.trim(), &s.security);
        if i.username.trim().is_empty() || i.username.len() > MAX_CREDENTIAL {
            errors.add("imap.username", "is required (at most 500 characters)");
        }
        let port = |p: Option<u16>, default: u16| i64::from(p.filter(|p| *p > 0).unwrap_or(default));
        let imap_port = port(i.port, if i.security == "tls" { 993 } else { 143 });
        let smtp_port = port(s.port, if s.security == "tls" { 465 } else { 587 });
        let smtp_username = s.username.clone().map(|u| u.trim().to_string()).filter(|u| !u.is_empty());
        // A saved password is only ever sent where it was saved for: naming another
        // server, port, security or user asks for the password again, or an admin could
        // have the server hand it to a host of theirs.
        let same_imap = saved.is_some_and(|a| {
            a.imap_host == i.host.trim()
                && a.imap_port == imap_port
                && a.imap_security == i.security
                && a.imap_username == i.username.trim()
        });
        let same_smtp = saved.is_some_and(|a| {
            a.smtp_host == s.host.trim() && a.smtp_port == smtp_port && a.smtp_security == s.security && a.smtp_username == smtp_username
        });
        let imap_password = match i.password {
            Some(p) if !p.is_empty() && p.len() <= MAX_CREDENTIAL => Some(p),
            Some(_) => {
                errors.add("imap.password", "1 to 500 characters");
                None
            }
            None if same_imap => None,
            None if saved.is_some() => {
                errors.add(
                    "imap.password",
                    "is required again when the server, port, security or username changes",
                );
                None
            }
            None => {
                errors.add("imap.password", "is required");
                None
            }
        };
        let folder = i
            .folder
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "INBOX".into());
        if folder.len() > 200 || folder.contains(['"', '\r', '\n']) {
            errors.add(
                "imap.folder",
                "a folder name of at most 200 characters, without quotes or line breaks",
            );
        }
        let import_days = i.import_days.unwrap_or(30);
        if !(0..=3650).contains(&import_days) {
            errors.add("imap.import_days", "0 to 3650 days");
        }
        let poll_secs = i.poll_secs.unwrap_or(60);
        if !(5..=3600).contains(&poll_secs) {
            errors.add("imap.poll_secs", "5 to 3600 seconds");
        }
        if s.username.as_ref().is_some_and(|u| u.len() > MAX_CREDENTIAL) {
            errors.add("smtp.username", "at most 500 characters");
        }
        if s.password.as_ref().is_some_and(|p| p.is_empty() || p.len() > MAX_CREDENTIAL) {
            errors.add("smtp.password", "1 to 500 characters (leave it out to keep the saved one)");
        }
        let kept_smtp = saved.and_then(|a| a.smtp_password.clone()).filter(|_| same_smtp);
        if smtp_username.is_some() && s.password.is_none() && kept_smtp.is_none() {
            errors.add(
                "smtp.password",
                "is required with a username (again when the server, port, security or username changes)",
            );
        }
        let from = match EmailAddress::parse(&self.from_address) {
            Ok(a) => Some(a),
            Err(why) => {
                errors.add("from_address", why);
                None
            }
        };
        let from_name = self.from_name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        if from_name
            .as_ref()
            .is_some_and(|n| n.chars().count() > 200 || n.contains(['\r', '\n']))
        {
            errors.add("from_name", "at most 200 characters on one line");
        }
        errors.into_result()?;
        let seal = |p: &str| state.tokens.seal(p).map_err(ApiError::internal);
        let imap_password = match imap_password {
            Some(p) => seal(&p)?,
            None => saved.map(|a| a.imap_password.clone()).unwrap_or_default(),
        };
        let smtp_password = match (&smtp_username, s.password) {
            (None, _) => None,
            (Some(_), Some(p)) => Some(seal(&p)?),
            (Some(_), None) => kept_smtp,
        };
        Ok(MailAccount {
            inbox_id: inbox_id.to_string(),
            workspace_id: workspace_id.to_string(),
            imap_host: i.host.trim().to_string(),
            imap_port,
            imap_security: i.security,
            imap_username: i.username.trim().to_string(),
            imap_password,
            imap_folder: folder,
            import_days,
            poll_secs,
            smtp_host: s.host.trim().to_string(),
            smtp_port,
            smtp_security: s.security,
            smtp_username,
            smtp_password,
            from_name,
            from_address: from.map(|f| f.as_str().to_string()).unwrap_or_default(),
            uid_validity: saved.and_then(|a| a.uid_validity),
            last_uid: saved.map_or(0, |a| a.last_uid),
            updated_at: 0,
        })
    }
}

/// An account as answered: everything but the passwords, which are only said to be
/// set.
pub fn view(a: &MailAccount) -> Value {
    json!({
        "inbox_id": a.inbox_id,
        "imap": {
            "host": a.imap_host, "port": a.imap_port, "security": a.imap_security, "username": a.imap_username,
            "password_set": !a.imap_password.is_empty(), "folder": a.imap_folder, "import_days": a.import_days,
            "poll_secs": a.poll_secs,
        },
        "smtp": {
            "host": a.smtp_host, "port": a.smtp_port, "security": a.smtp_security, "username": a.smtp_username,
            "password_set": a.smtp_password.is_some(),
        },
        "from_name": a.from_name,
        "from_address": a.from_address,
        "sync": {"uid_validity": a.uid_validity, "last_uid": a.last_uid},
    })
}

async fn email_inbox(state: &AppState, p: &Principal, inbox_id: &str) -> Result<(), ApiError> {
    let inbox = p.scoped(&state.store).get(ObjectType::Inbox, inbox_id).await?;
    if inbox.text("channel") != Some("email") {
        return Err(ApiError::msg(
            Code::InvalidBody,
            "only an inbox of channel 'email' has mail servers; create one with \"channel\": \"email\"",
        ));
    }
    Ok(())
}

/// Saves an e-mail inbox's servers; its sync starts (or starts over) at once.
pub async fn configure(state: &AppState, p: &Principal, inbox_id: &str, input: MailInput) -> Result<Value, ApiError> {
    p.require(ObjectType::Inbox.resource(), Access::Write)?;
    email_inbox(state, p, inbox_id).await?;
    let scoped = p.scoped(&state.store);
    let saved = scoped.mail_account_of(inbox_id).await?;
    let account = input.validate(state, &p.workspace_id, inbox_id, saved.as_ref())?;
    scoped.set_mail_account(&account).await?;
    state.mail_changed.notify_waiters();
    let stored = scoped
        .mail_account_of(inbox_id)
        .await?
        .ok_or_else(|| ApiError::new(Code::NotFound))?;
    Ok(view(&stored))
}

/// An e-mail inbox's servers, without passwords.
pub async fn settings(state: &AppState, p: &Principal, inbox_id: &str) -> Result<Value, ApiError> {
    p.require(ObjectType::Inbox.resource(), Access::Write)?;
    email_inbox(state, p, inbox_id).await?;
    match p.scoped(&state.store).mail_account_of(inbox_id).await? {
        Some(a) => Ok(view(&a)),
        None => Err(ApiError::msg(Code::NotFound, "this inbox has no mail servers yet: PUT them first")),
    }
}

/// The IMAP side of an account, as the worker and the test reach it.
pub fn imap_endpoint(state: &AppState, a: &MailAccount) -> Endpoint {
    Endpoint {
        host: a.imap_host.clone(),
        port: u16::try_from(a.imap_port).unwrap_or(993),
        security: Security::parse(&a.imap_security).unwrap_or(Security::Tls),
        allow_private: state.settings.mail_allow_private_hosts,
    }
}

/// The SMTP side of an account, with its password opened.
pub fn smtp_server(state: &AppState, a: &MailAccount) -> Result<smtp::Server, MailError> {
    let credentials = match (&a.smtp_username, &a.smtp_password) {
        (Some(u), Some(sealed)) => Some((u.clone(), open(state, sealed)?)),
        _ => None,
    };
    Ok(smtp::Server {
        endpoint: Endpoint {
            host: a.smtp_host.clone(),
            port: u16::try_from(a.smtp_port).unwrap_or(587),
            security: Security::parse(&a.smtp_security).unwrap_or(Security::StartTls),
            allow_private: state.settings.mail_allow_private_hosts,
        },
        credentials,
    })
}

/// A sealed password, opened.
pub fn open(state: &AppState, sealed: &str) -> Result<String, MailError> {
    state.tokens.open(sealed).ok_or_else(|| {
        let mut e = MailError::new(
            crate::mail::Stage::Auth,
            "the saved password cannot be read with this server's key (was the key changed?); save the password again",
        );
        e.permanent = true;
        e
    })
}

fn outcome(r: Result<(), MailError>) -> Value {
    match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "stage": e.stage.name(), "error": e.message}),
    }
}

/// Tries the saved servers (or `input`, before saving it): IMAP login and the folder,
/// SMTP greeting and login. Answers, for each, whether it worked or at which step
/// (dns, tcp, tls, auth, folder) it failed and why.
pub async fn test_connection(state: &AppState, p: &Principal, inbox_id: &str, input: Option<MailInput>) -> Result<Value, ApiError> {
    p.require(ObjectType::Inbox.resource(), Access::Write)?;
    email_inbox(state, p, inbox_id).await?;
    // Each test opens connections to hosts an admin names, for up to tens of seconds:
    // a few at once per node, so that no one turns the server into a scanner.
    let _slot = TestSlot::take().ok_or_else(|| ApiError {
        retry_after_secs: Some(5),
        ..ApiError::msg(
            Code::Overloaded,
            "too many connection tests are running; try again in a few seconds",
        )
    })?;
    let saved = p.scoped(&state.store).mail_account_of(inbox_id).await?;
    let account = match input {
        Some(i) => i.validate(state, &p.workspace_id, inbox_id, saved.as_ref())?,
        None => saved.ok_or_else(|| ApiError::msg(Code::NotFound, "this inbox has no mail servers yet: send them to test"))?,
    };
    let imap = async {
        let password = open(state, &account.imap_password)?;
        let mut session = crate::mail::imap::login(&imap_endpoint(state, &account), &account.imap_username, &password).await?;
        let selected = crate::mail::imap::select(&mut session, &account.imap_folder).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), session.logout()).await;
        selected.map(|_| ())
    };
    let smtp = async { smtp::check(&smtp_server(state, &account)?).await };
    let (imap, smtp) = tokio::join!(imap, smtp);
    Ok(json!({"imap": outcome(imap), "smtp": outcome(smtp)}))
}

/// Connection tests running on this node, and the most allowed at once.
static TESTS_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const MAX_TESTS: usize = 4;

/// One running connection test; dropping it frees the place.
struct TestSlot;

impl TestSlot {
    fn take() -> Option<TestSlot> {
        use std::sync::atomic::Ordering;
        let taken = TESTS_RUNNING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_TESTS).then_some(n + 1));
        taken.ok().map(|_| TestSlot)
    }
}

impl Drop for TestSlot {
    fn drop(&mut self) {
        TESTS_RUNNING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Writes fetched mail through the inbox's actor.
pub async fn take_mails(state: &AppState, workspace_id: &str, mut batch: MailBatch) -> Result<Value, ApiError> {
    batch.available = state
        .directory
        .availability(workspace_id)
        .into_iter()
        .filter(|(_, status)| status == "online")
        .map(|(user, _)| user)
        .collect();
    let author = Author {
        workspace_id: workspace_id.to_string(),
        actor: ACTOR.to_string(),
    };
    Ok(writes::execute(state, author, None, Write::Mails(batch)).await?.0)
}

/// Says how an inbox's channel is doing (an event on the inbox's topic when it
/// changes).
pub async fn set_channel(state: &AppState, workspace_id: &str, inbox_id: &str, status: &str, detail: &str) -> Result<(), ApiError> {
    let author = Author {
        workspace_id: workspace_id.to_string(),
        actor: ACTOR.to_string(),
    };
    let write = Write::ChannelStatus {
        inbox_id: inbox_id.to_string(),
        status: status.to_string(),
        detail: detail.to_string(),
    };
    writes::execute(state, author, None, write).await.map(|_| ())
}

/// Reports where a queued reply ended.
pub async fn report_sent(
    state: &AppState,
    workspace_id: &str,
    inbox_id: &str,
    message_id: &str,
    failed: Option<&str>,
) -> Result<(), ApiError> {
    let author = Author {
        workspace_id: workspace_id.to_string(),
        actor: ACTOR.to_string(),
    };
    let write = Write::Delivery {
        inbox_id: inbox_id.to_string(),
        message_id: message_id.to_string(),
        status: if failed.is_some() { "failed" } else { "sent" }.to_string(),
        error: failed.map(str::to_string),
    };
    writes::execute(state, author, None, write).await.map(|_| ())
}

fn attachments_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("attachments")
}

/// Where a kept attachment's bytes are: in the workspace's own folder (so that a
/// digest leads only to files the workspace received), named by their digest (so the
/// same file sent twice is kept once).
fn attachment_path(data_dir: &Path, workspace_id: &str, sha256: &str) -> Option<PathBuf> {
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    crate::domain::fields::parse_id(workspace_id).ok()?;
    Some(
        attachments_dir(data_dir)
            .join(workspace_id)
            .join(&sha256[..2])
            .join(sha256.to_ascii_lowercase()),
    )
}

/// Where fetched mail's attachments are kept, and the largest kept.
struct Keeper<'a> {
    data_dir: &'a Path,
    max_bytes: usize,
    workspace_id: &'a str,
    /// Folders a file was added to: synced once the group is kept, so that no
    /// message is committed naming a file a crash could lose.
    touched: HashSet<PathBuf>,
}

impl Keeper<'_> {
    /// Keeps an attachment's bytes (synced to disk) and answers its description:
    /// name, type judged from the content (the sender's claim when the content says
    /// nothing), size and digest. One larger than the limit is described, not kept.
    fn keep(&mut self, a: &MailAttachment) -> std::io::Result<Value> {
        let content_type = infer::get(&a.content)
            .map(|k| k.mime_type().to_string())
            .unwrap_or_else(|| a.declared_type.clone());
        // What senders declare is anything; a description the message's own check would
        // refuse would lose the whole mail, so a bad type or an empty name is replaced.
        let probe = json!([{"name": "x", "content_type": content_type, "size": 0}]);
        let content_type = if crate::domain::inbox::check_attachments(&probe).is_ok() {
            content_type
        } else {
            "application/octet-stream".to_string()
        };
        let name: String = a.name.chars().filter(|c| !c.is_control()).take(200).collect();
        let name = if name.trim().is_empty() {
            "attachment".to_string()
        } else {
            name.trim().to_string()
        };
        if a.content.len() > self.max_bytes {
            return Ok(json!({
                "name": name, "content_type": content_type, "size": a.content.len(),
                "dropped": format!("larger than the {} bytes this server keeps", self.max_bytes),
            }));
        }
        let digest: String = Sha256::digest(&a.content).iter().map(|b| format!("{b:02x}")).collect();
        if let Some(path) = attachment_path(self.data_dir, self.workspace_id, &digest) {
            let dir = path.parent().map(PathBuf::from).unwrap_or_else(|| attachments_dir(self.data_dir));
            if std::fs::metadata(&path).is_ok() {
                // Perhaps just renamed there by a group prepared alongside, whose folder
                // is not synced yet: this group syncs it too before its mail commits.
                self.touched.insert(dir);
            } else {
                if std::fs::metadata(&dir).is_err() {
                    std::fs::create_dir_all(&dir)?;
                    // The new folders' names live in their parents.
                    let mut up = dir.parent();
                    while let Some(parent) = up.filter(|p| p.starts_with(self.data_dir)) {
                        self.touched.insert(parent.to_path_buf());
                        up = parent.parent();
                    }
                }
                // Written aside and synced, then renamed: a crash never leaves half a
                // file under the name a message points to.
                let tmp = dir.join(format!(".{digest}.{}", uuid::Uuid::new_v4().simple()));
                let mut file = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut file, &a.content)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                self.touched.insert(dir);
            }
        }
        Ok(json!({"name": name, "content_type": content_type, "size": a.content.len(), "sha256": digest}))
    }

    /// Syncs the folders files were added to (their new names).
    fn sync(&mut self) -> std::io::Result<()> {
        for dir in self.touched.drain() {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// A message's attachment as a download: its name, type and bytes.
pub async fn attachment(state: &AppState, p: &Principal, message_id: &str, index: usize) -> Result<(String, String, Vec<u8>), ApiError> {
    p.require(ObjectType::Message.resource(), Access::Read)?;
    let msg = p.scoped(&state.store).get(ObjectType::Message, message_id).await?;
    let list: Value = serde_json::from_str(msg.text("attachments").unwrap_or("[]")).unwrap_or(Value::Null);
    let not_found = || {
        ApiError::msg(
            Code::NotFound,
            format!("message {message_id} has no attachment {index} kept on this server"),
        )
    };
    let item = list.get(index).ok_or_else(not_found)?;
    let path = item["sha256"]
        .as_str()
        .and_then(|d| attachment_path(&state.settings.data_dir, &p.workspace_id, d))
        .ok_or_else(not_found)?;
    let bytes = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    Ok((
        item["name"].as_str().unwrap_or("attachment").to_string(),
        item["content_type"].as_str().unwrap_or("application/octet-stream").to_string(),
        bytes,
    ))
}

/// Raw mails made ready to take, off the async threads: each parsed, its
/// attachments kept and synced to disk. None for one that is not a mail at all (no
/// headers).
pub async fn prepare(
    state: &AppState,
    workspace_id: &str,
    raws: Vec<(u32, Vec<u8>)>,
) -> std::io::Result<Vec<(u32, Option<crate::store::Mail>)>> {
    let data_dir = state.settings.data_dir.clone();
    let max_bytes = state.settings.mail_attachment_max_bytes;
    let workspace_id = workspace_id.to_string();
    let work = move || {
        let mut keeper = Keeper {
            data_dir: &data_dir,
            max_bytes,
            workspace_id: &workspace_id,
            touched: HashSet::new(),
        };
        let prepared = raws
            .into_iter()
            .map(|(uid, raw)| Ok((uid, prepare_one(&mut keeper, uid, &raw)?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        keeper.sync()?;
        Ok(prepared)
    };
    tokio::task::spawn_blocking(work).await.map_err(std::io::Error::other)?
}

fn prepare_one(keeper: &mut Keeper<'_>, uid: u32, raw: &[u8]) -> std::io::Result<Option<crate::store::Mail>> {
    use crate::domain::mail::MailKind;
    let Some(parsed) = crate::domain::mail::parse(raw) else {
        return Ok(None);
    };
    let mut kept = Vec::with_capacity(parsed.attachments.len());
    for a in parsed.attachments.iter().take(crate::domain::inbox::MAX_ATTACHMENTS) {
        kept.push(keeper.keep(a)?);
    }
    let clip = |s: Option<String>, max: usize| s.map(|s| s.chars().take(max).collect::<String>());
    let (kind, bounced_ids, bounce_recipient, bounce_reason) = match parsed.kind {
        MailKind::Personal => ("personal", Vec::new(), None, None),
        MailKind::Automatic(_) => ("automatic", Vec::new(), None, None),
        MailKind::Bounce(b) => ("bounce", b.original_ids, b.recipient, b.reason),
    };
    let html = parsed.html.filter(|h| h.len() <= crate::domain::mail::MAX_TEXT * 4);
    let text = if parsed.text.is_empty() {
        "(no text)".to_string()
    } else {
        parsed.text
    };
    Ok(Some(crate::store::Mail {
        uid: i64::from(uid),
        message_id: parsed.message_id,
        references: parsed.references.into_iter().take(100).collect(),
        // The contact is who wrote it; where they want answers (Reply-To) is not who they are.
        from: parsed.from.map(|a| a.as_str().to_string()),
        reply_to: parsed.reply_to.map(|a| a.as_str().to_string()),
        from_name: clip(parsed.from_name, 200),
        subject: clip(parsed.subject, 200),
        text,
        quoted: clip(parsed.quoted, crate::domain::mail::MAX_TEXT),
        html,
        attachments: (!kept.is_empty()).then_some(Value::Array(kept)),
        kind: kind.to_string(),
        bounced_ids,
        bounce_recipient,
        bounce_reason: clip(bounce_reason, 500),
    }))
}

/// The server's SMTP server for notification mails, from `notify_smtp_url`; none when
/// unset. A malformed URL is an error in words (the setting is the operator's).
pub fn notify_server(state: &AppState) -> Option<Result<smtp::Server, String>> {
    let raw = state.settings.notify_smtp_url.as_ref()?;
    // The operator's own relay, often on the same machine or network: the address
    // guard is for servers workspace admins name.
    Some(parse_smtp_url(raw.expose(), true))
}

fn parse_smtp_url(raw: &str, allow_private: bool) -> Result<smtp::Server, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("notify_smtp_url is not a URL: {e}"))?;
    let (security, default_port) = match url.scheme() {
        "smtps" => (Security::Tls, 465),
        "smtp" => (Security::StartTls, 587),
        "smtp+plain" => (Security::None, 25),
        other => return Err(format!("notify_smtp_url: scheme '{other}' is not smtps, smtp or smtp+plain")),
    };
    let host = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or("notify_smtp_url has no host")?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let credentials = match (url.username(), url.password()) {
        ("", _) => None,
        (user, pass) => Some((decode(user), decode(pass.unwrap_or_default()))),
    };
    if security == Security::None && !crate::mail::is_loopback_host(&host) {
        return Err("notify_smtp_url: smtp+plain is only for a server on this machine".into());
    }
    Ok(smtp::Server {
        endpoint: Endpoint {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            allow_private,
        },
        credentials,
    })
}

/// Whether the calling member has their notifications mailed, and whether this server
/// can mail them at all.
pub async fn notifications(state: &AppState, p: &Principal) -> Result<Value, ApiError> {
    let (user, _) = p.user()?;
    let on = p.scoped(&state.store).notify_email(user).await?;
    Ok(json!({"email": on, "email_available": state.settings.notify_smtp_url.is_some()}))
}

/// The calling member chooses whether their notifications (assigned to them,
/// mentioned) are mailed to them.
pub async fn choose_notifications(state: &AppState, p: &Principal, email: bool) -> Result<Value, ApiError> {
    let (user, _) = p.user()?;
    if email && state.settings.notify_smtp_url.is_none() {
        return Err(ApiError::msg(
            Code::InvalidBody,
            "this server sends no notification mails: its operator has not set notify_smtp_url",
        ));
    }
    p.scoped(&state.store).set_notify_email(user, email).await?;
    notifications(state, p).await
}

/// A notification as a mail to its member.
pub fn notification_mail(state: &AppState, n: &crate::store::Notification) -> smtp::Outgoing {
    let d = &n.data;
    let record = &d["record"];
    let ty = d["object_type"].as_str().unwrap_or("record");
    let what = match ty {
        "conversation" => format!(
            "conversation #{}{}",
            record["number"].as_i64().unwrap_or_default(),
            record["subject"].as_str().map(|s| format!(" “{s}”")).unwrap_or_default()
        ),
        "message" => "a conversation".to_string(),
        other => {
            let title = ["title", "name", "subject"].iter().find_map(|f| record[*f].as_str());
            format!(
                "{} {}",
                other.replace('_', " "),
                title.map(|t| format!("“{t}”")).unwrap_or_default()
            )
        }
    };
    let (subject, lead) = match n.kind.as_str() {
        "mentioned" => (format!("You were mentioned in {what}"), format!("You were mentioned in {what}:")),
        _ => {
            let mut lead: Vec<char> = format!("{what} was assigned to you.").chars().collect();
            if let Some(c) = lead.first_mut() {
                *c = c.to_ascii_uppercase();
            }
            (format!("Assigned to you: {what}"), lead.into_iter().collect())
        }
    };
    let quote = record["text"]
        .as_str()
        .map(|t| format!("\n\n> {}", t.replace('\n', "\n> ")))
        .unwrap_or_default();
    let path = match ty {
        "conversation" => d["id"].as_str().map(|id| format!("/inbox/c/{id}")),
        "message" => d["conversation_id"].as_str().map(|id| format!("/inbox/c/{id}")),
        "deal" | "contact" | "company" | "lead" => d["id"]
            .as_str()
            .map(|id| format!("/{}/{id}", crate::domain::ObjectType::from_name(ty).map_or(ty, |t| t.table()))),
        _ => None,
    };
    let link = match (&state.settings.public_url, path) {
        (Some(base), Some(path)) => format!("\n\nOpen it: {}{path}", base.trim_end_matches('/')),
        _ => String::new(),
    };
    let text = format!(
        "Hello {},\n\n{lead}{quote}{link}\n\n— Shoal, workspace {}\n(You get these mails because you asked for them; turn them off in the web app's notifications.)",
        n.name, n.workspace_name
    );
    let from = state.settings.notify_from.clone().unwrap_or_else(|| "shoal@localhost".into());
    let domain = from.rsplit('@').next().unwrap_or("localhost").to_string();
    smtp::Outgoing {
        message_id: format!("{}.notify@{domain}", n.id),
        from_name: Some(format!("Shoal ({})", n.workspace_name)),
        from,
        to: n.email.clone(),
        subject,
        text,
        html: None,
        in_reply_to: None,
        references: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notification_smtp_url_gives_security_port_and_credentials() {
        let s = parse_smtp_url("smtps://ann%40x.test:p%40ss@mail.example.com", false).unwrap();
        assert_eq!((s.endpoint.security, s.endpoint.port), (Security::Tls, 465));
        assert_eq!(s.credentials, Some(("ann@x.test".into(), "p@ss".into())));
        let s = parse_smtp_url("smtp://mail.example.com:2525", false).unwrap();
        assert_eq!(
            (s.endpoint.security, s.endpoint.port, s.credentials),
            (Security::StartTls, 2525, None)
        );
        assert!(parse_smtp_url("smtp+plain://127.0.0.1:25", true).is_ok());
        assert!(parse_smtp_url("smtp+plain://mail.example.com", true).is_err());
        assert!(parse_smtp_url("http://mail.example.com", true).is_err());
    }
}
