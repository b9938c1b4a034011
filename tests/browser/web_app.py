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


if __name__ == "__main__":
    sys.exit(main())
