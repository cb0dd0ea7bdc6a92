"""/docs (Swagger UI) and /ui in a real headless Chromium, against a real `mlserve serve`.

Debian's chromium and chromium-driver (.ci/run installs them), driven by selenium. The
docs page must list the predict operations and "Try it out" on /predict/{name} must come
back with a prediction; the /ui page must show the published models. Screenshots go to
MLSERVE_SCREENSHOT_DIR when set (docs/screenshots/ holds the committed ones).
"""
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from serving_support import Server, fit_classifier, fit_regressor

import mlserve

WAIT_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    store = mlserve.ModelStore(root / "models")
    mlserve.save(fit_classifier(), root / "clf.mls")
    mlserve.save(fit_regressor(), root / "reg.mls")
    store.publish("churn", root / "clf.mls", alias="production")
    store.publish("churn", root / "clf.mls")
    store.set_alias("churn", "canary", {1: 90, 2: 10})
    store.publish("prices", root / "reg.mls", alias="production")
    srv = Server(root / "models", "--workers", "1", "--no-access-log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "install Debian's chromium and chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1600", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def _text(driver, selector):
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector)


def _number(text):
    try:
        return float(text)
    except ValueError:
        return 0.0


def screenshot(driver, name, tmp_path):
    target = os.environ.get("MLSERVE_SCREENSHOT_DIR") or str(tmp_path)
    os.makedirs(target, exist_ok=True)
    path = os.path.join(target, name)
    assert driver.save_screenshot(path)
    return path


def test_docs_page_lists_operations_and_try_it_out_predicts(server, browser, tmp_path):
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(server.url + "/docs")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    paths = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    for wanted in ("/predict/{name}", "/v2/models/{name}/infer", "/invocations"):
        assert wanted in paths, paths
    assert not browser.find_elements(By.CSS_SELECTOR, ".errors-wrapper")
    screenshot(browser, "docs.png", tmp_path)

    block = next(b for b in browser.find_elements(By.CSS_SELECTOR, ".opblock-post")
                 if b.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text == "/predict/{name}")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    name = wait.until(lambda _: block.find_element(By.CSS_SELECTOR, "input[placeholder='name']"))
    name.clear()                         # the document's example may fill it already
    name.send_keys("churn")
    body = block.find_element(By.CSS_SELECTOR, "textarea.body-param__text")
    body.send_keys(Keys.CONTROL, "a")
    body.send_keys(Keys.DELETE)
    body.send_keys(json.dumps({"features": [0.5, -1.0, 0.25, 2.0]}))
    block.find_element(By.CSS_SELECTOR, ".btn.execute").click()
    live = ".live-responses-table tbody .response-col_status"
    wait.until(lambda _: block.find_elements(By.CSS_SELECTOR, live))
    status = block.find_element(By.CSS_SELECTOR, live).text
    answer = block.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text
    screenshot(browser, "docs-try-it-out.png", tmp_path)
    want = fit_classifier().predict(np.array([[0.5, -1.0, 0.25, 2.0]]))[0]
    assert status.strip() == "200", answer
    assert json.loads(answer) == {"model": "churn", "version": 1, "prediction": want}


def test_ui_page_shows_models_versions_aliases_and_traffic(server, browser, tmp_path):
    import requests

    for _ in range(5):
        assert requests.post(server.url + "/predict/churn", json={"features": [0, 0, 0, 1]},
                             timeout=10).ok
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(server.url + "/ui?refresh=1")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "tr[data-model='churn']")))
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-model='prices']")
    # the page rebuilds its table on every poll: read the cells in one script call
    cells = browser.execute_script(
        "return [...document.querySelectorAll(\"tr[data-model='churn'] td\")].map(c => c.innerText)")
    assert cells[0] == "churn" and cells[1] == "classification" and cells[2] == "1, 2"
    assert "canary → 1: 90%, 2: 10%" in cells[3] and "production → 1" in cells[3]
    # the request counter comes from /metrics (flushed every 0.05 s)
    cell = "tr[data-model='churn'] td:nth-child({})"
    wait.until(lambda d: _number(_text(d, cell.format(8))) >= 5)
    # a rate and a latency appear once two polls have seen the counters move: keep traffic going
    stop = threading.Event()

    def traffic():
        deadline = time.monotonic() + WAIT_S
        while not stop.is_set() and time.monotonic() < deadline:
            requests.post(server.url + "/predict/churn", json={"features": [0, 0, 0, 1]}, timeout=10)
            time.sleep(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        wait.until(lambda d: _number(_text(d, cell.format(6))) > 0)
        wait.until(lambda d: _text(d, cell.format(7)).endswith(" ms"))
    finally:
        stop.set()
        sender.join(timeout=15)
    screenshot(browser, "ui.png", tmp_path)
    assert "updated" in browser.find_element(By.ID, "status").text
