"""The explorer in a real headless Chromium: every view renders its elements, no exception box, screenshots.

Starts ``streamlit run app/main.py`` on localhost with small real result tables (tiny BERT), drives it with
Selenium and the Debian ``chromium`` + ``chromium-driver`` packages (``app/browser_check.py``), and keeps
one full-page screenshot per view in ``results/screenshots/`` (gitignored; CI keeps them as artifacts).
Marked ``slow``; select it alone with ``-k browser``. Skipped, saying why, only when Chromium, its driver
or selenium is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_app_support import REPO, build_demo

from app import browser_check

SHOTS = REPO / "results" / "screenshots"


def _missing() -> str | None:
    if not Path(browser_check.CHROMIUM).is_file():
        return f"{browser_check.CHROMIUM} is absent: install the Debian packages chromium and chromium-driver"
    if not Path(browser_check.CHROMEDRIVER).is_file():
        return f"{browser_check.CHROMEDRIVER} is absent: install the Debian package chromium-driver"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_browser_every_view_renders_in_chromium(tmp_path, tokenizer):
    pytest.importorskip("selenium", reason="pip install selenium (the browser test drives Chromium with it)")
    demo = build_demo(tmp_path / "demo", tokenizer)
    shots = tmp_path / "screenshots"  # this run's own folder; copied to results/screenshots at the end
    params = {"model": str(demo.model), "collection": str(demo.beir), "results": str(demo.results)}
    pages = browser_check.run(params, shots, timeout=240)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for path in shots.iterdir():
        shutil.copyfile(path, SHOTS / path.name)
    assert [p.name for p in pages] == [p.name for p in browser_check.PAGES]
    failures = {p.name: p.failures for p in pages if p.failures}
    assert not failures, f"{failures}; see the screenshots in {SHOTS} and {SHOTS / 'streamlit.log'}"
    for page in pages:
        shot = shots / f"{page.name}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000, shot  # a rendered page, not a blank one


def _no_reference() -> str | None:
    from ablations.paths import resolve_model

    try:
        resolve_model("reference")
    except Exception as exc:  # noqa: BLE001
        return f"the 12-layer reference is not available: {exc}"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
@pytest.mark.skipif(_no_reference() is not None, reason=_no_reference() or "")
def test_browser_interactions_on_the_12_layer_reference(tmp_path):
    """A reader's session on the real 12-layer model (DL 2019): pick a pair, change head and layer (re-sliced
    from one cached capture: < 1 s on the server), switch query (one forward + capture + < 1 s), toggle one
    ablation grid cell (the score changes), open the MICE view with only a mice.json. Times: docs/app.md."""
    pytest.importorskip("selenium", reason="pip install selenium")
    from app import browser_timing

    out = tmp_path / "timing"
    mice_only = browser_timing.write_config_only(tmp_path / "mice-only", "reference")
    params = {"model": "reference", "collection": "dl19", "results": str(tmp_path / "empty")}
    timing = browser_timing.run(params, out, second_query="1037798", mice_only=mice_only, timeout=240)
    (SHOTS / "timing").mkdir(parents=True, exist_ok=True)
    for path in out.iterdir():
        if path.is_file():
            shutil.copyfile(path, SHOTS / "timing" / path.name)
    problems = {s.name: s.problem for s in timing.steps if s.problem}
    assert not problems, problems
    for name in ("head → 3", "layer → 11", "head → mean", "layer → 5"):
        assert timing.step(name).server_s < 1.0, (name, timing.step(name))
    switch = timing.step("another query (new forward + capture, attributions off)")
    assert timing.capture_s is not None and switch.server_s <= timing.capture_s + 1.0, (
        switch,
        timing.capture_s,
    )
    full, masked = (float(v) for v in timing.step("ablation: toggle doc2query in L0").value.split()[1::2])
    assert masked != full, "the toggled cell changed the score"
    assert timing.step("MICE view, configuration only").value == "grid shown"
