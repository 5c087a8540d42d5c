"""Real-browser check: notebook 02's beta/gamma widget renders in JupyterLab and its plot follows the sliders.

Starts JupyterLab on 127.0.0.1 (a free port, a random token, no browser) over a temporary copy of the notebook
(so autosave never touches the repository), opens it in Debian's headless Chromium driven by Playwright, runs
all cells from the Run menu, waits until every code cell has run, then asserts that

1. the two sliders (beta, gamma) of `LossExplorer` exist and are visible, with a plot image below them;
2. pressing the right-arrow key on the focused beta slider moves its value one step and changes the plot image.

A screenshot of the widget's cell is kept (default build/browser/notebook02_widget.png). The server and the
browser are stopped at the end, also on failure. Exit status 0: the check passed; 1: it failed (the reason is
printed). Usage: ``.venv/bin/python browser/check_widget.py [NOTEBOOK] [--screenshot PATH]``.
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


def check_notebook_widget(
    page,
    base_url: str,
    token: str,
    notebook_name: str,
    screenshot: Path | None,
    run_timeout_s: float = RUN_TIMEOUT_S,
) -> dict:
    """Open ``notebook_name`` (relative to the server root), run it, check the widget; return what was seen."""
    workspace = "check-" + "".join(
        c if c.isalnum() else "-" for c in notebook_name
    )  # a fresh layout per notebook
    page.goto(f"{base_url}/lab/workspaces/{workspace}/tree/{notebook_name}?reset&token={token}")
    panel = page.locator(".jp-NotebookPanel:visible")  # only the notebook on show, not a hidden tab
    panel.locator(".jp-Notebook").first.wait_for(state="visible", timeout=60_000)
    _wait_for_idle_kernel(base_url, token, notebook_name, timeout_s=90)
    _run_all_and_wait(page, run_timeout_s)

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", type=Path, default=DEFAULT_NOTEBOOK)
    parser.add_argument("--screenshot", type=Path, default=DEFAULT_SCREENSHOT)
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        with lab_server([args.notebook]) as (base_url, token, _), chromium_page() as page:
            seen = check_notebook_widget(page, base_url, token, args.notebook.name, args.screenshot)
    except Exception as error:  # WidgetCheckError, or Playwright's own (a selector timed out)
        print(f"FAIL ({time.monotonic() - started:.0f} s): {type(error).__name__}: {error}")
        return 1
    print(
        f"PASS ({time.monotonic() - started:.0f} s): sliders {seen['labels']} render; beta {seen['beta_before']} -> "
        f"{seen['beta_after']} redrew the plot; screenshot {seen['screenshot']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
