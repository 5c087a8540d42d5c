"""Real-browser checks: notebook 02's beta/gamma widget renders in JupyterLab and its plot follows the sliders;
notebook 07's blind A/B widget renders and a click records a label.

Starts JupyterLab on 127.0.0.1 (a free port, a random token, no browser) over a temporary copy of the notebook
(so autosave never touches the repository), opens it in Debian's headless Chromium driven by Playwright, runs
all cells from the Run menu, waits until every code cell has run, then asserts that

1. the two sliders (beta, gamma) of `LossExplorer` exist and are visible, with a plot image below them;
2. pressing the right-arrow key on the focused beta slider moves its value one step and changes the plot image.

For notebook 07 (`check_human_eval_widget`) it asserts that

3. the blind A/B widget is visible with its two answers and its three buttons (A is better, tie, B is better);
4. clicking "A is better" records a label: the progress line goes from 0 to 1 labelled, and the labels file
   (the notebook's ``labels_path`` parameter, pointed at a temporary file in the copy) holds that one label.

A screenshot of each widget's cell is kept (default build/browser/notebook02_widget.png and
build/browser/notebook07_human_eval.png). The server and the browser are stopped at the end, also on failure.
Exit status 0: the checks passed; 1: one failed (the reason is printed). Usage:
``.venv/bin/python browser/check_widget.py [NOTEBOOK] [--screenshot PATH]`` (with no NOTEBOOK both checks run).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NOTEBOOK = REPO / "notebooks" / "02_loss_derivation.ipynb"
DEFAULT_SCREENSHOT = REPO / "build" / "browser" / "notebook02_widget.png"
HUMAN_EVAL_NOTEBOOK = REPO / "notebooks" / "07_human_evaluation.ipynb"
HUMAN_EVAL_SCREENSHOT = REPO / "build" / "browser" / "notebook07_human_eval.png"
BLIND_AB = ".simplepo-blind-ab"  # the DOM class BlindABEval puts on its widget
BLIND_AB_PROGRESS = ".simplepo-blind-ab-progress"  # ... and on its progress line
BLIND_AB_BUTTONS = ("A is better", "tie", "B is better")
LABELS_PARAMETER = "labels_path = None"  # notebook 07's parameter, pointed at a temporary file by the check
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_TIMEOUT_S = 150  # all cells of notebook 02 (about 20 s of compute plus kernel start-up)
SLIDER = ".widget-slider"  # ipywidgets 8 FloatSlider container
# JupyterLab 4 settings: render every cell (no virtual scrolling) and skip the news prompt, so the DOM is complete
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


class WidgetCheckError(AssertionError):
    """The widget did not render or did not react; the message says which step failed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def lab_server(notebooks: list[Path], startup_timeout_s: float = 90):
    """JupyterLab over a temporary folder holding copies of ``notebooks``; yields (base_url, token, folder)."""
    folder = Path(tempfile.mkdtemp(prefix="simplepo-lab-"))
    root, settings = folder / "root", folder / "settings"
    root.mkdir()
    for notebook in notebooks:
        shutil.copy(notebook, root / notebook.name)
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(folder / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.open_browser=False",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    log = (folder / "server.log").open("w")
    previous_handler = signal.signal(
        signal.SIGTERM, _interrupt
    )  # a CI timeout's SIGTERM still runs `finally`
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if server.poll() is not None:
                raise WidgetCheckError(
                    f"JupyterLab exited with {server.returncode}: {_tail(folder / 'server.log')}"
                )
            try:
                urllib.request.urlopen(f"{base_url}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise WidgetCheckError(
                        f"JupyterLab did not answer within {startup_timeout_s} s"
                    ) from None
                time.sleep(0.5)
        yield base_url, token, folder
    finally:
        _stop(server)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous_handler)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server and its kernels (one process group): SIGTERM, then SIGKILL after 10 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@contextmanager
def chromium_page():
    """A Playwright page in Debian's headless Chromium (Playwright's own browser download is not used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            yield page
        finally:
            browser.close()


def _wait_for_idle_kernel(base_url: str, token: str, notebook_name: str, timeout_s: float) -> None:
    """Wait until the notebook's session has a kernel that reports idle (asked through the server's REST API)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sessions = json.loads(
            urllib.request.urlopen(f"{base_url}/api/sessions?token={token}", timeout=5).read()
        )
        states = [
            s["kernel"]["execution_state"] for s in sessions if s.get("path", "").endswith(notebook_name)
        ]
        if "idle" in states:
            return
        time.sleep(0.5)
    raise WidgetCheckError(f"no idle kernel for {notebook_name} within {timeout_s} s")


def _run_all_and_wait(page, timeout_s: float) -> None:
    """Run > Run All Cells, then wait until every code cell shows an execution count (or one shows an error)."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
    deadline = time.monotonic() + timeout_s
    state = {}
    while time.monotonic() < deadline:
        state = page.evaluate("""() => {
            const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => p.offsetParent !== null);
            if (!panel) return {cells: 0, done: 0, busy: 0, errors: 0};
            const cells = [...panel.querySelectorAll('.jp-CodeCell')];
            const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
            return {cells: cells.length, done: prompts.filter(p => /\\[\\d+\\]/.test(p)).length,
                    busy: prompts.filter(p => p.includes('*')).length,
                    errors: panel.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]').length};
        }""")
        if state["errors"]:
            text = page.locator(
                '.jp-NotebookPanel:visible [data-mime-type="application/vnd.jupyter.error"]'
            ).first.inner_text()
            raise WidgetCheckError(f"a cell raised while running all cells: {text[-800:]}")
        if state["cells"] and state["done"] == state["cells"] and not state["busy"]:
            return
        time.sleep(1)
    raise WidgetCheckError(f"cells did not finish within {timeout_s} s: {state}")


def _open_and_run(page, base_url: str, token: str, notebook_name: str, run_timeout_s: float):
    """Open ``notebook_name`` in a fresh workspace, run all cells, return the visible notebook panel."""
    workspace = "check-" + "".join(
        c if c.isalnum() else "-" for c in notebook_name
    )  # a fresh layout per notebook
    page.goto(f"{base_url}/lab/workspaces/{workspace}/tree/{notebook_name}?reset&token={token}")
    panel = page.locator(".jp-NotebookPanel:visible")  # only the notebook on show, not a hidden tab
    panel.locator(".jp-Notebook").first.wait_for(state="visible", timeout=60_000)
    _wait_for_idle_kernel(base_url, token, notebook_name, timeout_s=90)
    _run_all_and_wait(page, run_timeout_s)
    return panel


def check_notebook_widget(
    page,
    base_url: str,
    token: str,
    notebook_name: str,
    screenshot: Path | None,
    run_timeout_s: float = RUN_TIMEOUT_S,
) -> dict:
    """Open ``notebook_name`` (relative to the server root), run it, check the widget; return what was seen."""
    panel = _open_and_run(page, base_url, token, notebook_name, run_timeout_s)

    sliders = panel.locator(SLIDER)
    if sliders.count() < 2:
        raise WidgetCheckError(
            f"expected the beta and gamma sliders, found {sliders.count()} slider(s) in the page"
        )
    labels = [sliders.nth(i).locator(".widget-label").inner_text().strip() for i in range(sliders.count())]
    if not {"beta", "gamma"} <= set(labels):
        raise WidgetCheckError(f"slider labels are {labels}, expected beta and gamma")
    beta = sliders.nth(labels.index("beta"))
    beta.scroll_into_view_if_needed()
    if not beta.is_visible():
        raise WidgetCheckError("the beta slider is in the DOM but not visible")
    widget_cell = panel.locator(".jp-CodeCell", has=page.locator(SLIDER)).first
    plot = widget_cell.locator(".widget-output img")
    try:
        plot.first.wait_for(state="visible", timeout=30_000)
    except Exception as error:  # Playwright's TimeoutError
        raise WidgetCheckError("the widget shows no plot image below the sliders") from error

    readout = beta.locator(".widget-readout")
    before = {"value": readout.inner_text().strip(), "src": plot.first.get_attribute("src")}
    beta.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    deadline = time.monotonic() + 30
    after = before
    while time.monotonic() < deadline:
        after = {
            "value": readout.inner_text().strip(),
            "src": plot.first.get_attribute("src") if plot.count() else None,
        }
        if after["value"] != before["value"] and after["src"] and after["src"] != before["src"]:
            break
        time.sleep(0.5)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        widget_cell.screenshot(path=str(screenshot))
    if after["value"] == before["value"]:
        raise WidgetCheckError(
            f"the beta slider did not move on ArrowRight (readout stayed {before['value']})"
        )
    if not after["src"] or after["src"] == before["src"]:
        raise WidgetCheckError(
            f"beta moved {before['value']} -> {after['value']} but the plot image did not change"
        )
    return {
        "labels": labels,
        "beta_before": before["value"],
        "beta_after": after["value"],
        "screenshot": screenshot,
    }


def with_labels_file(notebook: Path, folder: Path) -> tuple[Path, Path]:
    """A copy of notebook 07 in ``folder`` whose labels go to ``folder/labels.jsonl``; (copy, labels file)."""
    labels = folder / "labels.jsonl"
    content = json.loads(notebook.read_text(encoding="utf-8"))
    replaced = 0
    for cell in content["cells"]:
        source = "".join(cell["source"])
        if LABELS_PARAMETER in source:
            cell["source"] = source.replace(LABELS_PARAMETER, f"labels_path = {str(labels)!r}")
            replaced += 1
    if replaced != 1:
        raise WidgetCheckError(
            f"expected one cell with {LABELS_PARAMETER!r} in {notebook.name}, found {replaced}"
        )
    copy = folder / notebook.name
    copy.write_text(json.dumps(content), encoding="utf-8")
    return copy, labels


def check_human_eval_widget(
    page,
    base_url: str,
    token: str,
    notebook_name: str,
    screenshot: Path | None,
    labels_file: Path | None = None,
    run_timeout_s: float = RUN_TIMEOUT_S,
) -> dict:
    """Open notebook 07, run it, check the blind A/B widget renders and that a click records a label."""
    panel = _open_and_run(page, base_url, token, notebook_name, run_timeout_s)
    widget = panel.locator(BLIND_AB)
    if widget.count() == 0:
        raise WidgetCheckError(f"the blind A/B widget ({BLIND_AB}) is not in the page")
    widget = widget.first
    widget.scroll_into_view_if_needed()
    if not widget.is_visible():
        raise WidgetCheckError("the blind A/B widget is in the DOM but not visible")
    buttons = {}
    for text in BLIND_AB_BUTTONS:
        button = widget.locator("button", has_text=text)
        if button.count() == 0 or not button.first.is_visible():
            raise WidgetCheckError(f"the blind A/B widget shows no visible {text!r} button")
        buttons[text] = button.first
    answers = widget.locator(".widget-html").all_inner_texts()
    if not any(a.strip().startswith("A") for a in answers) or not any(
        a.strip().startswith("B") for a in answers
    ):
        raise WidgetCheckError(f"the two answers A and B are not shown: {answers}")
    progress = widget.locator(BLIND_AB_PROGRESS).first
    before = progress.inner_text().strip()
    if "0 labelled" not in before:
        raise WidgetCheckError(f"expected no label before the click, the progress line says {before!r}")
    buttons["A is better"].click()
    deadline = time.monotonic() + 30
    after = before
    while time.monotonic() < deadline:
        after = progress.inner_text().strip()
        if "1 labelled" in after:
            break
        time.sleep(0.5)
    widget_cell = panel.locator(".jp-CodeCell", has=page.locator(BLIND_AB)).first
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        widget_cell.screenshot(path=str(screenshot))
    if "1 labelled" not in after:
        raise WidgetCheckError(f"clicking 'A is better' recorded no label (progress stayed {after!r})")
    saved = None
    if labels_file is not None:
        lines = labels_file.read_text().splitlines() if labels_file.exists() else []
        saved = [json.loads(line) for line in lines if line.strip()]
        if len(saved) != 1 or saved[0].get("choice") != "A":
            raise WidgetCheckError(f"the labels file should hold the one click (choice A), it holds {saved}")
    return {"progress_before": before, "progress_after": after, "saved": saved, "screenshot": screenshot}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", type=Path, default=None)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.monotonic()
    human_eval = args.notebook is None or args.notebook.name.startswith("07_")
    sliders = args.notebook is None or not human_eval
    folder = Path(tempfile.mkdtemp(prefix="simplepo-labels-"))
    try:
        notebooks = [args.notebook or DEFAULT_NOTEBOOK] if sliders else []
        labels = None
        if human_eval:
            copy, labels = with_labels_file(args.notebook or HUMAN_EVAL_NOTEBOOK, folder)
            notebooks.append(copy)
        with lab_server(notebooks) as (base_url, token, _), chromium_page() as page:
            if sliders:
                shot = args.screenshot or DEFAULT_SCREENSHOT
                seen = check_notebook_widget(page, base_url, token, notebooks[0].name, shot)
                print(
                    f"PASS: sliders {seen['labels']} render; beta {seen['beta_before']} -> {seen['beta_after']} "
                    f"redrew the plot; screenshot {seen['screenshot']}"
                )
            if human_eval:
                shot = args.screenshot if not sliders and args.screenshot else HUMAN_EVAL_SCREENSHOT
                seen = check_human_eval_widget(page, base_url, token, notebooks[-1].name, shot, labels)
                print(
                    f"PASS: blind A/B widget renders; a click took it from {seen['progress_before']!r} to "
                    f"{seen['progress_after']!r} and saved {len(seen['saved'])} label; screenshot {seen['screenshot']}"
                )
    except Exception as error:  # WidgetCheckError, or Playwright's own (a selector timed out)
        print(f"FAIL ({time.monotonic() - started:.0f} s): {type(error).__name__}: {error}")
        return 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"all checks passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
