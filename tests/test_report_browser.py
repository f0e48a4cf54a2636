"""The HTML report as a reader opens it (issue 11): `snakemake --report` on the smoke study, opened in
headless Chromium (Debian's `chromium`), with every table and figure of the study listed, every
figure decoded by the browser, every result captioned; screenshots are saved under the results
folder for a person to look at. Assertions are on the page's content after its JavaScript ran,
not on pixels.

The report is a single-page React app: a driver script appended to a copy of the page walks it
through the app's own methods (`app.showCategory`, `app.setView`, `app.showResultInfo`) and writes
what it found into the DOM, which `chromium --dump-dom` returns.
"""

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OWN_OUTPUTS = ("ntp_table.csv", "figures/training_curves.png", "figures/refine_curves.png", "differences_table.csv",
               "figures/differences_forest.png")  # fmt: skip

DRIVER = """
<script>
(function () {
  const report = {categories: {}, images: {}, captions: {}, errors: []};
  const navText = () => (document.querySelector("nav") || document.body).innerText;
  const paths = Object.keys(results);
  const steps = [];
  for (const category of Object.keys(categories)) {
    steps.push(() => app.setView({navbarMode: "menu"}));  // back to the menu, as a reader clicks "Results"
    steps.push(() => app.showCategory(category));
    steps.push(() => { report.categories[category] = navText(); });
  }
  for (const path of paths) {
    steps.push(() => app.showResultInfo(path));
    steps.push(() => { report.captions[path] = navText(); });
    if (/\\.(png|svg|jpe?g)$/i.test(path)) {
      steps.push(() => app.setView({content: "img", contentPath: results[path].data_uri, resultPath: path}));
      steps.push(() => {
        const img = [...document.querySelectorAll("img")].find(i => i.src === results[path].data_uri);
        report.images[path] = img ? {width: img.naturalWidth, height: img.naturalHeight, complete: img.complete}
                                  : null;
      });
    }
  }
  const last = paths.find(p => /differences_forest/.test(p));
  if (last) steps.push(() => app.setView({content: "img", contentPath: results[last].data_uri, resultPath: last}));
  let i = 0;
  function next() {
    if (i < steps.length) {
      try { steps[i](); } catch (err) { report.errors.push(String(err)); }
      i += 1;
      setTimeout(next, 150);
      return;
    }
    const pre = document.createElement("pre");
    pre.id = "refine-report-check";
    pre.textContent = JSON.stringify({paths: paths, names: paths.map(p => results[p].name), ...report});
    pre.style.display = "none";
    document.body.appendChild(pre);
  }
  setTimeout(next, 500);
})();
</script>
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("the report test needs Debian's chromium: apt-get install -y chromium (.ci/run installs it)")
    return found


def _browser(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--window-size=1500,1000", "--virtual-time-budget=60000", *args, page.as_uri()]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


@pytest.mark.slow
def test_the_html_report_shows_every_table_and_figure_in_a_browser(smoke_results):
    from refine.eval.suites import SUITES

    results = smoke_results
    chromium = _chromium()
    report = results / "report.html"
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", "--report", str(report),
           "--configfile", "config/smoke.yaml", "--config", f"results_dir={results}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and report.is_file(), done.stderr[-3000:]

    page = results / "report_check.html"
    head, tail = report.read_text(encoding="utf-8").rsplit("</body>", 1)  # the last: scripts hold the string too
    page.write_text(head + DRIVER + "</body>" + tail, encoding="utf-8")
    dom = _browser(chromium, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    match = re.search(r'<pre id="refine-report-check"[^>]*>(.*?)</pre>', dom.stdout, re.S)
    assert match, "the report's JavaScript did not run to the end:\n" + dom.stdout[-2000:]
    found = json.loads(html.unescape(match.group(1)))
    assert found["errors"] == []

    # every table and figure of the study is in the report, and exists
    expected = {*OWN_OUTPUTS, *(out.path for suite in SUITES.values() for out in suite.outputs)}
    shown = {str(Path(p).resolve().relative_to(results.resolve())) for p in found["paths"]}
    assert expected <= shown, f"missing from the report: {sorted(expected - shown)}"
    # ... listed under its category once the reader opens it
    for name in found["names"]:
        assert any(name in text for text in found["categories"].values()), name
    # every figure is decoded by the browser (a broken or empty PNG has no natural size)
    images = found["images"]
    assert {p for p in found["paths"] if p.endswith(".png")} == set(images)
    for path, image in images.items():
        assert image and image["complete"] and image["width"] > 200 and image["height"] > 100, (path, image)
    # every result has a caption that says what it shows and how it was made: its text is on the page
    sources = {out.path: out.caption for suite in SUITES.values() for out in suite.outputs}
    for rel, rst in (("ntp_table.csv", "ntp_table"), ("figures/training_curves.png", "training_curves"),
                     ("figures/refine_curves.png", "refine_curves"), ("differences_table.csv", "differences_table"),
                     ("figures/differences_forest.png", "differences_forest")):  # fmt: skip
        sources[rel] = (ROOT / "workflow" / "report" / f"{rst}.rst").read_text(encoding="utf-8")
    for path in found["paths"]:
        rel = str(Path(path).resolve().relative_to(results.resolve()))
        if rel in sources:
            start = _text(sources[rel].replace("``", ""))[:50]
            assert start in _text(found["captions"][path]), (rel, start, found["captions"][path][:400])
    table = next(p for p in found["paths"] if p.endswith("differences_table.csv"))
    assert "paired bootstrap" in _text(found["captions"][table])

    # screenshots for a person: the landing page and the forest plot as the report shows them
    shots = results / "report_screenshots"
    shots.mkdir(exist_ok=True)
    for name, target in (("landing", report), ("differences_forest", page)):
        shot = _browser(chromium, target, f"--screenshot={shots / f'{name}.png'}")
        assert shot.returncode == 0 and (shots / f"{name}.png").stat().st_size > 10_000, shot.stderr[-2000:]
    copy = ROOT / "results" / "report_screenshots"  # beside the repository's results, where a person looks
    copy.mkdir(parents=True, exist_ok=True)
    for png in shots.glob("*.png"):
        shutil.copy(png, copy / png.name)
