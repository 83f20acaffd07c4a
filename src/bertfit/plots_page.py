"""An HTML template for `dvc plots show` that works offline: vega, vega-lite and vega-embed inlined.

DVC's own page (dvc-render's PAGE_HTML) loads the three libraries from a CDN, so offline it is
blank. dvc-render 1.0.2 fills a template's `{plot_divs}` with one `<div>` per plot, each an inline
script calling `vegaEmbed('#id', spec)` on a Vega-Lite v5 spec, and its `{scripts}` with the CDN
`<script src>` tags. This template has no `{scripts}`, so those tags are never written, and carries
the libraries' own builds instead, read from the pinned PyPI wheel django-js-lib-vega-embed
(vega 5.33.0, vega-lite 5.23.0, vega-embed 6.29.0: the majors DVC emits for). The wheel is found
with importlib.util.find_spec and never imported (it is a Django app), like the data wheels.

    python -m bertfit.plots_page dvc_plots/template.html
    dvc plots show --html-template dvc_plots/template.html     # `make plots` does both

The template is generated, never committed (it is ~830 kB of someone else's code).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from bertfit.reporting import write_text

JS_PACKAGE = "js_lib_vega_embed"
# in load order: vega-lite and vega-embed find `vega` (and vega-embed `vegaLite`) as globals
SCRIPTS = ("vega5.js", "vega-lite5.js", "vega-embed6.js")
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>bertfit plots</title>
<!-- vega, vega-lite and vega-embed inlined from the PyPI wheel django-js-lib-vega-embed
     (bertfit.plots_page), so the page renders without network -->
__SCRIPTS__
<script>
// dvc-render writes one `vegaEmbed('#<id>', spec)` per plot, and an empty spec where the plot's
// file is missing: say so there (with the id, the file's path) instead of drawing a blank box
(function () {
  const embed = window.vegaEmbed;
  window.vegaEmbed = function (selector, spec, options) {
    if (spec && Object.keys(spec).length > 0) {
      return embed(selector, spec, options);
    }
    const div = document.querySelector(selector);
    div.className = "no-data";
    div.textContent = selector.slice(1) + ": no data (the plot's file is not in the workspace;"
      + " run dvc repro)";
    return Promise.resolve(null);
  };
})();
</script>
<style>
  body { font-family: sans-serif; margin: 16px; }
  .no-data { color: #777; font-style: italic; margin: 8px 0; }
</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def script_dir() -> Path:
    """The folder of the vega builds inside the installed wheel (not imported)."""
    spec = importlib.util.find_spec(JS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Python package {JS_PACKAGE} (PyPI: django-js-lib-vega-embed, which carries "
            "the vega JavaScript builds) is not installed; run `make install` (or pip install "
            "-c constraints.txt -e .)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static" / JS_PACKAGE


def inline_script(path: Path) -> str:
    """One library as an inline <script>; `</script` inside its code would end the element."""
    code = path.read_text(encoding="utf-8")
    found = [p for p in PLACEHOLDERS if p in code]
    if found:  # dvc-render replaces these strings anywhere in the template
        raise ValueError(f"{path}: contains {found}, which dvc-render would replace")
    code = code.replace("</script", "<\\/script")
    return f"<script>\n{code}\n</script>"


def html_template() -> str:
    """The whole template: the page with the three libraries inlined and `{plot_divs}`."""
    folder = script_dir()
    return PAGE.replace("__SCRIPTS__", "\n".join(inline_script(folder / s) for s in SCRIPTS))


def write_html_template(path: Path) -> Path:
    write_text(path, html_template())
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", type=Path, help="where to write the template")
    args = parser.parse_args(argv)
    print(write_html_template(args.path))


if __name__ == "__main__":
    main()
