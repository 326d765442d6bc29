"""The built book in a real headless browser (Debian's chromium), with the network off.

Run after the book build (scripts/test.sh does): ``pytest -m browser tests/test_browser.py``.
The pages are served from localhost; chromium resolves no other host, so anything the book
would fetch from the internet (a CDN's MathJax, say) fails and is caught here. Checks, on every
page: it loads without console errors, every formula is typeset by MathJax (no raw TeX left and
no MathJax error), every image is present, every internal link (and its #anchor) resolves, and
the Colab/Binder buttons open a notebook that exists in the repository; no formula or output is
wider than the text column at 1280 px, and every figure has a caption, an alt text and is shown
at no less than 3/4 of its size. The menu button must
open the table of contents on a phone and hide it on a desktop. Screenshots of two pages are
written to ``_build/screenshots`` next to the HTML.

SOCICNN_BOOK_HTML overrides the built book's folder (default ``_build/html``).
"""

from __future__ import annotations

import functools
import http.server
import os
import posixpath
import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("SOCICNN_BOOK_HTML", ROOT / "_build" / "html"))
SCREENSHOTS = HTML.parent / "screenshots"
SCREENSHOT_PAGES = ("book/intro", "book/local_hessian")
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MIN_FIGURE_SCALE = 0.75  # a figure shown below 3/4 of its size has unreadable labels (10 pt -> 7 px)
# Chapters whose wide formulas/outputs and figure captions are still being reworked (issue 12);
# their problems of those two kinds are printed, not failed. Remove a chapter once it is fixed.
# (warnings printed into outputs, such as a library UserWarning, count as layout problems here)
LAYOUT_PENDING: set[str] = set()  # pages whose layout problems are reported but not yet failed

pytestmark = pytest.mark.browser


def toc_pages() -> list[str]:
    return re.findall(r"(?:file|root):\s*([^\s#]+)", (ROOT / "_toc.yml").read_text())


@pytest.fixture(scope="module")
def server():
    assert (HTML / "index.html").is_file(), f"no built book at {HTML}: run bash scripts/build_book.sh first"
    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    for exe in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(exe), f"{exe} missing: scripts/setup_env.sh installs Debian's chromium and chromium-driver"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 # the network is off: no host resolves but the local server
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def load(driver, url: str) -> None:
    driver.get(url)
    # Wait for MathJax (when the page loads it) to finish typesetting.
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (!document.querySelector('script[src*=\"mathjax\"]')) { done(null); return; }"
        "const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)"
        "  ? MathJax.startup.promise.then(() => done(null)) : setTimeout(wait, 50);"
        "wait();"
    )


PAGE_FACTS = """
const main = document.querySelector('main') || document.body;
const prose = main.cloneNode(true);
prose.querySelectorAll('pre, code, script, style, mjx-container, .output, .cell_output, .highlight')
     .forEach(e => e.remove());
const maths = [...main.querySelectorAll('.math')];
return {
  text: prose.textContent,
  maths: maths.length,
  untypeset: maths.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
  merrors: [...main.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80)),
  images: [...main.querySelectorAll('img')].map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  outputs: [...main.querySelectorAll('.cell_output')].map(e => e.textContent).join(' ; '),
  stderr: [...main.querySelectorAll('.output.stderr')].map(e => e.textContent.trim().slice(0, 120)),
  figures: [...main.querySelectorAll('.cell_output img')].map(i => ({
    src: i.getAttribute('src'), alt: (i.getAttribute('alt') || '').trim(),
    caption: !!(i.closest('figure') && i.closest('figure').querySelector('figcaption')),
    scale: i.naturalWidth ? i.getBoundingClientRect().width / i.naturalWidth : 0})),
  wide: [...main.querySelectorAll('.cell_output pre, .output pre, .output table, div.math, '
                                  + 'mjx-container[display="true"], img')]
        .filter(e => e.getBoundingClientRect().width > main.getBoundingClientRect().width + 1
                     || e.scrollWidth > e.clientWidth + 1)
        .map(e => (e.closest('.math, .cell_output, .output, figure') || e).textContent.trim().slice(0, 60)
                  || e.getAttribute('src')),
};
"""


def anchor_exists(path: Path, fragment: str) -> bool:
    return re.search(rf'id="{re.escape(fragment)}"', path.read_text(errors="replace")) is not None


def repository_path(url: str) -> str | None:
    """The repository path a Colab or Binder launch link opens, or None for other links."""
    if "colab.research.google.com" in url:
        return url.split("/blob/", 1)[1].split("/", 1)[1]
    if "mybinder.org" in url:
        return unquote(url.split("urlpath=", 1)[1]).split("/tree/", 1)[1]
    return None


def test_every_page_renders_offline(server, browser):
    problems, launch_targets = [], {}
    pages = [*toc_pages(), "genindex", "prf-prf", "py-modindex"]
    for page in pages:
        url = urljoin(server, f"{page}.html")
        browser.get_log("browser")  # drop messages of the previous page
        load(browser, url)
        facts = browser.execute_script(PAGE_FACTS)
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]:  # the browser asks for it
                problems.append(f"{page}: console error: {entry['message'][:200]}")
        raw = re.findall(r".{0,40}(?:\\\(|\\\[|\$|\\[A-Za-z]{2,}).{0,40}", facts["text"])
        problems += [f"{page}: raw TeX in the text: {r!r}" for r in raw[:3]]
        problems += [f"{page}: formula not typeset: {m!r}" for m in facts["untypeset"][:3]]
        problems += [f"{page}: MathJax error: {m!r}" for m in facts["merrors"][:3]]
        problems += [f"{page}: image missing: {i['src']}" for i in facts["images"] if not i["ok"]]
        for link in facts["links"]:
            target = repository_path(link)
            if target is not None:
                launch_targets.setdefault(page, set()).add(target)
                continue
            parsed = urlparse(link)
            if not link.startswith(server):
                continue
            path = HTML / unquote(parsed.path.lstrip("/"))
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                problems.append(f"{page}: broken link {link}")
            elif parsed.fragment and path.suffix == ".html" and not anchor_exists(path, unquote(parsed.fragment)):
                problems.append(f"{page}: link to a missing anchor {link}")
        layout = [f"{page}: wider than the text column at 1280 px: {w!r}" for w in facts["wide"]]
        layout += [f"{page}: warning or error text in an output: {e!r}" for e in facts["stderr"]]
        layout += [f"{page}: a count printed in scientific notation: {c!r}"  # e.g. 40 shown as 4.000e+01
                   for c in sorted(set(re.findall(r"(?<![\d.])[1-9]\.0{2,}e\+0[1-9]\b", facts["outputs"])))]
        for fig in facts["figures"]:
            if not fig["caption"] or len(fig["alt"]) < 20:
                layout.append(f"{page}: figure {fig['src']} without a caption or a meaningful alt text")
            if fig["scale"] < MIN_FIGURE_SCALE:
                layout.append(f"{page}: figure {fig['src']} shrunk to {fig['scale']:.2f} of its size")
        if page in LAYOUT_PENDING:
            print("\n".join(f"[browser] pending: {p}" for p in layout))
        else:
            problems += layout
        print(f"[browser] {page}: {facts['maths']} formulas, {len(facts['images'])} images, "
              f"{len(facts['links'])} links, {len(facts['wide'])} elements wider than the text column")
    for page in toc_pages():
        if "kernelspec:" not in (ROOT / f"{page}.md").read_text():
            continue
        targets = launch_targets.get(page, set())
        if len(targets) == 0:
            problems.append(f"{page}: no Colab/Binder launch link")
        for target in targets:
            tracked = subprocess.run(["git", "check-ignore", "-q", target], cwd=ROOT).returncode != 0
            normal = target == posixpath.normpath(target)  # "./book/x.ipynb" is no GitHub path
            if not (normal and target.endswith(".ipynb") and (ROOT / target).is_file() and tracked):
                problems.append(f"{page}: launch link opens {target}, not a notebook in the repository")
    assert not problems, "\n".join(problems)


def sidebar_visible(driver) -> bool:
    return driver.execute_script(
        "const s = document.querySelector('#pst-primary-sidebar, .bd-sidebar-primary');"
        "if (!s) return false; const r = s.getBoundingClientRect(); const st = getComputedStyle(s);"
        "return st.display !== 'none' && st.visibility !== 'hidden'"
        "  && r.width > 50 && r.right > 50 && r.left < innerWidth;"
    )


def click_menu_button(driver) -> None:
    buttons = [b for b in driver.find_elements("css selector", ".primary-toggle") if b.is_displayed()]
    assert buttons, "no visible menu (primary sidebar) button"
    buttons[0].click()
    driver.implicitly_wait(0)
    driver.execute_async_script("setTimeout(arguments[arguments.length - 1], 600)")  # let the transition end


def test_menu_button_opens_the_contents_on_a_phone_and_hides_them_on_a_desktop(server, browser):
    url = urljoin(server, "book/intro.html")
    try:
        browser.set_window_size(400, 800)
        load(browser, url)
        assert not sidebar_visible(browser), "phone: the contents are open before the menu button is pressed"
        click_menu_button(browser)
        assert sidebar_visible(browser), "phone: the menu button does not open the contents"
        browser.set_window_size(1280, 900)
        load(browser, url)
        assert sidebar_visible(browser), "desktop: the contents are not shown"
        click_menu_button(browser)
        assert not sidebar_visible(browser), "desktop: the menu button does not hide the contents"
    finally:
        browser.set_window_size(1280, 900)


def test_screenshots(server, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for page in SCREENSHOT_PAGES:
        load(browser, urljoin(server, f"{page}.html"))
        out = SCREENSHOTS / f"{page.replace('/', '_')}.png"
        assert browser.save_screenshot(str(out)) and out.stat().st_size > 10_000, out
        print(f"[browser] screenshot {out}")


CORNER_ALPHAS = """
return [...document.querySelectorAll('main .cell_output img')].map(img => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const w = c.width - 1, h = c.height - 1;
  return {src: img.getAttribute('src'), theme: document.documentElement.dataset.theme,
          alpha: Math.min(...[[0, 0], [w, 0], [0, h], [w, h]].map(([x, y]) => ctx.getImageData(x, y, 1, 1).data[3]))};
});
"""


def test_figures_stay_readable_in_dark_mode(server, browser):
    """Figures keep an opaque light background in dark mode (dark axes on a transparent PNG vanish)."""
    load(browser, urljoin(server, "index.html"))
    browser.execute_script("localStorage.setItem('mode', 'dark'); localStorage.setItem('theme', 'dark');")
    seen = 0
    try:
        for page in toc_pages():
            load(browser, urljoin(server, f"{page}.html"))
            for fig in browser.execute_script(CORNER_ALPHAS):
                seen += 1
                assert fig["theme"] == "dark", page
                assert fig["alpha"] == 255, f"{page}: figure {fig['src']} has a transparent background"
    finally:
        browser.execute_script("localStorage.clear();")
    print(f"[browser] {seen} figures checked in dark mode")
    assert seen > 0, "no figure in the book: was it built with its chapters executed?"
