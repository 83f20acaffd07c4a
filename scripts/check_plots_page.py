"""Does the offline `dvc plots show` page really draw its plots? Headless Chromium, no network.

    apt-get install -y chromium             # Debian's; CI has none, so this is a script
    .venv/bin/python scripts/check_plots_page.py [--out-dir .bench/plots_page]

Copies this repository's dvc.yaml (and params, and the plot templates in .dvc/plots/) into a
throwaway git+DVC repository with every plot file that is in the workspace; a declared plot file
that is not gets a small made-up curve with the columns dvc.yaml names (a JSON table: two series
of five steps), and the output says which. There it writes the template (bertfit.plots_page),
runs `dvc plots show --html-template`, and opens the page in Chromium inside a network namespace
of its own (`unshare -n`; where that is refused, every host name resolves to nothing) with a net
log. It fails unless every plot's <div> holds a drawn <canvas> or <svg> after the scripts ran,
no http(s) request was made, the console shows no error and the screenshot is not blank; and
(issue 34) unless every plot has a title of its own and draws more than one point (at least two
values of its x among the rows that have its y).
Writes to --out-dir: dvc_plots/index.html, dom.html, screenshot.png, netlog.json, check.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from PIL import Image

from bertfit.plots_page import write_html_template

ROOT = Path(__file__).resolve().parent.parent
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # belt and braces beside the namespace: no name resolves, no proxy is reachable
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=15000",  # let the scripts (and vega's async rendering) finish
]


def declared_plots(dvc_yaml: dict) -> dict[str, list[str]]:
    """Each plot file dvc.yaml declares (stage plots, top-level plots) -> the columns it names."""
    files: dict[str, list[str]] = {}

    def add(path: str, props: dict) -> None:
        columns = files.setdefault(path, [])
        for axis in ("x", "y"):
            value = props.get(axis)
            names = value if isinstance(value, list) else [value] if isinstance(value, str) else []
            columns += [n for n in names if n not in columns]

    for stage in dvc_yaml.get("stages", {}).values():
        for entry in stage.get("plots", []):
            for path, props in entry.items() if isinstance(entry, dict) else [(entry, {})]:
                add(path, props or {})
    for entry in dvc_yaml.get("plots", []):  # top level: {id: {x: .., y: {file: [cols]}}}
        for key, props in entry.items() if isinstance(entry, dict) else [(entry, {})]:
            props = props or {}
            y = props.get("y")
            if isinstance(y, dict):
                for path, cols in y.items():
                    x = props.get("x")
                    add(path, {"x": x if isinstance(x, str) else None, "y": cols})
            else:
                add(key, props)
    return files


def fixture_json(columns: list[str]) -> str:
    """A made-up long table as the training curves are (training.live): two series of five
    steps, the first column the step, losses falling, scores rising, the third step kept."""
    columns = columns or ["step", "value"]
    rows = []
    for series in ("a", "b"):
        for i in range(1, 6):
            row: dict = {columns[0]: i, "series": series, "kept": int(i == 3)}
            for c in columns[1:]:
                row[c] = round(1.0 / i if "loss" in c else 0.5 + 0.08 * i, 4)
            rows.append(row)
    return json.dumps({"rows": rows}, indent=2)


def fixture_csv(columns: list[str]) -> str:
    """Five rows of a made-up curve: the first column counts 1..5, losses fall, scores rise."""
    columns = columns or ["step", "value"]
    rows = [",".join(columns)]
    for i in range(1, 6):
        values = [str(i)] + [
            f"{(1.0 / i if 'loss' in c else 0.5 + 0.08 * i):.4f}" for c in columns[1:]
        ]
        rows.append(",".join(values))
    return "\n".join(rows) + "\n"


def throwaway_repo(repo: Path, tmp: Path) -> tuple[Path, list[str], list[str]]:
    """A git+DVC copy of repo's pipeline file and plot files; returns it, real and made-up files."""
    copy = tmp / "repo"
    copy.mkdir()
    for name in ("dvc.yaml", "params.yaml", "tasks.yaml"):
        if (repo / name).is_file():
            shutil.copy(repo / name, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run([dvc(), "init", "-q"], cwd=copy, check=True)
    if (repo / ".dvc" / "plots").is_dir():  # the plots' own templates (bertfit_lines, ...)
        shutil.copytree(repo / ".dvc" / "plots", copy / ".dvc" / "plots")
    real, made_up = [], []
    plots = declared_plots(yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8")))
    # deepest first: a folder plot whose curves are missing (a clone without DVC's cache: the
    # curves are cached outputs) is then already a folder of made-up files named by other plots
    for path, columns in sorted(plots.items(), key=lambda item: -item[0].count("/")):
        target = copy / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            made_up.append(path)
        elif (repo / path).is_file():
            shutil.copy(repo / path, target)
            real.append(path)
        elif (repo / path).is_dir():  # a folder of curves (DVCLive's per-task validation)
            shutil.copytree(repo / path, target, dirs_exist_ok=True)
            real.append(path)
        elif not target.suffix:  # a missing folder plot: one made-up curve in it
            target.mkdir(parents=True, exist_ok=True)
            (target / "made_up.tsv").write_text(fixture_csv(columns).replace(",", "\t"))
            made_up.append(path)
        elif path.endswith(".json"):
            target.write_text(fixture_json(columns))
            made_up.append(path)
        else:
            text = fixture_csv(columns)  # DVCLive's curves are tab-separated
            target.write_text(text.replace(",", "\t") if path.endswith(".tsv") else text)
            made_up.append(path)
    return copy, real, made_up


def dvc() -> str:
    """The dvc beside this Python (the project's virtual environment), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else "dvc"


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("no Chromium here: apt-get install -y chromium, then run this again")


def offline_prefix() -> list[str]:
    """`unshare -n`: a network namespace with only a loopback that is down, where it is allowed."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    print("unshare -n is not allowed here: offline by host-resolver rules alone")
    return []


def run_browser(args: list[str], profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    command = [*offline_prefix(), browser(), *BROWSER_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)


def requested_urls(netlog: Path) -> dict[str, list[str]]:
    """The http(s) URLs in Chromium's net log: what the page asked for, and what the browser did
    on its own (its updater and clock: initiator "not an origin"; they fail offline, no matter)."""
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls: dict[str, set[str]] = {"page": set(), "browser": set()}
    for event in log["events"]:
        params = event.get("params") or {}
        url = params.get("url", "")
        if event["type"] == start_job and url.startswith(("http://", "https://")):
            by_browser = params.get("initiator") == "not an origin"
            urls["browser" if by_browser else "page"].add(url.split("?", 1)[0])
    return {k: sorted(v) for k, v in urls.items()}


def drawn_plots(dom: str, ids: list[str]) -> dict[str, str]:
    """Plot id -> what its div holds after the scripts ran: `canvas WxH`, `svg`, or why not."""
    found = {}
    for i, plot_id in enumerate(ids):
        start = dom.find(f'<div id="{plot_id}"')
        end = dom.find(f'<div id="{ids[i + 1]}"') if i + 1 < len(ids) else len(dom)
        part = dom[start:end] if start >= 0 else ""
        canvas = re.search(r'<canvas width="(\d+)" height="(\d+)"', part)
        if canvas and int(canvas[1]) > 0 and int(canvas[2]) > 0:
            found[plot_id] = f"canvas {canvas[1]}x{canvas[2]}"
        elif re.search(r'<svg[^>]*class="marks"', part):
            found[plot_id] = "svg"
        else:
            found[plot_id] = "NOT DRAWN" if start >= 0 else "NO DIV"
    return found


def plot_specs(html: str, ids: list[str]) -> dict[str, dict]:
    """Plot id -> the Vega-Lite spec dvc-render wrote into its <div> (`var spec = {...};`)."""
    specs = {}
    for i, plot_id in enumerate(ids):
        start = html.find(f'<div id = "{plot_id}">')
        end = html.find(f'<div id = "{ids[i + 1]}">') if i + 1 < len(ids) else len(html)
        found = re.search(r"var spec = (\{.*?\});\s*vegaEmbed", html[start:end], re.S)
        specs[plot_id] = json.loads(found[1]) if found else {}
    return specs


def title_of(spec: dict) -> str:
    title = spec.get("title", "")
    return (title.get("text", "") if isinstance(title, dict) else title) or ""


def encoded_field(spec: object, channel: str) -> str | None:
    """The first field the spec (or a layer of it) encodes on `channel`."""
    if isinstance(spec, dict):
        encoding = spec.get("encoding", {})
        if isinstance(encoding.get(channel), dict) and isinstance(
            encoding[channel].get("field"), str
        ):
            return encoding[channel]["field"]
        for value in spec.values():
            if isinstance(value, dict | list) and (found := encoded_field(value, channel)):
                return found
    elif isinstance(spec, list):
        for value in spec:
            if found := encoded_field(value, channel):
                return found
    return None


def points_drawn(spec: dict) -> int:
    """How many values of x the plot's rows have where they have its y: one is a single dot."""
    rows = (spec.get("data") or {}).get("values") or []
    x, y = encoded_field(spec, "x"), encoded_field(spec, "y")
    if not rows or x is None:
        return 0
    return len({str(r.get(x)) for r in rows if y is None or r.get(y) not in (None, "")})


def ink_share(png: Path) -> float:
    """The share of the screenshot's pixels that are not white."""
    image = Image.open(png).convert("L")
    histogram = image.histogram()
    return 1.0 - sum(histogram[250:]) / (image.width * image.height)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the project (default: this one)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / ".bench" / "plots_page")
    args = parser.parse_args(argv)
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        copy, real, made_up = throwaway_repo(args.repo.resolve(), tmp)
        template = write_html_template(tmp / "template.html")
        shutil.rmtree(out / "dvc_plots", ignore_errors=True)
        subprocess.run(
            [dvc(), "plots", "show", "--html-template", template, "-o", out / "dvc_plots"],
            cwd=copy,
            check=True,
            capture_output=True,
        )
        page = out / "dvc_plots" / "index.html"
        html = page.read_text(encoding="utf-8")
        ids = re.findall(r'<div id = "([^"]+)">', html)
        dumped = run_browser(
            [f"--log-net-log={out / 'netlog.json'}", "--dump-dom", page.as_uri()], tmp / "p1"
        )
        (out / "dom.html").write_text(dumped.stdout, encoding="utf-8")
        # two plots a row at 1000 px
        screenshot, size = out / "screenshot.png", f"1000,{200 + 300 * len(ids)}"
        shot = run_browser(
            [f"--screenshot={screenshot}", f"--window-size={size}", page.as_uri()], tmp / "p2"
        )

    console = [
        line
        for line in (dumped.stderr + shot.stderr).splitlines()
        if "CONSOLE" in line or (":ERROR:" in line and "dbus" not in line.lower())
    ]
    specs = plot_specs(html, ids)
    titles = {plot_id: title_of(spec) for plot_id, spec in specs.items()}
    result = {
        "page": str(page),
        "titles": titles,
        "points": {plot_id: points_drawn(spec) for plot_id, spec in specs.items()},
        "screenshot": str(out / "screenshot.png"),
        "plots": drawn_plots(dumped.stdout, ids),
        "real_plot_files": real,
        "made_up_plot_files": made_up,
        "cdn_script_tags": re.findall(r"<script[^>]*\bsrc=[^>]*>", html),
        "http_requests": requested_urls(out / "netlog.json"),  # none may come from the page
        "console": console,
        "screenshot_ink_share": round(ink_share(out / "screenshot.png"), 4),
    }
    (out / "check.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    problems = [f"{k}: {v}" for k, v in result["plots"].items() if not v.startswith(("c", "s"))]
    problems += [f"script tag {t}" for t in result["cdn_script_tags"]]
    problems += [f"the page requested {u}" for u in result["http_requests"]["page"]]
    # the word error (a console error, an uncaught exception), not a field such as error_rate
    problems += [f"console {line}" for line in console if re.search(r"\berror\b", line, re.I)]
    if not ids:
        problems.append("the page has no plots")
    for plot_id, title in titles.items():
        if not title or list(titles.values()).count(title) > 1:
            problems.append(f"{plot_id}: its title {title!r} is not its own")
    for plot_id, count in result["points"].items():
        if count < 2:
            problems.append(f"{plot_id}: draws {count} point(s), not a curve")
    if result["screenshot_ink_share"] < 0.01:
        problems.append("the screenshot is blank")
    if problems:
        sys.exit("plots page check FAILED:\n  " + "\n  ".join(problems))
    print(f"plots page check passed: {len(ids)} plots drawn offline; look at {screenshot}")


if __name__ == "__main__":
    main()
