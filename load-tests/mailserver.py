"""A throwaway Dovecot for the load tests: IMAP only, on a free loopback port, in a
fresh folder of its own, with users whose mail the test writes straight into their
maildirs (no SMTP server and no delivery agent, so that filling a mailbox of 100,000
mails takes seconds).

    with Dovecot({"support": "a password"}) as mail:
        mail.deliver_many("support", ((raw, when) for ...))
        ... IMAP at 127.0.0.1:mail.imap_port ...

Needs root (the mail belongs to `nobody`, since Dovecot refuses to serve mail owned
by root, and its master process runs as root) and Debian's `dovecot-imapd`. Leaving
the `with` block, normally or by an exception, stops every Dovecot process and
removes the folder. The same settings, and why each is there, are in
tests/api/mailserver.rs, the Rust tests' harness.
"""

import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

START_TIMEOUT = 10.0
# Dovecot's master usually stops within 10 ms of SIGTERM but sometimes waits seconds
# for its log process; after this it is killed, which loses nothing the test needs.
STOP_GRACE = 1.0

# @DIR@ and @PORT@ are filled in by `Dovecot._write_config`.
CONFIG = """# A throwaway Dovecot of the load tests: everything it writes stays in @DIR@
# (without state_dir it would write into the system's own state folder).
base_dir = @DIR@/run
state_dir = @DIR@/state
# Names its processes dovecot-@INSTANCE@/imap and so on, telling instances apart.
instance_name = @INSTANCE@
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
auth_failure_delay = 0
log_path = @DIR@/dovecot.log
mail_location = maildir:@DIR@/home/%n/Maildir
# A folder made on disk shows in the next LIST of a session already open.
mailbox_list_index = no
# Users live in one JSON file each, read at every login.
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
    port = @PORT@
  }
  # Not the system's port 993.
  inet_listener imaps {
    port = 0
  }
}
# With no penalty socket a failed login does not slow the next ones from 127.0.0.1
# by seconds.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""

AUTH_DICT = """# Users of the Dovecot in @DIR@: auth/passdb/NAME and auth/userdb/NAME, JSON each.
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
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _greets(port):
    """Whether an IMAP server on the port greets; the greeting comes once its login
    and auth processes are ready, not merely when the port accepts."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(2)
            line = s.makefile("rb").readline()
            s.sendall(b"a LOGOUT\r\n")
            return line.startswith(b"* OK")
    except OSError:
        return False


def _exited(pid):
    """Gone, or a zombie: an exited process not reaped yet still keeps its pid, and
    so its process group, from being reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _in_own_group_dying_with_parent():
    """Runs in the child before Dovecot: a process group of its own, so that one
    signal reaches every process it starts; and SIGTERM to it should this script die
    without cleaning up (SIGKILL), so that no Dovecot outlives the test."""
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Dovecot:
    """A Dovecot serving IMAP on 127.0.0.1:`imap_port` to the given users."""

    def __init__(self, users):
        if os.geteuid() != 0:
            raise RuntimeError("the throwaway Dovecot needs root: its mail belongs to 'nobody'")
        if shutil.which("dovecot") is None:
            raise RuntimeError("dovecot is missing: install Debian's dovecot-imapd")
        nobody = pwd.getpwnam("nobody")
        self.owner = (nobody.pw_uid, nobody.pw_gid)
        self.process = None
        self.dir = None
        self._last_name = (0, 0)
        failures = []
        # A free port is found by binding port 0 and letting go; something else may take
        # it in between, so a start that lost its port tries again on another.
        for _ in range(3):
            try:
                self._start(users)
                return
            except RuntimeError as e:
                failures.append(str(e))
                taken = "in use" in str(e)
                self.stop()
                if not taken:
                    break
        raise RuntimeError("Dovecot did not start:\n" + "\n\n".join(failures))

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stop()

    def _start(self, users):
        self.dir = tempfile.mkdtemp(prefix="shoal-load-mail-")
        # Dovecot's unprivileged processes must reach the maildirs and sockets: every
        # folder on the way is searchable by others (mkdtemp makes a 0700 one).
        os.chmod(self.dir, 0o755)
        parent = os.path.dirname(self.dir)
        while True:
            if not os.stat(parent).st_mode & 0o001:
                raise RuntimeError(f"{parent} is not searchable by other users; Dovecot cannot reach a folder under it")
            if parent == os.path.dirname(parent):
                break
            parent = os.path.dirname(parent)
        self.imap_port = _free_port()
        self.instance = "shoal-load-" + os.path.basename(self.dir).rsplit("-", 1)[-1]
        for sub in ("run", "state", "home", "auth", "auth/passdb", "auth/userdb"):
            os.makedirs(os.path.join(self.dir, sub), mode=0o755)

        def fill(text):
            return text.replace("@DIR@", self.dir).replace("@PORT@", str(self.imap_port)).replace("@INSTANCE@", self.instance)

        self._write(os.path.join(self.dir, "dovecot.conf"), fill(CONFIG).encode())
        self._write(os.path.join(self.dir, "auth-dict.conf"), fill(AUTH_DICT).encode())
        for user, password in users.items():
            self.add_user(user, password)
        out = open(os.path.join(self.dir, "dovecot.out"), "ab")
        # In the foreground (-F) Dovecot stays this process's child and is reaped here;
        # daemonized, it would linger as a zombie of PID 1 and block a restart.
        self.process = subprocess.Popen(
            ["dovecot", "-F", "-c", os.path.join(self.dir, "dovecot.conf")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=_in_own_group_dying_with_parent,
        )
        out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _greets(self.imap_port):
            if self.process.poll() is not None:
                raise RuntimeError(f"Dovecot exited at start ({self.process.returncode})\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot did not greet on port {self.imap_port} within {START_TIMEOUT} s\n{self.log_tail()}")
            time.sleep(0.02)

    def add_user(self, user, password):
        """A user with an empty INBOX, who can log in at once."""
        if not user or not all(c.islower() or c.isdigit() or c in "._-" for c in user) or user.startswith("."):
            raise ValueError(f"a mail user's name is lower-case letters, digits, '.', '_' and '-': {user!r}")
        home = os.path.join(self.dir, "home", user)
        for d in (home, os.path.join(home, "Maildir")) + tuple(os.path.join(home, "Maildir", s) for s in ("cur", "new", "tmp")):
            os.makedirs(d, mode=0o755, exist_ok=True)
            os.chown(d, *self.owner)
        userdb = {"uid": str(self.owner[0]), "gid": str(self.owner[1]), "home": home}
        self._write(os.path.join(self.dir, "auth/userdb", user), json.dumps(userdb).encode())
        # The scheme is spelled out, so that a password starting with "{" is not read as one.
        self._write(os.path.join(self.dir, "auth/passdb", user), json.dumps({"password": "{PLAIN}" + password}).encode())

    def deliver_many(self, user, mails):
        """Writes mails into the user's INBOX as a delivery agent would: each file
        written in tmp/, owned by the mail user, then renamed into new/, so Dovecot
        never sees half a mail. `mails` yields (raw bytes, when): `when` (seconds since
        the epoch; None for now) becomes the file's modification time, which IMAP
        reports as the mail's internal date (what SEARCH SINCE looks at), and the start
        of its name, by which Dovecot orders the UIDs of new mail. Returns how many
        mails and bytes were written."""
        maildir = os.path.join(self.dir, "home", user, "Maildir")
        if not os.path.isdir(os.path.join(maildir, "new")):
            raise ValueError(f"no mail user {user!r}")
        count = size = 0
        for raw, when in mails:
            when = time.time() if when is None else when
            name = self._next_name(when)
            tmp = os.path.join(maildir, "tmp", name)
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as f:
                f.write(raw)
                os.fchown(f.fileno(), *self.owner)
            os.utime(tmp, (when, when))
            os.rename(tmp, os.path.join(maildir, "new", name))
            count += 1
            size += len(raw)
        return count, size

    def _next_name(self, when):
        """A maildir file name, "SECONDS.MMICROSECONDSPPID.shoal-load": unique, and in
        the order of delivery (nudged forward when two mails share a microsecond)."""
        secs, micros = int(when), int((when % 1) * 1_000_000)
        if (secs, micros) <= self._last_name:
            secs, micros = self._last_name[0], self._last_name[1] + 1
            if micros > 999_999:
                secs, micros = secs + 1, 0
        self._last_name = (secs, micros)
        return f"{secs}.M{micros}P{os.getpid()}.shoal-load"

    def group_cpu_secs(self):
        """CPU time used so far by Dovecot's processes still running (its master and
        every process it started, such as the imap process serving the sync)."""
        if self.process is None:
            return 0.0
        ticks = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            # After ") ": state, ppid, pgrp, ..., utime and stime at 11 and 12.
            if int(fields[2]) == self.process.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines=30):
        out = []
        for name in ("dovecot.out", "dovecot.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    tail = f.read().splitlines()[-lines:]
            except OSError:
                tail = []
            out.append(f"--- {name}, last {len(tail)} lines:\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self):
        """Stops every Dovecot process and removes the folder; safe to call twice."""
        p, self.process = self.process, None
        if p is not None:
            # The whole group: a login or imap process serving a client outlives a
            # master told to stop, and keeps the port. The master is waited for without
            # being reaped, so its group cannot be reused before the SIGKILL.
            self._signal_group(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while not _exited(p.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            self._signal_group(p.pid, signal.SIGKILL)
            p.wait()
        d, self.dir = self.dir, None
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)

    @staticmethod
    def _signal_group(pgid, sig):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _write(path, data):
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
