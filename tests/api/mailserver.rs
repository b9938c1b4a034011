//! Real mail servers for the mail tests: a throwaway Dovecot (IMAP, and LMTP for
//! delivery) and Postfix (SMTP, delivering into Dovecot through LMTP), each pair in a
//! fresh folder on free loopback ports, so tests can run side by side. A pair that
//! cannot start fails the test with the servers' logs; it never skips.
//!
//! Needs root (Postfix runs only as root) and Debian's `dovecot-imapd dovecot-lmtpd
//! postfix`, which .ci/run installs. Users live in the domain `example.test`; their
//! maildirs belong to `nobody`, since Dovecot refuses to deliver as root.

// A helper module: each test uses the part it needs.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every test user's domain: user `support` is `support@example.test`.
pub const DOMAIN: &str = "example.test";

/// Bounds each server's start; both start in well under a second when healthy.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Dovecot may take to stop on SIGTERM before it is killed. It usually takes
/// 10 ms, but its master sometimes waits seconds for its log process; killed, it
/// loses nothing a test needs (maildir files and the UID list are replaced whole).
const DOVECOT_GRACE: Duration = Duration::from_secs(1);

// The configuration files, with @NAME@ placeholders filled in by `fill`. They are
// consts so that a script can start the same servers from the same text (see
// check.py, which reads them out of this file).

const DOVECOT_CONF: &str = r#"# A throwaway Dovecot of the tests: everything it writes stays in @DIR@.
# Without state_dir it would write to the system's own state folder.
base_dir = @DIR@/run
state_dir = @DIR@/state
# Its processes are named dovecot-@INSTANCE@/imap, .../auth, ... which tells pairs apart.
instance_name = @INSTANCE@
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# "Support", "support" and "support@example.test" all log in as support.
auth_username_format = %Ln
# Answers a failed login at once rather than after 2 s (Dovecot still sends failure
# replies on a 0.5 s tick).
auth_failure_delay = 0
log_path = @DIR@/dovecot.log
mail_location = maildir:@DIR@/home/%n/Maildir
# Without the mailbox list index a folder made on disk by the harness shows in the
# next LIST of a session already open, and STATUS never answers from a stale cache.
mailbox_list_index = no
# A test may hold many sessions of one user from one address (the default allows 10).
mail_max_userip_connections = 1000
# One file per user and password, read afresh at each login: a passwd-file is
# re-read at most once a second, so a changed password could go unseen for a second.
passdb {
  driver = dict
  args = @DIR@/auth-dict.conf
}
userdb {
  driver = dict
  args = @DIR@/auth-dict.conf
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = @IMAP_PORT@
  }
  # Not on the system's port 993, which pairs would fight over.
  inet_listener imaps {
    port = 0
  }
}
# Postfix, running as its own user, delivers through this socket...
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
# ...and checks SMTP logins against Dovecot's users through this one.
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
# No auth penalty: with it, every login from an address whose last login failed
# waits up to 15 s, which a test of wrong passwords would hit at once. Without this
# socket the penalty is off.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
protocol lmtp {
  postmaster_address = postmaster@example.test
}
"#;

const AUTH_DICT_CONF: &str = r#"# Users for Dovecot: @DIR@/auth/passdb/NAME and @DIR@/auth/userdb/NAME, JSON each.
uri = fs:posix:prefix=@DIR@/auth/
default_pass_scheme = PLAIN
key passdb {
  key = passdb/%u
  format = json
}
key userdb {
  key = userdb/%u
  format = json
}
passdb_objects = passdb
userdb_objects = userdb
"#;

const POSTFIX_MAIN_CF: &str = r#"# A throwaway Postfix of the tests: its queue, data, log and configuration are in @DIR@.
compatibility_level = 3.6
queue_directory = @DIR@/postfix/queue
# Postfix makes this folder itself, owned by its user; made by root, it cannot start.
data_directory = @DIR@/postfix/data
syslog_name = @SYSLOG_NAME@
maillog_file = @DIR@/postfix.log
# Without this every postfix command refuses a log file here, and exits 1 silently.
maillog_file_prefixes = @DIR@
myhostname = mail.example.test
mydomain = example.test
myorigin = example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
# Every address of example.test is handed to Dovecot, which refuses unknown users:
# Postfix then bounces the mail to its sender, as a real server would.
virtual_mailbox_domains = example.test
virtual_transport = lmtp:unix:@DIR@/run/lmtp
# A connection kept open to a Dovecot since restarted would fail a delivery.
lmtp_connection_cache_on_demand = no
# No mail leaves the machine: a recipient in any other domain is refused at RCPT (550).
default_transport = error:tests send no mail off this machine
relay_transport = error:tests send no mail off this machine
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
# SMTP logins are checked by Dovecot; only the submission port offers them (master.cf).
smtpd_sasl_type = dovecot
smtpd_sasl_path = @DIR@/run/auth-postfix
smtpd_sasl_auth_enable = no
smtpd_tls_security_level = none
smtpd_tls_auth_only = no
smtp_tls_security_level = none
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0
# Mail deferred while Dovecot was stopped goes in within a second or two of its start,
# not after Postfix's default five minutes.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
biff = no
"#;

const POSTFIX_MASTER_CF: &str = r#"# Debian's master.cf chroots services into the queue folder, where none of the files
# they need are: every service here runs unchrooted (fifth column "n").
# The MX-like port: takes mail for example.test from loopback, with no login.
@SMTP_PORT@ inet n - n - - smtpd
# The submission port: AUTH PLAIN or LOGIN without TLS, and nothing without a login.
@SUBMISSION_PORT@ inet n - n - - smtpd
  -o syslog_name=@SYSLOG_NAME@/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
# Writes maillog_file.
postlog unix-dgram n - n - 1 postlogd
"#;

/// A Dovecot and a Postfix of one test. Dropping it stops both and removes their folder.
pub struct MailServers {
    /// IMAP, plain text (no TLS); users log in with their name or address.
    pub imap_port: u16,
    /// SMTP as a domain's MX: takes mail for example.test from loopback without login
    /// and delivers it into the users' INBOXes; unknown users bounce to the sender.
    pub smtp_port: u16,
    /// SMTP submission: requires AUTH PLAIN or LOGIN (no TLS) with a user's password.
    pub submission_port: u16,
    dir: PathBuf,
    instance: String,
    /// uid and gid of `nobody`, who owns the maildirs.
    owner: (u32, u32),
    dovecot: Mutex<Option<Child>>,
    postfix_master: Mutex<Option<u32>>,
}

impl MailServers {
    /// Starts Dovecot and Postfix in a fresh folder on free loopback ports, with the given
    /// users (name, password) in example.test. Panics with the servers' logs if they
    /// cannot start: tests must fail, never skip.
    pub fn start(users: &[(&str, &str)]) -> MailServers {
        preflight();
        let mut failures = Vec::new();
        // Free ports are found by binding port 0 and letting go; another test may take
        // one in between, so a pair that lost its port starts again on new ones.
        for _ in 0..3 {
            match MailServers::try_start(users) {
                Ok(servers) => return servers,
                Err((message, port_taken)) => {
                    failures.push(message);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        panic!("the mail servers did not start:\n{}", failures.join("\n\n"));
    }

    /// One try; the error says whether a port was taken. What started is stopped when
    /// the half-made value drops.
    fn try_start(users: &[(&str, &str)]) -> Result<MailServers, (String, bool)> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("shoal-mail-{id}"));
        let ports = free_ports();
        let servers = MailServers {
            imap_port: ports[0],
            smtp_port: ports[1],
            submission_port: ports[2],
            instance: format!("shoal-mail-{}", &id[..8]),
            dir,
            owner: (id_of("-u"), id_of("-g")),
            dovecot: Mutex::new(None),
            postfix_master: Mutex::new(None),
        };
        servers.write_config();
        for (user, password) in users {
            servers.add_user(user, password);
        }
        let taken = |message: String, servers: &MailServers| {
            let logs = servers.log_tail();
            let port_taken = logs.contains("in use");
            (format!("{message}\n{logs}"), port_taken)
        };
        if let Err(e) = servers.try_start_dovecot() {
            return Err(taken(e, &servers));
        }
        if let Err(e) = servers.try_start_postfix() {
            return Err(taken(e, &servers));
        }
        Ok(servers)
    }

    /// `user@example.test`.
    pub fn address(&self, user: &str) -> String {
        format!("{user}@{DOMAIN}")
    }

    /// Adds a user with an empty INBOX; it can log in and receive mail at once.
    pub fn add_user(&self, user: &str, password: &str) {
        check_user(user);
        let maildir = self.maildir(user, None);
        self.make_owned_dir(&self.dir.join("home").join(user));
        self.make_owned_dir(&maildir);
        for sub in ["cur", "new", "tmp"] {
            self.make_owned_dir(&maildir.join(sub));
        }
        let home = self.dir.join("home").join(user);
        let userdb = serde_json::json!({
            "uid": self.owner.0.to_string(),
            "gid": self.owner.1.to_string(),
            "home": home.to_string_lossy(),
        });
        write_atomically(&self.dir.join("auth/userdb").join(user), userdb.to_string().as_bytes(), None);
        self.write_password(user, password);
    }

    /// Changes a user's password; the next IMAP or SMTP login sees it (no restart, no wait).
    pub fn set_password(&self, user: &str, password: &str) {
        check_user(user);
        assert!(self.dir.join("auth/userdb").join(user).exists(), "no mail user {user:?}");
        self.write_password(user, password);
    }

    fn write_password(&self, user: &str, password: &str) {
        assert!(!password.contains('\0'), "a password cannot hold NUL");
        // The scheme is spelled out so that a password that starts with "{" is not
        // read as one.
        let passdb = serde_json::json!({ "password": format!("{{PLAIN}}{password}") });
        write_atomically(&self.dir.join("auth/passdb").join(user), passdb.to_string().as_bytes(), None);
    }

    /// Drops a raw RFC 5322 mail into the user's INBOX as a delivery agent would (written
    /// in tmp/, renamed into new/); an IDLE'ing client sees it within about 0.5 s.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        self.deliver_into(user, None, raw);
    }

    /// Same into another folder, e.g. "Support", made (and subscribed) if needed.
    /// Folder names are ASCII letters, digits, spaces, '_' and '-'.
    pub fn deliver_to_folder(&self, user: &str, folder: &str, raw: &[u8]) {
        check_folder(folder);
        self.make_folder(user, folder);
        self.deliver_into(user, Some(folder), raw);
    }

    fn deliver_into(&self, user: &str, folder: Option<&str>, raw: &[u8]) {
        check_user(user);
        let maildir = self.maildir(user, folder);
        assert!(maildir.join("new").is_dir(), "no mail user {user:?}");
        let name = unique_maildir_name();
        let tmp = maildir.join("tmp").join(&name);
        write_file(&tmp, raw, 0o644);
        chown(&tmp, self.owner);
        fs::rename(&tmp, maildir.join("new").join(&name)).unwrap();
    }

    fn make_folder(&self, user: &str, folder: &str) {
        let maildir = self.maildir(user, Some(folder));
        if maildir.join("new").is_dir() {
            return;
        }
        assert!(self.maildir(user, None).is_dir(), "no mail user {user:?}");
        self.make_owned_dir(&maildir);
        for sub in ["cur", "new", "tmp"] {
            self.make_owned_dir(&maildir.join(sub));
        }
        // Marks a Maildir++ folder, as Dovecot's own folders are.
        write_file(&maildir.join("maildirfolder"), b"", 0o644);
        chown(&maildir.join("maildirfolder"), self.owner);
        // Subscribed, as a folder a user made in a mail client would be (LSUB shows it).
        let subscriptions = self.maildir(user, None).join("subscriptions");
        let mut list = fs::read_to_string(&subscriptions).unwrap_or_else(|_| "V\t2\n\n".to_string());
        if !list.lines().any(|l| l == folder) {
            if !list.ends_with('\n') {
                list.push('\n');
            }
            list.push_str(folder);
            list.push('\n');
            write_atomically(&subscriptions, list.as_bytes(), Some(self.owner));
        }
    }

    /// The raw mails in the user's INBOX (new/ and cur/), oldest delivery first.
    pub fn mails(&self, user: &str) -> Vec<Vec<u8>> {
        check_user(user);
        read_maildir(&self.maildir(user, None))
    }

    /// The raw mails in one of the user's folders, oldest delivery first; none if the
    /// folder does not exist.
    pub fn mails_in(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        check_user(user);
        check_folder(folder);
        read_maildir(&self.maildir(user, Some(folder)))
    }

    /// Waits (looking every 50 ms, up to `timeout`) until the user's INBOX holds at least
    /// `n` mails, and returns them all. Panics with the servers' logs on timeout.
    pub async fn wait_for_mails(&self, user: &str, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mails = self.mails(user);
            if mails.len() >= n {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "{user} has {} mails after {timeout:?}, not {n}\n{}",
                mails.len(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops Dovecot as a crash or an operator would: open IMAP sessions are cut and
    /// mail sent by SMTP waits in Postfix's queue until `start_imap`.
    pub fn stop_imap(&self) {
        let child = lock(&self.dovecot).take();
        if let Some(child) = child {
            stop_dovecot(child);
        }
    }

    /// Starts Dovecot again with the same configuration, users and mail (UIDs and
    /// UIDVALIDITY kept). Does nothing if it runs.
    pub fn start_imap(&self) {
        if let Err(e) = self.try_start_dovecot() {
            panic!("Dovecot did not start again: {e}\n{}", self.log_tail());
        }
    }

    /// Gives the user's INBOX a new UIDVALIDITY, its mails kept (renumbered from UID 1,
    /// flags kept), as when a server's index is lost. Dovecot is restarted, which cuts
    /// open IMAP sessions; if it was stopped, it stays stopped.
    pub fn reset_uidvalidity(&self, user: &str) {
        check_user(user);
        let running = lock(&self.dovecot).is_some();
        self.stop_imap();
        // The UID list and the indexes go; dovecot-uidvalidity (the next value to give
        // out) stays, so the new UIDVALIDITY is sure to differ from the old one.
        let maildir = self.maildir(user, None);
        for entry in fs::read_dir(&maildir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("dovecot-uidlist") || name.starts_with("dovecot.index") || name.starts_with("dovecot.list.index") {
                fs::remove_file(entry.path()).unwrap();
            }
        }
        if running {
            self.start_imap();
        }
    }

    /// The last lines of both servers' logs, for assertion messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["dovecot.out", "dovecot.log", "postfix.out", "postfix.log"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!("--- {name}, last {} lines:\n", tail.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn maildir(&self, user: &str, folder: Option<&str>) -> PathBuf {
        let inbox = self.dir.join("home").join(user).join("Maildir");
        match folder {
            None => inbox,
            // Maildir++: folder "Support" is the hidden folder .Support beside new/ and cur/.
            Some(f) => inbox.join(format!(".{f}")),
        }
    }

    fn make_owned_dir(&self, path: &Path) {
        make_dir(path);
        chown(path, self.owner);
    }

    fn write_config(&self) {
        let dir = &self.dir;
        // Dovecot's and Postfix's own users must reach the maildirs and sockets: every
        // folder is 0755 (a temporary folder made by mktemp would be 0700).
        for ancestor in dir.ancestors().skip(1) {
            let mode = fs::metadata(ancestor).unwrap().permissions().mode();
            assert!(
                mode & 0o001 != 0,
                "{} is not searchable by other users; mail servers cannot reach their folder under it",
                ancestor.display()
            );
        }
        for sub in [
            "",
            "run",
            "state",
            "home",
            "auth",
            "auth/passdb",
            "auth/userdb",
            "postfix",
            "postfix/etc",
            "postfix/queue",
        ] {
            make_dir(&dir.join(sub));
        }
        write_file(&dir.join("dovecot.conf"), self.fill(DOVECOT_CONF).as_bytes(), 0o644);
        write_file(&dir.join("auth-dict.conf"), self.fill(AUTH_DICT_CONF).as_bytes(), 0o644);
        write_file(&dir.join("postfix/etc/main.cf"), self.fill(POSTFIX_MAIN_CF).as_bytes(), 0o644);
        write_file(&dir.join("postfix/etc/master.cf"), self.fill(POSTFIX_MASTER_CF).as_bytes(), 0o644);
        // Postfix rereads a configuration file modified in the last two seconds (in case
        // it is still being written) and so would start 2 s late: these are dated back.
        let past = SystemTime::now() - Duration::from_secs(60);
        for name in ["main.cf", "master.cf"] {
            let file = fs::File::options().write(true).open(dir.join("postfix/etc").join(name)).unwrap();
            file.set_modified(past).unwrap();
        }
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("@DIR@", &self.dir.to_string_lossy())
            .replace("@INSTANCE@", &self.instance)
            .replace("@SYSLOG_NAME@", &format!("postfix-{}", self.instance))
            .replace("@IMAP_PORT@", &self.imap_port.to_string())
            .replace("@SMTP_PORT@", &self.smtp_port.to_string())
            .replace("@SUBMISSION_PORT@", &self.submission_port.to_string())
    }

    fn try_start_dovecot(&self) -> Result<(), String> {
        let mut slot = lock(&self.dovecot);
        if slot.is_some() {
            return Ok(());
        }
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dovecot.out"))
            .unwrap();
        // In the foreground (-F) Dovecot stays this process's child, reaped here when it
        // stops; daemonized, it would linger as a zombie of PID 1 and block its own
        // restart ("already running"). In a process group of its own, one signal stops it
        // and every process it started.
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("dovecot could not run: {e}"))?;
        *slot = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = slot.as_mut().map(|c| c.try_wait()) {
                *slot = None;
                return Err(format!("Dovecot exited at start ({status})"));
            }
            // The greeting comes once its auth process is ready, not merely when the port
            // accepts.
            if greets(self.imap_port, "* OK", "a LOGOUT\r\n") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("Dovecot did not greet on port {} within {START_TIMEOUT:?}", self.imap_port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_start_postfix(&self) -> Result<(), String> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postfix.out"))
            .unwrap();
        // `postfix start` returns once the master has started (or failed to); the master
        // then runs as a daemon whose pid is in the queue folder.
        let status = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.join("postfix/etc"))
            .arg("start")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .map_err(|e| format!("postfix could not run: {e}"))?;
        if !status.success() {
            return Err(format!("postfix start failed ({status})"));
        }
        let pid_file = self.dir.join("postfix/queue/pid/master.pid");
        let pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("no pid in {}", pid_file.display()))?;
        *lock(&self.postfix_master) = Some(pid);
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [self.smtp_port, self.submission_port] {
            while !greets(port, "220", "QUIT\r\n") {
                if Instant::now() > deadline {
                    return Err(format!("Postfix did not greet on port {port} within {START_TIMEOUT:?}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for MailServers {
    fn drop(&mut self) {
        // Both are told to stop first, then waited for, which halves the wait.
        // A start that failed after `postfix start` may have left no pid recorded.
        let pid_file = self.dir.join("postfix/queue/pid/master.pid");
        let postfix = lock(&self.postfix_master)
            .take()
            .or_else(|| fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()));
        if let Some(pid) = postfix {
            // Postfix's master leads its own session, so its pid is its process group.
            signal_group(pid, "TERM");
        }
        self.stop_imap();
        if let Some(pid) = postfix {
            if !wait_until_exited(pid, STOP_TIMEOUT) {
                signal_group(pid, "KILL");
            }
        }
        // A process still winding down may write a last log line: try again briefly.
        for _ in 0..10 {
            match fs::remove_dir_all(&self.dir) {
                Err(e) if e.kind() != ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
    }
}

/// Fails at once, with what to do, where the servers cannot run at all.
fn preflight() {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert_eq!(
        uid.as_deref().ok(),
        Some("0"),
        "the mail servers need root: Postfix runs only as root"
    );
    for (program, args) in [("dovecot", &["--version"][..]), ("postconf", &["-d", "mail_version"][..])] {
        let ran = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            ran.is_ok_and(|s| s.success()),
            "{program} is missing: install Debian's dovecot-imapd dovecot-lmtpd postfix, as .ci/run does"
        );
    }
}

/// `id -u nobody` or `id -g nobody`: whom the mail belongs to.
fn id_of(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, "nobody"]).output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("the user nobody exists")
}

/// Three distinct free loopback ports, all held at once while chosen.
fn free_ports() -> [u16; 3] {
    let held: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let port = |i: usize| held[i].local_addr().unwrap().port();
    [port(0), port(1), port(2)]
}

/// Whether a server on the port sends a first line that starts with `prefix`; then
/// says goodbye, so that the server logs no broken connection.
fn greets(port: u16, prefix: &str, goodbye: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let Ok(reader) = stream.try_clone() else {
        return false;
    };
    let greeted = BufReader::new(reader).read_line(&mut line).is_ok() && line.starts_with(prefix);
    let _ = stream.write_all(goodbye.as_bytes());
    greeted
}

fn stop_dovecot(mut child: Child) {
    let pid = child.id();
    signal_group(pid, "TERM");
    // The master is awaited without being reaped: while it is a zombie its pid, and so
    // its process group, cannot be reused, and the SIGKILL below reaches only its own
    // processes, such as a login process serving a client, which outlives its master.
    wait_until_exited(pid, DOVECOT_GRACE);
    signal_group(pid, "KILL");
    let _ = child.wait();
}

/// Signals every process of the group led by `pid` (no libc here: kill(1) does it).
fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".to_string(), format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits until the process is gone or a zombie. A zombie counts as stopped: this
/// machine's PID 1 reaps orphans slowly, so `kill -0` calls them alive for seconds.
fn wait_until_exited(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let state = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()));
        if matches!(state, None | Some('Z') | Some('X')) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding it must still be able to clean up.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn check_user(user: &str) {
    let ok = !user.is_empty()
        && !user.starts_with('.')
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    // Dovecot lower-cases logins, and the name is a file name.
    assert!(
        ok,
        "a mail user's name is lower-case ASCII letters, digits, '.', '_' and '-': {user:?}"
    );
}

fn check_folder(folder: &str) {
    let ok = !folder.is_empty()
        && !folder.eq_ignore_ascii_case("INBOX")
        && folder.bytes().all(|b| b.is_ascii_alphanumeric() || b" _-".contains(&b));
    // '.' is the folder separator in Maildir++, and other names would need IMAP's UTF-7.
    assert!(
        ok,
        "a folder's name is ASCII letters, digits, spaces, '_' and '-', and not INBOX: {folder:?}"
    );
}

fn make_dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
    // Set outright: the umask could make it narrower.
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Replaces a file in one step, so that Dovecot never reads half of it.
fn write_atomically(path: &Path, contents: &[u8], owner: Option<(u32, u32)>) {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}", unique_maildir_name()));
    write_file(&tmp, contents, 0o644);
    if let Some(owner) = owner {
        chown(&tmp, owner);
    }
    fs::rename(&tmp, path).unwrap();
}

/// A maildir file name, "SECONDS.MMICROSECONDSPPID.shoal-test" as delivery agents
/// write them: unique, and ordered by delivery within this process (the time is
/// nudged forward if two deliveries fall in the same microsecond).
fn unique_maildir_name() -> String {
    static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut last = lock(&LAST);
    let mut next = (now.as_secs(), u64::from(now.subsec_micros()));
    if next <= *last {
        next = if last.1 >= 999_999 { (last.0 + 1, 0) } else { (last.0, last.1 + 1) };
    }
    *last = next;
    format!("{}.M{}P{}.shoal-test", next.0, next.1, std::process::id())
}

/// When a maildir file was delivered: its name starts with the seconds and then
/// "M" and the microseconds (Dovecot's and this harness's names alike); otherwise its
/// modification time.
fn delivered_at(path: &Path) -> (u64, u64) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut parts = name.split('.');
    let secs = parts.next().and_then(|s| s.parse::<u64>().ok());
    let micros = parts
        .next()
        .and_then(|p| p.strip_prefix('M'))
        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse::<u64>().ok());
    if let (Some(secs), Some(micros)) = (secs, micros) {
        return (secs, micros);
    }
    let modified = fs::metadata(path).and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH);
    let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs(), u64::from(since.subsec_micros()))
}

/// The mails of one maildir folder (new/ and cur/), oldest delivery first.
fn read_maildir(maildir: &Path) -> Vec<Vec<u8>> {
    // Dovecot moves a mail from new/ to cur/ (renaming it) when a client opens the
    // folder: a file listed may be gone when read, and the listing is taken again.
    'listing: for _ in 0..50 {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let entries = match fs::read_dir(maildir.join(sub)) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => panic!("reading {}: {e}", maildir.display()),
            };
            for entry in entries {
                let path = entry.unwrap().path();
                files.push((delivered_at(&path), path));
            }
        }
        files.sort();
        let mut mails = Vec::with_capacity(files.len());
        for (_, path) in files {
            match fs::read(&path) {
                Ok(raw) => mails.push(raw),
                Err(e) if e.kind() == ErrorKind::NotFound => continue 'listing,
                Err(e) => panic!("reading {}: {e}", path.display()),
            }
        }
        return mails;
    }
    panic!("the mails of {} kept moving while read", maildir.display());
}
