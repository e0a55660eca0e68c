"""report.html in a real browser (headless Chromium): not blank, every image loads (the plan's
plots too), no raw Markdown left, and links relative to where the files are."""

from __future__ import annotations

import html as html_mod
import re
import shutil
import subprocess

import pytest

from lcprof.explain.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROBE = ("<script>addEventListener('load',()=>{document.body.setAttribute('data-images',"
         "[...document.images].map(i=>(i.complete&&i.naturalWidth>0)?'1':'0').join(''));"
         # tables wider than their box (they would scroll sideways): index and first column name
         "document.body.setAttribute('data-wide',[...document.querySelectorAll('table')].map((t,i)=>"
         "t.scrollWidth>t.clientWidth+1?i+':'+t.querySelector('th').textContent:'').filter(x=>x).join(';'))"
         "})</script>")


def _plan(tmp_path, data_dir):
    """A plan folder as `lcprof plan --report` writes it: README.md linking its PNG and JSON."""
    plan = tmp_path / "run" / "plan"
    plan.mkdir(parents=True)
    shutil.copy(data_dir.parent.parent / "reports" / "cpu-2026-11-23" / "plan" / "concurrency_vs_context.png",
                plan / "concurrency_vs_context.png")
    (plan / "plan.json").write_text("[]")
    (plan / "README.md").write_text(
        "# Capacity plan: phi3 on 1x h100-sxm\n\nRaw records: [plan.json](plan.json).\n\n## Headline\n\n"
        "- **bf16 KV**: one replica holds 42 concurrent 4k requests.\n\n| field | bf16 |\n|---|---|\n| gpus | 1 |\n\n"
        "![concurrency vs context](concurrency_vs_context.png)\n")
    return plan / "README.md"


def test_report_links_are_relative_to_the_report(data_dir, tmp_path):
    plan = _plan(tmp_path, data_dir)
    rep = build_report(data_dir / "phi3-cpu-small.csv", tmp_path / "run" / "report", plan=plan, target=None)
    md = rep.markdown_path.read_text()
    assert "![concurrency vs context](../plan/concurrency_vs_context.png)" in md
    assert "[plan.json](../plan/plan.json)" in md
    assert "#### Headline" in md  # the plan's headings sit under the report's "Capacity plan"
    for link in re.findall(r"\]\(([^)]+)\)", md):
        if not link.startswith(("http", "#")):
            assert (rep.out_dir / link).exists(), link


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium; .ci/run installs it)")
def test_report_html_renders_in_headless_chromium(data_dir, tmp_path):
    plan = _plan(tmp_path, data_dir)
    out = tmp_path / "run"
    prof = tmp_path / "cpu.json"
    prof.write_text('{"key": "cpu", "name": "Toy CPU", "peak_flops_per_s": {"fp32": 1.5e11}, '
                    '"hbm_bytes_per_s": 3e10, "memory_bytes": 17179869184}')
    rep = build_report(data_dir / "phi3-cpu-small.csv", out, calibration=prof, plan=plan)
    page = rep.html_path.read_text()
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--virtual-time-budget=10000", "--window-size=1280,2000"]
    dom = subprocess.run(cmd + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180).stdout
    n_img = page.count("<img")
    assert n_img == 6  # time, share, local exponent, ratio, KV, and the plan's plot
    flags = re.search(r'data-images="([01]*)"', dom)
    assert flags and flags.group(1) == "1" * n_img, "an image did not load"
    wide = re.search(r'data-wide="([^"]*)"', dom)
    assert wide and wide.group(1) == "", f"tables wider than the page: {wide and wide.group(1)}"
    text = html_mod.unescape(re.sub(r"<script.*?</script>|<style.*?</style>", "", dom, flags=re.S))
    text = re.sub(r"<[^>]+>", " ", text)
    assert len(text.split()) > 500  # not blank
    for marker in ("|---", "## ", "**", "![", "```", "](", "| --"):
        assert marker not in text, f"raw Markdown {marker!r} in the rendered page"
    assert "<table>" in dom and "<h2" in dom and "Capacity plan" in text and "42 concurrent 4k requests" in text
    shot = tmp_path / "report.png"
    subprocess.run(cmd + [f"--screenshot={shot}", probe.as_uri()], capture_output=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 20000
