"""`report`: the HTML page of a real `score --method cascade` run (tiny models), opened in headless Chromium."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from conftest import make_image

PLOTS = {"histogram", "stages", "roc", "confusion", "per_source"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real cascade run over 10 images and one broken file, with a labels manifest for them."""
    pytest.importorskip("torch")
    from semgir_engine.cli import main

    d = tmp_path_factory.mktemp("report")
    imgs = d / "imgs"
    imgs.mkdir()
    rows = []
    for i in range(10):
        name = f"{'ai' if i % 2 else 'real'}{i}.png"
        make_image(i, size=(56 + 4 * i, 52)).save(imgs / name)
        rows.append({"path": f"imgs/{name}", "label": "ai" if i % 2 else "real", "source": "set_a" if i < 6 else "set_b"})
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    rows.append({"path": "imgs/broken.jpg", "label": "real", "source": "set_b"})
    with open(d / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "source"])
        w.writeheader()
        w.writerows(rows)
    out = d / "results.jsonl"
    res = CliRunner().invoke(main, ["score", str(imgs), "--method", "cascade", "--models", "tiny", "--cascade-band",
                                    "0,1", "--max-regen-fraction", "0.5", "--out", str(out), "--no-progress",
                                    "--save-regenerations", str(d / "regen")])
    assert res.exit_code == 3, res.output  # one input failed
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["stage"] == "semgir" for r in results) == 5  # the budget: half of the 10 decodable images
    return d, out, results


def test_report_has_every_row_plot_and_image(run):
    from semgir_engine.report import build_report

    d, out, results = run
    s = build_report(out, d / "report.html", labels=d / "labels.csv")
    assert s.rows == len(results) == 11
    assert set(s.plots) == PLOTS
    n_regen = sum(r["regeneration"] is not None for r in results)
    assert s.embedded_images == 10 + n_regen  # every decodable candidate plus every regeneration
    html = (d / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    data = json.loads(html.split('<script id="rows-data" type="application/json">')[1].split("</script>")[0])
    assert {r["path"] for r in data} == {r["path"] for r in results}
    assert all(r["truth"] for r in data)


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI (scripts/install.sh installs the Debian package)")
        pytest.skip("no chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    return exe, sync_api


def _open(path, fn):
    """Open a report in headless Chromium, call ``fn(page)``, return (its result, console errors)."""
    exe, sync_api = _chromium()
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.resolve().as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            return fn(page), errors
        finally:
            browser.close()


def test_browser_shows_every_row_image_and_plot(run):
    from semgir_engine.report import build_report

    d, out, results = run
    build_report(out, d / "browser.html", labels=d / "labels.csv")
    n_regen = sum(r["regeneration"] is not None for r in results)

    def check(page):
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        got = page.evaluate("""() => ({
            rows: document.querySelectorAll('#rows-body tr.row').length,
            cand: Array.from(document.querySelectorAll('img[data-kind=candidate]')).filter(i => i.naturalWidth > 0).length,
            regen: Array.from(document.querySelectorAll('img[data-kind=regeneration]')).filter(i => i.naturalWidth > 0).length,
            plots: Array.from(document.querySelectorAll('img.plot')).filter(i => i.naturalWidth > 0).map(i => i.dataset.plot),
            broken: Array.from(document.images).filter(i => i.naturalWidth === 0).length,
            info: document.getElementById('page-info').textContent,
        })""")
        page.select_option("#f-verdict", "error")
        got["errors_shown"] = page.locator("#rows-body tr.row").count()
        page.select_option("#f-verdict", "")
        page.select_option("#f-stage", "semgir")
        got["semgir_shown"] = page.locator("#rows-body tr.row").count()
        page.select_option("#f-stage", "")
        page.click("th[data-key=p_ai]")
        got["sorted"] = page.evaluate(
            "() => Array.from(document.querySelectorAll('#rows-body tr.row td:nth-child(4)')).map(t => t.textContent)")
        page.fill("#f-text", "broken")
        got["search"] = page.locator("#rows-body tr.row").count()
        return got

    got, errors = _open(d / "browser.html", check)
    assert errors == []
    assert got["rows"] == 11 and got["info"].startswith("rows 1-11 of 11")
    assert got["cand"] == 10 and got["regen"] == n_regen and got["broken"] == 0
    assert set(got["plots"]) == PLOTS
    assert got["errors_shown"] == 1 and got["semgir_shown"] == n_regen and got["search"] == 1
    scores = [float(v) for v in got["sorted"] if v]
    assert scores == sorted(scores) and len(scores) == 10


def test_browser_paginates_10000_rows(run, tmp_path):
    """A 10,000-row report (the run's rows repeated under distinct names) renders one page at a time."""
    from semgir_engine.report import build_report

    _, out, results = run
    big = tmp_path / "big.jsonl"
    with open(big, "w") as fh:
        for k in range(10_000):
            r = dict(results[k % len(results)], path=f"{results[k % len(results)]['path']}#{k}")
            fh.write(json.dumps(r) + "\n")
    s = build_report(big, tmp_path / "big.html", embed_limit=50)
    assert s.rows == 10_000 and s.bytes < 20e6

    def check(page):
        first = page.locator("#rows-body tr.row").count()
        info = page.text_content("#page-info")
        page.click("#next")
        second = page.text_content("#page-info")
        page.select_option("#f-verdict", "error")
        errors = page.text_content("#page-info")
        return first, info, second, errors

    (first, info, second, errors), console = _open(tmp_path / "big.html", check)
    assert console == []
    assert first == 100 and info.startswith("rows 1-100 of 10000 (page 1/100)")
    assert second.startswith("rows 101-200 of 10000")
    n_err = sum(1 for k in range(10_000) if results[k % len(results)]["error"])
    assert errors.startswith(f"rows 1-100 of {n_err}")
