"""The web app's board at size, in Chromium (Playwright), against a running server:

    python3 load-tests/web-board.py --url http://127.0.0.1:PORT [--deals 5000] [--moves 50]

1. A board of D deals over five stages (created through the REST API, 16 at a time):
   the time from navigating to the board to its columns painted, from the app's
   `shoal:board-painted` mark (five loads; the first warms the browser's cache).
2. Two members on the board in two browser contexts: M cards dragged to the top of
   another column in one; for each, the time from the drop (the `drop` event in the
   first browser) to the card painted in the second (the first animation frame after
   it appears there). Both contexts run on one machine, so both read one clock.

Prints a JSON line and a Markdown table. Loopback only; bounded by --deals and --moves.
"""

import argparse
import json
import os
import statistics
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "browser"))
from web_app import call, sign_in  # noqa: E402

CHROMIUM = os.environ.get("SHOAL_TEST_CHROMIUM", "/usr/bin/chromium")


def until(page, expression, secs=30):
    """Polls `expression` in the page until true (the page's CSP forbids the eval that
    Playwright's wait_for_function needs; the times measured come from the page)."""
    deadline = time.time() + secs
    while not page.evaluate(expression):
        assert time.time() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.01)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--deals", type=int, default=5000)
    ap.add_argument("--moves", type=int, default=50)
    a = ap.parse_args()
    host = urllib.parse.urlparse(a.url).hostname or ""
    assert host.startswith("127."), "loopback only"
    assert 1 <= a.deals <= 20000 and 1 <= a.moves <= 500, "bounded runs only"
    from playwright.sync_api import expect, sync_playwright

    url = a.url.rstrip("/")
    stamp = str(int(time.time() * 1000))
    owner_email = f"owner-{stamp}@example.com"
    password = "a long enough password"
    owner = call(url, "POST", "/auth/signup", {"workspace_name": "Board at size", "name": "Olga Owner", "email": owner_email, "password": password})
    token = owner["access_token"]
    stages_in = [{"name": n} for n in ["New", "Qualified", "Proposal", "Negotiation", "Won"]]
    pipeline = call(url, "POST", "/pipelines", {"name": "Big", "stages": stages_in}, token)
    stages = [s["id"] for s in pipeline["stages"]]
    started = time.time()

    def make(i):
        body = {"title": f"Deal {i:05d}", "pipeline_id": pipeline["id"], "stage_id": stages[i % len(stages)], "amount": 1000 * (i % 97 + 1), "currency": "USD"}
        return call(url, "POST", "/deals", body, token)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make, range(a.deals)))
    fill_secs = time.time() - started
    invite = call(url, "POST", "/invitations", {"email": f"second-{stamp}@example.com", "role": "admin"}, token)
    call(url, "POST", "/auth/signup", {"invitation_token": invite["token"], "name": "Sam Second", "email": f"second-{stamp}@example.com", "password": password})

    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        board_url = f"{url}/boards/{pipeline['id']}"
        ctx_a, pa = sign_in(browser, url, owner_email, password, expect)
        loads = []
        for _ in range(5):
            pa.goto(board_url)
            until(pa, "performance.getEntriesByName('shoal:board-painted').length > 0")
            loads.append(pa.evaluate("performance.getEntriesByName('shoal:board-painted')[0].startTime"))
        drawn = pa.evaluate("document.querySelectorAll('.deal').length")
        counts = [int(t) for t in pa.locator("[data-testid=count]").all_text_contents()]
        assert sum(counts) == a.deals, counts

        ctx_b, pb = sign_in(browser, url, f"second-{stamp}@example.com", password, expect)
        pb.goto(board_url)
        until(pb, "performance.getEntriesByName('shoal:board-painted').length > 0")
        pa.evaluate("""() => { window.__dropAt = 0;
            document.addEventListener('drop', () => { window.__dropAt = performance.timeOrigin + performance.now(); }, true); }""")
        latencies = []
        for n in range(a.moves):
            src = pa.locator(f'section.column[data-stage="{stages[0]}"] .deal').first
            deal_id = src.get_attribute("data-id")
            pb.evaluate(
                """([id, stage]) => { window.__seenAt = 0;
                   const col = document.querySelector(`section.column[data-stage="${stage}"]`);
                   const seen = () => { if (col.querySelector(`.deal[data-id="${id}"]`)) {
                       obs.disconnect(); requestAnimationFrame(() => { window.__seenAt = performance.timeOrigin + performance.now(); }); } };
                   const obs = new MutationObserver(seen); obs.observe(col, {childList: true, subtree: true}); }""",
                [deal_id, stages[1]],
            )
            src.drag_to(pa.locator(f'section.column[data-stage="{stages[1]}"] .cards'), target_position={"x": 40, "y": 5})
            until(pb, "window.__seenAt > 0")
            latencies.append(pb.evaluate("window.__seenAt") - pa.evaluate("window.__dropAt"))
        browser.close()

    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * len(latencies))) - 1)]
    result = {
        "scenario": "web-board",
        "deals": a.deals,
        "fill_secs": round(fill_secs, 1),
        "painted_ms": [round(x) for x in loads],
        "cards_drawn": drawn,
        "moves": len(latencies),
        "move_to_paint_ms": {"p50": round(statistics.median(latencies), 1), "p95": round(p95, 1), "max": round(latencies[-1], 1)},
    }
    print(json.dumps(result))
    print("| deals | painted after navigation, ms (5 loads) | cards drawn | moves | drop → paint in the other browser p50 / p95 / max ms |")
    print("|---|---|---|---|---|")
    print(f"| {a.deals} | {' · '.join(str(round(x)) for x in loads)} | {drawn} | {len(latencies)} | {result['move_to_paint_ms']['p50']} / {result['move_to_paint_ms']['p95']} / {result['move_to_paint_ms']['max']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
