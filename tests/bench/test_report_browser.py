"""report.html in headless Chromium: every image decodes, every table and method row renders.

Needs Chromium, its driver and selenium (the ``browser`` extra); skipped with the reason when one is missing.
Tests never install anything: CI's ``.ci/run`` installs ``chromium`` and ``chromium-driver`` with apt-get (as
root, when missing) before running them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from unlearnkit.bench._testing import fake_records
from unlearnkit.bench.records import append_record
from unlearnkit.bench.report import build_report

pytestmark = pytest.mark.browser

LABELS = ("fake_any", "scrub", "salun-lr0.01")


def _find(*names: str) -> str | None:
    for n in names:
        path = shutil.which(n) or (f"/usr/lib/chromium/{n}" if os.path.exists(f"/usr/lib/chromium/{n}") else None)
        if path:
            return path
    return None


def _chromium() -> tuple[str, str]:
    browser, driver = _find("chromium", "chromium-browser", "google-chrome"), _find("chromedriver")
    if browser and driver:
        return browser, driver
    missing = " and ".join(n for n, p in (("Chromium", browser), ("chromedriver", driver)) if not p)
    pytest.skip(
        f"{missing} not found: install `chromium` and `chromium-driver` (Debian: apt-get install chromium "
        "chromium-driver; .ci/run does this when run as root)"
    )


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install 'unlearnkit[browser]'")
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    try:
        drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    except Exception as exc:  # a driver/browser version mismatch or a sandbox problem: say which
        pytest.skip(f"cannot start headless Chromium via {chromedriver}: {str(exc).splitlines()[0]}")
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bench")
    for r in fake_records(labels=LABELS):
        append_record(d / "records.jsonl", r)
    return build_report(d) / "report.html"


def _load(driver, path: Path) -> dict:
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return driver.execute_script("""
        const imgs = Array.from(document.images);
        return {
          images: imgs.map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                                  shown: i.getBoundingClientRect().width})),
          tables: Array.from(document.querySelectorAll('table.results')).map(t => t.getBoundingClientRect().height),
          rows: Array.from(document.querySelectorAll('table.results tr[data-label]'))
                  .map(r => [r.dataset.label, r.dataset.kind, r.cells.length, r.getBoundingClientRect().height]),
          headers: Array.from(document.querySelectorAll('table.results thead th')).map(th => th.textContent),
        };""")


def test_images_decode_and_every_method_row_renders(driver, report):
    page = _load(driver, report)
    assert len(page["images"]) == 5  # 2 scenarios × (bars, trade-off) + per-class for the class-wise one
    for img in page["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0 and img["shown"] > 0, img
    assert len(page["tables"]) == 2 and all(h > 0 for h in page["tables"])
    labels = [r[0] for r in page["rows"]]
    for label in LABELS:
        assert labels.count(label) == 2, label
    assert labels.count("Retrained (oracle)") == 2 and labels.count("Original") == 2
    n_cols = len(page["headers"]) // 2
    assert all(r[2] == n_cols and r[3] > 0 for r in page["rows"])  # every row complete and visible
    assert "Avg. gap" in page["headers"] and "FA" in page["headers"]


def test_the_check_catches_a_broken_image(driver, report, tmp_path):
    """Negative control: corrupt one embedded PNG and the same check must see naturalWidth == 0."""
    html = report.read_text(encoding="utf-8")
    broken = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAAbroken', html, count=1)
    assert broken != html
    page_path = tmp_path / "broken.html"
    page_path.write_text(broken, encoding="utf-8")
    page = _load(driver, page_path)
    widths = [img["w"] for img in page["images"]]
    assert widths.count(0) == 1 and len(widths) == 5
