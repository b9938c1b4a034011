//! E-mail as the inbox sees it: a raw RFC 5322 mail parsed by a full MIME parser
//! (headers decoded from any charset and encoded words, text and HTML bodies, text
//! derived from HTML when a mail has no text part, attachments), what kind of mail it is
//! (a person's, an automatic one, a bounce), the new text apart from quoted history and
//! signature, and the Message-IDs Shoal gives its own mails. No I/O here.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

use super::EmailAddress;

/// A mail parsed into what the inbox keeps of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedMail {
    /// Its Message-ID without angle brackets; one made from its bytes' digest when it
    /// has none, so that the same mail read twice is still known as one.
    pub message_id: String,
    /// The Message-IDs it answers, nearest first: In-Reply-To, then References from
    /// the newest.
    pub references: Vec<String>,
    pub from: Option<EmailAddress>,
    pub from_name: Option<String>,
    /// Where answers should go when it says so (Reply-To).
    pub reply_to: Option<EmailAddress>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: Option<String>,
    /// What the sender wrote in this mail.
    pub text: String,
    /// The quoted history and the signature under it, when they could be told apart.
    pub quoted: Option<String>,
    /// The HTML body as sent (sanitised when kept).
    pub html: Option<String>,
    pub attachments: Vec<MailAttachment>,
    pub kind: MailKind,
}

/// A file a mail carries.
#[derive(Debug, Clone, PartialEq)]
pub struct MailAttachment {
    pub name: String,
    /// The type the sender declared (the stored type is judged from the content).
    pub declared_type: String,
    pub content: Vec<u8>,
}

/// Who or what wrote a mail, as far as its headers tell.
#[derive(Debug, Clone, PartialEq)]
pub enum MailKind {
    /// A person: it may open a conversation and counts for SLAs.
    Personal,
    /// Written by a machine (an auto-reply, a list, a report): it never opens a
    /// conversation nor resets an SLA. Says which header gave it away.
    Automatic(String),
    /// A delivery status notification saying a mail did not arrive.
    Bounce(Bounce),
}

/// What a bounce says of the mail that failed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bounce {
    /// The Message-IDs of the mail it reports on, as far as the report quotes them.
    pub original_ids: Vec<String>,
    /// Who could not be reached, and why, in the receiving server's words.
    pub recipient: Option<String>,
    pub reason: Option<String>,
}

/// Largest text kept of one mail, in characters.
pub const MAX_TEXT: usize = 100_000;

/// Parses a raw mail; none when it has no headers at all.
pub fn parse(raw: &[u8]) -> Option<ParsedMail> {
    let msg = MessageParser::default().parse(raw)?;
    if msg.headers().is_empty() {
        return None;
    }
    let message_id = match msg.message_id().map(clean_id).filter(|id| !id.is_empty()) {
        Some(id) => id,
        None => {
            let digest = Sha256::digest(raw);
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("sha256-{hex}@shoal.invalid")
        }
    };
    let mut references = ids_of(msg.in_reply_to());
    let mut older = ids_of(msg.references());
    older.reverse();
    for id in older {
        if !references.contains(&id) {
            references.push(id);
        }
    }
    let first = |a: Option<&mail_parser::Address<'_>>| {
        a.and_then(|a| a.first())
            .and_then(|a| Some((EmailAddress::parse(a.address()?).ok()?, a.name().map(str::to_string))))
    };
    let (from, from_name) = match first(msg.from()).or_else(|| first(msg.sender())) {
        Some((a, n)) => (Some(a), n.map(|n| n.trim().to_string()).filter(|n| !n.is_empty())),
        None => (None, None),
    };
    let reply_to = first(msg.reply_to()).map(|(a, _)| a);
    let all = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| a.iter().filter_map(|x| x.address().map(|s| s.to_lowercase())).collect())
            .unwrap_or_default()
    };
    let subject = msg.subject().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let body = msg.body_text(0).map(|t| t.replace("\r\n", "\n")).unwrap_or_default();
    let body: String = body.chars().take(MAX_TEXT).collect();
    let (text, quoted) = split_quoted(&body);
    let html = msg
        .html_bodies()
        .next()
        .filter(|p| p.is_text_html())
        .and_then(|p| p.text_contents())
        .map(str::to_string);
    let kind = kind_of(&msg);
    let attachments = match kind {
        // A report's parts are the report, not files anyone sent.
        MailKind::Bounce(_) => Vec::new(),
        _ => msg
            .attachments()
            .filter(|p| !matches!(p.body, PartType::Message(_)) || p.attachment_name().is_some())
            .enumerate()
            .map(|(i, p)| MailAttachment {
                name: p
                    .attachment_name()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("attachment-{}", i + 1)),
                declared_type: p
                    .content_type()
                    .map(|c| match c.subtype() {
                        Some(sub) => format!("{}/{}", c.ctype(), sub),
                        None => c.ctype().to_string(),
                    })
                    .unwrap_or_else(|| "application/octet-stream".into())
                    .to_lowercase(),
                content: p.contents().to_vec(),
            })
            .collect(),
    };
    Some(ParsedMail {
        message_id,
        references,
        from,
        from_name,
        reply_to,
        to: all(msg.to()),
        cc: all(msg.cc()),
        subject,
        text,
        quoted,
        html,
        attachments,
        kind,
    })
}

/// Longest Message-ID kept as it is; a longer one (rare, and allowed by RFC 5322) is
/// kept as its digest, the same wherever it appears.
const MAX_ID: usize = 200;

/// A Message-ID as kept: without angle brackets or surrounding space.
fn clean_id(id: &str) -> String {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>').trim();
    if id.len() <= MAX_ID {
        return id.to_string();
    }
    let hex: String = Sha256::digest(id.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("sha256-{hex}@long.id")
}

fn ids_of(v: &HeaderValue<'_>) -> Vec<String> {
    let raw: Vec<String> = match v {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    };
    raw.iter()
        // A header may hold several ids in one text when the parser did not split it.
        .flat_map(|t| t.split_whitespace().map(clean_id).collect::<Vec<_>>())
        .filter(|id| !id.is_empty())
        .collect()
}

/// Which header shows a mail was written by a machine, bounces first.
fn kind_of(msg: &mail_parser::Message<'_>) -> MailKind {
    let root = msg.root_part();
    if let Some(ct) = root.content_type() {
        if ct.ctype().eq_ignore_ascii_case("multipart") && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report")) {
            if ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
            {
                return MailKind::Bounce(bounce_of(msg));
            }
            return MailKind::Automatic(format!(
                "Content-Type: multipart/report; report-type={}",
                ct.attribute("report-type").unwrap_or("unknown")
            ));
        }
    }
    let header = |name: &str| msg.header_raw(name).map(|v| v.trim().to_lowercase());
    if header("X-Failed-Recipients").is_some() {
        return MailKind::Bounce(bounce_of(msg));
    }
    if let Some(v) = header("Auto-Submitted").filter(|v| v != "no") {
        return MailKind::Automatic(format!("Auto-Submitted: {v}"));
    }
    if let Some(v) = header("Precedence").filter(|v| matches!(v.as_str(), "bulk" | "junk" | "list" | "auto_reply")) {
        return MailKind::Automatic(format!("Precedence: {v}"));
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"] {
        if let Some(v) = header(name) {
            // Outlook sends X-Auto-Response-Suppress on people's mail too; only "All"
            // together with an auto-reply marker would say more, so it is not enough.
            if name != "X-Auto-Response-Suppress" {
                return MailKind::Automatic(format!("{name}: {v}"));
            }
        }
    }
    for name in ["List-Id", "List-Unsubscribe"] {
        if header(name).is_some() {
            return MailKind::Automatic(format!("{name} (list mail)"));
        }
    }
    MailKind::Personal
}

/// The failed mail's ids, recipient and reason, from the report's parts.
fn bounce_of(msg: &mail_parser::Message<'_>) -> Bounce {
    let mut b = Bounce::default();
    let mut add = |id: String, b: &mut Bounce| {
        if !id.is_empty() && !b.original_ids.contains(&id) {
            b.original_ids.push(id);
        }
    };
    for part in &msg.parts {
        match &part.body {
            PartType::Message(inner) => {
                if let Some(id) = inner.message_id() {
                    add(clean_id(id), &mut b);
                }
            }
            PartType::Text(t) | PartType::Html(t) => scan_report(t, &mut b, &mut add),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                if let Ok(t) = std::str::from_utf8(bytes) {
                    scan_report(t, &mut b, &mut add);
                }
            }
            PartType::Multipart(_) => {}
        }
    }
    for id in ids_of(msg.in_reply_to()) {
        add(id, &mut b);
    }
    b
}

/// Reads `Message-ID:`, `Final-Recipient:` and `Diagnostic-Code:` lines of a report's
/// text (a delivery-status part, or the failed mail's headers quoted as text).
fn scan_report(text: &str, b: &mut Bounce, add: &mut impl FnMut(String, &mut Bounce)) {
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "message-id" => add(clean_id(value), b),
            "final-recipient" | "original-recipient" if b.recipient.is_none() => {
                let addr = value.rsplit(';').next().unwrap_or(value).trim();
                b.recipient = Some(addr.to_lowercase());
            }
            "diagnostic-code" => {
                let why = value.split_once(';').map_or(value, |(_, w)| w).trim();
                b.reason = Some(why.to_string());
            }
            "status" if b.reason.is_none() && value.starts_with(['4', '5']) => b.reason = Some(format!("status {value}")),
            _ => {}
        }
    }
}

/// Splits what a sender wrote from the history their client quoted under it and their
/// signature: the first line that starts an attribution ("On … wrote:"), an Outlook
/// header block, the signature delimiter "-- ", or a trailing block of "> " lines.
/// When nothing is left above, the whole text is the new text.
pub fn split_quoted(body: &str) -> (String, Option<String>) {
    let lines: Vec<&str> = body.lines().collect();
    let mut cut = None;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let attribution = (t.starts_with("On ") && t.ends_with("wrote:"))
            || (t.starts_with("Le ") && t.ends_with("écrit :"))
            || (t.starts_with("Am ") && t.ends_with("schrieb:"));
        let outlook = t == "-----Original Message-----"
            || (t.starts_with("________________") && lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("From:")));
        let signature = *line == "-- " || *line == "--";
        let quote_block = t.starts_with('>') && lines[i..].iter().all(|l| l.trim().is_empty() || l.trim_start().starts_with('>'));
        if attribution || outlook || signature || quote_block {
            cut = Some(i);
            break;
        }
    }
    match cut {
        Some(i) => {
            let new = lines[..i].join("\n").trim().to_string();
            let rest = lines[i..].join("\n").trim().to_string();
            if new.is_empty() {
                (body.trim().to_string(), None)
            } else {
                (new, Some(rest).filter(|r| !r.is_empty()))
            }
        }
        None => (body.trim().to_string(), None),
    }
}

/// A subject as compared for threading: reply and forward prefixes in the common
/// languages and list tags dropped, case and spacing ignored.
pub fn normalize_subject(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        let before = s;
        if s.starts_with('[') {
            if let Some(end) = s.find(']') {
                s = s[end + 1..].trim_start();
            }
        }
        for prefix in ["re:", "fwd:", "fw:", "aw:", "sv:", "wg:", "tr:", "rif:", "vs:"] {
            // `get` and not indexing: a subject in another script has no char boundary
            // where an ASCII prefix would end.
            if s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix)) {
                s = s[prefix.len()..].trim_start();
            }
        }
        if s == before {
            break;
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// The Message-ID of a mail Shoal sends in a conversation: a random part, the
/// conversation's id (so that an answer quoting only this id still finds its
/// conversation) and the sending address's domain.
pub fn outgoing_message_id(random: &str, conversation_id: &str, from: &EmailAddress) -> String {
    let domain = from.as_str().rsplit('@').next().unwrap_or("shoal.invalid");
    format!("{random}.{conversation_id}.shoal@{domain}")
}

/// The conversation a Message-ID of Shoal's names, if it is one.
pub fn conversation_of(message_id: &str) -> Option<&str> {
    let local = message_id.split_once('@')?.0;
    let rest = local.strip_suffix(".shoal")?;
    let (_, conversation) = rest.split_once('.')?;
    (!conversation.is_empty()).then_some(conversation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(headers: &str, body: &str) -> Vec<u8> {
        format!("{}\r\n\r\n{}", headers.replace('\n', "\r\n"), body.replace('\n', "\r\n")).into_bytes()
    }

    #[test]
    fn a_persons_mail_gives_its_ids_sender_subject_and_new_text_apart_from_the_quote() {
        let raw = mail(
            "From: =?UTF-8?Q?Ren=C3=A9e_D?= <Renee@Example.COM>\nTo: support@shop.test\nSubject: =?ISO-8859-1?Q?Re:_Caf=E9?=\nMessage-ID: <abc@mail.example.com>\nIn-Reply-To: <x2@shop.test>\nReferences: <x1@shop.test> <x2@shop.test>",
            "Thanks, that works.\n\nOn Mon, 1 Dec 2026, Support wrote:\n> Try again.\n",
        );
        let m = parse(&raw).unwrap();
        assert_eq!(m.message_id, "abc@mail.example.com");
        assert_eq!(m.references, vec!["x2@shop.test", "x1@shop.test"]);
        assert_eq!(m.from.unwrap().as_str(), "renee@example.com");
        assert_eq!(m.from_name.as_deref(), Some("Renée D"));
        assert_eq!(m.subject.as_deref(), Some("Re: Café"));
        assert_eq!(m.text, "Thanks, that works.");
        assert!(m.quoted.unwrap().contains("> Try again."));
        assert_eq!(m.kind, MailKind::Personal);
    }

    #[test]
    fn a_mail_without_a_message_id_is_known_by_its_digest_every_time() {
        let raw = mail("From: a@b.test\nSubject: hi", "hello");
        let (a, b) = (parse(&raw).unwrap(), parse(&raw).unwrap());
        assert!(a.message_id.starts_with("sha256-"));
        assert_eq!(a.message_id, b.message_id);
    }

    #[test]
    fn an_html_only_mail_gets_text_derived_from_its_html() {
        let raw = mail(
            "From: a@b.test\nSubject: hi\nContent-Type: text/html; charset=utf-8",
            "<p>Hello <b>there</b></p>",
        );
        let m = parse(&raw).unwrap();
        assert!(m.text.contains("Hello") && m.text.contains("there"), "{}", m.text);
        assert!(m.html.unwrap().contains("<b>there</b>"));
    }

    #[test]
    fn auto_replies_and_list_mail_are_automatic() {
        for h in [
            "Auto-Submitted: auto-replied",
            "Precedence: bulk",
            "List-Id: <news.example.com>",
            "X-Autoreply: yes",
        ] {
            let raw = mail(&format!("From: a@b.test\nSubject: Out of office\n{h}"), "away");
            assert!(matches!(parse(&raw).unwrap().kind, MailKind::Automatic(_)), "{h}");
        }
        let raw = mail("From: a@b.test\nSubject: x\nAuto-Submitted: no", "hi");
        assert_eq!(parse(&raw).unwrap().kind, MailKind::Personal);
    }

    #[test]
    fn a_delivery_report_is_a_bounce_naming_the_failed_mail_recipient_and_reason() {
        let raw = mail(
            "From: MAILER-DAEMON@mx.test\nSubject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"",
            "--b\nContent-Type: text/plain\n\nIt failed.\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.test\n\nFinal-Recipient: rfc822; gone@example.test\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n--b\nContent-Type: text/rfc822-headers\n\nFrom: support@shop.test\nMessage-ID: <r1.c1.shoal@shop.test>\nSubject: Your order\n--b--\n",
        );
        let m = parse(&raw).unwrap();
        let MailKind::Bounce(b) = m.kind else { panic!("{:?}", m.kind) };
        assert_eq!(b.original_ids, vec!["r1.c1.shoal@shop.test"]);
        assert_eq!(b.recipient.as_deref(), Some("gone@example.test"));
        assert_eq!(b.reason.as_deref(), Some("550 5.1.1 User unknown"));
        assert!(m.attachments.is_empty());
    }

    #[test]
    fn attachments_come_with_their_names_declared_types_and_bytes() {
        let raw = mail(
            "From: a@b.test\nSubject: file\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"",
            "--b\nContent-Type: text/plain\n\nSee attached.\n--b\nContent-Type: application/pdf; name=\"r.pdf\"\nContent-Disposition: attachment; filename=\"r.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--b--\n",
        );
        let m = parse(&raw).unwrap();
        assert_eq!(m.text, "See attached.");
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].name, "r.pdf");
        assert_eq!(m.attachments[0].declared_type, "application/pdf");
        assert_eq!(m.attachments[0].content, b"%PDF-1.4\n");
    }

    #[test]
    fn quoted_history_and_signatures_are_split_from_the_new_text() {
        assert_eq!(split_quoted("Hi\n-- \nJo, ACME"), ("Hi".into(), Some("-- \nJo, ACME".into())));
        assert_eq!(split_quoted("Yes\n\n> old\n> older"), ("Yes".into(), Some("> old\n> older".into())));
        assert_eq!(split_quoted("> only a quote"), ("> only a quote".into(), None));
        assert_eq!(split_quoted("a > b\nplain"), ("a > b\nplain".into(), None));
    }

    #[test]
    fn subjects_compare_without_reply_prefixes_tags_case_or_spacing() {
        assert_eq!(normalize_subject("RE: Fwd: [Ticket]  Order   42"), "order 42");
        assert_eq!(normalize_subject("AW: order 42"), "order 42");
        assert_ne!(normalize_subject("Order 42"), normalize_subject("Order 43"));
        assert_eq!(normalize_subject("Re: Заказ #55200 не доставлен"), "заказ #55200 не доставлен");
        assert_eq!(normalize_subject("注文について"), "注文について");
        assert_eq!(normalize_subject("[€] 🎉"), "🎉");
    }

    #[test]
    fn shoals_own_message_ids_name_their_conversation() {
        let from = EmailAddress::parse("help@shop.test").unwrap();
        let id = outgoing_message_id("r4nd", "0190-abcd", &from);
        assert_eq!(id, "r4nd.0190-abcd.shoal@shop.test");
        assert_eq!(conversation_of(&id), Some("0190-abcd"));
        assert_eq!(conversation_of("abc@mail.example.com"), None);
    }
}
