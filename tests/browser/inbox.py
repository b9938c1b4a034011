"""The support inbox in a real browser: messages arriving live through the API channel,
the composer (replies, private notes, canned responses), the side panel, two agents
replying at once, the layout on a phone, counts of an inbox of more than 200 open
conversations, reads from the member's other session, and SLA warnings.

SLA timers fall due by moving the server's clock (`POST /api/v1/_faults/clock`, on
the servers the integration tests start), not by waiting.

    python3 tests/browser/inbox.py --url http://127.0.0.1:PORT --screenshots DIR
Exits non-zero, saying why, on any failed check.
"""

import os
import sys
import time
import uuid

from common import call, launch, sign_in, watch_errors

PASSWORD = "a long enough password"


def main() -> int:
    return launch(
        a_message_posted_through_the_api_channel_appears_live_with_an_unread_badge,
        a_reply_from_the_composer_is_stored_and_a_private_note_is_shown_apart,
        a_canned_response_is_inserted_by_shortcode_and_the_side_panel_changes_the_conversation,
        two_agents_on_one_conversation_see_who_is_replying,
        counts_of_an_inbox_with_more_than_200_open_conversations_are_right_and_contacts_come_in_batches,
        reading_a_conversation_in_one_session_drops_its_badge_in_the_members_other_session,
        sla_warnings_and_breaches_of_the_members_conversations_are_shown_until_dismissed,
    )


def workspace(url, name):
    """A fresh workspace with an owner and an API-channel inbox."""
    email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:8]}@example.com"
    token = call(url, "POST", "/auth/signup", {"workspace_name": f"{name}'s support", "name": name, "email": email, "password": PASSWORD})["access_token"]
    user = call(url, "GET", "/me", None, token)["user"]
    inbox = call(url, "POST", "/inboxes", {"name": "Support", "channel": "api"}, token)
    assert inbox["token"].startswith("shoal_inbox_"), inbox
    return {"email": email, "token": token, "user": user, "inbox": inbox}


def customer_writes(url, ws, text, **extra):
    body = {"contact_identifier": "eve-1", "email": "eve@example.com", "name": "Eve Example", "subject": "Where is my invoice?", "text": text, **extra}
    return call(url, "POST", "/channels/api/messages", body, ws["inbox"]["token"])


def open_conversation(page, expect, conversation_id):
    page.locator(f'a.conv[data-id="{conversation_id}"]').click()
    expect(page.locator(".thread-title h2")).to_be_visible()


def a_message_posted_through_the_api_channel_appears_live_with_an_unread_badge(browser, url, shots, expect):
    ws = workspace(url, "Ann Agent")
    ctx, page = sign_in(browser, url, ws["email"], PASSWORD, expect)
    errors = watch_errors(page)
    page.get_by_role("link", name="Inbox").click()
    page.locator('a.view[data-view="all"]').click()
    expect(page.get_by_text("No conversations here.")).to_be_visible()
    page.evaluate("window.notReloaded = true")

    # The customer writes through the API channel: the conversation appears, unread.
    posted = customer_writes(url, ws, "Hello, I never got invoice 42.")
    conv = posted["conversation"]
    row = page.locator(f'a.conv[data-id="{conv["id"]}"]')
    expect(row).to_contain_text("Eve Example")
    expect(row).to_contain_text("Where is my invoice?")
    expect(row.get_by_test_id("unread")).to_have_text("1")
    expect(page.locator('a.view[data-view="all"] .badge')).to_have_text("1")

    # A second message to the same conversation, in HTML: the badge counts it.
    html = '<p>Invoice <b>42</b>, please: <a href="https://example.com/i/42">my account</a></p><img src="https://example.com/pixel.png" alt="logo"><script>alert(1)</script>'
    customer_writes(url, ws, "Invoice 42, please: my account", html=html)
    expect(row.get_by_test_id("unread")).to_have_text("2")
    assert page.evaluate("window.notReloaded === true"), "the page was reloaded"

    # Opening it shows both messages (the HTML one in a sandboxed frame) and reads it.
    open_conversation(page, expect, conv["id"])
    expect(page.locator(".msg.incoming").first).to_contain_text("I never got invoice 42")
    frame = page.locator("iframe.msg-html")
    expect(frame).to_have_count(1)
    assert frame.get_attribute("sandbox") == "", "the message's frame must have no permissions"
    inside = page.frame_locator("iframe.msg-html")
    expect(inside.locator("b")).to_have_text("42")
    # A remote image is not loaded (the CSP forbids it; it would tell the sender it was
    # read): its alt text stands in. The link is offered outside the sandbox.
    expect(inside.locator("body")).to_contain_text("[image: logo]")
    expect(page.locator(".msg .links a")).to_have_attribute("href", "https://example.com/i/42")
    expect(row.get_by_test_id("unread")).to_have_count(0)
    for _ in range(20):
        if call(url, "GET", f"/conversations/{conv['id']}", None, ws["token"])["unread_count"] == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("opening the conversation did not mark it read")

    # A message arriving while it is open is read at once: no badge comes back.
    customer_writes(url, ws, "Thanks in advance!")
    expect(page.locator(".msg.incoming", has_text="Thanks in advance!")).to_be_visible()
    # The page marks it read on the server (the badges of every session follow that).
    for _ in range(50):
        if call(url, "GET", f"/conversations/{conv['id']}", None, ws["token"])["unread_count"] == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the message that arrived while the conversation was open stayed unread")
    expect(row.get_by_test_id("unread")).to_have_count(0)
    assert not errors, f"errors in the page: {errors}"
    ctx.close()


def a_reply_from_the_composer_is_stored_and_a_private_note_is_shown_apart(browser, url, shots, expect):
    ws = workspace(url, "Ben Agent")
    conv = customer_writes(url, ws, "My parcel is late.")["conversation"]
    ctx, page = sign_in(browser, url, ws["email"], PASSWORD, expect)
    errors = watch_errors(page)
    page.goto(f"{url}/inbox/all/c/{conv['id']}")
    expect(page.locator(".msg.incoming")).to_contain_text("My parcel is late.")

    # A reply, sent from the composer, is stored as an outgoing message.
    page.get_by_label("Reply", exact=True).fill("Sorry about that, Eve: it ships today.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator(".msg.outgoing")).to_contain_text("it ships today")
    expect(page.locator(".msg.outgoing .delivery")).to_have_text("Sending…")
    expect(page.get_by_label("Reply", exact=True)).to_have_value("")
    stored = call(url, "GET", f"/conversations/{conv['id']}/messages?kind=message", None, ws["token"])["data"]
    replies = [m for m in stored if m["direction"] == "outgoing"]
    assert [m["text"] for m in replies] == ["Sorry about that, Eve: it ships today."], stored
    assert replies[0]["author"] == f"user:{ws['user']['id']}", replies

    # The channel reports delivery: the reply's status follows live.
    call(url, "POST", f"/channels/api/messages/{replies[0]['id']}/status", {"status": "delivered"}, ws["inbox"]["token"])
    expect(page.locator(".msg.outgoing .delivery")).to_have_text("Delivered")

    # A private note: labelled, yellow, and stored as a note.
    page.get_by_role("button", name="Private note").click()
    page.get_by_label("Private note").fill("Carrier confirmed the delay.")
    page.get_by_role("button", name="Add note").click()
    note = page.locator(".msg.note")
    expect(note).to_contain_text("Carrier confirmed the delay.")
    expect(note.locator(".note-label")).to_have_text("Private note")
    colour = note.evaluate("el => getComputedStyle(el).backgroundColor")
    assert colour == "rgb(255, 246, 204)", f"a note should be yellow, is {colour}"
    notes = call(url, "GET", f"/conversations/{conv['id']}/messages?kind=note", None, ws["token"])["data"]
    assert [n["text"] for n in notes] == ["Carrier confirmed the delay."], notes

    page.screenshot(path=os.path.join(shots, "inbox-1280.png"))

    # On a phone the thread is its own screen, and the list is one tap back.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator(".inbox-list")).to_be_hidden()
    expect(page.locator(".msg.note")).to_be_visible()
    page.screenshot(path=os.path.join(shots, "inbox-390.png"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    page.get_by_role("link", name="← Conversations").click()
    expect(page.locator(f'a.conv[data-id="{conv["id"]}"]')).to_be_visible()
    expect(page.locator(".inbox-thread")).to_be_hidden()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the list scrolls sideways on a phone ({width} px)"
    assert not errors, f"errors in the page: {errors}"
    ctx.close()


def a_canned_response_is_inserted_by_shortcode_and_the_side_panel_changes_the_conversation(browser, url, shots, expect):
    ws = workspace(url, "Cleo Agent")
    call(url, "POST", "/canned-responses", {"shortcode": "thanks", "text": "Hi {{contact.name}}, {{agent.name}} here: thanks for writing."}, ws["token"])
    call(url, "POST", "/canned-responses", {"shortcode": "refund", "text": "Your refund is on its way."}, ws["token"])
    macro = call(url, "POST", "/macros", {"name": "Escalate", "actions": [{"type": "set_priority", "value": "urgent"}, {"type": "add_labels", "value": ["escalated"]}]}, ws["token"])
    conv = customer_writes(url, ws, "Can I get a refund?")["conversation"]
    ctx, page = sign_in(browser, url, ws["email"], PASSWORD, expect)
    errors = watch_errors(page)
    page.goto(f"{url}/inbox/unassigned")
    open_conversation(page, expect, conv["id"])

    # "/tha" suggests the matching canned response; Enter inserts it, filled in.
    box = page.get_by_label("Reply", exact=True)
    box.click()
    box.press_sequentially("/tha")
    expect(page.locator(".suggest").get_by_role("option")).to_have_count(1)
    expect(page.locator(".suggest").get_by_role("option")).to_contain_text("/thanks")
    box.press("Enter")
    expect(box).to_have_value("Hi Eve Example, Cleo Agent here: thanks for writing.")
    expect(page.locator(".suggest").get_by_role("option")).to_have_count(0)

    # Assignee and status from the side panel, stored with the conversation's version.
    side = page.locator(".inbox-side")
    side.get_by_label("Assignee").select_option(ws["user"]["id"])
    expect(side.get_by_label("Assignee")).to_have_value(ws["user"]["id"])
    side.get_by_label("Status").select_option("pending")
    expect(page.locator(f'a.conv[data-id="{conv["id"]}"]')).to_have_count(0)  # no longer unassigned
    side.get_by_label("New label").fill("billing")
    side.get_by_role("button", name="Add").click()
    expect(side.locator(".chips")).to_contain_text("billing")
    # A macro from the composer's menu.
    page.get_by_label("Apply a macro").select_option(macro["id"])
    expect(page.get_by_role("status")).to_contain_text("Applied “Escalate”")
    expect(side.get_by_label("Priority")).to_have_value("urgent")
    now = call(url, "GET", f"/conversations/{conv['id']}", None, ws["token"])
    assert now["assignee_id"] == ws["user"]["id"] and now["status"] == "pending", now
    assert now["priority"] == "urgent" and sorted(now["tags"]) == ["billing", "escalated"], now
    # Now it is the agent's: the "Mine" view lists it.
    page.locator('a.view[data-view="mine"]').click()
    open_conversation(page, expect, conv["id"])

    # Snoozed until a time chosen in the panel.
    side.get_by_label("Status").select_option("snoozed")
    side.get_by_label("Snoozed until").fill("2031-05-04T09:30")
    side.get_by_role("button", name="Snooze").click()
    expect(side.get_by_role("button", name="Change")).to_be_visible()
    now = call(url, "GET", f"/conversations/{conv['id']}", None, ws["token"])
    assert now["status"] == "snoozed" and now["snoozed_until"].startswith("2031-05-04"), now

    # A change made elsewhere shows at once; a refused one is said in words.
    call(url, "PATCH", f"/conversations/{conv['id']}", {"priority": "low"}, ws["token"])
    expect(side.get_by_label("Priority")).to_have_value("low")
    side.get_by_label("New label").fill("a;b")
    side.get_by_role("button", name="Add").click()
    expect(side.get_by_role("alert")).to_contain_text("tags")
    expect(side.locator(".chips")).not_to_contain_text("a;b")
    assert not errors, f"errors in the page: {errors}"
    ctx.close()


def two_agents_on_one_conversation_see_who_is_replying(browser, url, shots, expect):
    ws = workspace(url, "Dora Owner")
    eli = f"eli-{uuid.uuid4().hex[:8]}@example.com"
    invite = call(url, "POST", "/invitations", {"email": eli, "role": "agent"}, ws["token"])
    eli_id = call(url, "POST", "/auth/signup", {"invitation_token": invite["token"], "name": "Eli Agent", "email": eli, "password": PASSWORD})["user_id"]
    conv = customer_writes(url, ws, "Is anyone there?")["conversation"]
    ctx_a, a = sign_in(browser, url, ws["email"], PASSWORD, expect)
    ctx_b, b = sign_in(browser, url, eli, PASSWORD, expect)
    errors = watch_errors(a)
    errors_b = watch_errors(b)
    for page in (a, b):
        page.goto(f"{url}/inbox/all/c/{conv['id']}")
        expect(page.locator(".msg.incoming")).to_contain_text("Is anyone there?")

    # Each sees the other viewing; Eli starts typing and Dora sees him replying.
    expect(a.get_by_test_id("presence")).to_contain_text("Eli Agent is viewing")
    b.get_by_label("Reply", exact=True).fill("Yes, ")
    expect(a.get_by_test_id("presence")).to_contain_text("Eli Agent is replying")
    expect(a.locator(f'a.conv[data-id="{conv["id"]}"] .replying')).to_have_text("Eli Agent is replying")

    # Dora starts too: both are warned of the collision.
    a.get_by_label("Reply", exact=True).fill("Hello Eve")
    expect(a.get_by_role("alert")).to_contain_text("Eli Agent is replying to this conversation too")
    expect(b.get_by_role("alert")).to_contain_text("Dora Owner is replying to this conversation too")

    # Eli gives up: Dora's warning goes and he is only viewing.
    b.get_by_label("Reply", exact=True).fill("")
    expect(a.get_by_test_id("presence")).to_contain_text("Eli Agent is viewing")
    expect(a.locator(".collision")).to_have_count(0)

    # A private note mentions Eli, picked from the @ suggestions.
    a.get_by_role("button", name="Private note").click()
    note = a.get_by_label("Private note")
    note.fill("")
    note.press_sequentially("Can you check this, @El")
    expect(a.locator(".suggest").get_by_role("option")).to_have_text("@Eli Agent agent")
    note.press("Enter")
    expect(note).to_have_value("Can you check this, @Eli Agent ")
    a.get_by_role("button", name="Add note").click()
    expect(b.locator(".msg.note")).to_contain_text("Can you check this, @Eli Agent")
    notes = call(url, "GET", f"/conversations/{conv['id']}/messages?kind=note", None, ws["token"])["data"]
    assert notes[0]["mentions"] == [eli_id], notes

    # Eli's availability switch: busy, as the server keeps it.
    b.get_by_label("My availability").select_option("busy")
    for _ in range(20):
        status = {m["name"]: m["status"] for m in call(url, "GET", "/availability", None, ws["token"])["data"]}
        if status.get("Eli Agent") == "busy":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the availability switch was not kept: {status}")
    expect(a.locator(".inbox-side").get_by_label("Assignee")).to_contain_text("Eli Agent · busy")
    assert not errors and not errors_b, f"errors in the pages: {errors + errors_b}"
    ctx_a.close()
    ctx_b.close()


def nav_count(page, view):
    return page.locator(f'a.view[data-view="{view}"] .count')


def counts_of_an_inbox_with_more_than_200_open_conversations_are_right_and_contacts_come_in_batches(browser, url, shots, expect):
    ws = workspace(url, "Fay Agent")
    box = ws["inbox"]
    convs = []
    for i in range(205):
        body = {"contact_identifier": f"cust-{i}", "name": f"Customer {i:03}", "subject": f"Question {i}", "text": "Hello"}
        convs.append(call(url, "POST", "/channels/api/messages", body, box["token"])["conversation"])
    ctx, page = sign_in(browser, url, ws["email"], PASSWORD, expect)
    errors = watch_errors(page)
    contact_requests = []
    page.on("request", lambda r: contact_requests.append(r.url) if "/api/v1/contacts" in r.url else None)
    page.goto(f"{url}/inbox/i/{box['id']}")

    # The inbox's count is its actor's, not the 200 of its snapshot; Unassigned has
    # no total past a page, and says so.
    expect(nav_count(page, f"i/{box['id']}")).to_have_text("205")
    expect(nav_count(page, "all")).to_have_text("205")
    expect(page.get_by_test_id("list-count")).to_have_text("205")
    expect(nav_count(page, "unassigned")).to_have_text("200+")
    expect(nav_count(page, "mine")).to_have_text("0")
    expect(page.locator(f'a.conv[data-id="{convs[-1]["id"]}"]')).to_contain_text("Customer 204")
    page.evaluate("window.notReloaded = true")

    # Changes made elsewhere keep every count right: one assigned to the member, five
    # resolved, then a new conversation.
    call(url, "PATCH", f"/conversations/{convs[0]['id']}", {"assignee_id": ws["user"]["id"]}, ws["token"])
    expect(nav_count(page, "mine")).to_have_text("1")
    for c in convs[-5:]:
        call(url, "PATCH", f"/conversations/{c['id']}", {"status": "resolved"}, ws["token"])
    expect(nav_count(page, f"i/{box['id']}")).to_have_text("200")
    expect(nav_count(page, "all")).to_have_text("200")
    expect(page.get_by_test_id("list-count")).to_have_text("200")
    # 199 left unassigned: counted again a few seconds after the changes.
    expect(nav_count(page, "unassigned")).to_have_text("199", timeout=15_000)
    call(url, "POST", "/channels/api/messages", {"contact_identifier": "cust-new", "name": "Newcomer", "text": "Hi"}, box["token"])
    expect(nav_count(page, f"i/{box['id']}")).to_have_text("201")
    expect(nav_count(page, "unassigned")).to_have_text("200")
    assert page.evaluate("window.notReloaded === true"), "the page was reloaded"

    # Contacts were asked for in batches of at most 100, each once, never one by one.
    ids = []
    for u in contact_requests:
        assert "/api/v1/contacts?id_in=" in u, f"a contact fetched alone: {u}"
        batch = u.split("id_in=")[1].split("&")[0].split("%2C" if "%2C" in u else ",")
        assert len(batch) <= 100, f"a batch of {len(batch)}"
        ids += batch
    assert len(ids) == len(set(ids)), "a contact was asked for twice"
    assert len(ids) >= 200 and len(contact_requests) <= 8, f"{len(contact_requests)} requests for {len(ids)} contacts"
    assert not errors, f"errors in the page: {errors}"
    ctx.close()


def reading_a_conversation_in_one_session_drops_its_badge_in_the_members_other_session(browser, url, shots, expect):
    ws = workspace(url, "Gus Agent")
    conv = customer_writes(url, ws, "Are you open on Sunday?")["conversation"]
    ctx_a, a = sign_in(browser, url, ws["email"], PASSWORD, expect)
    ctx_b, b = sign_in(browser, url, ws["email"], PASSWORD, expect)
    errors = watch_errors(a) + watch_errors(b)
    for page in (a, b):
        page.goto(f"{url}/inbox/all")
        expect(page.locator(f'a.conv[data-id="{conv["id"]}"]').get_by_test_id("unread")).to_have_text("1")
    b.evaluate("window.notReloaded = true")

    # Read in the first session; the second hears of it on the member's own topic.
    open_conversation(a, expect, conv["id"])
    expect(b.locator(f'a.conv[data-id="{conv["id"]}"]').get_by_test_id("unread")).to_have_count(0, timeout=5_000)
    expect(b.locator('a.view[data-view="all"] .badge')).to_have_count(0)
    assert b.evaluate("window.notReloaded === true"), "the page was reloaded"

    # A new message makes it unread again in the session that has it closed.
    customer_writes(url, ws, "And on holidays?")
    expect(b.locator(f'a.conv[data-id="{conv["id"]}"]').get_by_test_id("unread")).to_have_text("1")
    assert not errors, f"errors in the pages: {errors}"
    ctx_a.close()
    ctx_b.close()


def advance_clock(url, ms):
    """Moves the server's clock forward: timers due by then fire at once."""
    call(url, "POST", "/_faults/clock", {"advance_ms": ms})


def sla_warnings_and_breaches_of_the_members_conversations_are_shown_until_dismissed(browser, url, shots, expect):
    ws = workspace(url, "Hal Agent")
    policy = call(url, "POST", "/sla-policies", {"name": "Fast", "first_response_minutes": 1, "business_hours_only": False}, ws["token"])
    call(url, "PATCH", f"/inboxes/{ws['inbox']['id']}", {"sla_policy_id": policy["id"]}, ws["token"])
    convs = {}
    for key, subject in (("assigned", "Refund for order 7"), ("open", "Broken zipper"), ("other", "Just saying hi")):
        body = {"contact_identifier": f"sla-{key}", "name": f"Sla {key}", "subject": subject, "text": "Please help"}
        convs[key] = call(url, "POST", "/channels/api/messages", body, ws["inbox"]["token"])["conversation"]
        assert convs[key]["first_response_due_at"], convs[key]
    call(url, "PATCH", f"/conversations/{convs['assigned']['id']}", {"assignee_id": ws["user"]["id"]}, ws["token"])
    ctx, page = sign_in(browser, url, ws["email"], PASSWORD, expect)
    errors = watch_errors(page)
    page.goto(f"{url}/inbox/unassigned/c/{convs['open']['id']}")
    expect(page.locator(".thread-title h2")).to_have_text("Broken zipper")

    # 80 % of the one-minute target: a warning for the member's conversation and for the
    # one on screen, none for the third.
    advance_clock(url, 50_000)
    alerts = page.locator(".sla-alert[role=alert]")
    expect(alerts).to_have_count(2)
    assigned = alerts.filter(has_text=f"#{convs['assigned']['number']} “Refund for order 7”")
    expect(assigned).to_contain_text("SLA warning: First response for")
    expect(alerts.filter(has_text=f"#{convs['open']['number']} “Broken zipper”")).to_contain_text("is due")
    expect(alerts.filter(has_text="Just saying hi")).to_have_count(0)
    page.screenshot(path=os.path.join(shots, "inbox-sla-1280.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    expect(assigned).to_be_visible()
    page.screenshot(path=os.path.join(shots, "inbox-sla-390.png"))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
    page.set_viewport_size({"width": 1280, "height": 800})

    # Past the target: the breach replaces the warning.
    advance_clock(url, 15_000)
    expect(alerts.filter(has_text="Refund for order 7")).to_contain_text("SLA breached")

    # Dismissed, it is gone; the other stays. Its link opens the conversation.
    alerts.filter(has_text="Refund for order 7").get_by_role("button", name="Dismiss").click()
    expect(alerts.filter(has_text="Refund for order 7")).to_have_count(0)
    alerts.filter(has_text="Broken zipper").first.get_by_role("link").click()
    expect(page.locator(".thread-title h2")).to_have_text("Broken zipper")
    assert not errors, f"errors in the page: {errors}"
    ctx.close()


if __name__ == "__main__":
    sys.exit(main())
