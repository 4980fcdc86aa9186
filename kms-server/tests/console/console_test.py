#!/usr/bin/env python3
"""The kms console in a real browser: headless Chromium driven by Selenium.

Run by kms-server/tests/e2e_console.rs against a real `kms serve`:

    console_test.py --base http://127.0.0.1:PORT --axe axe.min.js --screenshots DIR

with the admin token in KMS_CONSOLE_TEST_TOKEN (kept out of the process list). The
scenario signs in by pasting the token, creates an application and a token (its plaintext
read once, and gone after navigating away), checks it with POST /v1/verify from outside
the browser, revokes it in the console (through the confirm dialog) and sees verification
fail, browses the roles (graph and effective scopes), the permissions, the audit log and
its chain state, usage, the compliance report, keys, users and identity providers; checks
the CSP header and that the browser logged no errors or CSP violations; runs axe-core on
every page (serious or critical violations fail); repeats the pages at 400 px; signs out.
A PNG of each page goes to --screenshots.
"""

import argparse
import base64
import json
import os
import shutil
import sys
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

# Records CSP violations and uncaught errors from the first line of every document
# (injected through the DevTools protocol, which the page's CSP does not govern).
WATCH = """
window.__kmsProblems = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__kmsProblems.push('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline'));
});
window.addEventListener('error', (e) => { window.__kmsProblems.push('error: ' + e.message); });
window.addEventListener('unhandledrejection', (e) => { window.__kmsProblems.push('unhandled rejection: ' + String(e.reason)); });
"""

# Network errors the test causes on purpose, which Chromium logs as console errors:
# looking for a single sign-on session (401 without one), the usage and compliance
# endpoints of a server that does not have them yet (404, shown as "not available"), an
# unknown token's page (404).
EXPECTED_NETWORK = [
    ("/v1/me", "401"),
    ("/usage", "404"),
    ("/v1/reports/compliance", "404"),
    ("/v1/tokens/tok_doesnotexist", "404"),
    # and a refused deletion (the permission is still granted), shown with the API's message
    ("/v1/permissions/audit.read", "409"),
]


# A usage answer exactly as the contract shapes it: five days, three codes.
USAGE_SAMPLE = {
    "granularity": "day",
    "series": [
        {"start": f"2026-11-{day:02d}T00:00:00Z", "total": v + nf + r, "by_code": {k: n for k, n in
            (("VALID", v), ("NOT_FOUND", nf), ("REVOKED", r)) if n}}
        for day, v, nf, r in [(26, 120, 3, 0), (27, 95, 0, 0), (28, 140, 12, 2), (29, 60, 1, 0), (30, 150, 0, 4)]
    ],
    "totals": {"total": 587, "by_code": {"VALID": 565, "NOT_FOUND": 16, "REVOKED": 6}},
    "trend": {"previous_period_total": 470, "change_ratio": 0.25},
}


# A compliance report as the contract shapes it.
COMPLIANCE_SAMPLE = {
    "generated_at": "2026-12-01T12:00:00Z",
    "findings": [
        {"id": "tokens_without_expiry", "title": "Tokens without an expiry", "status": "fail", "count": 2,
         "items": ["tok_AAAAAAAAAAAA", "tok_BBBBBBBBBBBB"]},
        {"id": "tokens_unused_90d", "title": "Tokens unused for 90 days", "status": "pass", "count": 0, "items": []},
        {"id": "admin_tokens", "title": "Tokens holding admin", "status": "fail", "count": 1, "items": ["tok_CCCCCCCCCCCC"]},
        {"id": "audit_chain", "title": "The audit chain verifies", "status": "pass", "count": 0, "items": []},
    ],
}


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


class Api:
    """The HTTP API, from outside the browser."""

    def __init__(self, base, token):
        self.base = base
        self.token = token

    def call(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + (token or self.token))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None), dict(r.headers)
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            return e.code, (json.loads(text) if text else None), dict(e.headers)

    def verify(self, plaintext):
        status, body, _ = self.call("POST", "/v1/verify", {"token": plaintext})
        check(status == 200, f"verify answered {status}: {body}")
        return body


class Console:
    def __init__(self, args):
        self.args = args
        self.base = args.base
        self.shots = args.screenshots
        self.shot_no = 0
        self.axe_source = open(args.axe, encoding="utf-8").read()
        self.axe_findings = []
        self.axe_runs = 0
        self.logs = []
        options = webdriver.ChromeOptions()
        for flag in [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,900",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]:
            options.add_argument(flag)
        binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if binary:
            options.binary_location = binary
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver_path = shutil.which("chromedriver")
        service = Service(executable_path=driver_path) if driver_path else Service()
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH})
        self.wait = WebDriverWait(self.driver, 20, ignored_exceptions=[StaleElementReferenceException])

    # ---- helpers -------------------------------------------------------------------

    def open(self, hash_path):
        """Navigates inside the console (a hash change: no reload, the token stays)."""
        self.driver.execute_script("window.location.hash = arguments[0];", hash_path)

    def heading(self, text):
        """Waits until the page heading contains `text` and has focus."""
        shown = lambda d: d.execute_script("const h = document.querySelector('main h1'); return h ? h.textContent : ''")
        try:
            self.wait.until(lambda d: text in shown(d))
        except TimeoutException:
            raise Failure(f"the heading never showed {text!r}; it shows {shown(self.driver)!r}")
        self.wait.until(lambda d: d.execute_script("return document.activeElement && document.activeElement.tagName") == "H1")

    def find(self, css, within=None):
        root = within or self.driver
        return self.wait.until(lambda d: root.find_element(By.CSS_SELECTOR, css))

    def by_text(self, tag, text, within=None):
        root = within or self.driver
        xpath = f".//{tag}[normalize-space(.)={json.dumps(text)}]"
        return self.wait.until(lambda d: root.find_element(By.XPATH, xpath))

    def field(self, label, within=None):
        """The control labelled `label` (through <label for>)."""
        lab = self.by_text("label", label, within)
        return self.driver.find_element(By.ID, lab.get_attribute("for"))

    def settle(self):
        """Waits until no 'Loading…' text is left in the main region."""
        self.wait.until(lambda d: "Loading" not in d.find_element(By.ID, "main").text)

    def screenshot(self, name):
        self.shot_no += 1
        path = os.path.join(self.shots, f"{self.shot_no:02d}-{name}.png")
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width = self.driver.execute_script("return window.innerWidth")
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(size["height"], 6000), "scale": 1},
            },
        )
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(f"screenshot: {path}")

    def axe(self, page):
        """Runs axe-core on the page; serious and critical violations fail the test."""
        self.driver.execute_script(self.axe_source)
        result = self.driver.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            axe.run(document, {resultTypes: ['violations']})
              .then((r) => done({passes: r.passes.length, violations: r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ') + ': ' + n.failureSummary)}))}))
              .catch((e) => done({error: String(e)}));
            """
        )
        check("error" not in result, f"axe-core did not run on {page}: {result}")
        # A checker that checked nothing would pass everything.
        check(result["passes"] > 5, f"axe-core ran only {result['passes']} checks on {page}")
        self.axe_runs += 1
        result = result["violations"]
        for v in result:
            self.axe_findings.append((page, v))
        bad = [v for v in result if v["impact"] in ("serious", "critical")]
        check(not bad, f"axe-core found serious or critical problems on {page}: {json.dumps(bad, indent=2)}")

    def page(self, name):
        """Checks the current page: axe-core, no horizontal overflow, a screenshot."""
        self.settle()
        self.axe(name)
        overflow = self.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        check(overflow <= 1, f"{name} scrolls sideways by {overflow}px at width {self.driver.execute_script('return window.innerWidth')}")
        self.screenshot(name)

    def problems(self):
        """CSP violations and script errors since the document loaded, and browser log errors."""
        found = list(self.driver.execute_script("return window.__kmsProblems || []"))
        for entry in self.driver.get_log("browser"):
            self.logs.append(entry)
            if entry["level"] not in ("SEVERE", "ERROR"):
                continue
            msg = entry["message"]
            if entry.get("source") == "network" or "Failed to load resource" in msg:
                if any(path in msg and status in msg for path, status in EXPECTED_NETWORK):
                    continue
            found.append(f"browser log: {msg}")
        return found

    def assert_clean(self, when):
        p = self.problems()
        check(not p, f"the browser reported problems {when}: {p}")

    def shows(self, secret):
        """Whether `secret` is anywhere in the page: its text or any control's value."""
        return self.driver.execute_script(
            """
            const s = arguments[0];
            return document.body.textContent.includes(s) ||
              Array.from(document.querySelectorAll('input, textarea')).some((e) => e.value.includes(s));
            """,
            secret,
        )

    def confirm_in_dialog(self, button_text):
        dialog = self.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "dialog[open]"))
        # Focus starts on Cancel, the safe choice.
        focused = self.driver.execute_script("return document.activeElement.textContent")
        check(focused == "Cancel", f"the confirm dialog's focus is on {focused!r}, not Cancel")
        return dialog


def run(args):
    token = os.environ.get("KMS_CONSOLE_TEST_TOKEN", "")
    check(token, "KMS_CONSOLE_TEST_TOKEN is not set")
    api = Api(args.base, token)

    # The console's CSP and security headers, as the server sends them.
    with urllib.request.urlopen(args.base + "/ui/", timeout=30) as r:
        headers = r.headers
        check(headers["Content-Security-Policy"] == CONSOLE_CSP, f"CSP of /ui/: {headers['Content-Security-Policy']}")
        check(headers["X-Frame-Options"] == "DENY", "X-Frame-Options")
        check(headers["X-Content-Type-Options"] == "nosniff", "X-Content-Type-Options")

    # Enough applications for two pages of the list (20 a page).
    for i in range(21):
        status, body, _ = api.call("POST", "/v1/apps", {"name": f"filler-{i:02d}"})
        check(status == 201, f"creating a filler application: {status} {body}")

    c = Console(args)
    d = c.driver
    try:
        # ---- sign in by pasting the token ----
        d.get(args.base + "/ui/")
        c.heading("Sign in")
        check(d.find_element(By.ID, "nav").get_attribute("hidden") is not None, "the navigation shows before signing in")
        # Keyboard: the skip link comes first in the tab order, shows when focused, and
        # moves focus to the main region.
        first = d.execute_script(
            "return document.querySelector('a[href], button, input, select, textarea, [tabindex]:not([tabindex=\"-1\"])').id"
        )
        check(first == "skip-link", f"the first focusable element is {first!r}, not the skip link")
        skip = d.find_element(By.ID, "skip-link")
        d.execute_script("arguments[0].focus()", skip)
        check(skip.location["y"] >= 0 and skip.is_displayed(), "the focused skip link is not visible")
        skip.send_keys(Keys.ENTER)
        check(d.execute_script("return document.activeElement.id") == "main", "the skip link does not move focus to the main region")
        check(d.execute_script("return location.hash") == "#/signin", "the skip link changed the route")
        c.page("sign-in")
        c.field("Admin token").send_keys(token)
        c.by_text("button", "Sign in").click()
        c.heading("Applications")
        check("Signed in with a pasted token" in d.find_element(By.ID, "who").text, "who-bar")
        storage = d.execute_script("return [localStorage.length, sessionStorage.length, document.cookie]")
        check(storage == [0, 0, ""], f"the console stored something: {storage}")
        c.assert_clean("after signing in")

        # ---- applications: paginated list, create ----
        c.settle()
        pager_next = c.by_text("button", "Next page")
        check(pager_next.is_enabled(), "22 applications fit on one page of 20?")
        pager_next.click()
        c.wait.until(lambda d: "Page 2" in d.find_element(By.CSS_SELECTOR, ".pager").text)
        c.by_text("button", "Previous page").click()
        c.wait.until(lambda d: "Page 1" in d.find_element(By.CSS_SELECTOR, ".pager").text)
        c.field("Name").send_keys("Billing")
        c.field("Token prefix (optional)").send_keys("bill")
        c.by_text("button", "Create application").click()
        c.wait.until(lambda d: "Application Billing created" in d.find_element(By.ID, "status").text)
        c.page("applications")

        status, apps, _ = api.call("GET", "/v1/apps?limit=100")
        billing = next(a for a in apps["items"] if a["name"] == "Billing")
        c.open(f"#/apps/{billing['id']}")
        c.heading("Billing")
        c.settle()

        # ---- a token: plaintext shown once ----
        form = c.by_text("h2", "Create a token").find_element(By.XPATH, "./ancestor::form")
        c.field("Name", form).send_keys("ci-console")
        scope_box = form.find_element(By.CSS_SELECTOR, "input[type=checkbox][name=scopes][value='app.read']")
        scope_box.click()
        c.by_text("button", "Create token", form).click()
        secret_input = c.find(".once input.secret")
        plaintext = secret_input.get_property("value")
        check(c.shows(plaintext), "the plaintext is not on the page right after creation")
        check(plaintext.startswith("bill_"), f"the token does not carry the application's prefix: {plaintext[:5]}…")
        check("Shown this once" in c.find(".once").text, "no once-only warning")
        check(c.driver.execute_script("return document.activeElement.classList.contains('secret')"), "focus is not on the new secret")
        c.page("token-created")

        verdict = api.verify(plaintext)
        check(verdict["valid"] is True and verdict["code"] == "VALID", f"the new token does not verify: {verdict}")
        token_id = verdict["token_id"]
        print(f"created token id: {token_id}")

        # Navigating away and back: the plaintext is gone for good.
        c.open("#/apps")
        c.heading("Applications")
        c.open(f"#/apps/{billing['id']}")
        c.heading("Billing")
        c.settle()
        c.wait.until(lambda d: "ci-console" in d.find_element(By.ID, "main").text)
        check(not c.shows(plaintext), "the plaintext is shown again after navigating away")
        check(not d.find_elements(By.CSS_SELECTOR, ".once"), "the once-only panel came back")
        c.page("application-tokens")

        # ---- the token's page: revoke through the confirm dialog ----
        c.by_text("a", "ci-console").click()
        c.heading("Token ci-console")
        c.settle()
        check(not c.shows(plaintext), "the token page shows the plaintext")
        c.page("token")
        c.by_text("button", "Revoke token").click()
        dialog = c.confirm_in_dialog("Revoke token")
        c.axe("revoke-dialog")
        c.screenshot("revoke-dialog")
        # Cancel first: nothing changes.
        c.by_text("button", "Cancel", dialog).click()
        c.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))
        check(api.verify(plaintext)["valid"] is True, "cancelling the dialog revoked the token")
        # Escape closes it too, and focus returns to the button that opened it.
        c.by_text("button", "Revoke token").click()
        c.confirm_in_dialog("Revoke token")
        d.switch_to.active_element.send_keys(Keys.ESCAPE)
        c.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog[open]"))
        check(d.switch_to.active_element.text == "Revoke token", "focus did not return to the Revoke button")
        check(api.verify(plaintext)["valid"] is True, "escaping the dialog revoked the token")
        c.by_text("button", "Revoke token").click()
        dialog = c.confirm_in_dialog("Revoke token")
        c.by_text("button", "Revoke token", dialog).click()
        c.wait.until(lambda d: "revoked" in d.find_element(By.CSS_SELECTOR, "main h1").text)
        c.wait.until(lambda d: "Token ci-console revoked" in d.find_element(By.ID, "status").text)
        verdict = api.verify(plaintext)
        check(verdict["valid"] is False and verdict["code"] == "REVOKED", f"after revoking in the console: {verdict}")
        c.page("token-revoked")

        # ---- another token: limits, then rotation (the new plaintext shown once) ----
        status, made, _ = api.call("POST", f"/v1/apps/{billing['id']}/tokens", {"name": "deploy", "scopes": ["app.read"]})
        check(status == 201, f"creating the deploy token: {status} {made}")
        old_plain = made["token"]
        c.open(f"#/tokens/{made['id']}")
        c.heading("Token deploy")
        c.settle()
        limits = c.by_text("h2", "Limits").find_element(By.XPATH, "./ancestor::form")
        c.field("Verifications", limits).send_keys("10")
        c.field("per seconds", limits).send_keys("60")
        c.field("Uses left (optional)", limits).send_keys("5")
        c.by_text("button", "Save limits", limits).click()
        c.wait.until(lambda d: "Limits saved" in d.find_element(By.ID, "status").text)
        status, info, _ = api.call("GET", f"/v1/tokens/{made['id']}")
        check(info.get("uses") == 5 and info.get("ratelimit") == {"limit": 10, "per_seconds": 60}, f"limits after saving: {info}")
        rotate = c.by_text("h2", "Rotate").find_element(By.XPATH, "./ancestor::form")
        grace = c.field("Grace period in seconds", rotate)
        grace.clear()
        grace.send_keys("600")
        c.by_text("button", "Rotate token", rotate).click()
        dialog = c.confirm_in_dialog("Rotate token")
        c.by_text("button", "Rotate token", dialog).click()
        new_plain = c.find(".once input.secret").get_property("value")
        check(new_plain.startswith("bill_") and new_plain != old_plain, "rotation showed no new token")
        c.page("token-rotated")
        check(api.verify(new_plain)["valid"] is True, "the rotated token does not verify")
        check(api.verify(old_plain)["valid"] is True, "the old token stopped during its grace period")
        c.open(f"#/apps/{billing['id']}")
        c.heading("Billing")
        c.settle()
        check(not c.shows(new_plain), "the rotated plaintext is shown again after navigating away")

        # ---- roles: the inheritance graph and effective scopes ----
        c.open("#/roles")
        c.heading("Roles")
        c.settle()
        graph = c.find("svg.graph")
        label = graph.get_attribute("aria-label")
        for edge in ["support inherits viewer", "operator inherits support", "operator inherits billing-clerk", "billing-clerk inherits viewer"]:
            check(edge in label, f"the role graph does not say {edge!r}: {label}")
        check(len(graph.find_elements(By.CSS_SELECTOR, "line.edge")) == 4, "the graph should draw four edges")
        # A role made in the console's form joins the graph.
        form = c.by_text("h2", "Create a role").find_element(By.XPATH, "./ancestor::form")
        c.field("Name", form).send_keys("auditor")
        c.field("Permissions", form).send_keys("audit.read")
        c.field("Inherits", form).send_keys("viewer")
        c.by_text("button", "Create role", form).click()
        c.wait.until(lambda d: "Role auditor created" in d.find_element(By.ID, "status").text)
        c.wait.until(lambda d: "auditor inherits viewer" in d.find_element(By.CSS_SELECTOR, "svg.graph").get_attribute("aria-label"))
        status, role, _ = api.call("GET", "/v1/roles/auditor")
        check(status == 200 and set(role["effective"]) >= {"audit.read", "app.read", "token.read"}, f"the role made in the console: {role}")
        operator = c.find("li[data-role='operator'] .effective")
        effective = {e.text for e in operator.find_elements(By.TAG_NAME, "code")}
        for scope in ["key.read", "audit.read", "app.read", "token.read", "billing.invoices.write", "billing.read"]:
            check(scope in effective, f"operator's effective scopes lack {scope}: {effective}")
        c.page("roles")

        # ---- permissions: the scope tree ----
        c.open("#/permissions")
        c.heading("Permissions")
        c.settle()
        tree = c.find("ul.tree")
        check("token.verify" in tree.text and "app.write" in tree.text, "the scope tree lacks default scopes")
        # billing.invoices.write sits under billing.invoices, under billing.
        nested = d.execute_script(
            "return Array.from(document.querySelectorAll('ul.tree li li li code')).map((e) => e.textContent)"
        )
        check("billing.invoices.write" in nested, f"billing.invoices.write is not nested two levels deep: {nested}")
        # A permission made in the form, then deleted through the confirm dialog.
        form = c.by_text("h2", "Create a permission").find_element(By.XPATH, "./ancestor::form")
        c.field("Scope", form).send_keys("billing.refunds.issue")
        c.field("Description (optional)", form).send_keys("issue refunds")
        c.by_text("button", "Create permission", form).click()
        c.wait.until(lambda d: "Permission billing.refunds.issue created" in d.find_element(By.ID, "status").text)
        delete = c.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "button[aria-label='Delete permission billing.refunds.issue']"))
        delete.click()
        dialog = c.confirm_in_dialog("Delete permission")
        c.by_text("button", "Delete permission", dialog).click()
        c.wait.until(lambda d: "Permission billing.refunds.issue deleted" in d.find_element(By.ID, "status").text)
        status, perms, _ = api.call("GET", "/v1/permissions")
        check(all(p["scope"] != "billing.refunds.issue" for p in perms["items"]), "the permission deleted in the console still exists")
        # A refused change shows the API's message: a granted permission cannot go.
        c.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "button[aria-label='Delete permission audit.read']")).click()
        dialog = c.confirm_in_dialog("Delete permission")
        c.by_text("button", "Delete permission", dialog).click()
        c.wait.until(lambda d: "Deleting audit.read failed" in d.find_element(By.ID, "status").text)
        c.page("permissions")

        # ---- the audit log and its chain ----
        c.open("#/audit")
        c.heading("Audit log")
        c.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-chain]"))
        check(d.find_element(By.CSS_SELECTOR, "[data-chain]").get_attribute("data-chain") == "ok", "the audit chain is not shown intact")
        c.settle()
        main_text = d.find_element(By.ID, "main").text
        check("token.revoke" in main_text, "the audit log does not show the revocation")
        c.page("audit")
        c.by_text("button", "Next page").click()
        c.wait.until(lambda d: "Page 2" in d.find_element(By.CSS_SELECTOR, ".pager").text)
        c.field("Action").send_keys("token.create")
        c.by_text("button", "Apply filter").click()
        c.wait.until(lambda d: "Page 1" in d.find_element(By.CSS_SELECTOR, ".pager").text)
        rows = d.find_elements(By.CSS_SELECTOR, ".paged tbody tr")
        check(rows and all("token.create" in r.text for r in rows), f"filtering by action: {[r.text for r in rows]}")
        c.page("audit-filtered")

        # ---- usage: a chart, or "not available" on a server without the endpoints ----
        c.open(f"#/apps/{billing['id']}/usage")
        c.heading("Billing")
        c.wait.until(lambda d: "Loading usage" not in d.find_element(By.ID, "main").text)
        usage_text = d.find_element(By.CSS_SELECTOR, ".usage").text
        check(
            "not available" in usage_text or "Verifications" in usage_text,
            f"the usage page shows neither usage nor 'not available': {usage_text}",
        )
        c.page("application-usage")
        if "not available" in usage_text:
            # This server has no usage endpoints yet: draw the chart from an answer shaped
            # as the contract states (API.md "Usage, reports and privacy"), served to the
            # page's own fetch, so the chart and its table are checked all the same.
            d.execute_script(
                """
                const sample = arguments[0];
                const real = window.fetch;
                window.fetch = (url, init) => String(url).includes('/usage')
                  ? Promise.resolve(new Response(JSON.stringify(sample), {status: 200, headers: {'Content-Type': 'application/json'}}))
                  : real(url, init);
                """,
                USAGE_SAMPLE,
            )
            c.open(f"#/apps/{billing['id']}")
            c.heading("Billing")
            c.open(f"#/apps/{billing['id']}/usage")
            c.heading("Billing")
            chart = c.find("svg.chart")
            bars = chart.find_elements(By.CSS_SELECTOR, "rect.bar")
            check(len(bars) == 10, f"the usage chart draws {len(bars)} bar segments, not 10")
            legend = d.find_element(By.CSS_SELECTOR, ".legend").text
            check("VALID" in legend and "NOT_FOUND" in legend, f"the legend: {legend}")
            check("+25 %" in d.find_element(By.CSS_SELECTOR, ".usage").text, "the trend is not shown")
            c.page("application-usage-contract-sample")
            c.assert_clean("before reloading")
            d.execute_script("window.location.reload()")
            c.heading("Sign in")  # a reload forgets the pasted token, as it should
            c.field("Admin token").send_keys(token)
            c.by_text("button", "Sign in").click()
            c.heading("Applications")

        c.open("#/compliance")
        c.heading("Compliance report")
        c.settle()
        text = d.find_element(By.ID, "main").text
        check("not available" in text or "Findings" in text, f"compliance page: {text}")
        c.page("compliance")
        if "not available" in text:
            # As for usage: the report as the contract shapes it, served to the page's fetch.
            d.execute_script(
                """
                const sample = arguments[0];
                const real = window.fetch;
                window.fetch = (url, init) => String(url).includes('/v1/reports/compliance')
                  ? Promise.resolve(new Response(JSON.stringify(sample), {status: 200, headers: {'Content-Type': 'application/json'}}))
                  : real(url, init);
                """,
                COMPLIANCE_SAMPLE,
            )
            c.open("#/keys")
            c.heading("Signing keys")
            c.open("#/compliance")
            c.heading("Compliance report")
            c.settle()
            rows = d.find_elements(By.CSS_SELECTOR, "#main tbody tr")
            check(len(rows) == len(COMPLIANCE_SAMPLE["findings"]), f"findings shown: {[r.text for r in rows]}")
            check("fail" in rows[0].text and "tok_" in rows[0].text, f"the first finding: {rows[0].text}")
            c.page("compliance-contract-sample")
        else:
            # The real report: one row per finding, in the API's order, each with its
            # status and count as the API gives them.
            status, report, _ = api.call("GET", "/v1/reports/compliance")
            check(status == 200, f"the report answered {status}: {report}")
            rows = d.find_elements(By.CSS_SELECTOR, "#main tbody tr")
            findings = report["findings"]
            check(len(rows) == len(findings), f"findings shown: {[r.text for r in rows]}")
            for row, finding in zip(rows, findings):
                check(finding["id"] in row.text, f"{finding['id']} not in {row.text!r}")
                check(finding["status"] in row.text, f"{finding['id']}: {row.text!r}")
                check(str(finding["count"]) in row.text, f"{finding['id']}: {row.text!r}")
            failing = sum(1 for f in findings if f["status"] == "fail")
            check(f"{len(findings)} checks, {failing} failing" in text, f"the summary: {text}")

        c.open("#/keys")
        c.heading("Signing keys")
        c.settle()
        check("EdDSA" in d.find_element(By.ID, "main").text, "the keys page lists no EdDSA key")
        c.page("keys")

        c.open(f"#/apps/{billing['id']}/users")
        c.heading("Billing")
        c.settle()
        c.page("application-users")

        c.open(f"#/apps/{billing['id']}/idps")
        c.heading("Billing")
        c.settle()
        c.page("application-idps")

        c.open("#/me")
        c.heading("My sign-in")
        c.page("me")

        # An API error shows the API's own message.
        c.open("#/tokens/tok_doesnotexist")
        c.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#main .error"))
        err = d.find_element(By.CSS_SELECTOR, "#main .error").text
        check("does not exist" in err or "not_found" in err, f"the error box does not show the API's message: {err}")
        c.page("api-error")
        c.assert_clean("on the wide pages")

        # ---- narrow pass, about 400 px wide ----
        d.set_window_size(400, 900)
        for hash_path, title, name in [
            ("#/apps", "Applications", "narrow-applications"),
            (f"#/apps/{billing['id']}", "Billing", "narrow-application-tokens"),
            (f"#/tokens/{token_id}", "Token ci-console", "narrow-token"),
            ("#/roles", "Roles", "narrow-roles"),
            ("#/permissions", "Permissions", "narrow-permissions"),
            ("#/audit", "Audit log", "narrow-audit"),
        ]:
            c.open(hash_path)
            c.heading(title)
            c.page(name)
        c.assert_clean("on the narrow pages")

        # ---- sign out: the token is forgotten ----
        c.by_text("button", "Sign out").click()
        c.heading("Sign in")
        c.open("#/apps")
        c.heading("Sign in")
        check(not c.shows(token), "the token is still in the page after signing out")
        check(d.find_element(By.ID, "nav").get_attribute("hidden") is not None, "the navigation shows after signing out")
        c.assert_clean("after signing out")

        # A credential that stops working mid-use signs the console out, saying why.
        status, spare, _ = api.call("POST", "/v1/apps/app_system/tokens", {"name": "spare-admin", "scopes": ["admin"]})
        check(status == 201, f"creating a spare admin token: {status} {spare}")
        c.field("Admin token").send_keys(spare["token"])
        c.by_text("button", "Sign in").click()
        c.heading("Applications")
        status, _, _ = api.call("POST", f"/v1/tokens/{spare['id']}/revoke")
        check(status == 200, "revoking the spare admin token")
        c.open("#/keys")
        c.heading("Sign in")
        c.wait.until(lambda d: "Signed out" in d.find_element(By.ID, "status").text)
        check("revoked" in d.find_element(By.ID, "status").text, f"the reason: {d.find_element(By.ID, 'status').text}")
        check(not c.shows(spare["token"]), "the revoked token is still in the page")
    except Exception:
        try:
            c.screenshot("failure")
            print("browser log:", json.dumps(c.logs + d.get_log("browser"), indent=1))
        except Exception as e:  # the failure itself matters more
            print(f"(no failure screenshot: {e})")
        raise
    finally:
        d.quit()

    minor = [(page, v["id"], v["impact"]) for page, v in c.axe_findings]
    print(f"axe-core: {c.axe_runs} pages checked, no serious or critical violations; minor or moderate ones: {minor or 'none'}")
    print("console test passed")


def run_sso(args):
    """Single sign-on: discovery by e-mail, the provider's login, the session cookie,
    the signed-in user's pages, and sign-out ending the session."""
    token = os.environ.get("KMS_CONSOLE_TEST_TOKEN", "")
    check(token, "KMS_CONSOLE_TEST_TOKEN is not set")
    api = Api(args.base, token)
    c = Console(args)
    d = c.driver
    try:
        d.get(args.base + "/ui/")
        c.heading("Sign in")
        c.field("Work e-mail").send_keys("alice@example.com")
        c.by_text("button", "Find my sign-in").click()
        link = c.wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "a.button-link"))
        href = link.get_attribute("href")
        check("/v1/sso/corp/login" in href and "return_to=%2Fui%2F" in href, f"the login link: {href}")
        c.page("sso-sign-in")
        link.click()
        # The provider logs alice in and sends the browser back to the console.
        c.heading("Applications")
        who = d.find_element(By.ID, "who").text
        check("Signed in as alice@example.com" in who, f"who-bar after single sign-on: {who}")
        check(d.execute_script("return document.cookie") == "", "the session cookie is readable from script")
        storage = d.execute_script("return [localStorage.length, sessionStorage.length]")
        check(storage == [0, 0], f"the console stored something: {storage}")
        c.settle()
        rows = d.find_elements(By.CSS_SELECTOR, ".paged tbody tr")
        check(len(rows) == 1 and "corp" in rows[0].text, f"a user sees their own application only: {[r.text for r in rows]}")
        c.page("sso-applications")

        c.open("#/me")
        c.heading("My sign-in")
        c.settle()
        main_text = d.find_element(By.ID, "main").text
        check("alice@example.com" in main_text and "support" in main_text, f"my sign-in: {main_text}")
        sessions = d.find_elements(By.CSS_SELECTOR, ".table-wrap tbody tr")
        check(len(sessions) == 1, f"my sessions: {[s.text for s in sessions]}")
        c.page("sso-me")

        status, apps, _ = api.call("GET", "/v1/apps?limit=100")
        corp = next(a for a in apps["items"] if a["name"] == "corp")
        c.open(f"#/apps/{corp['id']}/users")
        c.heading("corp")
        c.settle()
        check("alice@example.com" in d.find_element(By.ID, "main").text, "alice is not among the users")
        c.page("sso-application-users")
        c.assert_clean("while signed in with single sign-on")

        # Sign-out is a cookie-authenticated POST: the browser's Origin passes the check,
        # and the session ends at the server.
        c.by_text("button", "Sign out").click()
        c.heading("Sign in")
        check("Signing out at the server failed" not in d.find_element(By.ID, "status").text, "logout failed")
        me = d.execute_async_script(
            "const done = arguments[arguments.length - 1]; fetch('/v1/me').then((r) => done(r.status), (e) => done(String(e)));"
        )
        check(me == 401, f"GET /v1/me after signing out answered {me}")
        status, users, _ = api.call("GET", f"/v1/apps/{corp['id']}/users")
        alice = users["items"][0]
        status, sessions, _ = api.call("GET", f"/v1/users/{alice['id']}/sessions")
        check(all(s.get("revoked_at") for s in sessions["items"]), f"the session did not end: {sessions}")
        d.get(args.base + "/ui/")
        c.heading("Sign in")
        c.assert_clean("after signing out of single sign-on")
    except Exception:
        try:
            c.screenshot("sso-failure")
            print("browser log:", json.dumps(c.logs + d.get_log("browser"), indent=1))
        except Exception as e:
            print(f"(no failure screenshot: {e})")
        raise
    finally:
        d.quit()
    print(f"axe-core: {c.axe_runs} pages checked, no serious or critical violations")
    print("console sso test passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True)
    parser.add_argument("--axe", required=True)
    parser.add_argument("--screenshots", required=True)
    parser.add_argument("--scenario", choices=["admin", "sso"], default="admin")
    args = parser.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    try:
        run_sso(args) if args.scenario == "sso" else run(args)
    except Failure as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
