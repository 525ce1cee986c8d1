"""Drive the explorer in a real headless Chromium: one screenshot per view, and checks that each view
rendered.

    python -m app.browser_check --model MODEL --collection COLLECTION --results RESULTS
                                [--out results/screenshots]

Starts ``streamlit run app/main.py`` on a free localhost port (or uses ``--url``), opens every view with
Selenium and the Debian ``chromium`` / ``chromium-driver`` packages (``/usr/bin/chromium``,
``/usr/bin/chromedriver``; no browser download), waits until the script has finished, checks that the
view's expected elements are on the page and that no Streamlit exception box or error message appears,
and saves a full-page PNG per view in ``--out``. Exit code 0 when every check passes, 1 otherwise; one
line per check on stdout.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
WIDTH = 1500

# Streamlit's data-testid attributes of what each view must show.
METRIC = '[data-testid="stMetric"]'
IMAGE = '[data-testid="stImage"], [data-testid="stImageContainer"] img'
VEGA = '[data-testid="stVegaLiteChart"]'
TABLE = '[data-testid="stDataFrame"]'
DOWNLOAD = '[data-testid="stDownloadButton"]'
EXCEPTION = '[data-testid="stException"]'
ERROR = '[data-testid="stAlertContentError"]'
RUNNING = '[data-testid="stStatusWidget"]'


@dataclass
class Page:
    """One screenshot: the view, an optional tab to click, and the selectors/texts that must be there."""

    name: str
    view: str
    selectors: dict[str, str]
    texts: tuple[str, ...] = ()
    tab: str | None = None
    failures: list[str] = field(default_factory=list)


PAGES = (
    Page(
        "pair",
        "pair",
        {
            "score metric": METRIC,
            "attention heatmap and attribution chart": VEGA,
            "token strip": ".token-strip",
        },
        ("Score (full model)", "Attention", "Heatmap rows × columns", "Integrated Gradients"),
    ),
    Page(
        "flow", "flow", {"flow heatmaps": IMAGE, "spread chart": VEGA}, ("role→role", "Spread over queries")
    ),
    Page(
        "ablation-live",
        "ablation",
        {"toggle table": TABLE, "score metric": METRIC},
        ("Live on the current pair", "Score (full model)"),
    ),
    Page(
        "ablation-results",
        "ablation",
        {"Δ heatmap": IMAGE},
        ("Minimal surviving set",),
        tab="Sweep / search results",
    ),
    Page(
        "mice",
        "mice",
        {"comparison table": TABLE, "Pareto chart": VEGA, "config download": DOWNLOAD},
        ("Pareto front",),
    ),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_app(port: int, log: Path) -> subprocess.Popen:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO / "app" / "main.py"),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--global.developmentMode",
        "false",
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def stop_app(proc: subprocess.Popen | None) -> None:
    """Stop an app started by :func:`start_app` (killed if it does not exit within 15 s)."""
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def missing_browser() -> str | None:
    """What is missing to drive Chromium (a one-line message), or None."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).is_file():
            return f"{binary} not found; install the Debian packages chromium and chromium-driver"
    return None


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--window-size={WIDTH},1200")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait_idle(driver, timeout: float) -> bool:
    """Wait until the script run has finished (no 'Running…' status widget for 1.5 s)."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    quiet_since = None
    time.sleep(1.0)
    while time.time() < deadline:
        running = driver.find_elements(By.CSS_SELECTOR, RUNNING)
        stale = driver.find_elements(By.CSS_SELECTOR, '[data-stale="true"]')
        if running or stale:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.5:
            return True
        time.sleep(0.3)
    return False


def full_page_screenshot(driver, path: Path) -> None:
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        "const s = document.querySelector('[data-testid=\"stSidebarContent\"]');"
        "return Math.max(m.scrollHeight, s ? s.scrollHeight : 0, document.body.scrollHeight);"
    )
    driver.set_window_size(WIDTH, int(min(max(height, 800), 12000)) + 120)
    time.sleep(1.0)  # charts re-render at the new size
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, 1200)


def check_page(driver, base: str, params: dict, page: Page, out: Path, timeout: float) -> Page:
    from selenium.webdriver.common.by import By

    query = urllib.parse.urlencode({"view": page.view, **params})
    driver.get(f"{base}/?{query}")
    if not wait_idle(driver, timeout):
        page.failures.append(f"still running after {timeout:.0f} s")
    if page.tab:
        tabs = [
            t
            for t in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stTab"], [role="tab"]')
            if page.tab in t.text
        ]
        if not tabs:
            page.failures.append(f"no tab {page.tab!r}")
        else:
            tabs[0].click()
            wait_idle(driver, timeout)
            time.sleep(1.0)
    for what, css in page.selectors.items():
        visible = [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        if not visible:
            page.failures.append(f"missing {what} ({css})")
    body = driver.find_element(By.TAG_NAME, "body").text
    for text in page.texts:
        if text not in body:
            page.failures.append(f"missing text {text!r}")
    for css, what in ((EXCEPTION, "a Streamlit exception box"), (ERROR, "an error message")):
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if found:
            page.failures.append(f"{what}: {found[0].text[:200]!r}")
    full_page_screenshot(driver, out / f"{page.name}.png")
    return page


def run(
    params: dict, out: Path, url: str | None = None, timeout: float = 180, pages: tuple[Page, ...] = PAGES
) -> list[Page]:
    """Check every page; returns the pages with their failures (screenshots in ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    proc = None
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_app(port, out / "streamlit.log")
    checked = []
    try:
        wait_healthy(url, proc)
        driver = browser()
        try:
            for page in pages:
                fresh = Page(page.name, page.view, page.selectors, page.texts, page.tab)
                checked.append(check_page(driver, url, params, fresh, out, timeout))
        finally:
            driver.quit()
    finally:
        stop_app(proc)
    return checked


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.browser_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="", help="model for the sidebar (a name or a local folder)")
    p.add_argument("--collection", default="dl19", help="collection name or BEIR folder (default dl19)")
    p.add_argument("--results", default="results", help="results folder (default results)")
    p.add_argument("--out", type=Path, default=REPO / "results" / "screenshots", help="screenshot folder")
    p.add_argument("--url", default=None, help="an app already running (default: start one)")
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for each view (default 180)")
    args = p.parse_args(argv)
    missing = missing_browser()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    params = {
        k: v
        for k, v in (("model", args.model), ("collection", args.collection), ("results", args.results))
        if v
    }
    pages = run(params, args.out, args.url, args.timeout)
    for page in pages:
        status = "ok" if not page.failures else "FAIL " + "; ".join(page.failures)
        print(f"{page.name:17s} {status}  ({args.out / (page.name + '.png')})")
    return 0 if all(not page.failures for page in pages) else 1


if __name__ == "__main__":
    sys.exit(main())
