"""What the browser tests share: the REST API for their set-up, signing in a browser,
a page that fails on console errors, a network that can be cut, and how a script
starts Chromium (failing, never skipping, when Playwright or Chromium is missing)."""

import argparse
import os
import sys
import time

CHROMIUM = os.environ.get("SHOAL_TEST_CHROMIUM", "/usr/bin/chromium")


def launch(*scenarios):
    """Runs each `scenario(browser, url, shots, expect)` in turn in one Chromium, saying
    how long each took; returns the exit code. The command line is
    `--url http://127.0.0.1:PORT --screenshots DIR`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--screenshots", required=True)
    args = parser.parse_args()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        print("Playwright for Python is not installed (pip install playwright)", file=sys.stderr)
        return 2
    if not os.access(CHROMIUM, os.X_OK):
        print(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    os.makedirs(args.screenshots, exist_ok=True)
    expect.set_options(timeout=10_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for scenario in scenarios:
                started = time.monotonic()
                scenario(browser, args.url.rstrip("/"), args.screenshots, expect)
                print(f"ok  {scenario.__name__} ({time.monotonic() - started:.1f} s)")
        finally:
            browser.close()
    return 0


def watch_errors(page):
    """A list that collects the page's uncaught exceptions and console errors. Refused
    requests are logged by the browser as failed loads and are not errors of the app;
    anything else (a CSP violation, an exception) is."""
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None,
    )
    return errors


class Cuttable:
    """A TCP proxy in front of the server whose connections can be cut and refused,
    then allowed again: a network drop for one browser."""

    def __init__(self, target_port):
        import socket
        import threading

        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.open = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            client, _ = self.listener.accept()
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        import socket

        self.up = False
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.open = []

    def restore(self):
        self.up = True


def call(url, method, path, body=None, token=None):
    """The REST API, for what the browser tests start from."""
    import json
    import urllib.request

    req = urllib.request.Request(url + "/api/v1" + path, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(req, data) as res:
        raw = res.read()
        return json.loads(raw) if raw else None


def sign_in(browser, url, email, password, expect, viewport=None):
    """A new browser context signed in through the login form."""
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(url + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return context, page
