"""Every page of the built book in a real browser (headless Chromium): it renders, its images
load, and the console shows no errors. Skipped where Chromium is not installed."""
import json
import re
import shutil
import subprocess

import pytest

from ds.study.layout import CHAPTERS

pytestmark = pytest.mark.slow

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

# Injected first in <head>: records console errors, uncaught errors and failed resource loads, and
# after the load event writes them, with every <img>'s state, into an attribute --dump-dom shows.
PROBE = """<script>
(function () {
  var errors = [];
  var original = console.error;
  console.error = function () { errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
  window.addEventListener("error", function (e) {
    var t = e.target;
    errors.push(t && t !== window ? "failed to load " + (t.src || t.href) : "uncaught: " + e.message);
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("unhandled rejection: " + e.reason); });
  window.addEventListener("load", function () {
    setTimeout(function () {
      var images = Array.prototype.map.call(document.images, function (img) {
        return {src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0};
      });
      var text = (document.querySelector("main") || document.body).innerText || "";
      document.documentElement.setAttribute("data-probe", JSON.stringify(
        {errors: errors, images: images, text_length: text.trim().length, title: document.title}));
    }, 500);
  });
})();
</script>"""


def _probe(page):
    html = page.read_text()
    page.write_text(re.sub(r"<head>", "<head>" + PROBE, html, count=1))
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    match = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert match, f"{page.name}: the page did not finish loading\n{done.stderr[-2000:]}"
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                       .replace("&gt;", ">"))
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line and ":ERROR:" in line]
    return probe, console


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (apt-get install chromium)")
def test_every_page_renders_with_images_and_no_console_errors(tiny_study, tmp_path):
    html = tmp_path / "html"
    shutil.copytree(tiny_study / "book" / "_build" / "html", html)
    pages = ["intro.html", "results.html", "reproduce.html", "adapt.html", "deviations.html"] + \
            [f"chapters/{c}.html" for c in CHAPTERS]
    for name in pages:
        probe, console = _probe(html / name)
        assert probe["text_length"] > 200, f"{name} rendered almost no text"
        assert not probe["errors"] and not console, f"{name}: {probe['errors']} {console}"
        broken = [i["src"] for i in probe["images"] if not i["ok"]]
        assert not broken, f"{name}: images that did not load: {broken}"
        if name.startswith("chapters/") or name == "intro.html":
            assert probe["images"], f"{name} shows no image"
