"""The offline template for `dvc plots show` (bertfit.plots_page): the vega scripts inlined, no CDN.

That a browser really draws the page is scripts/check_plots_page.py (it needs Chromium), and
test_the_page_renders_in_chromium here when Chromium is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc_render.html import render_html
from dvc_render.vega import VegaRenderer

from bertfit.plots_page import SCRIPTS, html_template, script_dir, write_html_template
from scripts import check_plots_page
from tests.conftest import PROJECT_ROOT


def test_the_template_inlines_the_three_libraries_and_has_the_plots_placeholder() -> None:
    page = html_template()
    assert page.count("{plot_divs}") == 1
    assert "{scripts}" not in page  # where dvc-render would put its CDN <script src> tags
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "cdn.jsdelivr" not in page
    for name in SCRIPTS:  # each library's code, whole
        code = (script_dir() / name).read_text(encoding="utf-8")
        assert len(code) > 10_000 and code.replace("</script", "<\\/script") in page
    # the majors dvc-render 1.0.2 emits specs for (Vega-Lite v5) and calls (vegaEmbed 6)
    assert 'var n="5.' in (script_dir() / "vega-lite5.js").read_text(encoding="utf-8")[:2000]


def test_dvc_render_fills_the_template_without_a_cdn(tmp_path: Path) -> None:
    template = write_html_template(tmp_path / "template.html")
    points = [{"step": s, "loss": 1.0 / s} for s in range(1, 5)]
    renderer = VegaRenderer(points, "reports/x/loss.csv", template="linear", x="step", y="loss")
    out = render_html([renderer], tmp_path / "page" / "index.html", html_template=template)
    page = Path(out).read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in page and "{plot_divs}" not in page
    assert "vegaEmbed('#reports_x_loss_csv'" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)


def test_every_plot_has_a_title_of_its_own_and_more_than_one_point(tmp_path: Path) -> None:
    """dvc.yaml's plots as `dvc plots show` builds them (issue 34): no two share a title, none is
    a single dot, and each training chart draws a line per series of its long table."""
    copy, _, _ = check_plots_page.throwaway_repo(PROJECT_ROOT, tmp_path)
    template = write_html_template(tmp_path / "template.html")
    out = tmp_path / "page"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dvc",
            "plots",
            "show",
            "--html-template",
            str(template),
            "-o",
            str(out),
        ],
        cwd=copy,
        check=True,
        capture_output=True,
    )
    html = (out / "index.html").read_text(encoding="utf-8")
    ids = re.findall(r'<div id = "([^"]+)">', html)
    specs = check_plots_page.plot_specs(html, ids)
    titles = [check_plots_page.title_of(spec) for spec in specs.values()]
    assert len(ids) >= 10 and all(titles) and len(set(titles)) == len(titles), titles
    points = {i: check_plots_page.points_drawn(spec) for i, spec in specs.items()}
    assert min(points.values()) >= 2, points
    stages = ("pretrain:", "multitask:", "finetune:")
    curves = [s for s in specs.values() if check_plots_page.title_of(s).startswith(stages)]
    assert len(curves) == len(specs) - 1 and all(  # all but evaluate's confusion matrix
        check_plots_page.encoded_field(spec, "color") == "series" for spec in curves
    )


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get)")
def test_the_page_renders_in_chromium(tmp_path: Path) -> None:
    """The browser check (scripts/check_plots_page.py) on this repository's plots."""
    done = subprocess.run(
        [sys.executable, "scripts/check_plots_page.py", "--out-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
