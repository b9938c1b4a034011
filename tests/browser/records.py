"""The records screens in a real browser: lists (filters, sorting, pages), search, a
record's page (live changes, inline edits and a version conflict), CSV import and
export, and a lead's conversion.

    python3 tests/browser/records.py --url http://127.0.0.1:PORT --screenshots DIR

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
        a_list_is_filtered_sorted_and_paged,
        the_search_box_finds_a_record_and_opens_its_page,
        a_stale_edit_shows_theirs_against_mine_and_mine_can_win,
        a_csv_import_shows_its_progress_and_row_errors_and_an_export_downloads,
        a_lead_is_converted_into_a_contact_and_a_deal_with_its_timeline,
        a_record_page_shows_its_timeline_at_both_widths,
    )


def workspace(url, name):
    """A fresh workspace and its owner: (token, e-mail)."""
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    owner = call(url, "POST", "/auth/signup", {"workspace_name": name, "name": "Rita Records", "email": email, "password": PASSWORD})
    return owner["access_token"], email


def open_page(browser, url, email, expect, viewport=None):
    context, page = sign_in(browser, url, email, PASSWORD, expect, viewport)
    return context, page, watch_errors(page)


def rows(page):
    return page.locator(".records-table tbody tr")


def a_list_is_filtered_sorted_and_paged(browser, url, shots, expect):
    token, email = workspace(url, "Lists")
    for i in range(60):
        body = {"name": f"Person {i:02d}", "emails": [f"p{i}@example.com"]}
        if i % 2 == 0:
            body["tags"] = ["vip"]
        call(url, "POST", "/contacts", body, token)
    context, page, errors = open_page(browser, url, email, expect)

    page.get_by_role("link", name="Records").click()
    expect(page.get_by_role("heading", name="Contacts", exact=True)).to_be_visible()
    expect(rows(page)).to_have_count(25)
    # Newest first by default.
    expect(rows(page).first.locator("th")).to_have_text("Person 59")
    # Someone else's new contact appears without a reload.
    call(url, "POST", "/contacts", {"name": "Person 60"}, token)
    expect(rows(page).first.locator("th")).to_have_text("Person 60")

    # A tag filter and a text filter, applied with Enter: in the address.
    page.get_by_label("Filter by tag").fill("vip")
    page.get_by_label("Filter by name").fill("person")
    page.get_by_label("Filter by name").press("Enter")
    expect(page).to_have_url(f"{url}/records/contacts?name_contains=person&tags=vip")
    expect(rows(page)).to_have_count(25)
    expect(rows(page).first.locator("th")).to_have_text("Person 58")

    # Sorted by a column header: ascending, then descending.
    page.get_by_role("button", name="Name").click()
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Name")
    expect(rows(page).first.locator("th")).to_have_text("Person 00")
    expect(rows(page).nth(24).locator("th")).to_have_text("Person 48")

    # The next page has the other five, the previous one the first 25 again.
    page.get_by_role("button", name="Next →").click()
    expect(rows(page)).to_have_count(5)
    expect(rows(page).first.locator("th")).to_have_text("Person 50")
    expect(page.get_by_role("button", name="Next →")).to_be_disabled()
    expect(page.get_by_test_id("list-status")).to_contain_text("Page 2: 5 contacts")
    page.get_by_role("button", name="← Previous").click()
    expect(rows(page)).to_have_count(25)
    expect(rows(page).first.locator("th")).to_have_text("Person 00")

    page.get_by_role("button", name="Name").click()
    expect(page.locator("th[aria-sort=descending]")).to_contain_text("Name")
    expect(rows(page).first.locator("th")).to_have_text("Person 58")

    # A reload keeps filters and sort; back returns to the ascending list.
    page.reload()
    expect(rows(page).first.locator("th")).to_have_text("Person 58")
    expect(page.get_by_label("Filter by tag")).to_have_value("vip")
    assert "sort=-name" in page.url and "tags=vip" in page.url, page.url
    page.go_back()
    expect(rows(page).first.locator("th")).to_have_text("Person 00")
    assert "sort=name" in page.url, page.url

    # A record created from the list opens its page, and shows in the list.
    page.get_by_role("button", name="New contact").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name").fill("Newton Newcomer")
    dialog.get_by_label("E-mails").fill("newton@example.com")
    dialog.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Newton Newcomer", exact=True)).to_be_visible()
    assert "/records/contacts/" in page.url
    # A refused create says why, in the dialog.
    page.goto(url + "/records/companies")
    page.get_by_role("button", name="New company").click()
    page.get_by_role("dialog").get_by_role("button", name="Create").click()
    expect(page.get_by_role("dialog").get_by_role("alert")).to_contain_text("name")
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()

    assert not errors, f"errors in the page: {errors}"
    context.close()


def the_search_box_finds_a_record_and_opens_its_page(browser, url, shots, expect):
    token, email = workspace(url, "Search")
    company = call(url, "POST", "/companies", {"name": "Quasar Industries", "domain": "quasar.example"}, token)
    contact = call(url, "POST", "/contacts", {"name": "Zephyrine Quasar", "company_id": company["id"]}, token)
    call(url, "POST", "/contacts", {"name": "Somebody Else"}, token)
    context, page, errors = open_page(browser, url, email, expect)

    search = page.get_by_label("Search everything")
    search.fill("quasar")
    search.press("Enter")
    expect(page).to_have_url(f"{url}/search?q=quasar")
    contacts = page.get_by_role("region", name="Contacts")
    expect(contacts.get_by_role("heading")).to_have_text("Contacts (1)")
    expect(page.get_by_role("region", name="Companies").get_by_role("link")).to_have_text("Quasar Industries")
    expect(page.get_by_text("Somebody Else")).to_have_count(0)
    contacts.get_by_role("link", name="Zephyrine Quasar").click()
    expect(page).to_have_url(f"{url}/records/contacts/{contact['id']}")
    expect(page.get_by_role("heading", name="Zephyrine Quasar", exact=True)).to_be_visible()
    # Its company is a link to the company's page.
    expect(page.locator('[data-field="company_id"] .value a')).to_have_text("Quasar Industries")

    assert not errors, f"errors in the page: {errors}"
    context.close()


def a_stale_edit_shows_theirs_against_mine_and_mine_can_win(browser, url, shots, expect):
    token, email = workspace(url, "Conflicts")
    contact = call(url, "POST", "/contacts", {"name": "Ada Conflict", "title": "Engineer"}, token)
    context, page, errors = open_page(browser, url, email, expect)
    page.goto(f"{url}/records/contacts/{contact['id']}")
    expect(page.get_by_role("heading", name="Ada Conflict", exact=True)).to_be_visible()
    title = page.locator('[data-field="title"] .value')
    expect(title).to_contain_text("Engineer")

    # Someone else's change shows without a reload.
    call(url, "PATCH", f"/contacts/{contact['id']}", {"name": "Ada Lovelace"}, token)
    expect(page.get_by_role("heading", name="Ada Lovelace", exact=True)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Updated by someone else")).to_contain_text("Name")

    # An inline edit saved with the current version just works.
    page.get_by_role("button", name="Edit Phones").click()
    page.get_by_label("Phones", exact=True).fill("+44 20 7946 0000")
    page.get_by_label("Phones", exact=True).press("Enter")
    expect(page.locator('[data-field="phones"] .value')).to_contain_text("+44")

    # An edit begun on version N while someone else saves version N+1.
    page.get_by_role("button", name="Edit Title").click()
    call(url, "PATCH", f"/contacts/{contact['id']}", {"title": "Countess"}, token)
    expect(page.get_by_role("status").filter(has_text="You are editing a field they changed")).to_be_visible()
    page.get_by_label("Title", exact=True).fill("Mathematician")
    page.get_by_role("button", name="Save").click()
    dialog = page.get_by_role("dialog", name="Someone else changed this record")
    expect(dialog).to_be_visible()
    row = dialog.locator('tr[data-field="title"]')
    expect(row.locator("td.theirs")).to_have_text("Countess")
    expect(row.locator("td.mine")).to_have_text("Mathematician")
    dialog.get_by_role("button", name="Apply mine").click()
    expect(dialog).to_have_count(0)
    expect(title).to_contain_text("Mathematician")
    stored = call(url, "GET", f"/contacts/{contact['id']}", None, token)
    assert stored["title"] == "Mathematician", stored
    assert stored["phones"] == ["+442079460000"] or stored["phones"][0].startswith("+44"), stored

    # Keeping theirs leaves the record as they made it.
    page.get_by_role("button", name="Edit Title").click()
    call(url, "PATCH", f"/contacts/{contact['id']}", {"title": "Analyst"}, token)
    page.get_by_label("Title", exact=True).fill("Poet")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("dialog").get_by_role("button", name="Keep theirs").click()
    expect(title).to_contain_text("Analyst")
    assert call(url, "GET", f"/contacts/{contact['id']}", None, token)["title"] == "Analyst"

    assert not errors, f"errors in the page: {errors}"
    context.close()


def a_csv_import_shows_its_progress_and_row_errors_and_an_export_downloads(browser, url, shots, expect):
    token, email = workspace(url, "Imports")
    call(url, "POST", "/contacts", {"name": "Already Here"}, token)
    lines = ["name,emails,tags"]
    bad = set(range(7, 2500, 500))
    for i in range(2500):
        address = "not-an-address" if i in bad else f"row{i}@example.com"
        lines.append(f"Imported {i},{address},imported")
    csv_bytes = ("\n".join(lines) + "\n").encode()
    context, page, errors = open_page(browser, url, email, expect)
    page.goto(url + "/records/contacts")
    expect(rows(page)).to_have_count(1)

    page.get_by_role("button", name="Import CSV").click()
    page.get_by_label("CSV file").set_input_files({"name": "contacts.csv", "mimeType": "text/csv", "buffer": csv_bytes})
    page.get_by_role("button", name="Upload").click()
    # The bar is watched while the job runs: it must be seen part way.
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = page.evaluate(
            "(() => { const p = document.querySelector('[data-testid=import-progress]');"
            " return p && !p.hidden ? [p.value, p.max] : null; })()"
        )
        if state:
            seen.append(tuple(state))
            if state[0] >= state[1] and state[1] > 1:
                break
        time.sleep(0.02)
    between = [s for s in seen if 0 < s[0] < s[1]]
    assert between, f"no progress between 0 and the end was seen: {seen[:5]}…{seen[-5:]}"
    status = page.get_by_role("status").filter(has_text="Import completed")
    expect(status).to_contain_text(f"2500 of 2500 rows; {2500 - len(bad)} created, 0 updated, 0 skipped, {len(bad)} failed")
    failures = page.get_by_test_id("import-errors").locator("tbody tr")
    expect(failures).to_have_count(len(bad))
    expect(failures.first).to_contain_text("9")  # line 9 of the file: row 7, after the header
    expect(failures.first).to_contain_text("emails")
    print(f"  import progress: {len(between)} intermediate states seen, e.g. {between[:3]}")

    # The list, filtered, exported as CSV: what the filter shows, and nothing else.
    page.get_by_label("Filter by tag").fill("imported")
    page.get_by_label("Filter by tag").press("Enter")
    expect(rows(page)).to_have_count(25)
    with page.expect_download() as info:
        page.get_by_role("button", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename == "contacts.csv", download.suggested_filename
    with open(download.path(), encoding="utf-8") as f:
        exported = f.read().splitlines()
    assert exported[0].startswith("id,name,emails"), exported[0]
    assert len(exported) == 1 + 2500 - len(bad), len(exported)
    assert not any("Already Here" in line for line in exported)

    assert not errors, f"errors in the page: {errors}"
    context.close()


def a_lead_is_converted_into_a_contact_and_a_deal_with_its_timeline(browser, url, shots, expect):
    token, email = workspace(url, "Leads")
    call(url, "POST", "/pipelines", {"name": "Sales", "stages": [{"name": "New"}, {"name": "Won", "kind": "won"}]}, token)
    lead = call(url, "POST", "/leads", {"name": "Lena Lead", "email": "lena@leadco.example", "company_name": "Leadco"}, token)
    context, page, errors = open_page(browser, url, email, expect)
    page.goto(url + "/records/leads")
    page.get_by_label("Filter by status").select_option("new")
    expect(rows(page)).to_have_count(1)
    rows(page).first.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Lena Lead", exact=True)).to_be_visible()

    # A call logged on the lead's timeline goes with it to what it becomes.
    timeline = page.get_by_role("region", name="Timeline")
    timeline.get_by_label("Kind").select_option("call")
    timeline.get_by_label("Subject").fill("Discovery call")
    timeline.get_by_role("button", name="Add").click()
    expect(timeline.locator(".rec-activity")).to_have_count(1)

    page.get_by_role("button", name="Convert lead").click()
    dialog = page.get_by_role("dialog", name="Convert lead")
    dialog.get_by_label("Also create a deal").check()
    expect(dialog.get_by_label("Pipeline")).to_have_value(call(url, "GET", "/pipelines", None, token)["data"][0]["id"])
    dialog.get_by_label("Amount").fill("1200")
    dialog.get_by_role("button", name="Convert").click()
    expect(page.get_by_role("heading", name="Leadco", exact=True)).to_be_visible()
    assert "/records/deals/" in page.url, page.url
    deal_id = page.url.rsplit("/", 1)[1]
    expect(page.locator('[data-field="amount"] .value')).to_contain_text("1,200")
    expect(page.get_by_role("region", name="Timeline").locator(".rec-activity")).to_contain_text("Discovery call")
    # The deal's page follows its board: a move made elsewhere shows at once.
    stage = page.locator('[data-field="stage_id"] .value')
    expect(stage).to_contain_text("New")
    won = call(url, "GET", "/pipelines", None, token)["data"][0]["stages"][1]["id"]
    call(url, "POST", f"/deals/{deal_id}/move", {"stage_id": won}, token)
    expect(stage).to_contain_text("Won")

    converted = call(url, "GET", f"/leads/{lead['id']}", None, token)
    assert converted["status"] == "converted", converted
    assert converted["converted_deal_id"] == deal_id, converted
    # The lead's page now links to what it became, and offers no second conversion.
    page.goto(f"{url}/records/leads/{lead['id']}")
    expect(page.locator('[data-field="converted_contact_id"] a')).to_have_text("Lena Lead")
    expect(page.get_by_role("button", name="Convert lead")).to_have_count(0)

    assert not errors, f"errors in the page: {errors}"
    context.close()


def a_record_page_shows_its_timeline_at_both_widths(browser, url, shots, expect):
    token, email = workspace(url, "Pages")
    company = call(url, "POST", "/companies", {"name": "Analytical Engines Ltd", "domain": "engines.example", "industry": "Computing"}, token)
    call(url, "POST", "/custom-fields", {"object_type": "contact", "key": "tier", "label": "Tier", "kind": "select", "options": ["gold", "silver"]}, token)
    contact = call(url, "POST", "/contacts", {
        "name": "Grace Hopper", "emails": ["grace@engines.example"], "phones": ["+1 202 555 0100"], "title": "Rear Admiral",
        "company_id": company["id"], "tags": ["vip", "navy"], "custom_fields": {"tier": "gold"},
    }, token)
    call(url, "POST", "/activities", {"kind": "call", "subject": "Intro call", "body": "Talked about compilers.", "contact_id": contact["id"], "duration_minutes": 30}, token)
    call(url, "POST", "/activities", {"kind": "meeting", "subject": "Demo at HQ", "contact_id": contact["id"]}, token)
    context, page, errors = open_page(browser, url, email, expect)
    page.goto(f"{url}/records/contacts/{contact['id']}")
    expect(page.get_by_role("heading", name="Grace Hopper", exact=True)).to_be_visible()
    expect(page.locator('[data-field="cf:tier"] .value')).to_contain_text("gold")
    timeline = page.get_by_role("region", name="Timeline")
    expect(timeline.locator(".rec-activity")).to_have_count(2)

    # A custom field edited in place.
    page.get_by_role("button", name="Edit Tier").click()
    page.get_by_label("Tier", exact=True).select_option("silver")
    page.get_by_role("button", name="Save").click()
    expect(page.locator('[data-field="cf:tier"] .value')).to_contain_text("silver")
    assert call(url, "GET", f"/contacts/{contact['id']}", None, token)["custom_fields"] == {"tier": "silver"}

    # A task added from the page lands on the timeline (and in the store).
    timeline.get_by_label("Kind").select_option("task")
    timeline.get_by_label("Subject").fill("Send the proposal")
    timeline.get_by_label("Due").fill("2030-01-15")
    timeline.get_by_role("button", name="Add").click()
    expect(timeline.locator(".rec-activity")).to_have_count(3)
    expect(timeline.locator(".rec-activity").first).to_contain_text("Send the proposal")
    # Someone else's note arrives live.
    call(url, "POST", "/activities", {"kind": "note", "subject": "Prefers e-mail", "contact_id": contact["id"]}, token)
    expect(timeline.locator(".rec-activity")).to_have_count(4)
    task = next(a for a in call(url, "GET", f"/contacts/{contact['id']}/timeline", None, token)["data"] if a["kind"] == "task")
    assert task["due_date"] == "2030-01-15", task
    timeline.get_by_label("Done: Send the proposal").check()
    expect(timeline.locator(".rec-activity.done")).to_have_count(1)
    page.screenshot(path=os.path.join(shots, "record-1280.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.get_by_role("heading", name="Grace Hopper", exact=True)).to_be_visible()
    page.screenshot(path=os.path.join(shots, "record-390.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide at 390"

    # An activity's own page says what it is linked to.
    timeline.get_by_role("link", name="Intro call").click()
    expect(page.get_by_role("heading", name="Intro call", exact=True)).to_be_visible()
    expect(page.get_by_role("region", name="Linked to")).to_contain_text("Grace Hopper")

    assert not errors, f"errors in the page: {errors}"
    context.close()


if __name__ == "__main__":
    sys.exit(main())
