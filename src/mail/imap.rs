//! Reading a folder over IMAP: log in (after TLS or STARTTLS), select the folder with
//! its UIDVALIDITY, list UIDs past a point or since a date, fetch whole mails by UID
//! without marking them seen, and wait for new mail with IDLE.

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use futures_util::TryStreamExt;

use super::{connect_tcp, tls, Endpoint, MailError, Security, Stage, Stream};

pub type Session = async_imap::Session<Stream>;

/// The longest one IMAP command may take before the connection is given up as dead.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A folder as selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folder {
    pub uid_validity: u32,
    pub exists: u32,
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = async_imap::error::Result<T>>) -> Result<T, MailError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(MailError::new(Stage::Protocol, format!("IMAP {what} failed: {e}"))),
        Err(_) => Err(MailError::new(Stage::Protocol, format!("IMAP {what} timed out"))),
    }
}

/// Reads the server's greeting.
async fn greet<T>(client: &mut async_imap::Client<T>, e: &Endpoint) -> Result<(), MailError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    match tokio::time::timeout(super::CONNECT_TIMEOUT, client.read_response()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(MailError::new(
            Stage::Protocol,
            format!("{} closed the connection before greeting", e.host),
        )),
        Ok(Err(err)) => Err(MailError::new(Stage::Protocol, format!("no IMAP greeting from {}: {err}", e.host))),
        Err(_) => Err(MailError::new(Stage::Protocol, format!("no IMAP greeting from {} in time", e.host))),
    }
}

/// Connects and logs in.
pub async fn login(e: &Endpoint, username: &str, password: &str) -> Result<Session, MailError> {
    let tcp = connect_tcp(e).await?;
    let client: async_imap::Client<Stream> = match e.security {
        Security::Tls => {
            let mut c = async_imap::Client::new(tls(&e.host, tcp).await?);
            greet(&mut c, e).await?;
            c
        }
        Security::None => {
            let mut c = async_imap::Client::new(Box::new(tcp) as Stream);
            greet(&mut c, e).await?;
            c
        }
        Security::StartTls => {
            let mut plain = async_imap::Client::new(tcp);
            greet(&mut plain, e).await?;
            bounded("STARTTLS", plain.run_command_and_check_ok("STARTTLS", None))
                .await
                .map_err(|err| MailError::new(Stage::Tls, err.message))?;
            // The server greets once; after STARTTLS the client speaks first.
            async_imap::Client::new(tls(&e.host, plain.into_inner()).await?)
        }
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, client.login(username, password)).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((async_imap::error::Error::No(why), _))) | Ok(Err((async_imap::error::Error::Bad(why), _))) => Err(MailError::new(
            Stage::Auth,
            format!("the IMAP server refused the login of '{username}': {}", server_words(&why)),
        )),
        Ok(Err((err, _))) => Err(MailError::new(Stage::Protocol, format!("IMAP login failed: {err}"))),
        Err(_) => Err(MailError::new(Stage::Protocol, "IMAP login timed out")),
    }
}

/// The server's own words from a refusal: the client library renders it as
/// `code: …, info: Some("…")`, of which only the text is for people.
fn server_words(raw: &str) -> String {
    let text = match raw.split_once("info: Some(\"") {
        Some((_, rest)) => rest.rsplit_once("\")").map_or(rest, |(t, _)| t),
        None => raw,
    };
    text.replace("\\\"", "\"").trim().to_string()
}

/// Selects the folder (read-write, so that later commands may see new mail).
pub async fn select(session: &mut Session, folder: &str) -> Result<Folder, MailError> {
    let mailbox = match tokio::time::timeout(COMMAND_TIMEOUT, session.select(folder)).await {
        Ok(Ok(m)) => m,
        Ok(Err(async_imap::error::Error::No(why))) => {
            return Err(MailError::new(
                Stage::Folder,
                format!("the folder '{folder}' cannot be opened: {}", server_words(&why)),
            ))
        }
        Ok(Err(e)) => return Err(MailError::new(Stage::Protocol, format!("IMAP SELECT failed: {e}"))),
        Err(_) => return Err(MailError::new(Stage::Protocol, "IMAP SELECT timed out")),
    };
    let uid_validity = mailbox
        .uid_validity
        .ok_or_else(|| MailError::new(Stage::Protocol, "the server did not say the folder's UIDVALIDITY"))?;
    Ok(Folder {
        uid_validity,
        exists: mailbox.exists,
    })
}

/// Whether the server offers IDLE.
pub async fn has_idle(session: &mut Session) -> Result<bool, MailError> {
    Ok(bounded("CAPABILITY", session.capabilities()).await?.has_str("IDLE"))
}

/// UIDs after `after`, in order (the server answers `n:*` with the last mail even when
/// its UID is lower, so the list is filtered).
pub async fn uids_after(session: &mut Session, after: u32) -> Result<Vec<u32>, MailError> {
    let found = bounded("UID SEARCH", session.uid_search(format!("UID {}:*", after.saturating_add(1)))).await?;
    let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > after).collect();
    uids.sort_unstable();
    Ok(uids)
}

/// The folder's newest UID, if it holds any mail (`UID SEARCH UID *` names the last).
pub async fn newest_uid(session: &mut Session) -> Result<Option<u32>, MailError> {
    Ok(bounded("UID SEARCH", session.uid_search("UID *")).await?.into_iter().max())
}

/// UIDs of mail that arrived on or after `date` (`1-Dec-2026`), in order.
pub async fn uids_since(session: &mut Session, date: &str) -> Result<Vec<u32>, MailError> {
    let found = bounded("UID SEARCH", session.uid_search(format!("SINCE {date}"))).await?;
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    Ok(uids)
}

/// The whole mails of these UIDs, as (uid, raw bytes), in UID order. The bodies are
/// read with BODY.PEEK so the mails stay unread for anyone else reading the folder.
pub async fn fetch(session: &mut Session, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, MailError> {
    let fetched = uid_fetch(session, uids, "(UID BODY.PEEK[])").await?;
    let mut out: Vec<(u32, Vec<u8>)> = fetched.iter().filter_map(|f| Some((f.uid?, f.body()?.to_vec()))).collect();
    out.sort_by_key(|(uid, _)| *uid);
    Ok(out)
}

/// The size in bytes of each of the mails (RFC822.SIZE), by UID; a mail the server
/// gives no size for is left out (it is fetched on its own).
pub async fn sizes(session: &mut Session, uids: &[u32]) -> Result<Vec<(u32, u32)>, MailError> {
    let fetched = uid_fetch(session, uids, "(UID RFC822.SIZE)").await?;
    Ok(fetched.iter().filter_map(|f| Some((f.uid?, f.size?))).collect())
}

/// The server's answers to `UID FETCH` of `items` for the UIDs, within the command
/// timeout.
async fn uid_fetch(session: &mut Session, uids: &[u32], items: &str) -> Result<Vec<async_imap::types::Fetch>, MailError> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let set = uid_set(uids);
    let fetched = async {
        let stream = session.uid_fetch(&set, items).await?;
        stream.try_collect::<Vec<_>>().await
    };
    bounded("UID FETCH", fetched).await
}

/// `1:3,7,9:10` for the UIDs, runs collapsed.
fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// How waiting for new mail ended.
pub enum Woken {
    /// The server said something changed in the folder.
    Changed,
    /// Nothing happened for the whole wait.
    Quiet,
    /// `stop` fired.
    Stopped,
}

/// Waits in IDLE until the folder changes, `wait` passes, or `stop` fires; the session
/// is given back ready for commands.
pub async fn idle(session: Session, wait: Duration, stop: impl std::future::Future<Output = ()>) -> Result<(Session, Woken), MailError> {
    // New mail the server announced during the last commands (after their search) is
    // only in the unsolicited channel: waiting now would miss it until the next change.
    if !session.unsolicited_responses.is_empty() {
        while session.unsolicited_responses.try_recv().is_ok() {}
        return Ok((session, Woken::Changed));
    }
    let mut handle = session.idle();
    bounded("IDLE", handle.init()).await?;
    let woken = {
        let (changed, interrupt) = handle.wait_with_timeout(wait);
        tokio::pin!(changed);
        tokio::select! {
            r = &mut changed => match r {
                Ok(IdleResponse::NewData(_)) => Woken::Changed,
                Ok(IdleResponse::Timeout) => Woken::Quiet,
                Ok(IdleResponse::ManualInterrupt) => Woken::Stopped,
                Err(e) => return Err(MailError::new(Stage::Protocol, format!("IMAP IDLE failed: {e}"))),
            },
            _ = stop => {
                drop(interrupt);
                Woken::Stopped
            }
        }
    };
    let session = bounded("DONE", handle.done()).await?;
    // What IDLE reported also went to the unsolicited channel; it is read again by
    // searching, so the copies are dropped rather than left to fill the channel.
    while session.unsolicited_responses.try_recv().is_ok() {}
    Ok((session, woken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_said_in_the_servers_words() {
        assert_eq!(
            server_words(r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(server_words(" Mailbox doesn't exist "), "Mailbox doesn't exist");
    }

    #[test]
    fn uid_sets_collapse_runs() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 9, 10, 7]), "1:3,5,7,9:10");
        assert_eq!(uid_set(&[4]), "4");
    }
}
