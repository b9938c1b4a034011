"""The web app in a real browser: Debian's Chromium driven by Playwright.

Run by the integration test `web_app_in_a_browser` against a server it started:
    python3 tests/browser/web_app.py --url http://127.0.0.1:PORT --screenshots DIR
Exits non-zero, saying why, on any failed check, and when Playwright or Chromium is
missing (never skips).
"""

import argparse
import os
import sys

CHROMIUM = os.environ.get("SHOAL_TEST_CHROMIUM", "/usr/bin/chromium")


def main() -> int:
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
    url = args.url.rstrip("/")
    expect.set_options(timeout=10_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            run(browser, url, args.screenshots, expect)
            board(browser, url, args.screenshots, expect)
        finally:
            browser.close()
    return 0


def run(browser, url, shots, expect):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Refused requests (the wrong password below) are logged by the browser as failed
    # loads; anything else logged as an error (a CSP violation, an exception) fails.
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None,
    )

    # A newcomer opens the root and is sent to sign in; from there, to sign up.
    page.goto(url + "/")
    expect(page).to_have_url(url + "/login")
    page.get_by_role("link", name="Create a workspace").click()
    expect(page).to_have_url(url + "/signup")

    # A refused sign-up says which field is wrong, and keeps what was typed.
    page.get_by_label("Workspace name").fill("Acme <b>Sales</b>")
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("E-mail").fill("ada@example.com")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create workspace").click()
    expect(page.get_by_role("alert")).to_contain_text("password")
    expect(page.get_by_label("Your name")).to_have_value("Ada Lovelace")

    page.get_by_label("Password").fill("a long enough password")
    page.get_by_role("button", name="Create workspace").click()
    expect(page).to_have_url(url + "/")
    # The workspace's name is shown as typed: as text, not as markup.
    expect(page.get_by_test_id("workspace")).to_have_text("Acme <b>Sales</b>")
    assert page.locator("header b").count() == 0, "user text was rendered as HTML"
    expect(page.get_by_text("Ada Lovelace · owner")).to_be_visible()
    page.screenshot(path=os.path.join(shots, "home-1280.png"))

    # Nothing secret is kept where scripts can read it: the refresh token is an
    # HttpOnly cookie, and storage holds nothing.
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["shoal_refresh"]["httpOnly"], cookies
    assert cookies["shoal_refresh"]["sameSite"] == "Strict", cookies
    assert not cookies["shoal_csrf"]["httpOnly"], cookies
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert "shoal_refresh" not in page.evaluate("document.cookie")

    # A reload keeps the session (a new access token from the cookie).
    page.reload()
    expect(page.get_by_test_id("workspace")).to_have_text("Acme <b>Sales</b>")

    # A second tab of the same browser is signed in too.
    other = context.new_page()
    other.goto(url + "/")
    expect(other.get_by_test_id("workspace")).to_have_text("Acme <b>Sales</b>")
    other.close()

    # Signing out ends the session: a reload stays signed out.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(url + "/login")
    page.reload()
    expect(page).to_have_url(url + "/login")
    assert "shoal_refresh" not in {c["name"] for c in context.cookies()}

    # A wrong password is refused in words; the right one signs in.
    page.get_by_label("E-mail").fill("ada@example.com")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong email or password")
    page.get_by_label("Password").fill("a long enough password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("workspace")).to_have_text("Acme <b>Sales</b>")

    # A phone-sized screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=os.path.join(shots, "home-390.png"))

    # The strict Content-Security-Policy let everything the app needs run.
    assert not errors, f"errors in the page: {errors}"
    context.close()


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


def sign_in(browser, url, email, password, expect):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(url + "/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return context, page


def board(browser, url, shots, expect):
    """Two members on one board: a drag in one browser shows in the other; presence;
    a refused move is undone with the server's reason; a move made with the keyboard."""
    owner = call(url, "POST", "/auth/signup", {"workspace_name": "Board test", "name": "Olga Owner", "email": "olga@example.com", "password": "a long enough password"})
    token = owner["access_token"]
    pipeline = call(url, "POST", "/pipelines", {"name": "Sales", "stages": [{"name": "New"}, {"name": "Qualified"}, {"name": "Won"}]}, token)
    stages = [s["id"] for s in pipeline["stages"]]
    for title, amount in [("Alpha", 100000), ("Beta", 250000), ("Gamma", 50000)]:
        call(url, "POST", "/deals", {"title": title, "pipeline_id": pipeline["id"], "stage_id": stages[0], "amount": amount, "currency": "USD"}, token)
    invite = call(url, "POST", "/invitations", {"email": "vic@example.com", "role": "viewer"}, token)
    call(url, "POST", "/auth/signup", {"invitation_token": invite["token"], "name": "Vic Viewer", "email": "vic@example.com", "password": "a long enough password"})

    ctx_a, a = sign_in(browser, url, "olga@example.com", "a long enough password", expect)
    ctx_b, b = sign_in(browser, url, "vic@example.com", "a long enough password", expect)
    board_url = f"{url}/boards/{pipeline['id']}"
    for page in (a, b):
        page.goto(board_url)
        expect(page.get_by_role("heading", name="Sales")).to_be_visible()
        expect(page.locator(f'section.column[data-stage="{stages[0]}"] [data-testid=count]')).to_have_text("3")
    col = lambda page, i: page.locator(f'section.column[data-stage="{stages[i]}"]')

    # Both are on the board, and each sees the other.
    for page in (a, b):
        expect(page.locator(".avatars .avatar")).to_have_count(2)

    # A drag in one browser appears in the other.
    a.locator(".deal", has_text="Alpha").drag_to(col(a, 1))
    expect(col(a, 1).locator(".deal", has_text="Alpha")).to_be_visible()
    expect(col(b, 1).locator(".deal", has_text="Alpha")).to_be_visible()
    expect(col(b, 0).locator("[data-testid=count]")).to_have_text("2")
    expect(col(b, 1).locator(".sum")).to_contain_text("1,000")
    a.screenshot(path=os.path.join(shots, "board-1280.png"))

    # A viewer may not move cards: the move shows, then is undone with the reason.
    b.locator(".deal", has_text="Beta").drag_to(col(b, 2))
    expect(b.get_by_role("status")).to_contain_text("was not moved")
    expect(col(b, 0).locator(".deal", has_text="Beta")).to_be_visible()
    expect(col(a, 0).locator(".deal", has_text="Beta")).to_be_visible()

    # The keyboard: space picks a card up, arrows choose the place, space drops it.
    gamma = a.locator(".deal", has_text="Gamma")
    gamma.focus()
    a.keyboard.press("Space")
    a.keyboard.press("ArrowRight")
    a.keyboard.press("ArrowRight")
    a.keyboard.press("Space")
    expect(col(a, 2).locator(".deal", has_text="Gamma")).to_be_visible()
    expect(col(b, 2).locator(".deal", has_text="Gamma")).to_be_visible()

    # The store agrees with both screens.
    deals = call(url, "GET", f"/deals?pipeline_id={pipeline['id']}&limit=50", None, token)["data"]
    where = {d["title"]: d["stage_id"] for d in deals}
    assert where == {"Alpha": stages[1], "Beta": stages[0], "Gamma": stages[2]}, where

    a.set_viewport_size({"width": 390, "height": 844})
    a.screenshot(path=os.path.join(shots, "board-390.png"))
    ctx_a.close()
    ctx_b.close()

    # The network drops for one browser: it says so, and once back it catches up
    # with what it missed, without a reload.
    proxy = Cuttable(int(url.rsplit(":", 1)[1]))
    via = f"http://127.0.0.1:{proxy.port}"
    ctx_c, c = sign_in(browser, via, "olga@example.com", "a long enough password", expect)
    c.goto(f"{via}/boards/{pipeline['id']}")
    expect(col(c, 1).locator(".deal", has_text="Alpha")).to_be_visible()
    c.evaluate("window.notReloaded = true")
    proxy.cut()
    expect(c.get_by_text("Reconnecting…")).to_be_visible()
    beta = next(d for d in deals if d["title"] == "Beta")
    call(url, "POST", f"/deals/{beta['id']}/move", {"stage_id": stages[2]}, token)
    proxy.restore()
    expect(col(c, 2).locator(".deal", has_text="Beta")).to_be_visible(timeout=30_000)
    expect(c.get_by_text("Reconnecting…")).to_have_count(0)
    assert c.evaluate("window.notReloaded === true"), "the page was reloaded"
    ctx_c.close()


if __name__ == "__main__":
    sys.exit(main())
