//! Sending over SMTP with lettre: the connection goes to the address [`super::resolve`]
//! checked (TLS still checks the certificate against the host's name), and failures
//! are sorted into those worth retrying (4xx, connection) and those that are not (5xx).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{resolve, Endpoint, MailError, Security, Stage};

/// The whole of one SMTP session, connection included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// An SMTP server and who we are to it.
#[derive(Clone)]
pub struct Server {
    pub endpoint: Endpoint,
    pub credentials: Option<(String, String)>,
}

/// The password stays out of any log line a `{:?}` makes.
impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoint", &self.endpoint)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// A mail to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message_id: String,
    pub from_name: Option<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The id this mail answers.
    pub in_reply_to: Option<String>,
    /// The thread's ids, oldest first.
    pub references: Vec<String>,
}

async fn transport(s: &Server) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let addr = resolve(&s.endpoint).await?[0];
    let host = &s.endpoint.host;
    let params = || TlsParameters::new(host.clone()).map_err(|e| MailError::new(Stage::Tls, format!("cannot set up TLS for {host}: {e}")));
    let tls = match s.endpoint.security {
        Security::Tls => Tls::Wrapper(params()?),
        Security::StartTls => Tls::Required(params()?),
        Security::None => Tls::None,
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT))
        .hello_name(ClientId::Domain("shoal.localdomain".into()));
    if let Some((user, password)) = &s.credentials {
        b = b.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(b.build())
}

/// What went wrong, at which step, and whether trying again may help.
fn sorted(host: &str, e: &lettre::transport::smtp::Error) -> MailError {
    let code = e.status().map(|c| c.to_string());
    let text = e.to_string();
    let (stage, permanent) = if e.is_tls() {
        (Stage::Tls, false)
    } else if code
        .as_deref()
        .is_some_and(|c| c.starts_with("535") || c.starts_with("534") || c.starts_with("530"))
    {
        (Stage::Auth, true)
    } else if e.is_permanent() {
        (Stage::Send, true)
    } else if e.is_transient() {
        (Stage::Send, false)
    } else if e.is_timeout() {
        (Stage::Tcp, false)
    } else if text.contains("authentication") || text.contains("mechanism") {
        (Stage::Auth, true)
    } else {
        (Stage::Tcp, false)
    };
    MailError {
        stage,
        message: format!("SMTP server {host}: {text}"),
        permanent,
    }
}

/// Connects, greets and logs in (when credentials are set), sending nothing.
pub async fn check(s: &Server) -> Result<(), MailError> {
    let t = transport(s).await?;
    match t.test_connection().await {
        Ok(true) => Ok(()),
        Ok(false) => Err(MailError::new(
            Stage::Protocol,
            format!("SMTP server {} did not accept the session", s.endpoint.host),
        )),
        Err(e) => Err(sorted(&s.endpoint.host, &e)),
    }
}

/// Sends one mail.
pub async fn send(s: &Server, m: &Outgoing) -> Result<(), MailError> {
    let email = build(m)?;
    let t = transport(s).await?;
    match tokio::time::timeout(SEND_TIMEOUT, t.send(email)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(sorted(&s.endpoint.host, &e)),
        Err(_) => Err(MailError::new(Stage::Tcp, format!("SMTP server {} timed out", s.endpoint.host))),
    }
}

/// The mail as it goes on the wire: our Message-ID, the thread's In-Reply-To and
/// References, the inbox's address with the agent's name, text (and HTML when the
/// reply has it) as alternatives.
pub fn build(m: &Outgoing) -> Result<Message, MailError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        let mut err = MailError::new(Stage::Send, format!("{what}: {e}"));
        err.permanent = true;
        err
    };
    let from = Mailbox::new(
        m.from_name.clone(),
        m.from.parse().map_err(|e| bad("the inbox's From address", &e))?,
    );
    let to = Mailbox::new(None, m.to.parse().map_err(|e| bad("the customer's address", &e))?);
    let mut b = Message::builder()
        .message_id(Some(format!("<{}>", m.message_id)))
        .from(from)
        .to(to)
        .subject(m.subject.clone());
    if let Some(parent) = &m.in_reply_to {
        b = b.in_reply_to(format!("<{parent}>"));
    }
    if !m.references.is_empty() {
        let refs: Vec<String> = m.references.iter().map(|r| format!("<{r}>")).collect();
        b = b.references(refs.join(" "));
    }
    let built = match &m.html {
        Some(html) => b.multipart(MultiPart::alternative_plain_html(m.text.clone(), html.clone())),
        None => b.header(ContentType::TEXT_PLAIN).body(m.text.clone()),
    };
    built.map_err(|e| bad("the mail cannot be built", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_carries_our_message_id_and_the_threads_ids() {
        let m = Outgoing {
            message_id: "r1.c1.shoal@shop.test".into(),
            from_name: Some("Ann from Shop".into()),
            from: "help@shop.test".into(),
            to: "cus@example.test".into(),
            subject: "Re: Order".into(),
            text: "Sent today.".into(),
            html: None,
            in_reply_to: Some("b@example.test".into()),
            references: vec!["a@example.test".into(), "b@example.test".into()],
        };
        let raw = String::from_utf8(build(&m).unwrap().formatted()).unwrap();
        assert!(raw.contains("Message-ID: <r1.c1.shoal@shop.test>"), "{raw}");
        assert!(raw.contains("In-Reply-To: <b@example.test>"), "{raw}");
        assert!(raw.contains("References: <a@example.test> <b@example.test>"), "{raw}");
        assert!(raw.contains("From: \"Ann from Shop\" <help@shop.test>"), "{raw}");
    }
}
