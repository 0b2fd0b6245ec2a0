"""The web app in a real headless browser: Debian's chromium driven by playwright, against the app served here.

test_app.py calls the app's API; this file checks what a visitor actually sees: the page loads, the tabs
render, and on the Generate tab typing a prompt and clicking the button streams text and tokens/s. It serves
the app as shipped, on assets/ds-tiny. The last test saves a screenshot to its tmp_path, and with
UPDATE_SCREENSHOT=1 also to docs/screenshot.png, the picture in the README (so a plain test run leaves the
working tree as it found it).

Skips (with the reason) when the `playwright` package or /usr/bin/chromium is missing; .ci/run installs both.
Never run `playwright install`: the tests use the system chromium, not a browser playwright downloads.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)", allow_module_level=True)
pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing "
                               "(pip install -r requirements-test.txt)")

# gradio's own queue code trips pandas deprecations; nothing the app does
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import app  # noqa: E402

SCREENSHOT = ROOT / "docs" / "screenshot.png"
VIEWPORT = {"width": 1280, "height": 900}
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PROMPT = "Once upon a time, in a sleepy harbor, there was a young baker named Mira."
PLOT_DRAWN = ".js-plotly-plot .main-svg, .vega-embed, canvas, img"
TIMEOUT_MS = 20_000  # per wait; the tiny model generates in well under a second, the rest is page load
sync_api.expect.set_options(timeout=TIMEOUT_MS)  # expect() otherwise gives up after 5 s, tight on a busy CI box


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    """Base url of the app on the shipped model, served in this process on a free port (safe under xdist)."""
    demo = app.build_app(ROOT / app.DEFAULT_MODEL)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    """One headless system chromium for the module."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, url):
    """A fresh page on the app, with console errors collected in page.errors for failure messages.

    Requests that leave 127.0.0.1 are aborted (the app makes none today; a theme's web fonts or a CDN script
    would): CI machines may be offline, and the test must see the page as an offline visitor does.
    """
    context = browser.new_context(viewport=VIEWPORT)
    context.route(lambda u: not u.startswith(url), lambda route: route.abort())
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(f"console: {m.text}"))
    pg.goto(url, wait_until="domcontentloaded")
    try:
        yield pg
    finally:
        context.close()


def _text(page, selector: str) -> str:
    """What a visitor reads in a gradio component: its visible text plus the value of any textarea/input."""
    return page.eval_on_selector(selector, """el => [el.innerText,
        ...Array.from(el.querySelectorAll('textarea, input[type=text]'), t => t.value)].join('\\n')""")


@contextlib.contextmanager
def _step(page, tmp_path: Path, what: str):
    """Run one step; if it fails, save the page (html, png) to tmp_path and say what the visitor saw."""
    try:
        yield
    except (sync_api.Error, AssertionError) as e:  # sync_api.Error covers playwright's TimeoutError
        html, png = tmp_path / "failure.html", tmp_path / "failure.png"
        with contextlib.suppress(sync_api.Error):
            html.write_text(page.content())
        with contextlib.suppress(sync_api.Error):
            page.screenshot(path=str(png), full_page=True)
        try:
            visible = page.inner_text("body", timeout=2_000)
        except sync_api.Error as unreadable:
            visible = f"(page unreadable: {unreadable})"
        errors = "\n".join(page.errors) or "(none)"
        raise AssertionError(f"{what}: {e}\n--- page saved to {html} and {png}\n--- browser errors:\n{errors}\n"
                             f"--- visible text (start):\n{visible[:2000]}") from e


def _save_screenshot(page, tmp_path: Path) -> None:
    """Full-page screenshot to tmp_path and, with UPDATE_SCREENSHOT=1, to docs/screenshot.png (atomically)."""
    page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOT") != "1":
        return
    SCREENSHOT.parent.mkdir(exist_ok=True)
    # same folder, so os.replace is atomic; the pid keeps concurrent runs (xdist, two checkouts' CI) apart
    tmp = SCREENSHOT.with_name(f".{SCREENSHOT.stem}-{os.getpid()}.png")
    try:
        page.screenshot(path=str(tmp), full_page=True)
        os.replace(tmp, SCREENSHOT)
    finally:
        tmp.unlink(missing_ok=True)


def test_page_loads_with_title_and_tabs(page, tmp_path):
    with _step(page, tmp_path, "the page and its tabs render"):
        sync_api.expect(page).to_have_title("DeepSeek Inference Explorer")  # gradio sets it once loaded
        sync_api.expect(page.get_by_role("heading", name="DeepSeek Inference Explorer")).to_be_visible()
        for tab in app.tabs():
            sync_api.expect(page.get_by_role("tab", name=tab.TITLE)).to_be_visible()
        assert not page.errors, page.errors


def test_generate_tab_streams_text_and_tokens_per_second(page, tmp_path):
    with _step(page, tmp_path, "the Generate tab renders"):
        prompt = page.locator("#gen-prompt textarea")
        sync_api.expect(prompt).to_be_visible()
        sync_api.expect(page.locator("#gen-button")).to_be_enabled()
    before = len(_text(page, "#gen-output"))

    with _step(page, tmp_path, f"typing {PROMPT!r} and clicking Generate streams text into #gen-output"):
        prompt.fill(PROMPT)
        page.click("#gen-button")
        page.wait_for_function("""([sel, n]) => {
            const t = document.querySelector(sel);
            return t !== null && t.value.length > n; }""", arg=["#gen-output textarea", before])

    with _step(page, tmp_path, "generation ends: tokens/s in #gen-stats, a chart in #gen-dist"):
        sync_api.expect(page.locator("#gen-stats")).to_contain_text(re.compile(r"tokens?/s"))
        assert re.search(r"\d[\d.,]*\s*tokens?/s", _text(page, "#gen-stats")), _text(page, "#gen-stats")
        assert len(_text(page, "#gen-output").strip()) > before
        # a drawn chart, not gradio's empty placeholder: plotly's svg, or vega's/matplotlib's for native plots
        sync_api.expect(page.locator(f"#gen-dist :is({PLOT_DRAWN})").first).to_be_visible()
        assert not page.errors, page.errors

    _save_screenshot(page, tmp_path)


def test_qkv_tab_draws_the_projections(page, tmp_path):
    with _step(page, tmp_path, "the QKV projection tab opens and draws X, the latents and Q, K, V"):
        page.get_by_role("tab", name="QKV projection").click()
        page.click("#qkv-button")
        sync_api.expect(page.locator("#qkv-shapes")).to_contain_text("tokens")
        for key in ("x", "cq", "ckv", "q", "k", "v"):
            sync_api.expect(page.locator(f"#qkv-{key} :is({PLOT_DRAWN})").first).to_be_visible()
        assert not page.errors, page.errors


@pytest.mark.parametrize("tab,buttons,plots", [
    ("Attention & masks", ["#attn-button"], ["#attn-mask", "#attn-probs"]),
    ("τ sharpness", ["#tau-sharpness-button", "#tau-sampling-button"], ["#tau-sharpness-plot", "#tau-sampling-plot"]),
], ids=["attention", "sharpness"])
def test_attention_lab_tab_draws_its_plots(page, tmp_path, tab, buttons, plots):
    with _step(page, tmp_path, f"the {tab} tab opens and pressing {', '.join(buttons)} draws {', '.join(plots)}"):
        page.get_by_role("tab", name=tab).click()
        for button in buttons:
            page.click(button)
        for plot in plots:  # a drawn plotly figure, not the empty placeholder
            sync_api.expect(page.locator(f"{plot} :is({PLOT_DRAWN})").first).to_be_visible()
        assert not page.errors, page.errors


def test_mla_tab_draws_the_cache_and_the_decode_speed(page, tmp_path):
    plots = ["#mla-latent", "#mla-k", "#mla-v", "#mla-bytes", "#mla-context"]
    with _step(page, tmp_path, f"the MLA & KV cache tab opens and pressing #mla-button draws {', '.join(plots)}"):
        page.get_by_role("tab", name="MLA & KV cache").click()
        page.click("#mla-button")
        sync_api.expect(page.locator("#mla-summary")).to_contain_text("tokens")
        for plot in plots:
            sync_api.expect(page.locator(f"{plot} :is({PLOT_DRAWN})").first).to_be_visible()
    with _step(page, tmp_path, "pressing #mla-speed-button with short contexts draws #mla-speed-plot"):
        page.locator("#mla-contexts textarea, #mla-contexts input").first.fill("32, 64")
        page.click("#mla-speed-button")
        sync_api.expect(page.locator(f"#mla-speed-plot :is({PLOT_DRAWN})").first).to_be_visible()
        assert not page.errors, page.errors


def test_moe_tab_draws_the_routing_and_the_interventions(page, tmp_path):
    plots = ["#moe-heatmap", "#moe-steps-plot", "#moe-load", "#moe-norms"]
    with _step(page, tmp_path, f"the MoE routing tab opens and pressing #moe-button draws {', '.join(plots)}"):
        page.get_by_role("tab", name="MoE routing").click()
        page.click("#moe-button")
        sync_api.expect(page.locator("#moe-summary")).to_contain_text("tokens")
        sync_api.expect(page.locator("#moe-steps")).to_contain_text("top-")
        for plot in plots:
            sync_api.expect(page.locator(f"{plot} :is({PLOT_DRAWN})").first).to_be_visible()
    with _step(page, tmp_path, "pressing #moe-measure-button with 2 windows and 1 probe draws #moe-iv-plot"):
        page.locator("#moe-stories input").first.fill("2")
        page.locator("#moe-probes input").first.fill("1")
        page.click("#moe-measure-button")
        sync_api.expect(page.locator(f"#moe-iv-plot :is({PLOT_DRAWN})").first).to_be_visible()
        sync_api.expect(page.locator("#moe-iv-summary")).to_contain_text("2 story windows")
        assert not page.errors, page.errors
