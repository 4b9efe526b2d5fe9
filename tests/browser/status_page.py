"""Drives mecgw's status page in headless Chromium (Debian's, through Playwright) and checks it
against /metrics. Run by tests/tests/status_page.rs inside the daemon's network namespace while
the test sends traffic through the fast path.

Checks, each a failure with its reason:
- every number on the page (elements with data-metric) lies between the value /metrics gave
  just before the page's scrape and the value it gave just after (counters move while traffic
  flows; gauges must be equal);
- the page updates: the LOCAL breakout counter it shows grows while traffic flows;
- the parts that are off say so (PFCP, egress);
- the console has no errors and the page threw nothing;
- the page is served with a Content-Security-Policy that allows only its own origin.
"""

import argparse
import re
import sys
import time
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def metrics(base):
    with urllib.request.urlopen(base + "metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def shown(page):
    """{series: value} of every number on the page."""
    values = {}
    for e in page.query_selector_all("[data-metric]"):
        text = e.inner_text().replace(",", "").strip()
        if text in ("", "–"):
            values[e.get_attribute("data-metric")] = None
        else:
            values[e.get_attribute("data-metric")] = float(text)
    return values


def scrapes(page):
    return int(page.get_attribute("#updated", "data-scrapes") or "0")


def wait_for_scrape(page, after, timeout=20):
    deadline = time.time() + timeout
    while scrapes(page) <= after:
        if time.time() > deadline:
            raise AssertionError(f"the page did not refresh within {timeout} s")
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--screenshot", required=True)
    a = ap.parse_args()
    base = a.url if a.url.endswith("/") else a.url + "/"
    failures = []

    with urllib.request.urlopen(base, timeout=10) as r:
        csp = r.headers.get("Content-Security-Policy", "")
    if "default-src 'none'" not in csp or "script-src 'self'" not in csp:
        failures.append(f"the page's Content-Security-Policy is {csp!r}")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors = []
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.goto(base)
        wait_for_scrape(page, 0)

        # Three rounds: /metrics before, the page's next scrape, /metrics after.
        for round_ in range(3):
            n = scrapes(page)
            before = metrics(base)
            wait_for_scrape(page, n)
            on_page = shown(page)
            after = metrics(base)
            if not on_page:
                failures.append("no number on the page is bound to a metric")
            for key, value in on_page.items():
                lo, hi = before.get(key), after.get(key)
                if lo is None and hi is None:
                    if value is not None:
                        failures.append(f"round {round_}: {key} shows {value} but /metrics has no such series")
                    continue
                if value is None:
                    failures.append(f"round {round_}: {key} is on /metrics ({hi}) but the page shows nothing")
                    continue
                lo, hi = min(lo, hi), max(lo, hi)
                if not (lo <= value <= hi):
                    failures.append(f"round {round_}: {key} shows {value}, /metrics said {lo} before and {hi} after")

        # It updates: the LOCAL breakout counter grows while traffic flows.
        key = 'mecgw_rule_packets_total{rule="10"}'
        first = shown(page).get(key)
        deadline = time.time() + 20
        grown = False
        while time.time() < deadline:
            wait_for_scrape(page, scrapes(page))
            now = shown(page).get(key)
            if first is not None and now is not None and now > first:
                grown = True
                break
        if not grown:
            failures.append(f"{key} on the page did not grow while traffic flowed (stayed {first})")

        body = page.inner_text("body")
        for needle in ("PFCP is off", "Egress is off", "No policy"):
            if needle not in body:
                failures.append(f"the page does not say {needle!r} for a part that is off")
        if not re.search(r"updated \d\d:\d\d:\d\d", page.inner_text("#updated")):
            failures.append("the page does not say when it last updated")
        if page.is_visible("#error"):
            failures.append("the page shows an error: " + page.inner_text("#error"))

        page.screenshot(path=a.screenshot, full_page=True)
        failures.extend(errors)
        browser.close()

    if failures:
        print("status page check failed:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("status page: every number matched /metrics over 3 scrapes; it updates; no console errors")


if __name__ == "__main__":
    main()
