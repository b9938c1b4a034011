"""The web app in a real browser: Debian's Chromium driven by Playwright.

Run by the integration test `web_app_in_a_browser` against a server it started:
    python3 tests/browser/web_app.py --url http://127.0.0.1:PORT --screenshots DIR
Exits non-zero, saying why, on any failed check, and when Playwright or Chromium is
missing (never skips).
"""

import os
import sys

from common import Cuttable, call, launch, sign_in, watch_errors


def main() -> int:
    return launch(run, board, joining_by_link_the_bell_and_switching_workspaces)


def run(browser, url, shots, expect):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors = watch_errors(page)

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


def joining_by_link_the_bell_and_switching_workspaces(browser, url, shots, expect):
    """Someone with a workspace of their own joins another by the invitation link,
    hears of a deal given to them through the bell, and switches between the two."""
    password = "a long enough password"
    owner = call(url, "POST", "/auth/signup", {"workspace_name": "Harbour", "name": "Hana Owner", "email": "hana@example.com", "password": password})
    token = owner["access_token"]
    own = call(url, "POST", "/auth/signup", {"workspace_name": "Own shop", "name": "Jo Joiner", "email": "jo@example.com", "password": password})
    invite = call(url, "POST", "/invitations", {"email": "jo@example.com", "role": "member"}, token)

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors = watch_errors(page)
    page.goto(f"{url}/signup#invitation={invite['token']}")
    expect(page.get_by_role("heading", name="Join your team")).to_be_visible()
    # The token leaves the address at once.
    expect(page).to_have_url(url + "/signup")
    expect(page.get_by_label("Workspace name")).to_have_count(0)
    page.get_by_label("Your name").fill("Jo Joiner")
    page.get_by_label("E-mail").fill("jo@example.com")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Join").click()
    picker = page.get_by_test_id("workspace")
    expect(picker).to_have_value(owner["workspace_id"])
    expect(picker.locator("option")).to_have_text(["Harbour", "Own shop"])

    # A deal given to them rings the bell; the bell leads to it.
    jo = next(m for m in call(url, "GET", "/members", token=token)["data"] if m["email"] == "jo@example.com")
    pipeline = call(url, "POST", "/pipelines", {"name": "Sales", "stages": [{"name": "New"}]}, token)
    deal = call(url, "POST", "/deals", {"title": "Lighthouse refit", "pipeline_id": pipeline["id"]}, token)
    expect(page.get_by_role("button", name="Notifications", exact=True)).to_be_visible()
    call(url, "PATCH", f"/deals/{deal['id']}", {"owner_id": jo["user_id"], "version": deal["version"]}, token)
    expect(page.get_by_role("button", name="Notifications, 1 unread")).to_be_visible()
    page.get_by_role("button", name="Notifications, 1 unread").click()
    page.get_by_role("link", name="deal “Lighthouse refit” is now yours").click()
    expect(page).to_have_url(f"{url}/records/deals/{deal['id']}")
    expect(page.get_by_role("button", name="Notifications")).to_be_visible()
    # Seen stays seen across a reload; nothing else is kept in the browser's storage.
    page.reload()
    expect(page.get_by_role("button", name="Notifications", exact=True)).to_be_visible()
    keys = page.evaluate("Object.keys(localStorage).concat(Object.keys(sessionStorage))")
    assert all(k.startswith("shoal:bell-seen:") for k in keys), keys

    # The bell's panel offers to mail assignments and mentions only when the server can
    # send mail (its operator set notify_smtp_url), which it asks when the panel first opens.
    bell = page.get_by_role("button", name="Notifications", exact=True)
    panel = page.get_by_role("region", name="Notifications")
    mail = panel.get_by_role("checkbox", name="E-mail me when I'm assigned or mentioned")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/me/notifications")) as asked:
        bell.click()
    expect(panel).not_to_have_attribute("aria-busy", "true")
    if not asked.value.json()["email_available"]:
        expect(mail).to_have_count(0)
    else:
        jo_here = call(url, "POST", "/auth/login", {"email": "jo@example.com", "password": password, "workspace_id": owner["workspace_id"]})["access_token"]
        choice = lambda: call(url, "GET", "/me/notifications", token=jo_here)["email"]
        expect(mail).not_to_be_checked()
        # With the keyboard.
        mail.focus()
        with page.expect_response(lambda r: r.request.method == "PUT" and r.url.endswith("/me/notifications")):
            page.keyboard.press("Space")
        expect(mail).to_be_checked()
        expect(mail).to_be_focused()
        assert choice() is True
        # A refused change is undone, with the server's reason.
        refusal = {"error": {"code": "invalid_body", "message": "this server sends no notification mails"}}
        page.route("**/api/v1/me/notifications", lambda route: route.fulfill(status=400, json=refusal) if route.request.method == "PUT" else route.continue_())
        mail.click()
        expect(panel.get_by_role("alert")).to_contain_text("sends no notification mails")
        expect(mail).to_be_checked()
        page.unroute("**/api/v1/me/notifications")
        assert choice() is True
        # The choice is the server's: a reload shows it.
        page.reload()
        bell.click()
        expect(mail).to_be_checked()
    bell.click()
    expect(panel).to_be_hidden()

    # Switching workspace: a fresh page in the other one, which a reload keeps.
    page.get_by_test_id("workspace").select_option(label="Own shop")
    expect(page.get_by_test_id("workspace")).to_have_value(own["workspace_id"])
    expect(page.get_by_text("Jo Joiner · owner")).to_be_visible()
    page.reload()
    expect(page.get_by_text("Jo Joiner · owner")).to_be_visible()
    assert not errors, f"errors in the page: {errors}"
    context.close()


if __name__ == "__main__":
    sys.exit(main())
