"""The settings screens in a real browser: members and invitations, API keys, pipelines,
custom fields, teams, inboxes (an e-mail inbox's mail servers among them), canned
responses, macros and SLA policies, each made through the screens and checked through
the REST API.

    python3 tests/browser/settings.py --url http://127.0.0.1:PORT --screenshots DIR
Exits non-zero, saying why, on any failed check.
"""

import os
import re
import socket
import sys
import threading
import urllib.error
import uuid

from common import call, launch, sign_in, watch_errors

PASSWORD = "a long enough password"


def main() -> int:
    return launch(
        an_admin_invites_a_member_the_token_is_shown_once_and_roles_change,
        an_admin_may_not_make_owners_and_a_member_is_told_settings_are_for_admins,
        an_api_key_is_shown_once_works_and_stops_working_when_revoked,
        a_pipeline_is_created_with_stages_and_a_stage_renamed_and_reordered,
        inbox_set_up_is_created_through_the_screens_and_bad_input_is_refused,
        an_email_inbox_gets_its_servers_tested_refused_saved_and_its_failing_said,
    )


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def workspace(url, name):
    """A new workspace and its owner: (email, access token)."""
    email = fresh("owner")
    answer = call(url, "POST", "/auth/signup", {"workspace_name": name, "name": "Olga Owner", "email": email, "password": PASSWORD})
    return email, answer["access_token"]


def join(url, token, name, role):
    """Someone invited with `role` who signed up: (email, access token, user id)."""
    email = fresh(name.split()[0].lower())
    invite = call(url, "POST", "/invitations", {"email": email, "role": role}, token)
    answer = call(url, "POST", "/auth/signup", {"invitation_token": invite["token"], "name": name, "email": email, "password": PASSWORD})
    me = call(url, "GET", "/me", None, answer["access_token"])
    return email, answer["access_token"], me["user"]["id"]


def status_of(f):
    try:
        f()
    except urllib.error.HTTPError as e:
        return e.code
    return 200


def confirm(page, button, expect):
    """Answers the confirmation dialog with `button`."""
    page.get_by_role("dialog").get_by_role("button", name=button, exact=True).click()
    expect(page.get_by_role("dialog")).to_have_count(0)


def an_admin_invites_a_member_the_token_is_shown_once_and_roles_change(browser, url, shots, expect):
    email, token = workspace(url, "Invites")
    context, page = sign_in(browser, url, email, PASSWORD, expect)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    errors = watch_errors(page)
    page.get_by_role("link", name="Settings").click()
    expect(page).to_have_url(url + "/settings")
    expect(page.get_by_role("heading", name="Members and roles")).to_be_visible()

    # Invited by e-mail with a role: the token is shown, with a copy button, this once.
    invitee = fresh("mia")
    form = page.get_by_role("form", name="Invite someone")
    form.get_by_label("E-mail").fill(invitee)
    form.get_by_label("Role").select_option("member")
    form.get_by_role("button", name="Invite").click()
    shown = page.get_by_label("Invitation token")
    expect(shown).to_be_visible()
    expect(page.get_by_text("It is shown only now")).to_be_visible()
    invitation = shown.input_value()
    assert len(invitation) > 20, invitation
    page.get_by_role("button", name="Copy", exact=True).first.click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == invitation
    # Beside it, the link that joins with it (web_app.py follows such a link).
    assert page.get_by_label("Invitation link").input_value() == f"{url}/signup#invitation={invitation}"
    expect(page.get_by_role("row", name=invitee)).to_contain_text("member")

    # The token works: the invitee signs up with it.
    call(url, "POST", "/auth/signup", {"invitation_token": invitation, "name": "Mia Member", "email": invitee, "password": PASSWORD})

    # Away and back: the token is gone from the screen, the new member is listed.
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    page.get_by_role("link", name="Members and roles").click()
    expect(page.get_by_label("Role of Mia Member")).to_have_value("member")
    expect(page.get_by_label("Invitation token")).to_have_count(0)
    expect(page.get_by_text("No pending invitations.")).to_be_visible()

    # A role changed with the select is changed on the server.
    page.get_by_label("Role of Mia Member").select_option("agent")
    expect(page.get_by_text("Mia Member is now agent.")).to_be_visible()
    roles = {m["email"]: m["role"] for m in call(url, "GET", "/members", None, token)["data"]}
    assert roles[invitee] == "agent", roles

    # A pending invitation is revoked after a confirmation.
    other = fresh("ned")
    form.get_by_label("E-mail").fill(other)
    form.get_by_role("button", name="Invite").click()
    expect(page.get_by_role("row", name=other)).to_be_visible()
    page.get_by_role("button", name=f"Revoke the invitation of {other}").click()
    confirm(page, "Revoke", expect)
    expect(page.get_by_role("row", name=other)).to_have_count(0)
    assert call(url, "GET", "/invitations", None, token)["data"] == []

    # A member is removed after a confirmation.
    page.get_by_role("button", name="Remove Mia Member").click()
    confirm(page, "Remove", expect)
    expect(page.get_by_label("Role of Mia Member")).to_have_count(0)
    assert invitee not in {m["email"] for m in call(url, "GET", "/members", None, token)["data"]}
    assert not errors, f"errors in the page: {errors}"
    context.close()


def an_admin_may_not_make_owners_and_a_member_is_told_settings_are_for_admins(browser, url, shots, expect):
    _, token = workspace(url, "Roles")
    admin_email, _, _ = join(url, token, "Ada Admin", "admin")
    member_email, _, _ = join(url, token, "Max Member", "member")

    # An admin's attempt to make an owner is refused by the server, in words, and the
    # select goes back to the role the member has.
    context, page = sign_in(browser, url, admin_email, PASSWORD, expect)
    errors = watch_errors(page)
    page.goto(url + "/settings/members")
    role = page.get_by_label("Role of Max Member")
    role.select_option("owner")
    expect(page.get_by_role("alert")).to_contain_text("only an owner")
    expect(role).to_have_value("member")
    assert not errors, f"errors in the page: {errors}"
    context.close()

    # A member has no Settings link, and is told what the page is for.
    context, page = sign_in(browser, url, member_email, PASSWORD, expect)
    errors = watch_errors(page)
    expect(page.get_by_role("link", name="Settings")).to_have_count(0)
    page.goto(url + "/settings")
    expect(page.get_by_role("alert")).to_contain_text("only for owners and admins")
    expect(page.get_by_role("form")).to_have_count(0)
    assert not errors, f"errors in the page: {errors}"
    context.close()


def an_api_key_is_shown_once_works_and_stops_working_when_revoked(browser, url, shots, expect):
    email, token = workspace(url, "Keys")
    context, page = sign_in(browser, url, email, PASSWORD, expect)
    errors = watch_errors(page)
    page.goto(url + "/settings/api-keys")
    form = page.get_by_role("form", name="New API key")

    # Without a name or scopes the server's reasons are shown beside the form.
    form.get_by_role("button", name="Create API key").click()
    expect(form.get_by_role("alert")).to_contain_text("name: must be 1 to 200 characters")

    form.get_by_label("Name").fill("Warehouse sync")
    form.get_by_label("contacts", exact=True).select_option("write")
    form.get_by_label("deals", exact=True).select_option("read")
    form.get_by_role("button", name="Create API key").click()
    key_box = page.get_by_label("API key", exact=True)
    expect(key_box).to_be_visible()
    expect(page.get_by_text("you will not see it again")).to_be_visible()
    key = key_box.input_value()
    assert key.startswith("shoal_sk_"), key
    row = page.get_by_role("row", name="Warehouse sync")
    expect(row).to_contain_text("contacts:write")
    expect(row).to_contain_text("never")

    # The key works against the API.
    me = call(url, "GET", "/me", None, key)
    assert me["kind"] == "api_key" and me["api_key"]["name"] == "Warehouse sync", me
    assert sorted(me["api_key"]["scopes"]) == ["contacts:write", "deals:read"], me

    # Shown once: not on the page again.
    page.reload()
    expect(page.get_by_role("row", name="Warehouse sync")).to_be_visible()
    expect(page.get_by_label("API key", exact=True)).to_have_count(0)

    # Revoked, it stops working.
    page.get_by_role("button", name="Revoke Warehouse sync").click()
    confirm(page, "Revoke", expect)
    expect(page.get_by_role("row", name="Warehouse sync")).to_contain_text("revoked")
    assert status_of(lambda: call(url, "GET", "/me", None, key)) == 401
    assert not errors, f"errors in the page: {errors}"
    context.close()


def a_pipeline_is_created_with_stages_and_a_stage_renamed_and_reordered(browser, url, shots, expect):
    email, token = workspace(url, "Pipelines")
    context, page = sign_in(browser, url, email, PASSWORD, expect)
    errors = watch_errors(page)
    page.goto(url + "/settings/pipelines")
    form = page.get_by_role("form", name="New pipeline")

    # A pipeline needs a name: the server says so beside the form.
    form.get_by_role("button", name="Create pipeline").click()
    expect(form.get_by_role("alert")).to_contain_text("name")

    form.get_by_label("Name").fill("Sales")
    form.get_by_label("Stages, one per line").fill("New\nQualified\nClosed")
    form.get_by_role("button", name="Create pipeline").click()
    card = page.locator("article.settings-pipeline", has_text="Sales")
    expect(card.get_by_label("Name of stage 3")).to_have_value("Closed")

    # A stage renamed, given a kind and a probability; one added; the pipeline renamed.
    card.get_by_label("Name of stage 2").fill("Qualifying")
    card.get_by_label("Probability of Qualified, %").fill("40")
    card.get_by_role("button", name="Save stage Qualified").click()
    expect(card.get_by_role("button", name="Save stage Qualifying")).to_be_visible()
    card.get_by_label("Kind of Closed").select_option("won")
    card.get_by_role("button", name="Save stage Closed").click()
    expect(card.get_by_text("Saved the stage “Closed”.")).to_be_visible()
    card.get_by_label("New stage of Sales").fill("Lost")
    card.get_by_role("button", name="Add stage").click()
    expect(card.get_by_label("Name of stage 4")).to_have_value("Lost")
    card.get_by_label("Pipeline name").fill("Sales EU")
    card.get_by_role("button", name="Rename").click()
    expect(card.get_by_text("Renamed “Sales EU”.")).to_be_visible()
    expect(page.get_by_role("link", name="Sales EU")).to_be_visible()

    pipeline = call(url, "GET", "/pipelines", None, token)["data"][0]
    assert pipeline["name"] == "Sales EU", pipeline
    stages = [(s["name"], s["probability"], s["kind"]) for s in pipeline["stages"]]
    assert stages == [("New", 0, "open"), ("Qualifying", 40, "open"), ("Closed", 0, "won"), ("Lost", 0, "open")], stages

    # A stage deleted after a confirmation.
    card = page.locator("article.settings-pipeline", has_text="Sales EU")
    card.get_by_role("button", name="Delete stage Lost").click()
    confirm(page, "Delete", expect)
    expect(card.get_by_label("Name of stage 4")).to_have_count(0)
    assert len(call(url, "GET", f"/pipelines/{pipeline['id']}", None, token)["stages"]) == 3

    # Reordered: "Closed" moved up above "Qualifying", as the board will show it.
    card.get_by_role("button", name="Move stage Closed up").click()
    expect(card.get_by_text("Moved the stage “Closed” up.")).to_be_visible()
    expect(card.get_by_label("Name of stage 2")).to_have_value("Closed")
    expect(card.get_by_role("button", name="Move stage New up")).to_be_disabled()
    order = [s["name"] for s in call(url, "GET", f"/pipelines/{pipeline['id']}", None, token)["stages"]]
    assert order == ["New", "Closed", "Qualifying"], order
    assert not errors, f"errors in the page: {errors}"
    context.close()


def inbox_set_up_is_created_through_the_screens_and_bad_input_is_refused(browser, url, shots, expect):
    email, token = workspace(url, "Support")
    context, page = sign_in(browser, url, email, PASSWORD, expect)
    errors = watch_errors(page)
    get = lambda path: call(url, "GET", path, None, token)["data"]

    # A custom field: a bad key is refused on its field, then a good one is made.
    page.goto(url + "/settings/custom-fields")
    form = page.get_by_role("form", name="New custom field")
    form.get_by_label("Record type").select_option("deal")
    form.get_by_label("Label").fill("Tier")
    form.get_by_label("Key").fill("Bad Key")
    form.get_by_label("Kind").select_option("select")
    form.get_by_label("Options").fill("gold, silver")
    form.get_by_role("button", name="Create custom field").click()
    expect(form.get_by_role("alert")).to_contain_text("key: must start with a lowercase letter")
    form.get_by_label("Key").fill("tier")
    form.get_by_role("button", name="Create custom field").click()
    expect(page.get_by_role("row", name="Tier")).to_contain_text("gold, silver")
    fields = get("/custom-fields")
    assert [(f["object_type"], f["key"], f["kind"], f["options"]) for f in fields] == [("deal", "tier", "select", ["gold", "silver"])], fields

    # A team, through the section selector a phone would use as well.
    page.goto(url + "/settings/teams")
    form = page.get_by_role("form", name="New team")
    form.get_by_label("Name").fill("Tier 1")
    form.get_by_label("Olga Owner").check()
    form.get_by_role("button", name="Create team").click()
    expect(page.get_by_role("row", name="Tier 1")).to_contain_text("Olga Owner")

    # An SLA policy: without any target it is refused; then made, then edited.
    page.goto(url + "/settings/sla-policies")
    form = page.get_by_role("form", name="New SLA policy")
    form.get_by_label("Name").fill("Standard")
    form.get_by_role("button", name="Create SLA policy").click()
    expect(form.get_by_role("alert")).to_contain_text("at least one target")
    form.get_by_label("First response (minutes)").fill("60")
    form.get_by_label("Resolution (minutes)").fill("1440")
    form.get_by_role("button", name="Create SLA policy").click()
    expect(page.get_by_role("row", name="Standard")).to_contain_text("first 60 min")
    page.get_by_role("button", name="Edit Standard").click()
    form = page.get_by_role("form", name="Edit SLA policy")
    form.get_by_label("First response (minutes)").fill("30")
    # Changed elsewhere meanwhile: the save is refused, and the current version offered.
    policy = get("/sla-policies")[0]
    call(url, "PATCH", f"/sla-policies/{policy['id']}", {"resolution_minutes": 2880}, token)
    form.get_by_role("button", name="Save").click()
    expect(form.get_by_role("alert")).to_contain_text("the record changed")
    form.get_by_role("button", name="Edit the current version").click()
    expect(form.get_by_label("Resolution (minutes)")).to_have_value("2880")
    form.get_by_label("First response (minutes)").fill("30")
    form.get_by_label("Count only the inbox's business hours").uncheck()
    form.get_by_role("button", name="Save").click()
    expect(page.get_by_role("row", name="Standard")).to_contain_text("first 30 min")
    policy = get("/sla-policies")[0]
    assert (policy["first_response_minutes"], policy["resolution_minutes"], policy["business_hours_only"], policy["version"]) == (30, 2880, False, 3), policy

    # An inbox with its team, policy, assignment, hours and holidays; its token shown once.
    page.goto(url + "/settings/inboxes")
    form = page.get_by_role("form", name="New inbox")
    form.get_by_label("Name").fill("Help desk")
    form.get_by_label("Team").select_option(label="Tier 1")
    form.get_by_label("SLA policy").select_option(label="Standard")
    form.get_by_label("Assign new conversations automatically").check()
    form.get_by_label("Most open conversations per agent").fill("5")
    form.get_by_label("Time zone").fill("Mars/Olympus")
    form.get_by_label("Monday").fill("09:00-12:00, 13:00-17:00")
    form.get_by_label("Friday").fill("09:00-15:00")
    form.get_by_label("Holidays").fill("2026-12-24 2026-12-25")
    form.get_by_role("button", name="Create inbox").click()
    expect(form.get_by_role("alert")).to_contain_text("time zone")
    form.get_by_label("Time zone").fill("Europe/Paris")
    form.get_by_role("button", name="Create inbox").click()
    inbox_token = page.locator(".settings-secret", has_text="Token of the inbox “Help desk”").get_by_label("Inbox token")
    expect(inbox_token).to_be_visible()
    secret = inbox_token.input_value()
    assert secret.startswith("shoal_inbox_"), secret
    expect(page.get_by_role("row", name="Help desk")).to_contain_text("automatic, at most 5 each")
    inbox = get("/inboxes")[0]
    assert inbox["team_id"] and inbox["sla_policy_id"] == policy["id"], inbox
    assert inbox["auto_assign"] is True and inbox["max_open_per_agent"] == 5 and inbox["time_zone"] == "Europe/Paris", inbox
    assert inbox["business_hours"] == {"mon": [["09:00", "12:00"], ["13:00", "17:00"]], "fri": [["09:00", "15:00"]]}, inbox
    assert inbox["holidays"] == ["2026-12-24", "2026-12-25"], inbox
    # The token works on the API channel: a customer's first message.
    call(url, "POST", "/channels/api/messages", {"email": "eve@example.com", "name": "Eve", "subject": "Refund", "text": "Where is my refund?"}, secret)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=os.path.join(shots, "settings-1280.png"))
    # Edited with what it holds filled in; its version sent.
    page.get_by_role("button", name="Edit Help desk").click()
    form = page.get_by_role("form", name="Edit inbox")
    expect(form.get_by_label("Monday")).to_have_value("09:00-12:00, 13:00-17:00")
    expect(form.get_by_label("Team")).to_have_value(inbox["team_id"])
    form.get_by_label("Name").fill("Help desk EU")
    form.get_by_label("Tuesday").fill("10:00-16:00")
    form.get_by_role("button", name="Save").click()
    expect(page.get_by_role("row", name="Help desk EU")).to_be_visible()
    inbox = get("/inboxes")[0]
    assert inbox["name"] == "Help desk EU" and inbox["business_hours"]["tue"] == [["10:00", "16:00"]] and inbox["version"] == 2, inbox
    # A new token: shown once, and the old one stops working.
    page.get_by_role("button", name="New token for Help desk EU").click()
    confirm(page, "New token", expect)
    shown = page.locator(".settings-secret", has_text="New token of the inbox “Help desk EU”")
    expect(shown).to_be_visible()
    rotated = shown.get_by_label("Inbox token").input_value()
    assert rotated.startswith("shoal_inbox_") and rotated != secret, rotated
    message = {"email": "eve@example.com", "text": "Any news?"}
    assert status_of(lambda: call(url, "POST", "/channels/api/messages", message, secret)) == 401
    call(url, "POST", "/channels/api/messages", message, rotated)

    # A canned response: a bad shortcode and an unknown variable are refused on their fields.
    page.goto(url + "/settings/canned-responses")
    form = page.get_by_role("form", name="New canned response")
    form.get_by_label("Shortcode").fill("Refund!")
    form.get_by_label("Text").fill("Hi {{contact.nickname}}")
    form.get_by_role("button", name="Create canned response").click()
    alert = form.get_by_role("alert")
    expect(alert).to_contain_text("shortcode: 1 to 40 of a-z")
    expect(alert).to_contain_text("text:")
    form.get_by_label("Shortcode").fill("refund")
    form.get_by_label("Text").fill("Hi {{contact.name}}, {{agent.name}} here: your refund is on its way.")
    form.get_by_role("button", name="Create canned response").click()
    expect(page.get_by_role("row", name="/refund")).to_be_visible()
    canned = get("/canned-responses")[0]
    assert canned["shortcode"] == "refund", canned
    # Previewed for the conversation that just arrived.
    page.get_by_role("button", name="Preview refund").click()
    preview = page.get_by_role("dialog")
    preview.get_by_label("Conversation").select_option(label="#1 Refund")
    preview.get_by_role("button", name="Preview").click()
    expect(preview).to_contain_text("Hi Eve, Olga Owner here: your refund is on its way.")
    preview.get_by_role("button", name="Close").click()
    # One made elsewhere appears without a reload (the workspace topic).
    call(url, "POST", "/canned-responses", {"shortcode": "thanks", "text": "Thank you!"}, token)
    expect(page.get_by_role("row", name="/thanks")).to_be_visible()

    # A macro of three actions.
    page.goto(url + "/settings/macros")
    form = page.get_by_role("form", name="New macro")
    form.get_by_label("Name").fill("Refund")
    form.get_by_label("Action").nth(0).select_option("set_priority")
    form.get_by_label("Value").nth(0).select_option("high")
    form.get_by_role("button", name="Add an action").click()
    form.get_by_label("Note").fill("Refund approved by policy 4.2")
    form.get_by_role("button", name="Add an action").click()
    form.get_by_label("Action").nth(2).select_option("send_canned_response")
    form.get_by_label("Value").nth(1).select_option(label="/refund")
    form.get_by_role("button", name="Create macro").click()
    expect(page.get_by_role("row", name="Refund")).to_contain_text("Send canned reply: /refund")
    macro = get("/macros")[0]
    assert macro["actions"] == [
        {"type": "set_priority", "value": "high"},
        {"type": "add_note", "value": "Refund approved by policy 4.2"},
        {"type": "send_canned_response", "value": canned["id"]},
    ], macro

    # A tag made and deleted after a confirmation.
    page.goto(url + "/settings/tags")
    form = page.get_by_role("form", name="New tag")
    form.get_by_label("Name").fill("vip")
    form.get_by_label("Colour").fill("#aa3300")
    form.get_by_role("button", name="Create tag").click()
    expect(page.get_by_role("row", name="vip")).to_be_visible()
    page.get_by_role("button", name="Delete vip").click()
    confirm(page, "Delete", expect)
    expect(page.get_by_text("No tags yet.")).to_be_visible()
    assert get("/tags") == []

    # A phone: the section is chosen with a select.
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_label("Settings section").select_option(label="Inboxes")
    expect(page.get_by_role("row", name="Help desk")).to_be_visible()
    page.screenshot(path=os.path.join(shots, "settings-390.png"), full_page=True)
    assert not errors, f"errors in the page: {errors}"
    context.close()


def refusing_imap_server():
    """A port on this machine where an IMAP server greets and refuses every login: an
    e-mail inbox pointed at it fails for good (at signing in), not for a while. Serves
    until the script ends."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn):
        with conn, conn.makefile("rb") as lines:
            try:
                conn.sendall(b"* OK IMAP4rev1 ready\r\n")
                for line in lines:
                    tag = line.split(b" ", 1)[0]
                    if b" LOGOUT" in line.upper():
                        conn.sendall(b"* BYE\r\n" + tag + b" OK LOGOUT done\r\n")
                        return
                    conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] wrong password\r\n")
            except OSError:
                pass

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def fill_server(group, host, port, security, username, password):
    group.get_by_label("Host", exact=True).fill(host)
    group.get_by_label("Port", exact=True).fill(str(port))
    group.get_by_label(re.compile("^Security")).select_option(security)
    group.get_by_label("Username", exact=True).fill(username)
    group.get_by_label("Password", exact=True).fill(password)


def an_email_inbox_gets_its_servers_tested_refused_saved_and_its_failing_said(browser, url, shots, expect):
    email, token = workspace(url, "Mail")
    context, page = sign_in(browser, url, email, PASSWORD, expect)
    errors = watch_errors(page)

    # An inbox of channel e-mail: no token, a hint to set its servers from its row.
    page.goto(url + "/settings/inboxes")
    form = page.get_by_role("form", name="New inbox")
    form.get_by_label("Name").fill("Support mail")
    form.get_by_label("Channel").select_option("email")
    form.get_by_role("button", name="Create inbox").click()
    expect(page.get_by_text("Give it its mail servers")).to_be_visible()
    expect(page.get_by_label("Inbox token")).to_have_count(0)
    row = page.get_by_role("row", name="Support mail")
    expect(row).to_contain_text("E-mail, not connected")
    expect(row.get_by_role("button", name="New token for Support mail")).to_have_count(0)
    inbox = call(url, "GET", "/inboxes", None, token)["data"][0]
    assert inbox["channel"] == "email" and inbox["channel_status"] is None, inbox

    # Its servers: none saved yet, so an empty form.
    row.get_by_role("button", name="E-mail settings of Support mail").click()
    mail = page.get_by_role("form", name="E-mail settings of Support mail")
    imap = mail.get_by_role("group", name="Incoming mail (IMAP)")
    smtp = mail.get_by_role("group", name="Outgoing mail (SMTP)")
    expect(imap.get_by_label("Host", exact=True)).to_have_value("")
    expect(imap.get_by_label("Port", exact=True)).to_have_attribute("placeholder", "993")

    # Tested before saving, against a closed port: each server fails, saying at which
    # stage and why. (A server that does not connect to this machine's addresses stops
    # at dns rather than tcp.)
    fill_server(imap, "127.0.0.1", 1, "none", "support", "an imap password")
    fill_server(smtp, "127.0.0.1", 1, "none", "support", "an smtp password")
    expect(imap.get_by_label("Port", exact=True)).to_have_attribute("placeholder", "143")
    mail.get_by_label("From name").fill("Acme Support")
    mail.get_by_label("From address").fill("support@example.com")
    mail.get_by_role("button", name="Test connection").click()
    tests = mail.get_by_role("list", name="Connection test")
    failed = re.compile(r"✗ .+: failed at (dns|tcp) \((finding the host|connecting)\): \S.{10,}")
    expect(tests.get_by_role("listitem").filter(has_text="Incoming mail (IMAP)")).to_have_text(failed)
    expect(tests.get_by_role("listitem").filter(has_text="Outgoing mail (SMTP)")).to_have_text(failed)
    expect(mail.get_by_role("button", name="Test connection")).to_be_enabled()
    page.screenshot(path=os.path.join(shots, "settings-email-test.png"), full_page=True)
    # A test saves nothing.
    assert status_of(lambda: call(url, "GET", f"/inboxes/{inbox['id']}/email", None, token)) == 404

    # Plain text to a server elsewhere is refused, beside the field it is about.
    imap.get_by_label("Host", exact=True).fill("mail.example.com")
    mail.get_by_role("button", name="Save").click()
    security = imap.get_by_label(re.compile("^Security"))
    expect(security).to_have_attribute("aria-invalid", "true")
    expect(imap).to_contain_text("sends the password in the clear")
    expect(mail.get_by_role("alert")).to_contain_text("some fields are invalid")
    expect(smtp.get_by_label(re.compile("^Security"))).not_to_have_attribute("aria-invalid", "true")
    assert status_of(lambda: call(url, "GET", f"/inboxes/{inbox['id']}/email", None, token)) == 404

    # Saved with an IMAP server that refuses the login: the passwords are kept, not
    # shown, and the row says the inbox is failing as soon as the sync finds out (a
    # server that does not connect to this machine's addresses fails for good too, at
    # dns).
    imap_port = refusing_imap_server()
    imap.get_by_label("Host", exact=True).fill("127.0.0.1")
    imap.get_by_label("Port", exact=True).fill(str(imap_port))
    mail.get_by_role("button", name="Save").click()
    expect(mail.get_by_text("Saved.")).to_be_visible()
    expect(security).not_to_have_attribute("aria-invalid", "true")
    expect(imap.get_by_label("Password", exact=True)).to_have_value("")
    expect(imap).to_contain_text("saved; leave empty to keep")
    expect(smtp).to_contain_text("saved; leave empty to keep")
    saved = call(url, "GET", f"/inboxes/{inbox['id']}/email", None, token)
    assert saved["imap"]["host"] == "127.0.0.1" and saved["imap"]["port"] == imap_port and saved["imap"]["security"] == "none", saved
    assert saved["imap"]["password_set"] and saved["smtp"]["password_set"] and saved["smtp"]["port"] == 1, saved
    assert saved["from_name"] == "Acme Support" and saved["from_address"] == "support@example.com", saved
    status = row.locator(".settings-status")
    expect(status).to_have_text(re.compile("Connecting|Importing|Syncing|Failing"))
    expect(status).to_have_text("Failing", timeout=20_000)
    expect(row).to_contain_text(re.compile(r"refused the login of 'support'|resolves only to private"))

    # Tested again with the password fields left empty: the saved passwords are used.
    mail.get_by_role("button", name="Test connection").click()
    expect(mail.get_by_role("list", name="Connection test").get_by_role("listitem").filter(has_text="Incoming mail (IMAP)")).to_contain_text(
        re.compile(r"failed at (auth|dns)")
    )
    expect(mail.get_by_role("alert")).to_have_count(0)

    # The owner is told in the bell; its link leads back to the inbox's row.
    bell = page.get_by_role("button", name=re.compile("Notifications, 1 unread"))
    expect(bell).to_be_visible()
    bell.click()
    told = page.get_by_role("region", name="Notifications").get_by_role("link", name=re.compile("Inbox “Support mail” cannot reach its mail server: "))
    expect(told).to_be_visible()
    page.screenshot(path=os.path.join(shots, "settings-email-failing.png"))
    told.click()
    expect(page).to_have_url(url + "/settings/inboxes")
    expect(page.get_by_role("row", name="Support mail").locator(".settings-status")).to_have_text("Failing")
    assert not errors, f"errors in the page: {errors}"
    context.close()


if __name__ == "__main__":
    sys.exit(main())
