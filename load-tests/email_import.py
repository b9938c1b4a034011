"""The e-mail channel's first import at size, against a running server:

    python3 load-tests/email_import.py --url http://127.0.0.1:PORT --pid SERVER_PID [--mails 20000]
        [--attachments 0.1] [--senders 2000] [--probe-url URL] [--probe-rate 10]

1. A throwaway Dovecot (load-tests/mailserver.py) with one mailbox, filled before the
   inbox exists with N mails of S customers, dated over the last 30 days: a few lines
   of text, some with quoted history or a signature, some also in HTML, some subjects
   and names in encoded words, some replies to earlier mails (In-Reply-To and
   References), and a share with one attachment of 20 to 200 KB (PDF, PNG or JPEG
   bytes, so that type detection has something to read).
2. An inbox of channel `email` is given that mailbox (PUT /inboxes/{id}/email); from
   the PUT until its `channel_status` says `syncing`: mails per minute, the server's
   CPU time per mail (from /proc/PID/stat, which is why the server must run on this
   machine and --pid name it) and its memory.
3. Meanwhile other work, one request in flight per kind at --probe-rate a second:
   listing contacts, creating one, moving a deal on a board, posting a message to
   another inbox (of channel `api`). Each kind's p50 and p99 are taken for
   --baseline-secs before the import and for the whole import; the ratio of the two
   p99 says whether the import starves the rest (the aim: within 2x).
4. The inbox's messages, paged through GET /messages, must be exactly the mails
   delivered: each Message-ID once as an `external_id`, none missing, none extra.

Prints a JSON line, then Markdown tables. Exits 1 when the check in 4 fails (after
printing), and 2, saying why, when the run ends before it: the sync says `failing`,
or says nothing new for --stall-secs, the run passes --timeout-secs, a request of the
set-up is refused, or a signal comes. Loopback only; bounded by --mails and
--timeout-secs; Dovecot and the probe threads are stopped on any way out.
"""

import argparse
import base64
import email.header
import email.utils
import html
import http.client
import json
import math
import os
import quopri
import random
import re
import signal
import sys
import threading
import time
import unicodedata
import urllib.parse

from mailserver import Dovecot

MAIL_USER = "support"
MAIL_DOMAIN = "example.test"
PASSWORD = "a long enough password"
# Mails are dated over this many days before now, all inside the import window.
SPAN_DAYS = 30
IMPORT_DAYS = 3650
# Share of mails that answer an earlier one, and of those with an HTML part too.
REPLY_SHARE = 0.1
HTML_SHARE = 0.2


class Failed(Exception):
    """A request was refused, or the run cannot go on."""


# ---------------------------------------------------------------- the server's REST API


class Api:
    """One keep-alive HTTP/1.1 connection to a server's REST API, for one thread.
    Timing requests on a fresh TCP connection each would add the connection set-up
    to every figure; the server's own work is what is measured."""

    def __init__(self, base_url, timeout=60):
        u = urllib.parse.urlparse(base_url)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.conn = None

    def call(self, method, path, body=None, token=None, headers=None):
        """Answers the decoded JSON body; raises Failed on any status but 2xx."""
        data = json.dumps(body).encode() if body is not None else None
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, "/api/v1" + path, data, h)
                res = self.conn.getresponse()
                raw = res.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server may close a keep-alive connection that sat idle; once,
                # on a connection that was reused, that is no failure of the request.
                self.close()
                if fresh or attempt:
                    raise
        if res.status // 100 != 2:
            raise Failed(f"{method} {path} answered {res.status}: {raw[:500].decode(errors='replace')}")
        return json.loads(raw) if raw else None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Session:
    """A member's access token, renewed with the refresh token before it runs out
    (15 minutes by default, shorter than a large import). Read by every thread;
    renewed only by the main thread."""

    def __init__(self, api, answer):
        self.api = api
        self._take(answer)

    def _take(self, answer):
        self.token = answer["access_token"]
        self.refresh_token = answer["refresh_token"]
        self.renew_at = time.monotonic() + answer.get("expires_in", 900) / 2

    def keep_fresh(self):
        if time.monotonic() >= self.renew_at:
            self._take(self.api.call("POST", "/auth/refresh", {"refresh_token": self.refresh_token}))


# ---------------------------------------------------------------- the server process


def cpu_secs(pid):
    """User and system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid, key):
    """VmRSS (resident now) or VmHWM (the most resident ever) of the process, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def check_pid_listens(pid, port):
    """Fails unless process `pid` holds the socket listening on the port: CPU time
    read from another process would be meaningless."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # Local address "HEX_IP:HEX_PORT", state 0A is LISTEN, inode in column 9.
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                inodes.add(cols[9])
    try:
        held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError as e:
        raise Failed(f"cannot read process {pid} (--pid): {e}")
    if not any(f"socket:[{i}]" in held for i in inodes):
        raise Failed(f"process {pid} (--pid) is not the server listening on port {port}")


# ---------------------------------------------------------------- the mails

FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kavya", "Luca", "Maja",
         "Noah", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tomás", "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoë",
         "Jürgen", "François", "Łukasz", "Søren", "Aiko", "Chidi", "Dara", "Emre", "Fatima", "Gustavo"]
LAST = ["Berg", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Hansen", "Ito", "Jansen", "Kowalski", "Lopez",
        "Müller", "Nakamura", "Olsen", "Petrov", "Rossi", "Schmidt", "Tanaka", "Weber", "Novák", "Öztürk", "Okafor",
        "Silva", "Andersson", "Brown", "Nguyen"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "shop.example", "corp.example.org",
           "customer.test", "agency.example"]
COMPANIES = ["Berg Consulting", "Northwind Traders", "Blue Harbor Ltd", "Costa & Filhos", "Kowalski Sp. z o.o.",
             "Tanaka Design", "Greenfield GmbH", "Riverside Dental"]
SUBJECTS = [
    "Order #{n} has not arrived", "Question about invoice INV-{n}", "Cannot log in to my account",
    "Refund for order #{n}", "Change of billing address", "Wrong item delivered (order #{n})",
    "Upgrade to the annual plan?", "Password reset link does not work", "Damaged package, order #{n}",
    "Cancel my subscription", "Export of my data", "Renewal of contract {n}", "Two charges on my card",
    "How do I add a second user?", "Delivery address for order #{n}", "Feature request: dark mode",
]
# Sent as encoded words (RFC 2047), as mail clients do for anything not ASCII.
SUBJECTS_UTF8 = [
    "Rückerstattung für Bestellung #{n}", "Problème de facturation – commande {n}", "Pedido #{n}: ¿cuándo llega?",
    "Заказ #{n} не доставлен", "注文 #{n} について", "Reklamacja zamówienia #{n} 📦",
]
GREETINGS = ["Hi,", "Hello support team,", "Dear Sir or Madam,", "Good morning,", "Hello,", "Hi there,"]
LINES = [
    "I ordered on Monday and the tracking page still says the parcel is being prepared.",
    "Could you tell me when I can expect an answer about this?",
    "The invoice lists three licences, but we only ever used two.",
    "I tried to reset my password twice and the link says it has expired.",
    "Please send the corrected invoice to our accounts department.",
    "The box arrived open and one of the items is broken; photos attached where I could.",
    "We would like to move to the annual plan if the discount still applies.",
    "Our office moved, so please update the delivery address on file.",
    "Is there a way to export everything we stored so far as CSV?",
    "My card was charged twice for the same month.",
    "Thanks for the quick help last time, this is a different question.",
    "We need this sorted out before the end of the quarter.",
    "I attached the document you asked for.",
    "Could somebody call me back? My number is in the signature.",
    "Let me know if you need anything else from me.",
]
CLOSINGS = ["Thanks,", "Best regards,", "Cheers,", "Kind regards,", "Many thanks,"]
REPLIES_FROM_SUPPORT = [
    "thank you for your message. We have forwarded it to the team in charge.",
    "we are sorry for the trouble. Could you send us the order number?",
    "your refund has been issued and should show within five working days.",
    "the link is valid for one hour; please try again and tell us if it fails.",
]
# File types by the first bytes that identify them, and how senders name them.
ATTACHMENTS = [
    ("application/pdf", "invoice-{n}.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
    ("image/png", "photo-{n}.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x80\x00\x00\x01\xe0\x08\x02\x00\x00\x00"),
    ("image/jpeg", "scan-{n}.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
]


def ascii_fold(s):
    """Letters of a name for an address: accents dropped, anything else left out."""
    folded = unicodedata.normalize("NFKD", s.replace("ł", "l").replace("Ł", "L").replace("ø", "o").replace("ß", "ss"))
    return "".join(c for c in folded if c.isascii() and c.isalnum()).lower() or "customer"


def header_text(text):
    """A header value: as is when ASCII, else encoded words in UTF-8."""
    if text.isascii():
        return text
    return email.header.Header(text, "utf-8", header_name="Subject").encode()


def body_part(text):
    """A text/plain part's headers and body; quoted-printable once it is not ASCII,
    as most clients send it."""
    if text.isascii():
        return "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n" + text
    qp = quopri.encodestring(text.encode()).decode("ascii")
    return "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" + qp


def html_part(paragraphs):
    inner = "".join("<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs)
    doc = f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body>{inner}</body></html>"
    b64 = base64.encodebytes(doc.encode()).decode("ascii")
    return "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" + b64


class Mails:
    """Generates the mailbox: N mails of S senders, reproducible from the seed. Keeps
    only what the check needs (the Message-IDs) and a window of recent mails that
    later ones may answer."""

    def __init__(self, n, senders, attachment_share, seed, stamp):
        self.n = n
        self.share = attachment_share
        self.rng = random.Random(seed)
        self.stamp = stamp
        rng = self.rng
        self.senders = []
        for i in range(senders):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            address = f"{ascii_fold(first)}.{ascii_fold(last)}.{i}@{rng.choice(DOMAINS)}"
            self.senders.append((f"{first} {last}", address, rng.choice(COMPANIES)))
        self.ids = []
        self.recent = []
        self.counts = {"attachment": 0, "html": 0, "reply": 0, "encoded_subject": 0, "quoted": 0, "signature": 0}
        self.bytes = 0

    def __iter__(self):
        now = time.time()
        start = now - SPAN_DAYS * 86400
        for i in range(self.n):
            when = start + (now - 60 - start) * i / max(1, self.n)
            raw = self._one(i, when)
            self.bytes += len(raw)
            yield raw, when

    def _one(self, i, when):
        rng = self.rng
        parent = None
        if self.recent and rng.random() < REPLY_SHARE:
            parent = rng.choice(self.recent)
            sender = parent["sender"]
            subject = parent["subject"] if parent["subject"].startswith("Re: ") else "Re: " + parent["subject"]
            references = parent["references"] + [parent["id"]]
            self.counts["reply"] += 1
        else:
            sender = rng.randrange(len(self.senders))
            template = rng.choice(SUBJECTS_UTF8) if rng.random() < 0.15 else rng.choice(SUBJECTS)
            subject = template.format(n=rng.randrange(10000, 99999))
            references = []
        if not subject.isascii():
            self.counts["encoded_subject"] += 1
        name, address, company = self.senders[sender]
        message_id = f"{self.stamp}.{i}.{rng.getrandbits(32):08x}@{address.split('@')[1]}"
        self.ids.append(message_id)
        self.recent.append({"sender": sender, "subject": subject, "id": message_id, "references": references[-10:]})
        if len(self.recent) > 1000:
            self.recent.pop(0)

        first = name.split()[0]
        paragraphs = [rng.choice(GREETINGS), " ".join(rng.sample(LINES, rng.randint(1, 3))), f"{rng.choice(CLOSINGS)}\n{first}"]
        text = "\n\n".join(paragraphs) + "\n"
        if rng.random() < 0.4:
            text += f"\n-- \n{name}\n{company}\n+1 555 01{rng.randrange(100):02d}\n"
            self.counts["signature"] += 1
        if parent is not None or rng.random() < 0.2:
            earlier = email.utils.formatdate(when - rng.randrange(3600, 5 * 86400), usegmt=True)
            quoted = f"Hello {first},\n{rng.choice(REPLIES_FROM_SUPPORT)}\n\nBest regards,\nThe support team"
            text += f"\nOn {earlier}, Support <{MAIL_USER}@{MAIL_DOMAIN}> wrote:\n" + "".join("> " + line + "\n" for line in quoted.split("\n"))
            self.counts["quoted"] += 1

        headers = [
            f"Return-Path: <{address}>",
            f"Delivered-To: {MAIL_USER}@{MAIL_DOMAIN}",
            "From: " + email.utils.formataddr((name, address), charset="utf-8"),
            f"To: Support <{MAIL_USER}@{MAIL_DOMAIN}>",
            "Subject: " + header_text(subject),
            "Date: " + email.utils.formatdate(when, usegmt=True),
            f"Message-ID: <{message_id}>",
        ]
        if references:
            headers.append(f"In-Reply-To: <{references[-1]}>")
            headers.append("References: " + " ".join(f"<{r}>" for r in references))
        headers.append("MIME-Version: 1.0")

        if rng.random() < HTML_SHARE:
            self.counts["html"] += 1
            boundary = f"alt-{i}-{rng.getrandbits(48):012x}"
            rich = html_part(text.split("\n\n"))
            body = (f"Content-Type: multipart/alternative; boundary=\"{boundary}\"\n\n"
                    f"--{boundary}\n{body_part(text)}\n--{boundary}\n{rich}\n--{boundary}--\n")
        else:
            body = body_part(text)
        if rng.random() < self.share:
            self.counts["attachment"] += 1
            content_type, file_name, magic = rng.choice(ATTACHMENTS)
            size = rng.randint(20_000, 200_000)
            content = magic + rng.randbytes(size - len(magic))
            file_name = file_name.format(n=i)
            boundary = f"mix-{i}-{rng.getrandbits(48):012x}"
            body = (f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n"
                    f"--{boundary}\n{body}\n--{boundary}\n"
                    f"Content-Type: {content_type}; name=\"{file_name}\"\n"
                    f"Content-Disposition: attachment; filename=\"{file_name}\"\n"
                    "Content-Transfer-Encoding: base64\n\n"
                    + base64.encodebytes(content).decode("ascii")
                    + f"\n--{boundary}--\n")
        return ("\n".join(headers) + "\n" + body).encode()


# ---------------------------------------------------------------- probes of other work


def percentile(sorted_values, p):
    """Nearest rank: the smallest value with at least p % of them at or below it."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


class Probes:
    """One thread per kind of request, each with one request in flight, started at
    `rate` a second (the next one waits for a slow answer rather than piling up).
    Each answer's time is kept under the phase it started in."""

    def __init__(self, url, session, kinds, rate):
        self.url = url
        self.session = session
        self.kinds = kinds
        self.interval = 1.0 / rate
        self.phase = "warm-up"
        self.samples = {k: {} for k in kinds}
        self.errors = {k: {} for k in kinds}
        self.first_errors = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in kinds]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=70)

    def _run(self, kind):
        api = Api(self.url)
        send = self.kinds[kind]
        n = 0
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                phase = self.phase
                t0 = time.monotonic()
                try:
                    send(api, self.session.token, n)
                    self.samples[kind].setdefault(phase, []).append((time.monotonic() - t0) * 1000)
                except Exception as e:  # counted, and the first few said: a probe never ends the run
                    self.errors[kind][phase] = self.errors[kind].get(phase, 0) + 1
                    if len(self.first_errors) < 5:
                        self.first_errors.append(f"{kind} ({phase}): {e}")
                    api.close()
                n += 1
                next_at = max(next_at + self.interval, time.monotonic())
                self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            api.close()

    def summary(self, kind, phase):
        values = sorted(self.samples[kind].get(phase, []))
        return {
            "n": len(values),
            "errors": self.errors[kind].get(phase, 0),
            "p50_ms": round(percentile(values, 50), 1) if values else None,
            "p99_ms": round(percentile(values, 99), 1) if values else None,
            "max_ms": round(values[-1], 1) if values else None,
        }


def probe_kinds(api, session, stamp):
    """The requests other users make meanwhile, with what they need made first: a
    board of two stages with one deal moved back and forth, and an inbox of channel
    `api` posted to with its token."""
    t = session.token
    pipeline = api.call("POST", "/pipelines", {"name": "Probe board", "stages": [{"name": "Left"}, {"name": "Right"}]}, t)
    stages = [s["id"] for s in pipeline["stages"]]
    deal = api.call("POST", "/deals", {"title": "Probe deal", "pipeline_id": pipeline["id"], "stage_id": stages[0]}, t)["id"]
    other = api.call("POST", "/inboxes", {"name": "Chat", "channel": "api"}, t)
    inbox_token = other["token"]

    # As most clients send them: no Idempotency-Key, which would add the server's
    # bookkeeping of keys to every write timed.
    def list_contacts(a, token, n):
        a.call("GET", "/contacts?limit=20", token=token)

    def create_contact(a, token, n):
        a.call("POST", "/contacts", {"name": f"Probe contact {n}"}, token)

    def move_deal(a, token, n):
        a.call("POST", f"/deals/{deal}/move", {"stage_id": stages[(n + 1) % 2]}, token)

    # Integrators send their own message id, which also makes a repeated post one message.
    def api_message(a, token, n):
        body = {"contact_identifier": f"chat-{n % 50}", "text": f"chat message {n}", "external_id": f"{stamp}-{n}"}
        a.call("POST", "/channels/api/messages", body, inbox_token)

    return {"list contacts": list_contacts, "create contact": create_contact, "move deal": move_deal, "API-channel message": api_message}


# ---------------------------------------------------------------- the run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the server, http://127.0.0.1:PORT")
    ap.add_argument("--pid", type=int, required=True, help="the server's process id, for its CPU time and memory")
    ap.add_argument("--mails", type=int, default=20000)
    ap.add_argument("--attachments", type=float, default=0.1, help="share of mails with an attachment")
    ap.add_argument("--senders", type=int, default=2000)
    ap.add_argument("--probe-url", help="where the probes go (another node of a cluster); default --url")
    ap.add_argument("--probe-rate", type=float, default=10, help="requests a second of each probe kind")
    ap.add_argument("--baseline-secs", type=float, default=10)
    ap.add_argument("--timeout-secs", type=float, default=1800, help="the whole run's limit")
    ap.add_argument("--stall-secs", type=float, default=120, help="fail when the sync says nothing new for this long")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    url = a.url.rstrip("/")
    probe_url = (a.probe_url or a.url).rstrip("/")
    for u in (url, probe_url):
        host = urllib.parse.urlparse(u).hostname or ""
        assert host.startswith("127."), f"loopback only: {u}"
    assert 1 <= a.mails <= 200_000 and 1 <= a.senders <= 100_000, "bounded runs only"
    assert 0 <= a.attachments <= 1 and 0.1 <= a.probe_rate <= 100 and 1 <= a.baseline_secs <= 300, "bounded runs only"
    assert 60 <= a.timeout_secs <= 4 * 3600 and 10 <= a.stall_secs <= 3600, "bounded runs only"

    # Every way out passes through the `finally` blocks below, which stop Dovecot and
    # the probes: SIGTERM (run-all's cleanup) and the overall limit become exceptions.
    def on_signal(signum, _frame):
        raise Failed(f"stopped by signal {signum}")

    def on_alarm(_signum, _frame):
        raise Failed(f"the run took longer than --timeout-secs {a.timeout_secs:.0f}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(a.timeout_secs))
    try:
        return run(a, url, probe_url)
    except Failed as e:
        print(f"email: {e}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)


def say(message):
    print(f"[email] {message}", file=sys.stderr, flush=True)


def run(a, url, probe_url):
    check_pid_listens(a.pid, urllib.parse.urlparse(url).port or 80)
    stamp = str(int(time.time() * 1000))
    api = Api(url)
    mail_password = f"imap-{stamp}"
    with Dovecot({MAIL_USER: mail_password}) as dovecot:
        # 1. The mailbox, full before the inbox exists.
        mails = Mails(a.mails, a.senders, a.attachments, a.seed, stamp)
        t0 = time.monotonic()
        delivered, size = dovecot.deliver_many(MAIL_USER, mails)
        deliver_secs = time.monotonic() - t0
        say(f"{delivered} mails ({size / 1e6:.0f} MB) delivered in {deliver_secs:.1f} s; IMAP on port {dovecot.imap_port}")

        # 2. A workspace, the probes' records, and the e-mail inbox (not yet syncing).
        answer = api.call("POST", "/auth/signup", {"workspace_name": "Mail at size", "name": "Olga Owner",
                                                   "email": f"owner-{stamp}@example.com", "password": PASSWORD})
        session = Session(api, answer)
        kinds = probe_kinds(api, session, stamp)
        inbox = api.call("POST", "/inboxes", {"name": "Mail", "channel": "email"}, session.token)["id"]
        probes = Probes(probe_url, session, kinds, a.probe_rate)
        try:
            probes.start()
            # The first second warms connections and caches and is not counted.
            time.sleep(1)
            probes.phase = "before"
            cpu_before_probes = cpu_secs(a.pid)
            time.sleep(a.baseline_secs)
            probe_cpu_per_sec = (cpu_secs(a.pid) - cpu_before_probes) / a.baseline_secs
            rss_before = memory_mb(a.pid, "VmRSS")

            # 3. The import, from the PUT until the inbox says it is up to date.
            settings = {
                "imap": {"host": "127.0.0.1", "port": dovecot.imap_port, "security": "none", "username": MAIL_USER,
                         "password": mail_password, "import_days": IMPORT_DAYS},
                # Never used: nothing is answered in this run.
                "smtp": {"host": "127.0.0.1", "port": 1, "security": "none"},
                "from_address": f"{MAIL_USER}@{MAIL_DOMAIN}",
            }
            dovecot_cpu_before = dovecot.group_cpu_secs()
            cpu0 = cpu_secs(a.pid)
            t0 = time.monotonic()
            probes.phase = "during"
            api.call("PUT", f"/inboxes/{inbox}/email", settings, session.token)
            try:
                history, progress, rss_peak = watch_import(api, session, inbox, a.pid, t0, a.stall_secs)
            except Failed as e:
                # What the other requests met says whether the whole server is stuck.
                raise Failed(f"{e}\nthe probes' first errors: {probes.first_errors or 'none'}")
            import_secs = time.monotonic() - t0
            probes.phase = "after"
            cpu = cpu_secs(a.pid) - cpu0
            dovecot_cpu = dovecot.group_cpu_secs() - dovecot_cpu_before
            rss_hwm = memory_mb(a.pid, "VmHWM")
        finally:
            probes.finish()
        say(f"imported in {import_secs:.1f} s; checking the inbox's messages")

        # 4. Every mail once, nothing else.
        session.keep_fresh()
        verified = verify(api, session, inbox, mails.ids, mails.counts["attachment"])

    net_cpu = max(0.0, cpu - probe_cpu_per_sec * import_secs)
    result = {
        "scenario": "email",
        "mails": delivered,
        "senders": a.senders,
        "maildir_mb": round(size / 1e6, 1),
        "generated": mails.counts,
        "deliver_secs": round(deliver_secs, 1),
        "import_secs": round(import_secs, 1),
        "mails_per_min": round(delivered / import_secs * 60),
        # Whether taking mail slows down as the inbox fills.
        "mails_per_min_halves": halves(progress, delivered, import_secs),
        "progress": progress,
        "server_cpu_secs": round(cpu, 2),
        "server_cpu_ms_per_mail": round(cpu / delivered * 1000, 2),
        # Without the probes' share, estimated from the server's CPU rate while only
        # they ran.
        "server_cpu_ms_per_mail_net": round(net_cpu / delivered * 1000, 2),
        "probe_cpu_secs_per_sec": round(probe_cpu_per_sec, 3),
        "dovecot_cpu_secs": round(dovecot_cpu, 2),
        "server_rss_mb": {"before": round(rss_before), "peak_sampled": round(rss_peak), "high_water": round(rss_hwm)},
        "channel": history,
        "probe_rate": a.probe_rate,
        "probes": {},
        "verified": verified,
    }
    for kind in kinds:
        before, during = probes.summary(kind, "before"), probes.summary(kind, "during")
        ratio = round(during["p99_ms"] / before["p99_ms"], 2) if before["p99_ms"] and during["p99_ms"] else None
        result["probes"][kind] = {"before": before, "during": during, "p99_ratio": ratio}
    result["probe_errors"] = probes.first_errors
    print(json.dumps(result))
    print_tables(result)
    if not verified["ok"]:
        print(f"email: the inbox does not hold the mails delivered: {json.dumps(verified)}", file=sys.stderr)
        return 1
    return 0


def halves(progress, total, secs):
    """Mails a minute over the first half of the mails and over the second, from the
    progress the sync said; none when it said too little (a small import)."""
    half = next(((t, n) for t, n in progress if n >= total / 2), None)
    if half is None or not 0 < half[0] < secs:
        return None
    return [round(half[1] / half[0] * 60), round((total - half[1]) / (secs - half[0]) * 60)]


def watch_import(api, session, inbox, pid, t0, stall_secs):
    """Polls the inbox until its sync says `syncing` (every mail of the window taken);
    answers how its status went (each change, with seconds since the PUT), its
    progress ([seconds, mails in]) and the largest resident memory seen. Fails at
    once if the sync says `failing`, and when it says nothing new (it says its
    progress every 200 mails) for `stall_secs`."""
    history = []
    progress = []
    last = None
    rss_peak = 0.0
    said_at = changed_at = time.monotonic()
    while True:
        session.keep_fresh()
        got = api.call("GET", f"/inboxes/{inbox}", token=session.token)
        status, detail = got.get("channel_status"), got.get("channel_detail")
        now = time.monotonic()
        rss_peak = max(rss_peak, memory_mb(pid, "VmRSS"))
        if (status, detail) != last:
            last = (status, detail)
            changed_at = now
            # Progress lines ("importing 400 of 20000") come every chunk: only the
            # status changes are kept, and the progress said now and then.
            if status is not None and (not history or history[-1]["status"] != status):
                history.append({"secs": round(now - t0, 1), "status": status, "detail": detail})
            # "importing 400 of 20000" is said before the chunk from 400 on is read:
            # 400 mails are in by then.
            taken = re.fullmatch(r"importing (\d+) of (\d+)", detail or "")
            if status == "importing" and taken:
                progress.append((round(now - t0, 1), int(taken.group(1))))
        if status == "failing":
            raise Failed(f"the inbox's sync is failing: {detail}")
        if status == "syncing":
            return history, progress, rss_peak
        if now - changed_at > stall_secs:
            raise Failed(f"the import made no progress for {stall_secs:.0f} s: the inbox still says {status!r}, {detail!r}")
        if now - said_at >= 10:
            said_at = now
            say(f"{now - t0:.0f} s: {status}: {detail}")
        time.sleep(0.2)


def verify(api, session, inbox, ids, attachments):
    """Pages through the inbox's messages and compares their external_ids with the
    Message-IDs delivered, and the messages with an attachment with the mails sent
    with one."""
    seen = {}
    conversations = set()
    with_attachment = 0
    types = {}
    cursor = None
    pages = 0
    while True:
        query = f"/messages?inbox_id={inbox}&limit=200" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        page = api.call("GET", query, token=session.token)
        pages += 1
        for m in page["data"]:
            ext = m.get("external_id")
            seen[ext] = seen.get(ext, 0) + 1
            conversations.add(m.get("conversation_id"))
            for att in m.get("attachments") or []:
                types[att.get("content_type")] = types.get(att.get("content_type"), 0) + 1
            with_attachment += bool(m.get("attachments"))
        cursor = page.get("next_cursor")
        if not cursor:
            break
        if pages % 50 == 0:
            session.keep_fresh()
    expected = set(ids)
    total = sum(seen.values())
    missing = len(expected - seen.keys())
    unexpected = sum(c for ext, c in seen.items() if ext not in expected)
    duplicates = sum(c - 1 for ext, c in seen.items() if c > 1)
    return {
        "ok": total == len(ids) and missing == 0 and unexpected == 0 and duplicates == 0 and with_attachment == attachments,
        "messages": total,
        "missing": missing,
        "unexpected": unexpected,
        "duplicates": duplicates,
        "conversations": len(conversations),
        "with_attachment": with_attachment,
        "attachment_types": types,
    }


def ms(v):
    return "–" if v is None else f"{v:g}"


def print_tables(r):
    v = r["verified"]
    rss = r["server_rss_mb"]
    h = r["mails_per_min_halves"]
    print("| mails | with attachment (sent / kept) | maildir MB | import s | mails/min (1st / 2nd half) | server CPU ms/mail (net of probes) | "
          "server RSS MB before / peak | Dovecot CPU s | messages (missing, extra, duplicates) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['mails']} | {r['generated']['attachment']} / {v['with_attachment']} | {r['maildir_mb']:g} | {r['import_secs']:g} | "
          f"{r['mails_per_min']} ({f'{h[0]} / {h[1]}' if h else '–'}) | "
          f"{r['server_cpu_ms_per_mail']:g} ({r['server_cpu_ms_per_mail_net']:g}) | {rss['before']} / {rss['peak_sampled']} | "
          f"{r['dovecot_cpu_secs']:g} | {v['messages']} ({v['missing']}, {v['unexpected']}, {v['duplicates']}) |")
    print()
    print(f"| meanwhile, {r['probe_rate']:g}/s each | before: n, p50 / p99 ms | during the import: n, p50 / p99 ms | p99 ratio | errors |")
    print("|---|---|---|---|---|")
    for kind, p in r["probes"].items():
        b, d = p["before"], p["during"]
        print(f"| {kind} | {b['n']}, {ms(b['p50_ms'])} / {ms(b['p99_ms'])} | {d['n']}, {ms(d['p50_ms'])} / {ms(d['p99_ms'])} | "
              f"{ms(p['p99_ratio'])} | {b['errors'] + d['errors']} |")


if __name__ == "__main__":
    sys.exit(main())
