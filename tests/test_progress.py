"""Progress in a log: periodic plain lines, however often the caller updates the bar's postfix."""

import io

from probe import progress


def _log(monkeypatch, interval: str) -> io.StringIO:
    """stderr as a file, not a terminal (patched in the test itself: pytest's capture swaps sys.stderr
    between a fixture's setup and the test)."""
    monkeypatch.setenv("MICE_PROGRESS_INTERVAL", interval)
    stream = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    return stream


def _train_like(n: int) -> None:
    bar = progress.bar(range(n), desc="steps", total=n)
    for i in bar:
        bar.set_postfix({"loss": f"{1 / (i + 1):.4f}"})  # every step, as the training loop does
        bar.set_postfix_str(f"cell {i}")  # and as the sweep does
    bar.close()


def test_a_postfix_every_step_does_not_print_a_line_every_step(monkeypatch):
    log = _log(monkeypatch, "30")
    _train_like(200)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 1 <= len(lines) <= 3, lines  # the first line, the last, nothing in between at 30 s
    assert lines[-1].startswith("steps: 100%") and "200/200" in lines[-1]
    assert "cell 199" in lines[-1]  # the last postfix is shown on the closing line


def test_interval_zero_prints_every_update(monkeypatch):
    log = _log(monkeypatch, "0")
    _train_like(20)
    assert len(log.getvalue().splitlines()) >= 20
