"""The web console in a real headless Chromium (Debian's chromium + chromium-driver) driven by Selenium, through
devhost: a COMPLETED job and a FAILED one with its row/line/column errors, replay from the job page, and a reader
who finds no replay button. WHARF_SCREENSHOTS_DIR=docs/screenshots saves the pages shown in the README."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.test_processing import BAD, GOOD, catalog_yaml, land

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip("chromium and chromium-driver are not installed (scripts/install-system-deps.sh installs them)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, name: str) -> None:
    folder = os.environ.get("WHARF_SCREENSHOTS_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def _sign_in(driver: Any, base: str, role: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.delete_all_cookies()
    driver.get(f"{base}/console/signin")
    assert "Development sign-in" in driver.page_source
    Select(driver.find_element(By.ID, "role")).select_by_value(role)
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "signin-button").click()
    # The form posts and redirects: read the page it lands on, not the sign-in page going away (its elements
    # go stale under the reader).
    wait = WebDriverWait(driver, 20, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    who = wait.until(lambda d: "/console/signin" not in d.current_url and d.find_element(By.ID, "who").text)
    assert wait.until(lambda d: d.find_element(By.ID, "dev-banner").text).startswith("DEVELOPMENT SIGN-IN")
    assert ("Wharf.Operate" in who) == (role == "operator")


def test_console_in_chromium(e2e: E2E, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD"))
    good = land(e2e, partner, "invoices-1.csv", GOOD)
    bad = land(e2e, partner, "invoices-2.csv", BAD)
    assert e2e.wait_job(good)["job"]["status"] == "COMPLETED"
    assert e2e.wait_job(bad)["job"]["status"] == "FAILED"
    base = e2e.host.http_url.rstrip("/") + "/v1"

    _sign_in(browser, base, "operator")
    assert browser.find_element(By.CSS_SELECTOR, f'tr[data-partner="{partner}"]')
    _shot(browser, "console-partners")
    browser.get(f"{base}/console/jobs?partner={partner}")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{good}"]')
    assert row.get_attribute("data-status") == "COMPLETED" and "COMPLETED" in row.text
    _shot(browser, "console-jobs")

    browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{bad}"] a').click()
    assert browser.find_element(By.ID, "status").text == "FAILED"
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
             for tr in browser.find_elements(By.CSS_SELECTOR, "#validation-errors tr")[1:]]
    assert {tuple(c[:4]) for c in cells} == {("2", "3", "3", "amount"), ("2", "3", "4", "currency")}
    _shot(browser, "console-job-failed")

    browser.find_element(By.ID, "replay").click()
    new_id = browser.find_element(By.ID, "job-id").text
    assert new_id != bad and new_id.startswith("job-")
    assert bad in browser.find_element(By.TAG_NAME, "main").text  # "replay of" links back
    e2e.wait_job(new_id)
    browser.get(f"{base}/console/jobs?partner={partner}")
    assert browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{new_id}"]')

    _sign_in(browser, base, "reader")
    browser.get(f"{base}/console/jobs/{bad}")
    assert browser.find_element(By.ID, "status").text == "FAILED"
    assert browser.find_elements(By.ID, "replay") == []
    assert "Poll now" not in (browser.get(f"{base}/console/") or browser.page_source)
