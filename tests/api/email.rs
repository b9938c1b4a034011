//! The e-mail channel against real mail servers: Dovecot for IMAP (and the mailboxes
//! replies land in) and Postfix for SMTP, each test with its own pair.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{test_settings, Backend, Session, TestApp, Ws};
use crate::mailserver::MailServers;

const SUPPORT_PASSWORD: &str = "support-secret";

/// A server that may reach mail servers on this machine, with a quick retry of a
/// refused login (every test server has a data directory of its own, where
/// attachments live).
async fn app(backend: Backend) -> TestApp {
    app_with(backend, true).await
}

/// The same; `workers` false for a server that only provides the store to node
/// processes, which then are the only ones reading mailboxes and sending.
async fn app_with(backend: Backend, workers: bool) -> TestApp {
    let mut settings = test_settings();
    settings.mail_workers = workers;
    settings.mail_allow_private_hosts = true;
    settings.mail_failing_retry_secs = 1;
    TestApp::spawn_with(backend, settings).await
}

fn servers() -> MailServers {
    MailServers::start(&[
        ("support", SUPPORT_PASSWORD),
        ("customer", "customer-secret"),
        ("dora", "dora-secret"),
    ])
}

/// An e-mail inbox of the owner's workspace reading `support`'s INBOX.
async fn email_inbox(app: &TestApp, owner: &Session, mail: &MailServers, password: &str) -> String {
    let id = app
        .post("/inboxes", &owner.token, json!({"name": "Support mail", "channel": "email"}))
        .await
        .expect(201)
        .id();
    let saved = app
        .send_json(
            awc::http::Method::PUT,
            &format!("/inboxes/{id}/email"),
            &owner.token,
            &[],
            json!({
                "imap": {"host": "127.0.0.1", "port": mail.imap_port, "security": "none", "username": "support", "password": password},
                "smtp": {"host": "127.0.0.1", "port": mail.smtp_port, "security": "none"},
                "from_name": "Shop Support",
                "from_address": "support@example.test",
            }),
        )
        .await
        .expect(200);
    assert_eq!(saved.body["imap"]["password_set"], true);
    assert!(!saved.text.contains(password), "a saved password is never answered: {}", saved.text);
    id
}

/// Waits until the inbox's channel is in `status`; answers the inbox.
async fn channel(app: &TestApp, token: &str, inbox: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.get(&format!("/inboxes/{inbox}"), token).await.expect(200);
        if r.body["channel_status"] == status {
            return r.body;
        }
        assert!(Instant::now() < deadline, "the channel never became {status}: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every conversation of the inbox.
async fn conversations(app: &TestApp, token: &str, inbox: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/conversations?inbox_id={inbox}&limit=200"), token)
        .await
        .expect(200);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

async fn messages(app: &TestApp, token: &str, conversation: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/conversations/{conversation}/messages?limit=200&sort=created_at"), token)
        .await
        .expect(200);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

/// Waits until the workspace holds `n` messages in the inbox's conversations.
async fn wait_for_messages(app: &TestApp, token: &str, inbox: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let r = app.get(&format!("/messages?inbox_id={inbox}&limit=200"), token).await.expect(200);
        let mut all = r.body["data"].as_array().cloned().unwrap_or_default();
        let mut cursor = r.body["next_cursor"].as_str().map(str::to_string);
        while let Some(c) = cursor {
            let more = app
                .get(&format!("/messages?inbox_id={inbox}&limit=200&cursor={c}"), token)
                .await
                .expect(200);
            all.extend(more.body["data"].as_array().cloned().unwrap_or_default());
            cursor = more.body["next_cursor"].as_str().map(str::to_string);
        }
        if all.len() >= n {
            return all;
        }
        assert!(Instant::now() < deadline, "{} of {n} messages arrived", all.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn raw_mail(from: &str, subject: &str, id: &str, extra: &str, body: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: support@example.test\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Wed, 02 Dec 2026 09:00:00 +0000\r\n{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n")
        .into_bytes()
}

/// The next event on the socket of `kind` (`message.created`).
async fn event(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let f = ws.recv().await;
        if f["type"] == "event" && f["kind"] == kind {
            return f;
        }
    }
}

async fn a_mail_reaches_watching_agents_within_a_second_and_its_attachment_downloads(backend: Backend) {
    let mail = servers();
    let app = app(backend).await;
    let owner = app.signup("Mail Co").await;
    let inbox = email_inbox(&app, &owner, &mail, SUPPORT_PASSWORD).await;
    channel(&app, &owner.token, &inbox, "syncing").await;
    let agent = app.member(&owner, "agent").await;
    let mut wa = app.ws(&owner.token).await;
    let mut wb = app.ws(&agent.token).await;
    wa.subscribe(&format!("inbox:{inbox}"), None).await;
    wb.subscribe(&format!("inbox:{inbox}"), None).await;

    let raw = "From: =?UTF-8?Q?Dora_M=C3=BCller?= <dora@example.test>\r\nTo: support@example.test\r\nSubject: =?UTF-8?Q?Broken_caf=C3=A9_machine?=\r\nMessage-ID: <first@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nIt leaks.\r\n\r\n-- \r\nDora\r\n--XX\r\nContent-Type: application/octet-stream; name=\"photo.png\"\r\nContent-Disposition: attachment; filename=\"photo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==\r\n--XX--\r\n";
    let sent = Instant::now();
    mail.deliver("support", raw.as_bytes());
    let seen_a = event(&mut wa, "message.created").await;
    let seen_b = event(&mut wb, "message.created").await;
    let took = sent.elapsed();
    // IMAP IDLE is told of new mail after the server's own 0.5 s batching; 2 s leaves
    // room for a loaded machine.
    assert!(took < Duration::from_secs(2), "the mail took {took:?} to reach the agents");
    assert_eq!(seen_a["seq"], seen_b["seq"]);
    let msg = &seen_a["data"]["record"];
    assert_eq!(msg["text"], "It leaks.");
    assert_eq!(msg["quoted"], "-- \nDora");
    assert_eq!(msg["direction"], "incoming");
    assert_eq!(msg["external_id"], "first@example.test");

    let convs = conversations(&app, &owner.token, &inbox).await;
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0]["subject"], "Broken café machine");
    let contact = app
        .get(&format!("/contacts/{}", convs[0]["contact_id"].as_str().unwrap()), &owner.token)
        .await
        .expect(200);
    assert_eq!(contact.body["name"], "Dora Müller");
    assert_eq!(contact.body["emails"], json!(["dora@example.test"]));

    let attachments = &msg["attachments"];
    assert_eq!(attachments[0]["name"], "photo.png");
    // The type is judged from the bytes, not from what the sender claimed.
    assert_eq!(attachments[0]["content_type"], "image/png");
    let id = msg["id"].as_str().unwrap();
    let mut res = app
        .client
        .get(format!("{}/api/v1/messages/{id}/attachments/0", app.address))
        .bearer_auth(&agent.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let bytes = res.body().await.unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    app.get(&format!("/messages/{id}/attachments/1"), &agent.token).await.expect(404);
}

#[actix_web::test]
async fn a_mail_reaches_watching_agents_within_a_second_and_its_attachment_downloads_on_sqlite() {
    a_mail_reaches_watching_agents_within_a_second_and_its_attachment_downloads(Backend::Sqlite).await;
}

#[actix_web::test]
async fn a_mail_reaches_watching_agents_within_a_second_and_its_attachment_downloads_on_postgres() {
    a_mail_reaches_watching_agents_within_a_second_and_its_attachment_downloads(Backend::Postgres).await;
}

/// A header's value in a raw mail.
fn header(raw: &str, name: &str) -> Option<String> {
    let prefix = format!("{}:", name.to_lowercase());
    raw.lines()
        .find(|l| l.to_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
}

async fn a_reply_goes_out_threaded_and_the_customers_answer_lands_in_the_same_conversation(backend: Backend) {
    let mail = servers();
    let app = app(backend).await;
    let owner = app.signup("Reply Co").await;
    let inbox = email_inbox(&app, &owner, &mail, SUPPORT_PASSWORD).await;
    channel(&app, &owner.token, &inbox, "syncing").await;
    mail.deliver(
        "support",
        &mail_of_customer("Order 42", "c1@example.test", "", "Where is my order?"),
    );
    let first = wait_for_messages(&app, &owner.token, &inbox, 1, Duration::from_secs(10)).await;
    let conv = first[0]["conversation_id"].as_str().unwrap().to_string();

    let reply = app
        .post(
            &format!("/conversations/{conv}/messages"),
            &owner.token,
            json!({"text": "It ships today."}),
        )
        .await
        .expect(201);
    let reply_id = reply.id();
    let our_id = reply.body["external_id"].as_str().unwrap().to_string();
    assert!(our_id.ends_with(".shoal@example.test") && our_id.contains(&conv), "{our_id}");
    assert_eq!(reply.body["delivery_status"], "pending");

    let got = mail.wait_for_mails("customer", 1, Duration::from_secs(20)).await;
    let raw = String::from_utf8_lossy(&got[0]).to_string();
    assert_eq!(header(&raw, "Message-ID").as_deref(), Some(format!("<{our_id}>").as_str()), "{raw}");
    assert_eq!(header(&raw, "In-Reply-To").as_deref(), Some("<c1@example.test>"), "{raw}");
    assert_eq!(header(&raw, "References").as_deref(), Some("<c1@example.test>"), "{raw}");
    assert_eq!(header(&raw, "Subject").as_deref(), Some("Re: Order 42"), "{raw}");
    assert!(header(&raw, "From").unwrap().contains("support@example.test"), "{raw}");
    assert!(raw.contains("It ships today."), "{raw}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = app.get(&format!("/messages/{reply_id}"), &owner.token).await.expect(200);
        if m.body["delivery_status"] == "sent" {
            break;
        }
        assert!(Instant::now() < deadline, "the reply was never marked sent: {}", m.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The customer answers from a client that keeps the thread's ids, under a
    // changed subject: it lands in the same conversation.
    app.patch(&format!("/conversations/{conv}"), &owner.token, json!({"status": "resolved"}))
        .await
        .expect(200);
    let refs = format!("In-Reply-To: <{our_id}>\r\nReferences: <c1@example.test> <{our_id}>\r\n");
    mail.deliver(
        "support",
        &mail_of_customer("Re: Order 42 (thanks)", "c2@example.test", &refs, "Great, thanks!"),
    );
    let all = wait_for_messages(&app, &owner.token, &inbox, 3, Duration::from_secs(10)).await;
    assert!(all.iter().all(|m| m["conversation_id"] == conv.as_str()), "{all:?}");
    // An answer to a resolved conversation reopens it.
    let c = app.get(&format!("/conversations/{conv}"), &owner.token).await.expect(200);
    assert_eq!(c.body["status"], "open");

    // A new subject from the same sender, answering nothing, is a new conversation;
    // the same subject again continues it.
    mail.deliver(
        "support",
        &mail_of_customer("Invoice question", "c3@example.test", "", "Can I get an invoice?"),
    );
    mail.deliver(
        "support",
        &mail_of_customer("RE: Invoice question", "c4@example.test", "", "Hello?"),
    );
    wait_for_messages(&app, &owner.token, &inbox, 5, Duration::from_secs(10)).await;
    let convs = conversations(&app, &owner.token, &inbox).await;
    assert_eq!(convs.len(), 2, "{convs:?}");
    let invoice = convs.iter().find(|c| c["subject"] == "Invoice question").unwrap();
    let invoice = invoice["id"].as_str().unwrap().to_string();
    assert_eq!(messages(&app, &owner.token, &invoice).await.len(), 2);

    // A customer who asks for answers elsewhere (Reply-To) gets them there.
    mail.deliver(
        "support",
        &mail_of_customer(
            "RE: Invoice question",
            "c5@example.test",
            "Reply-To: Dora Desk <dora@example.test>\r\n",
            "Please send it to my colleague.",
        ),
    );
    let all = wait_for_messages(&app, &owner.token, &inbox, 6, Duration::from_secs(10)).await;
    let asked = all.iter().find(|m| m["external_id"] == "c5@example.test").unwrap();
    assert_eq!(asked["reply_to"], "dora@example.test");
    assert_eq!(asked["conversation_id"], invoice.as_str());
    app.post(
        &format!("/conversations/{invoice}/messages"),
        &owner.token,
        json!({"text": "Here is the invoice."}),
    )
    .await
    .expect(201);
    let got = mail.wait_for_mails("dora", 1, Duration::from_secs(20)).await;
    let raw = String::from_utf8_lossy(&got[0]).to_string();
    assert!(header(&raw, "To").unwrap().contains("dora@example.test"), "{raw}");
    assert!(raw.contains("Here is the invoice."), "{raw}");
    assert_eq!(mail.mails("customer").len(), 1, "only the first reply went to the sender");
}

fn mail_of_customer(subject: &str, id: &str, extra: &str, body: &str) -> Vec<u8> {
    raw_mail("Carl Customer <customer@example.test>", subject, id, extra, body)
}

#[actix_web::test]
async fn a_reply_goes_out_threaded_and_the_customers_answer_lands_in_the_same_conversation_on_sqlite() {
    a_reply_goes_out_threaded_and_the_customers_answer_lands_in_the_same_conversation(Backend::Sqlite).await;
}

#[actix_web::test]
async fn a_reply_goes_out_threaded_and_the_customers_answer_lands_in_the_same_conversation_on_postgres() {
    a_reply_goes_out_threaded_and_the_customers_answer_lands_in_the_same_conversation(Backend::Postgres).await;
}

#[actix_web::test]
async fn the_imap_server_restarted_mid_import_and_a_new_uidvalidity_leave_no_mail_missing_or_twice() {
    let mail = servers();
    let total = 1_500;
    for i in 0..total {
        mail.deliver(
            "support",
            &raw_mail(
                &format!("sender{}@example.test", i % 300),
                &format!("Question {i}"),
                &format!("bulk-{i}@example.test"),
                "",
                "hello",
            ),
        );
    }
    let app = app(Backend::Sqlite).await;
    let owner = app.signup("Import Co").await;
    let inbox = email_inbox(&app, &owner, &mail, SUPPORT_PASSWORD).await;
    // Restarted while the import runs: the sync reconnects and goes on where it was.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app
            .get(&format!("/messages?inbox_id={inbox}&limit=1"), &owner.token)
            .await
            .expect(200);
        if !r.body["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the import never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mail.stop_imap();
    mail.start_imap();
    let all = wait_for_messages(&app, &owner.token, &inbox, total, Duration::from_secs(120)).await;
    let mut ids: Vec<&str> = all.iter().map(|m| m["external_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "every mail once");
    channel(&app, &owner.token, &inbox, "syncing").await;

    // The folder's UIDVALIDITY changes: it is read again, and nothing is taken twice.
    mail.reset_uidvalidity("support");
    mail.deliver("support", &raw_mail("late@example.test", "One more", "late@example.test", "", "hi"));
    let all = wait_for_messages(&app, &owner.token, &inbox, total + 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    channel(&app, &owner.token, &inbox, "syncing").await;
    let again = wait_for_messages(&app, &owner.token, &inbox, total + 1, Duration::from_secs(5)).await;
    assert_eq!(again.len(), total + 1, "nothing twice after the new UIDVALIDITY");
    assert!(all.iter().any(|m| m["external_id"] == "late@example.test"));
}

#[actix_web::test]
async fn a_wrong_password_marks_the_inbox_failing_with_the_reason_and_it_recovers_by_itself_once_fixed() {
    let mail = servers();
    let app = app(Backend::Sqlite).await;
    let owner = app.signup("Fail Co").await;
    let mut ws = app.ws(&owner.token).await;
    ws.subscribe(&format!("user:{}:{}", owner.workspace_id, owner.user_id), None).await;
    mail.set_password("support", "changed-on-the-server");
    let inbox = email_inbox(&app, &owner, &mail, SUPPORT_PASSWORD).await;
    let failing = channel(&app, &owner.token, &inbox, "failing").await;
    let detail = failing["channel_detail"].as_str().unwrap();
    assert!(detail.contains("refused the login of 'support'"), "{detail}");
    // The workspace's admins are told.
    let told = loop {
        let f = ws.recv().await;
        if f["kind"] == "channel_failing" {
            break f;
        }
    };
    assert_eq!(told["data"]["id"], inbox.as_str());

    // The password is put right on the server: the sync finds it by itself.
    mail.set_password("support", SUPPORT_PASSWORD);
    channel(&app, &owner.token, &inbox, "syncing").await;
    mail.deliver(
        "support",
        &raw_mail("dora@example.test", "Back", "back@example.test", "", "Are you there?"),
    );
    wait_for_messages(&app, &owner.token, &inbox, 1, Duration::from_secs(10)).await;
}

#[actix_web::test]
async fn auto_replies_and_bounces_open_no_conversation_and_a_bounce_fails_the_reply_it_reports() {
    let mail = servers();
    let app = app(Backend::Sqlite).await;
    let owner = app.signup("Bounce Co").await;
    let inbox = email_inbox(&app, &owner, &mail, SUPPORT_PASSWORD).await;
    channel(&app, &owner.token, &inbox, "syncing").await;
    // An out-of-office answering nothing opens nothing.
    mail.deliver(
        "support",
        &raw_mail(
            "away@example.test",
            "Out of office",
            "ooo@example.test",
            "Auto-Submitted: auto-replied\r\n",
            "I am away.",
        ),
    );
    // A customer who does not exist: Postfix's bounce of our reply comes back to the
    // support mailbox.
    mail.deliver(
        "support",
        &raw_mail("Ghost <nobody-here@example.test>", "Help", "ghost@example.test", "", "Hello?"),
    );
    let msgs = wait_for_messages(&app, &owner.token, &inbox, 1, Duration::from_secs(10)).await;
    let conv = msgs[0]["conversation_id"].as_str().unwrap().to_string();
    let reply = app
        .post(
            &format!("/conversations/{conv}/messages"),
            &owner.token,
            json!({"text": "How can we help?"}),
        )
        .await
        .expect(201)
        .id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let m = app.get(&format!("/messages/{reply}"), &owner.token).await.expect(200);
        if m.body["delivery_status"] == "failed" {
            break m.body;
        }
        assert!(Instant::now() < deadline, "the bounce never failed the reply: {}", m.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let why = failed["delivery_error"].as_str().unwrap();
    assert!(why.contains("nobody-here@example.test"), "{why}");
    let convs = conversations(&app, &owner.token, &inbox).await;
    assert_eq!(
        convs.len(),
        1,
        "neither the auto-reply nor the bounce opened a conversation: {convs:?}"
    );
    let thread = messages(&app, &owner.token, &conv).await;
    let line = thread
        .iter()
        .find(|m| m["kind"] == "activity")
        .expect("a line says the delivery failed");
    assert!(
        line["text"]
            .as_str()
            .unwrap()
            .starts_with("Delivery to nobody-here@example.test failed"),
        "{line}"
    );
}

#[actix_web::test]
async fn the_connection_test_says_which_step_failed_and_settings_are_checked() {
    let mail = servers();
    let app = app(Backend::Sqlite).await;
    let owner = app.signup("Test Co").await;
    let inbox = email_inbox(&app, &owner, &mail, SUPPORT_PASSWORD).await;
    let ok = app
        .post(&format!("/inboxes/{inbox}/email/test"), &owner.token, json!({}))
        .await
        .expect(200);
    assert_eq!(ok.body, json!({"imap": {"ok": true}, "smtp": {"ok": true}}));
    let wrong = app
        .post(
            &format!("/inboxes/{inbox}/email/test"),
            &owner.token,
            json!({
                "imap": {"host": "127.0.0.1", "port": mail.imap_port, "security": "none", "username": "support", "password": "nope", "folder": "INBOX"},
                "smtp": {"host": "127.0.0.1", "port": 1, "security": "none"},
                "from_address": "support@example.test",
            }),
        )
        .await
        .expect(200);
    assert_eq!(wrong.body["imap"]["ok"], false);
    assert_eq!(wrong.body["imap"]["stage"], "auth");
    assert_eq!(wrong.body["smtp"]["stage"], "tcp", "{}", wrong.text);
    let folder = app
        .post(
            &format!("/inboxes/{inbox}/email/test"),
            &owner.token,
            json!({
                "imap": {"host": "127.0.0.1", "port": mail.imap_port, "security": "none", "username": "support", "password": SUPPORT_PASSWORD, "folder": "Nope"},
                "smtp": {"host": "127.0.0.1", "port": mail.smtp_port, "security": "none"},
                "from_address": "support@example.test",
            }),
        )
        .await
        .expect(200);
    assert_eq!(folder.body["imap"]["stage"], "folder", "{}", folder.text);
    assert_eq!(folder.body["smtp"]["ok"], true, "{}", folder.text);

    // The saved password goes only where it was saved for: naming another host
    // without it is refused, for a test as for saving.
    let elsewhere = json!({
        "imap": {"host": "localhost", "port": mail.imap_port, "security": "none", "username": "support"},
        "smtp": {"host": "127.0.0.1", "port": mail.smtp_port, "security": "none"},
        "from_address": "support@example.test",
    });
    let refused = app
        .post(&format!("/inboxes/{inbox}/email/test"), &owner.token, elsewhere.clone())
        .await
        .expect(422);
    assert!(
        refused.body["error"]["details"]["fields"]["imap.password"]
            .as_str()
            .unwrap()
            .contains("again"),
        "{}",
        refused.text
    );
    app.send_json(
        awc::http::Method::PUT,
        &format!("/inboxes/{inbox}/email"),
        &owner.token,
        &[],
        elsewhere,
    )
    .await
    .expect(422);

    // Plain text to a server elsewhere, bad hosts and a missing password are refused.
    let api = app
        .post("/inboxes", &owner.token, json!({"name": "New", "channel": "email"}))
        .await
        .expect(201)
        .id();
    let bad = app
        .send_json(
            awc::http::Method::PUT,
            &format!("/inboxes/{api}/email"),
            &owner.token,
            &[],
            json!({
                "imap": {"host": "mail.example.com", "security": "none", "username": "u"},
                "smtp": {"host": "bad host!", "security": "ssl"},
                "from_address": "nope",
            }),
        )
        .await
        .expect(422);
    let fields = &bad.body["error"]["details"]["fields"];
    for f in ["imap.security", "imap.password", "smtp.host", "smtp.security", "from_address"] {
        assert!(fields.get(f).is_some(), "{f} in {}", bad.text);
    }
    // An agent may not see or change the servers.
    let agent = app.member(&owner, "agent").await;
    app.get(&format!("/inboxes/{inbox}/email"), &agent.token).await.expect(403);
}

async fn put_servers(node: &TestApp, owner: &Session, inbox: &str, mail: &MailServers, smtp_port: u16) {
    let body = json!({
        "imap": {"host": "127.0.0.1", "port": mail.imap_port, "security": "none", "username": "support", "password": SUPPORT_PASSWORD},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
        "from_address": "support@example.test",
    });
    node.send_json(awc::http::Method::PUT, &format!("/inboxes/{inbox}/email"), &owner.token, &[], body)
        .await
        .expect(200);
}

/// The state of a reply's place in the outbox, read from the store itself.
async fn outbox_state(app: &TestApp, message_id: &str) -> Option<String> {
    use sqlx::{Connection, Row};
    let url = format!("sqlite://{}", app.settings.data_dir.join("shoal.db").display());
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT state FROM mail_outbox WHERE message_id = ?")
        .bind(message_id)
        .fetch_optional(&mut c)
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[actix_web::test]
async fn a_reply_whose_server_was_killed_before_it_was_sent_is_sent_once_after_the_restart() {
    let mail = servers();
    // The test app only provides the store; the servers are processes of their own.
    let store = app_with(Backend::Sqlite, false).await;
    // An SMTP server that takes the connection and never greets: the first send hangs
    // there, between the reply's commit and its sending.
    let tarpit = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tarpit_port = tarpit.local_addr().unwrap().port();
    let env = [("SHOAL_MAIL_ALLOW_PRIVATE_HOSTS", "true"), ("SHOAL_MAIL_SEND_STALE_SECS", "1")];
    let first = crate::helpers::Server::start(&store.settings, &env);
    let node = TestApp::remote(&first.address);
    let owner = node.signup("Crash Mail").await;
    let inbox = node
        .post("/inboxes", &owner.token, json!({"name": "Support", "channel": "email"}))
        .await
        .expect(201)
        .id();
    put_servers(&node, &owner, &inbox, &mail, tarpit_port).await;
    mail.deliver(
        "support",
        &mail_of_customer("Refund", "refund@example.test", "", "I want a refund."),
    );
    let msgs = wait_for_messages(&node, &owner.token, &inbox, 1, Duration::from_secs(20)).await;
    let conv = msgs[0]["conversation_id"].as_str().unwrap().to_string();
    let reply = node
        .post(
            &format!("/conversations/{conv}/messages"),
            &owner.token,
            json!({"text": "Refunded."}),
        )
        .await
        .expect(201)
        .id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while outbox_state(&store, &reply).await.as_deref() != Some("sending") {
        assert!(Instant::now() < deadline, "the reply was never taken for sending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();

    // Restarted, and the SMTP server put right: the reply left `sending` is sent, once.
    let second = crate::helpers::Server::start(&store.settings, &env);
    let node = TestApp::remote(&second.address);
    put_servers(&node, &owner, &inbox, &mail, mail.smtp_port).await;
    let got = mail.wait_for_mails("customer", 1, Duration::from_secs(30)).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("Refunded."));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = node.get(&format!("/messages/{reply}"), &owner.token).await.expect(200);
        if m.body["delivery_status"] == "sent" {
            break;
        }
        assert!(Instant::now() < deadline, "never marked sent: {}", m.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(outbox_state(&store, &reply).await.as_deref(), Some("sent"));
    assert_eq!(mail.mails("customer").len(), 1, "sent once");
    drop(tarpit);
}

#[actix_web::test]
async fn in_a_cluster_one_node_syncs_the_mailbox_and_another_takes_over_when_it_dies_importing_nothing_twice() {
    let mail = servers();
    // The in-process app provides the fresh database; the nodes are processes.
    let store = app_with(Backend::Postgres, false).await;
    let redis = crate::cluster::redis_url();
    let channel = format!("shoal-test:{}", uuid::Uuid::new_v4().simple());
    // Attachments live under the data directory, which the nodes of a cluster share.
    let data = store.settings.data_dir.to_str().unwrap().to_string();
    let env = [
        ("SHOAL_REDIS_URL", redis.as_str()),
        ("SHOAL_REDIS_CHANNEL", channel.as_str()),
        ("SHOAL_LEASE_TTL_MS", "2000"),
        ("SHOAL_MAIL_ALLOW_PRIVATE_HOSTS", "true"),
        ("SHOAL_DATA_DIR", data.as_str()),
    ];
    let mut nodes: Vec<Option<crate::helpers::Server>> =
        (0..2).map(|_| Some(crate::helpers::Server::start(&store.settings, &env))).collect();
    let addresses: Vec<String> = nodes.iter().map(|n| n.as_ref().unwrap().address.clone()).collect();
    let first = TestApp::remote(&addresses[0]);
    let owner = first.signup("Cluster Mail").await;
    let inbox = first
        .post("/inboxes", &owner.token, json!({"name": "Support", "channel": "email"}))
        .await
        .expect(201)
        .id();
    put_servers(&first, &owner, &inbox, &mail, mail.smtp_port).await;
    for i in 0..200 {
        mail.deliver(
            "support",
            &raw_mail(
                &format!("c{}@example.test", i % 40),
                &format!("Q {i}"),
                &format!("early-{i}@example.test"),
                "",
                "hi",
            ),
        );
    }
    wait_for_messages(&first, &owner.token, &inbox, 200, Duration::from_secs(60)).await;

    // Exactly one node holds the inbox's sync.
    let lease = || async {
        let client = redis::Client::open(redis.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(format!("{channel}:lease:mailsync:{inbox}"))
            .query_async::<Option<String>>(&mut c)
            .await
            .unwrap()
    };
    let holder = lease().await.expect("a node holds the sync");
    let syncing = addresses
        .iter()
        .position(|a| holder.contains(a.as_str()))
        .expect("the holder is one of the nodes");
    let survivor = 1 - syncing;
    nodes[syncing].take().unwrap().kill9();

    // Mail keeps coming: the other node takes the sync over once the lease runs out.
    for i in 0..200 {
        mail.deliver(
            "support",
            &raw_mail(
                &format!("c{}@example.test", i % 40),
                &format!("Late {i}"),
                &format!("late-{i}@example.test"),
                "",
                "hi",
            ),
        );
    }
    let other = TestApp::remote(&addresses[survivor]);
    let all = wait_for_messages(&other, &owner.token, &inbox, 400, Duration::from_secs(60)).await;
    let mut ids: Vec<&str> = all.iter().map(|m| m["external_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((all.len(), ids.len()), (400, 400), "every mail once");
    let now = lease().await.expect("the survivor holds the sync");
    assert!(now.contains(addresses[survivor].as_str()), "{now}");
}

/// Dora, invited by the owner as an agent and signed up (her mailbox is `dora`).
async fn agent_dora(app: &TestApp, owner: &Session) -> Session {
    let invitation = app
        .post("/invitations", &owner.token, json!({"email": "dora@example.test", "role": "agent"}))
        .await
        .expect(201);
    crate::helpers::session(
        &app.anonymous_post(
            "/auth/signup",
            json!({"invitation_token": invitation.body["token"], "name": "Dora", "email": "dora@example.test", "password": "correct horse battery"}),
        )
        .await
        .expect(201)
        .body,
    )
}

/// The member asks for their notifications by e-mail.
async fn wants_mail(app: &TestApp, member: &Session) {
    app.send_json(
        awc::http::Method::PUT,
        "/me/notifications",
        &member.token,
        &[],
        json!({"email": true}),
    )
    .await
    .expect(200);
}

#[actix_web::test]
async fn members_who_ask_get_their_assignments_and_mentions_by_mail_through_the_servers_smtp() {
    let mail = servers();
    let mut settings = test_settings();
    settings.mail_allow_private_hosts = true;
    settings.notify_smtp_url = Some(shoal::config::Secret::new(format!("smtp+plain://127.0.0.1:{}", mail.smtp_port)));
    settings.notify_from = Some("shoal@example.test".into());
    settings.public_url = Some("https://crm.example.test".into());
    let app = TestApp::spawn_with(Backend::Sqlite, settings).await;
    let owner = app.signup("Notify Co").await;
    let dora = agent_dora(&app, &owner).await;
    let off = app.get("/me/notifications", &dora.token).await.expect(200);
    assert_eq!(off.body, json!({"email": false, "email_available": true}));
    wants_mail(&app, &dora).await;

    let inbox = app
        .post("/inboxes", &owner.token, json!({"name": "Chat", "channel": "api"}))
        .await
        .expect(201);
    let token = inbox.body["token"].as_str().unwrap().to_string();
    let conv = app
        .post(
            "/channels/api/messages",
            &token,
            json!({"contact_identifier": "c1", "subject": "Broken lamp", "text": "It flickers"}),
        )
        .await
        .expect(201)
        .body["conversation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.patch(
        &format!("/conversations/{conv}"),
        &owner.token,
        json!({"assignee_id": dora.user_id}),
    )
    .await
    .expect(200);
    app.post(
        &format!("/conversations/{conv}/messages"),
        &owner.token,
        json!({"kind": "note", "text": "@Dora the customer called again", "mentions": [dora.user_id]}),
    )
    .await
    .expect(201);
    let got = mail.wait_for_mails("dora", 2, Duration::from_secs(20)).await;
    // (subject, text) of each mail, decoded as a mail client would.
    let read: Vec<(String, String)> = got
        .iter()
        .map(|raw| {
            let m = mail_parser::MessageParser::default().parse(raw).unwrap();
            (
                m.subject().unwrap_or_default().to_string(),
                m.body_text(0).unwrap_or_default().to_string(),
            )
        })
        .collect();
    let (subject, text) = read
        .iter()
        .find(|(s, _)| s.starts_with("Assigned to you"))
        .expect("an assignment mail");
    assert_eq!(subject, "Assigned to you: conversation #1 “Broken lamp”");
    assert!(text.contains(&format!("https://crm.example.test/inbox/c/{conv}")), "{text}");
    let (_, text) = read
        .iter()
        .find(|(s, _)| s.starts_with("You were mentioned"))
        .expect("a mention mail");
    assert!(text.contains("> @Dora the customer called again"), "{text}");

    // Without an SMTP server of its own, a server refuses the choice in words.
    let plain = app_with(Backend::Sqlite, true).await;
    let someone = plain.signup("Quiet Co").await;
    let refused = plain
        .send_json(
            awc::http::Method::PUT,
            "/me/notifications",
            &someone.token,
            &[],
            json!({"email": true}),
        )
        .await
        .expect(400);
    assert!(refused.text.contains("notify_smtp_url"), "{}", refused.text);
}

/// A member's notification goes to a server that takes the connection and never
/// answers (sending to it waits out the 30 s SMTP timeout): a customer's reply is sent
/// meanwhile all the same.
#[actix_web::test]
async fn a_notification_server_that_never_answers_holds_no_reply_back() {
    let mail = servers();
    // The kernel completes connections to it; nothing ever reads or writes them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut settings = test_settings();
    settings.mail_allow_private_hosts = true;
    settings.notify_smtp_url = Some(shoal::config::Secret::new(format!(
        "smtp+plain://127.0.0.1:{}",
        silent.local_addr().unwrap().port()
    )));
    settings.notify_from = Some("shoal@example.test".into());
    let app = TestApp::spawn_with(Backend::Sqlite, settings).await;
    let owner = app.signup("Busy Co").await;
    let dora = agent_dora(&app, &owner).await;
    wants_mail(&app, &dora).await;
    let inbox = email_inbox(&app, &owner, &mail, SUPPORT_PASSWORD).await;
    channel(&app, &owner.token, &inbox, "syncing").await;
    mail.deliver("support", &mail_of_customer("Lamp", "lamp1@example.test", "", "It flickers."));
    let first = wait_for_messages(&app, &owner.token, &inbox, 1, Duration::from_secs(10)).await;
    let conv = first[0]["conversation_id"].as_str().unwrap().to_string();
    // Dora's assignment mail goes to the silent server first: once it has connected,
    // the notification waits for a greeting that never comes.
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = silent.accept() {
            let _ = connected_tx.send(conn);
        }
    });
    app.patch(
        &format!("/conversations/{conv}"),
        &owner.token,
        json!({"assignee_id": dora.user_id}),
    )
    .await
    .expect(200);
    // Held open, unanswered, until the test ends.
    let _held = tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .expect("the notification is sent to the silent server")
        .unwrap();
    let asked = Instant::now();
    app.post(
        &format!("/conversations/{conv}/messages"),
        &owner.token,
        json!({"text": "A new lamp is on its way."}),
    )
    .await
    .expect(201);
    let got = mail.wait_for_mails("customer", 1, Duration::from_secs(25)).await;
    assert!(String::from_utf8_lossy(&got[0]).contains("A new lamp is on its way."));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the reply waited {:?} behind the notification",
        asked.elapsed()
    );
}
