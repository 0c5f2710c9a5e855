"""Real Chromium against a real gunicorn: the customer's first steps and the staff catalogue.

Screenshots land in test-artifacts/portal-*.png; every page is checked for console errors.
"""

import ast
import json
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Error, Page, expect

from tests.conftest import model_bytes

pytestmark = [pytest.mark.browser, pytest.mark.live]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    return {"executable_path": shutil.which("chromium") or "/usr/bin/chromium", "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture
def console(page: Page) -> Iterator[list[str]]:
    """Collects console errors and uncaught exceptions; the test fails if any appeared."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text} ({message.location.get('url')})")

    def on_error(error: Error) -> None:
        problems.append(f"pageerror: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_error)
    yield problems
    assert problems == []


def shot(page: Page, artifacts_dir: Path, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"portal-{name}.png"), full_page=True)


def chart_total(page: Page, chart_id: str, label: str) -> float:
    """The sum of one dataset of a rendered Chart.js chart, read from the live Chart object."""
    return float(
        page.evaluate(
            """([id, label]) => {
                const chart = Chart.getChart(document.querySelector(`canvas[data-chart="${id}"]`));
                const ds = chart.data.datasets.find(d => d.label === label);
                return ds ? ds.data.reduce((a, b) => a + (b || 0), 0) : -1;
            }""",
            [chart_id, label],
        )
    )


def test_it_signs_up_creates_a_key_calls_the_api_and_sees_the_call(
    transactional_db: Any, live_gunicorn: Any, iris: Any, page: Page, console: list[str], artifacts_dir: Path
) -> None:
    base = live_gunicorn.url
    page.goto(base + "/portal/signup/")
    shot(page, artifacts_dir, "signup")
    page.get_by_label("Organisation name").fill("Browser Labs")
    page.get_by_label("Username").fill("bella")
    page.get_by_label("Email").fill("bella@example.com")
    page.get_by_label("Password", exact=True).fill("Chromium-rocks-42")
    page.get_by_label("Password confirmation").fill("Chromium-rocks-42")
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(base + "/portal/keys/")

    page.get_by_label("Name").fill("browser key")
    page.get_by_role("button", name="Create key").click()  # htmx swap, no page load
    secret = page.get_by_test_id("new-key").input_value()
    assert secret.startswith("mm_")
    page.get_by_role("button", name="Copy", exact=True).click()
    shot(page, artifacts_dir, "keys")

    request = urllib.request.Request(
        base + "/v1/models/iris:predict",
        data=json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert json.loads(response.read())["predictions"][0]["label"] == "setosa"

    page.goto(base + "/portal/usage/")
    expect(page.get_by_test_id("total-calls")).to_have_text("1")
    assert chart_total(page, "chart-calls-by-model", "iris") == 1
    expect(page.locator("#latest-calls")).to_contain_text(secret.split(".")[0])
    shot(page, artifacts_dir, "usage")

    page.goto(base + "/portal/models/iris/")
    page.get_by_role("button", name="Create a playground key").click()
    expect(page.get_by_label("API key")).not_to_have_value("")
    page.get_by_role("button", name="Send prediction").click()
    expect(page.get_by_test_id("playground-response")).to_contain_text("predictions")
    expect(page.locator("#pg-curl")).to_contain_text("/v1/models/iris/versions/1:predict")
    expect(page.locator("#pg-python")).to_contain_text("requests.post(")
    shot(page, artifacts_dir, "playground")

    page.goto(base + "/portal/usage/")
    page.get_by_role("button", name="Refresh").click()
    expect(page.get_by_test_id("total-calls")).to_have_text("2")
    assert chart_total(page, "chart-calls-by-model", "iris") == 2

    for name, path in [("home", "/portal/"), ("models", "/portal/models/"), ("team", "/portal/team/")]:
        page.goto(base + path)
        shot(page, artifacts_dir, name)
    page.get_by_label("Email address").fill("teammate@example.com")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.locator(".messages")).to_contain_text("Invitation sent to teammate@example.com")

    # The console email backend printed the invitation into gunicorn's log: accept it as a new user.
    link = re.findall(r"/portal/invitations/[A-Za-z0-9_-]+/", live_gunicorn.log.read_text())[-1]
    page.get_by_role("button", name="Log out").click()
    page.goto(base + link)
    shot(page, artifacts_dir, "invitation")
    page.get_by_label("Username").fill("teddy")
    page.get_by_label("Password", exact=True).fill("Teammate-pw-77")
    page.get_by_label("Password confirmation").fill("Teammate-pw-77")
    page.get_by_role("button", name="Accept the invitation").click()
    expect(page.locator(".messages")).to_contain_text("You joined Browser Labs")
    expect(page.locator("main")).to_contain_text("Your role here: Member")
    page.goto(base + "/portal/password-reset/")
    page.get_by_label("Email").fill("teammate@example.com")
    page.get_by_role("button", name="Send the link").click()
    expect(page.locator("main")).to_contain_text("Check your email")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + "/portal/usage/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
    shot(page, artifacts_dir, "usage-phone")


def test_it_lets_staff_upload_a_version_and_move_an_alias(
    transactional_db: Any,
    live_gunicorn: Any,
    iris: Any,
    staff_user: Any,
    page: Page,
    console: list[str],
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    base = live_gunicorn.url
    page.goto(base + "/portal/login/")
    shot(page, artifacts_dir, "login")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill("pw-staff-123")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + "/staff/")
    shot(page, artifacts_dir, "staff-usage")

    page.goto(base + "/staff/models/")
    model_file = tmp_path / "iris-v2.onnx"
    model_file.write_bytes(model_bytes("iris"))
    page.get_by_label("Model name").fill("iris")
    page.get_by_label("ONNX file").set_input_files(str(model_file))
    page.get_by_label("Aliases to point at it if valid (optional)").fill("staging")
    shot(page, artifacts_dir, "staff-models")
    page.get_by_role("button", name="Upload and validate").click()
    expect(page).to_have_url(base + "/staff/models/iris/versions/2/")
    expect(page.get_by_test_id("version-status")).to_have_text("ready")
    shot(page, artifacts_dir, "staff-version-report")

    page.get_by_role("link", name="← iris").click()
    expect(page.get_by_test_id("alias-production")).to_have_text("1")
    page.get_by_label("Alias").fill("production")
    page.get_by_label("Point it at version").select_option("2")
    page.get_by_role("button", name="Review the move").click()
    expect(page.locator("main")).to_contain_text("moves from version 1 to version 2")
    shot(page, artifacts_dir, "staff-alias-confirm")
    page.get_by_role("button", name="Confirm the move").click()
    expect(page.get_by_test_id("alias-production")).to_have_text("2")
    expect(page.locator("main")).to_contain_text("iris@production now points at version 2")
    shot(page, artifacts_dir, "staff-model")


def test_it_writes_the_playground_body_as_a_python_literal_in_the_python_snippet(
    transactional_db: Any, live_gunicorn: Any, iris: Any, owner: Any, page: Page, console: list[str]
) -> None:
    base = live_gunicorn.url
    page.goto(base + "/portal/login/")
    page.get_by_label("Username").fill("olivia")
    page.get_by_label("Password").fill("pw-Secret-123")
    page.get_by_role("button", name="Log in").click()
    page.goto(base + "/portal/models/iris/")
    body = {
        "instances": [[True, False, None, 1.5, -2, 1e21]],
        "parameters": {"note": 'Zoë said "hi" \\ \n\t\u2028 \u00e9', "flags": {"a": True, "b": None}},
    }
    page.get_by_label("Request body (JSON)").fill(json.dumps(body))  # fires `input`: the snippets follow
    snippet = page.locator("#pg-python").text_content() or ""
    call = next(n for n in ast.walk(ast.parse(snippet)) if isinstance(n, ast.Call) and n.keywords)
    sent = next(k.value for k in call.keywords if k.arg == "json")
    assert ast.literal_eval(sent) == body  # valid Python that means the same body (True/False/None)


def _log_in(page: Page, base: str, username: str) -> None:
    page.goto(base + "/portal/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw-Secret-123")  # the cast's password (tests/portal/conftest.py)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + "/portal/")


def test_it_asks_before_removing_a_member_or_revoking_an_invitation(
    transactional_db: Any, live_gunicorn: Any, owner: Any, member: Any, page: Page, console: list[str]
) -> None:
    base = live_gunicorn.url
    _log_in(page, base, "olivia")
    page.goto(base + "/portal/team/")
    page.get_by_label("Email address").fill("later@example.com")
    page.get_by_role("button", name="Send invitation").click()
    asked: list[str] = []
    answer = {"accept": False}

    def on_dialog(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept() if answer["accept"] else dialog.dismiss()

    page.on("dialog", on_dialog)
    page.get_by_role("button", name="Remove mike").click()
    page.get_by_role("button", name="Revoke the invitation to later@example.com").click()
    page.wait_for_timeout(300)  # a form that did not ask would have been submitted by now
    assert len(asked) == 2 and "Remove mike" in asked[0] and "later@example.com" in asked[1]
    expect(page.locator("main")).to_contain_text("mike@example.com")  # dismissed: nothing happened
    expect(page.locator("main")).to_contain_text("pending")

    answer["accept"] = True
    page.get_by_role("button", name="Remove mike").click()
    expect(page.locator("main")).to_contain_text("mike removed.")
    page.get_by_role("button", name="Revoke the invitation to later@example.com").click()
    expect(page.locator("main")).to_contain_text("Invitation to later@example.com revoked.")


def test_it_wraps_long_names_instead_of_scrolling_sideways(
    transactional_db: Any, live_gunicorn: Any, iris: Any, owner: Any, org: Any, page: Page, console: list[str]
) -> None:
    base = live_gunicorn.url
    org.name = "Averyveryverylongorganisationnamewithoutanyspacesthatgoesonandonandonandon"
    org.save(update_fields=["name"])
    _log_in(page, base, "olivia")
    page.goto(base + "/portal/batches/")
    page.get_by_label("Input file (JSONL or CSV)").set_input_files(
        {"name": "x" * 180 + ".jsonl", "mimeType": "application/jsonl", "buffer": b'{"instances": [[1, 2, 3, 4]]}\n'}
    )
    page.get_by_label("Model").select_option("iris")
    page.get_by_role("button", name="Upload and start").click()
    expect(page.get_by_test_id("batch-status")).to_be_visible()

    # Desktop: the batch table fits its card, so the status and files columns are on screen.
    page.set_viewport_size({"width": 1280, "height": 900})
    assert page.evaluate(
        "(() => { const s = document.querySelector('.scroll'); return s.scrollWidth <= s.clientWidth; })()"
    )
    # Phone: no page scrolls sideways because of a long organisation or file name.
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ["/portal/", "/portal/batches/", "/portal/team/", "/portal/keys/"]:
        page.goto(base + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path


def test_it_keeps_the_staff_filters_on_screen_with_a_long_organisation_name(
    transactional_db: Any, live_gunicorn: Any, org: Any, staff_user: Any, page: Page, console: list[str]
) -> None:
    base = live_gunicorn.url
    org.name = "Averyveryverylongorganisationnamewithoutanyspacesthatgoesonandonandonandon"
    org.save(update_fields=["name"])
    page.goto(base + "/portal/login/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill("pw-staff-123")
    page.get_by_role("button", name="Log in").click()
    for width in [1280, 375]:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(base + f"/staff/?organisation={org.pk}")  # the select shows the long name
        expect(page.get_by_label("Organisation", exact=True)).to_have_value(str(org.pk))
        assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_it_says_so_when_an_htmx_action_is_refused(
    transactional_db: Any, live_gunicorn: Any, owner: Any, org: Any, page: Page
) -> None:
    """Revoke after the CSRF cookie changed (another tab logged in again): a 403 that htmx does not swap."""
    from apiservice.services import api_key_create

    api_key_create(organisation=org, name="old key", scopes=["predict"], created_by=owner)
    base = live_gunicorn.url
    _log_in(page, base, "olivia")
    page.goto(base + "/portal/keys/")
    page.context.clear_cookies(name="csrftoken")
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_test_id("htmx-error")).to_contain_text("Reload the page and try again")


def test_a_tab_left_on_one_organisation_acts_on_nothing_after_a_switch_in_another(
    transactional_db: Any, live_gunicorn: Any, owner: Any, org: Any, other_org: Any, page: Page, artifacts_dir: Path
) -> None:
    """Olivia owns Acme Robotics and is a member of Globex. Tab A shows Acme's keys and team; tab B
    switches to Globex. What tab A then sends is refused (409), not done in Globex."""
    from apiservice.models import APIKey, Membership
    from apiservice.services import membership_ensure
    from portal.models import Invitation

    membership_ensure(user=owner, organisation=other_org, role=Membership.Role.MEMBER)
    base = live_gunicorn.url
    _log_in(page, base, "olivia")
    page.goto(base + "/portal/keys/")
    other_tab = page.context.new_page()
    other_tab.goto(base + "/portal/")
    other_tab.get_by_label("Switch organisation").select_option(str(other_org.pk))
    other_tab.get_by_role("button", name="Switch").click()
    expect(other_tab.locator("h1")).to_have_text("Globex")

    page.get_by_label("Name").fill("meant for Acme")
    page.get_by_role("button", name="Create key").click()  # htmx
    expect(page.get_by_test_id("htmx-error")).to_contain_text("Nothing was done: this page is Acme Robotics's")
    assert not APIKey.objects.filter(name="meant for Acme").exists()

    page.goto(base + "/portal/")  # the session is on Globex now; go back to Acme in tab B, then away again
    other_tab.get_by_label("Switch organisation").select_option(str(org.pk))
    other_tab.get_by_role("button", name="Switch").click()
    page.goto(base + "/portal/team/")
    other_tab.get_by_label("Switch organisation").select_option(str(other_org.pk))
    other_tab.get_by_role("button", name="Switch").click()
    page.get_by_label("Email address").fill("acme-hire@example.com")
    page.get_by_role("button", name="Send invitation").click()  # a plain form
    expect(page.locator("h1")).to_have_text("Nothing was done")
    shot(page, artifacts_dir, "stale-organisation")
    assert not Invitation.objects.exists()
    page.get_by_role("button", name="Switch back to Acme Robotics").click()
    expect(page.locator("h1")).to_have_text("Acme Robotics")
