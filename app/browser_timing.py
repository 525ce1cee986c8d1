"""Drive the explorer in headless Chromium as a reader would, and time each interaction.

    python -m app.browser_timing --model reference --collection dl19 --out results/screenshots/timing

On the Pair view: pick a query and a document, then change the head and the layer (patterns re-sliced
from the one cached capture) and the query (a new forward); on the Ablation view: toggle one cell of the
layer × interaction grid and read the masked score; on the MICE view: open a results folder that holds only
a ``mice.json``. Each step's time is measured twice: the server's own script run (the sidebar's "this
rerun: X s (run N)", written at the end of every run) and the wall time in the browser until the page is
idle again. Screenshots of each state go to ``--out``. Used by ``tests/test_app_browser.py``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.browser_check import (
    EXCEPTION,
    METRIC,
    REPO,
    RUNNING,
    browser,
    free_port,
    full_page_screenshot,
    missing_browser,
    start_app,
    stop_app,
    wait_healthy,
)

RERUN = re.compile(r"this rerun: ([0-9.]+) s \(run (\d+)\)")


@dataclass
class Step:
    name: str
    server_s: float | None = None  # the script run's own time
    wall_s: float | None = None  # action → page idle, in the browser
    value: str = ""  # what the step read (a score, a count)
    problem: str = ""


@dataclass
class Timing:
    steps: list[Step] = field(default_factory=list)
    capture_s: float | None = None  # the Pair view's "one forward (X s)" for the last pair

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


def _rerun(driver) -> tuple[float, int] | None:
    from selenium.webdriver.common.by import By

    for el in driver.find_elements(
        By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stCaptionContainer"]'
    ):
        m = RERUN.search(el.text)
        if m:
            return float(m.group(1)), int(m.group(2))
    return None


def _status(driver) -> str:
    """What the page shows about its script run, for a step that never finished."""
    from selenium.webdriver.common.by import By

    widgets = driver.find_elements(By.CSS_SELECTOR, RUNNING)
    if widgets:
        return f"status widget still shown: {' '.join(widgets[0].text.split())[:80]!r}"
    got = _rerun(driver)
    return f"page idle, last finished run {got[1] if got else 'unknown'}"


def _idle_after(driver, run_before: int, timeout: float) -> tuple[float, int] | None:
    """Wait for a script run newer than ``run_before`` to finish (no running widget, a new run number)."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    while time.time() < deadline:
        if not driver.find_elements(By.CSS_SELECTOR, RUNNING):
            got = _rerun(driver)
            if got is not None and got[1] > run_before:
                return got
        time.sleep(0.05)
    return None


def timed(driver, name: str, action, timeout: float) -> Step:
    """Run ``action`` (a browser interaction that returns the last keystroke or click to send, or None
    when it has sent it) and time the rerun from that last input until the page is idle again."""
    before = _rerun(driver)
    run_before = before[1] if before else 0
    step = Step(name)
    try:
        commit = action()
        start = time.perf_counter()
        if commit is not None:
            commit()
    except Exception as exc:  # noqa: BLE001 - a missing widget is a failed step, reported
        step.problem = f"could not act: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return step
    got = _idle_after(driver, run_before, timeout)
    if got is None:
        step.problem = f"no finished rerun within {timeout:.0f} s ({_status(driver)})"
        return step
    step.wall_s = time.perf_counter() - start
    step.server_s = got[0]
    return step


def wait_first_run(driver, timeout: float) -> tuple[float, int] | None:
    return _idle_after(driver, 0, timeout)


def select(driver, label: str, typed: str):
    """Choose in the selectbox labelled ``label`` the first option matching ``typed`` (typed into its
    search box, so long virtualised lists work); returns the final ENTER, for :func:`timed` to send."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    boxes = [
        b for b in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSelectbox"]') if label in b.text
    ]
    if not boxes:
        raise LookupError(f"no selectbox labelled {label!r}")
    box = boxes[0]
    field_ = box.find_element(By.CSS_SELECTOR, "input")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    time.sleep(0.2)
    field_.send_keys(typed)
    time.sleep(0.3)
    return lambda: field_.send_keys(Keys.ENTER)


def click_label(driver, text: str):
    """Click the checkbox or toggle labelled ``text``."""
    from selenium.webdriver.common.by import By

    labels = [el for el in driver.find_elements(By.CSS_SELECTOR, "label") if text in el.text]
    if not labels:
        raise LookupError(f"no checkbox or toggle labelled {text!r}")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", labels[0])
    return labels[0].click


def click_tab(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    tabs = [t for t in driver.find_elements(By.CSS_SELECTOR, '[role="tab"]') if text in t.text]
    if not tabs:
        raise LookupError(f"no tab {text!r}")
    tabs[0].click()


def toggle_grid_cell(driver, row: int, column: int):
    """Toggle the checkbox of the live ablation grid at data ``row`` (0 = the first interaction) and
    ``column`` (1 = L0), as a keyboard user does: focus the grid, select the cell, press space.

    The grid is a canvas (glide-data-grid); its cells are addressed through the accessibility table it
    keeps in the page (``glide-cell-COLUMN-ROW``, with ``aria-selected``), not through pixel offsets: a
    click on an already selected cell opens the cell's overlay editor, and keys then never reach the
    grid (what made this step hang in CI). An open overlay is closed with Escape first."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    grids = [
        g for g in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]') if g.is_displayed()
    ]
    if not grids:
        raise LookupError("no data editor on the page")
    grid = grids[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", grid)
    canvas = grid.find_element(By.CSS_SELECTOR, "canvas[tabindex]")
    if driver.find_elements(By.CSS_SELECTOR, "textarea.gdg-input"):  # an overlay editor is open
        driver.execute_script("arguments[0].focus()", canvas)
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        time.sleep(0.3)
    cell_id = f"glide-cell-{column}-{row}"  # the accessibility table is rendered after the canvas
    cell = WebDriverWait(grid, 30).until(lambda g: g.find_element(By.ID, cell_id), f"no grid cell {cell_id}")
    driver.execute_script("arguments[0].focus()", canvas)  # the grid selects a cell only while it has focus
    time.sleep(0.2)
    driver.execute_script("arguments[0].focus()", cell)
    WebDriverWait(driver, 10).until(
        lambda _: cell.get_attribute("aria-selected") == "true",
        f"grid cell {cell_id} did not become selected",
    )
    driver.execute_script("arguments[0].focus()", canvas)
    if driver.switch_to.active_element != canvas:
        raise LookupError("the grid did not take the keyboard focus")
    return lambda: ActionChains(driver).send_keys(Keys.SPACE).perform()


def metric(driver, label: str) -> float | None:
    from selenium.webdriver.common.by import By

    for el in driver.find_elements(By.CSS_SELECTOR, METRIC):
        lines = [ln for ln in el.text.splitlines() if ln.strip()]
        if lines and label in lines[0]:
            try:
                return float(lines[1])
            except (IndexError, ValueError):
                return None
    return None


def _capture_seconds(driver) -> float | None:
    from selenium.webdriver.common.by import By

    m = re.search(r"one forward \(([0-9.]+) s\)", driver.find_element(By.TAG_NAME, "body").text)
    return float(m.group(1)) if m else None


def run(
    params: dict,
    out: Path,
    *,
    second_query: str,
    mice_only: Path,
    layers: tuple[int, int] = (11, 5),
    timeout: float = 600,
    url: str | None = None,
) -> Timing:
    """The interactions on the app at ``url`` (default: start one): ``second_query`` is a query id of the
    collection to switch to; ``mice_only`` a results folder holding only a ``mice.json``."""
    from selenium.webdriver.common.by import By

    out.mkdir(parents=True, exist_ok=True)
    proc = None
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_app(port, out / "streamlit.log")
    timing = Timing()
    try:
        wait_healthy(url, proc)
        driver = browser()
        try:
            driver.get(f"{url}/?{urllib.parse.urlencode({'view': 'pair', **params})}")
            start = time.perf_counter()
            first = wait_first_run(driver, timeout)
            timing.steps.append(
                Step(
                    "open Pair view (model load, collection, capture, IG)",
                    first[0] if first else None,
                    time.perf_counter() - start,
                    problem="" if first else "did not finish",
                )
            )
            full_page_screenshot(driver, out / "pair-12-layers.png")
            steps = [
                ("head → 3", lambda: select(driver, "Head", "head 3")),
                (f"layer → {layers[0]}", lambda: select(driver, "Layer", str(layers[0]))),
                ("head → mean", lambda: select(driver, "Head", "mean")),
                (f"layer → {layers[1]}", lambda: select(driver, "Layer", str(layers[1]))),
            ]
            for name, action in steps:
                timing.steps.append(timed(driver, name, action, timeout))
            timing.steps.append(
                timed(
                    driver, "attributions off", lambda: click_label(driver, "Compute attributions"), timeout
                )
            )
            step = timed(
                driver,
                "another query (new forward + capture, attributions off)",
                lambda: select(driver, "Query from", second_query),
                timeout,
            )
            timing.steps.append(step)
            timing.capture_s = _capture_seconds(driver)
            full_page_screenshot(driver, out / "pair-second-query.png")
            # the live ablation grid: one cell toggled changes the score
            driver.get(f"{url}/?{urllib.parse.urlencode({'view': 'ablation', **params})}")
            wait_first_run(driver, timeout)
            step = timed(
                driver,
                "ablation: toggle doc2query in L0",
                lambda: toggle_grid_cell(driver, 1, 1),
                timeout,
            )
            full = metric(driver, "Score (full")
            masked = metric(driver, "Score (masked)")
            step.value = f"full {full} masked {masked}"
            if masked is None:
                step.problem = step.problem or "no masked score after the toggle"
            timing.steps.append(step)
            full_page_screenshot(driver, out / "ablation-12-layers.png")
            # the MICE view on a folder with only a configuration
            p = {**params, "view": "mice", "results": str(mice_only)}
            driver.get(f"{url}/?{urllib.parse.urlencode(p)}")
            got = wait_first_run(driver, timeout)
            body = driver.find_element(By.TAG_NAME, "body").text
            ok = "MICE configuration" in body and "layers 0-" in body
            timing.steps.append(
                Step(
                    "MICE view, configuration only",
                    got[0] if got else None,
                    value="grid shown" if ok else "",
                    problem="" if ok else "no configuration summary",
                )
            )
            if driver.find_elements(By.CSS_SELECTOR, EXCEPTION):
                timing.steps[-1].problem = "an exception box"
            full_page_screenshot(driver, out / "mice-config-only.png")
        finally:
            driver.quit()
    finally:
        stop_app(proc)
    (out / "timing.json").write_text(
        json.dumps({"steps": [asdict(s) for s in timing.steps], "capture_s": timing.capture_s}, indent=2)
        + "\n"
    )
    return timing


def write_config_only(folder: Path, model: str) -> Path:
    """A results folder holding only the depth-aware MICE configuration of ``model`` (no comparison)."""
    from ablations.masking.interactions import default_final_preset
    from ablations.mice.config import preset
    from ablations.scorers import model_depth

    shutil.rmtree(folder, ignore_errors=True)
    layers = model_depth(model) or 12
    preset(default_final_preset(layers), layers, 12, model).save(folder / "mice.json")
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.browser_timing", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="reference", help="model (default: the 12-layer reference)")
    p.add_argument("--collection", default="dl19")
    p.add_argument("--second-query", default="1037798", help="a query id of the collection to switch to")
    p.add_argument("--out", type=Path, default=REPO / "results" / "screenshots" / "timing")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    missing = missing_browser()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    mice_only = write_config_only(args.out / "mice-only", args.model)
    params = {"model": args.model, "collection": args.collection, "results": str(args.out / "empty")}
    timing = run(params, args.out, second_query=args.second_query, mice_only=mice_only, timeout=args.timeout)
    for s in timing.steps:
        server = "–" if s.server_s is None else f"{s.server_s:.2f} s"
        wall = "–" if s.wall_s is None else f"{s.wall_s:.2f} s"
        print(f"{s.name:55s} server {server:>9s}  browser {wall:>9s}  {s.value} {s.problem}")
    print(
        f"capture (one forward, every layer): {timing.capture_s} s; screenshots and timing.json in {args.out}"
    )
    return 0 if not any(s.problem for s in timing.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
