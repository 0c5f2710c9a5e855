"""Real Chromium against a real gunicorn and a real Celery worker: batch jobs, edge bundles, billing.

The gunicorn and the worker here share their own Celery queue, and the worker starts only once the
page shows the queued job: the page is then seen to update live (htmx polling), never reloaded.
Screenshots land in test-artifacts/portal-*.png; every page is checked for console errors.
"""

import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from playwright.sync_api import Page, expect

from billing.models import StripeEvent
from edge import services as edge_services
from edge.models import Bundle
from tests import live
from tests.portal.test_browser import browser_type_launch_args, console, shot  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.live]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]] * 40
# Counts htmx swaps and marks the document, so a test can tell a live update from a page load.
WATCH_SWAPS = """() => {
    window.__loaded = true; window.__swaps = [];
    document.body.addEventListener('htmx:afterSwap', e => window.__swaps.push(e.detail.elt.dataset.status || ''));
}"""


@pytest.fixture
def queue() -> str:
    return f"portal-browser-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def server(
    transactional_db: Any, queue: str, tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any
) -> Iterator[live.Server]:
    with (
        django_db_blocker.unblock(),
        live.gunicorn(tmp_path_factory.mktemp("gunicorn"), CELERY_TASK_DEFAULT_QUEUE=queue) as s,
    ):
        yield s


def log_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(base + "/portal/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_it_runs_a_batch_and_builds_a_bundle_with_live_progress(
    server: live.Server,
    queue: str,
    owner: Any,
    iris: Any,
    page: Page,
    console: list[str],  # noqa: F811
    artifacts_dir: Path,
    tmp_path: Path,
    django_db_blocker: Any,
) -> None:
    base = server.url
    from billing import payments

    # The suite's default plan is enterprise (settings_test); this organisation is on the free plan.
    payments.account_get_or_create(organisation_id=owner.memberships.get().organisation_id, plan_code="free")
    log_in(page, base, "olivia", "pw-Secret-123")
    expect(page).to_have_url(base + "/portal/")

    # Batch: upload and start; the job waits in the queue (no worker yet) and the row polls.
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"custom_id": f"r{i}", "instances": [r]}) + "\n" for i, r in enumerate(ROWS)))
    page.get_by_role("link", name="Batch jobs").click()
    page.get_by_label("Input file (JSONL or CSV)").set_input_files(str(rows))
    page.get_by_label("Model").select_option("iris")
    page.get_by_role("button", name="Upload and start").click()
    expect(page.locator(".messages")).to_contain_text("started on rows.jsonl")
    status = page.get_by_test_id("batch-status")
    expect(status).to_have_text("validating")
    page.evaluate(WATCH_SWAPS)
    shot(page, artifacts_dir, "batches-queued")

    # Bundle: request it too, so one worker start serves both.
    page.get_by_role("link", name="Edge bundles").click()
    page.get_by_label("Model version").select_option(label="iris v1")
    page.get_by_role("button", name="Request the bundle").click()
    expect(page.get_by_test_id("bundle-status")).to_have_text("queued")
    page.evaluate(WATCH_SWAPS)

    with django_db_blocker.unblock(), live.celery_worker(tmp_path, name="portal", CELERY_TASK_DEFAULT_QUEUE=queue):
        expect(page.get_by_test_id("bundle-status")).to_have_text("ready", timeout=120_000)
        assert page.evaluate("window.__loaded === true && window.__swaps.length > 0")  # updated in place
        assert page.evaluate("window.__swaps[window.__swaps.length - 1]") == "ready"
        shot(page, artifacts_dir, "bundles")
        pem = page.get_by_test_id("public-key").first.input_value()
        with page.expect_download() as bundle_download:
            page.get_by_role("button", name="Download").first.click()
        content = Path(bundle_download.value.path()).read_bytes()
        archive = zipfile.ZipFile(io.BytesIO(content))
        manifest = archive.read("manifest.json")
        load_pem_public_key(pem.encode()).verify(archive.read("manifest.sig"), manifest)  # type: ignore[union-attr]
        built = Bundle.objects.get()
        assert json.loads(manifest)["bundle_id"] == built.public_id
        assert hashlib.sha256(content).hexdigest() == built.sha256  # the exact bytes, through the signed URL

        page.get_by_role("link", name="Batch jobs").click()
        page.evaluate(WATCH_SWAPS)
        expect(status).to_have_text("completed", timeout=120_000)
    progress = page.get_by_test_id("batch-progress")
    expect(progress).to_have_attribute("value", "100")
    expect(page.locator("main")).to_contain_text(f"{len(ROWS)} / {len(ROWS)} rows")
    shot(page, artifacts_dir, "batches")
    with page.expect_download() as output_download:
        page.get_by_test_id("batch-output").click()
    lines = [json.loads(line) for line in Path(output_download.value.path()).read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"r{i}" for i in range(len(ROWS))]
    assert lines[0]["response"]["predictions"][0]["label"] == "setosa"

    page.get_by_role("link", name="Billing").click()
    expect(page.get_by_test_id("billing-not-configured")).to_contain_text("Billing is not configured")
    expect(page.get_by_test_id("plan-name").first).to_have_text("Free")
    shot(page, artifacts_dir, "billing")

    page.set_viewport_size({"width": 390, "height": 844})
    for name, path in [("batches-phone", "/portal/batches/"), ("bundles-phone", "/portal/bundles/")]:
        page.goto(base + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
        shot(page, artifacts_dir, name)


def test_it_shows_staff_bundle_builds_and_billing_health(
    transactional_db: Any,
    server: live.Server,  # its own queue: no other test's worker may start the rebuild under our eyes
    iris: Any,
    staff_user: Any,
    page: Page,
    console: list[str],  # noqa: F811
    artifacts_dir: Path,
) -> None:
    bundle = edge_services.bundle_request(version=iris, variants=["fp32"])
    edge_services.bundle_build(bundle_id=bundle.pk)
    StripeEvent.objects.create(event_id="evt_browser", type="invoice.paid", payload={}, outcome="ignored")
    base = server.url
    log_in(page, base, "staff", "pw-staff-123")
    expect(page).to_have_url(base + "/staff/")
    page.get_by_role("link", name="Bundle builds").click()
    expect(page.get_by_test_id("staff-bundle-status")).to_have_text("ready")
    shot(page, artifacts_dir, "staff-bundles")
    page.get_by_role("button", name=f"Rebuild {bundle.public_id}").click()
    expect(page.locator(".messages")).to_contain_text("queued for a rebuild")
    expect(page.get_by_test_id("staff-bundle-status")).to_have_text("queued")
    page.get_by_role("link", name="Billing health").click()
    expect(page.locator("main")).to_contain_text("evt_browser")
    shot(page, artifacts_dir, "staff-billing-health")
