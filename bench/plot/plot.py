#!/usr/bin/env python3
"""Draw how margay's scale results grow with N, as SVG line charts.

The numbers are in bench/plot/scale-curves.csv, one row per point:
figure, series, n, n_unit, value, unit and the BENCHMARKS.md section the number
is taken from. Each figure below becomes docs/img/scale-<figure>.svg: one line
per series (margay and its peer), N on a log-scale x axis, the value on a
linear or log y axis, a legend, axis labels with units and a title. A series
may lack some N (its line joins the points it has); a series with no rows is
not drawn, so a new series only needs rows in the CSV.

Python 3 standard library only. Run from the repository's root:

    python3 bench/plot/plot.py                  # regenerates docs/img/*.svg
    python3 bench/plot/plot.py --csv F --out D  # another CSV, another directory
    python3 -m unittest bench/plot/test_plot.py # checks the output and the CSV
"""

import argparse
import csv
import math
import os
import sys
from collections import OrderedDict
from xml.sax.saxutils import escape

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSV = os.path.join(ROOT, "bench", "plot", "scale-curves.csv")
OUT = os.path.join(ROOT, "docs", "img")

# figure name in the CSV -> title and y axis; the series come from the CSV.
FIGURES = {
    "coldstart": dict(title="Mesh cold start: time until converged", what="time", log_y=False),
    "rss": dict(title="Mesh cold start: peak RSS (VmHWM)", what="peak RSS", log_y=False),
    "join": dict(title="Mesh: a node joins, p99 until its block is routed", what="join p99", log_y=True),
    "leave": dict(title="Mesh: a node leaves, p99 until its block is gone", what="leave p99", log_y=False),
    "reflector": dict(title="Route reflector cold start: time until converged", what="time", log_y=True),
    "churn": dict(title="Churn, 20 Node changes/s for 60 s: CPU over the minute", what="CPU over the minute", log_y=False),
    "etcd-fanout": dict(title="etcd's watch fan-out: etcd CPU per Node write", what="CPU per write", log_y=False),
}

WIDTH, HEIGHT = 900, 420
LEFT, RIGHT, TOP, BOTTOM = 80, 540, 50, 360  # the plot area; the legend is right of it
COLOURS = ["#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c", "#5c5f66"]


def read_points(path):
    """{figure: {series: [(n, value)]}} in the CSV's order, and {figure: (n_unit, unit)}."""
    figures, units = OrderedDict(), {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            fig = row["figure"]
            if fig not in FIGURES:
                raise SystemExit(f"{path}: figure {fig!r} has no entry in FIGURES")
            pair = (row["n_unit"], row["unit"])
            if units.setdefault(fig, pair) != pair:
                raise SystemExit(f"{path}: figure {fig!r} mixes units {units[fig]} and {pair}")
            series = figures.setdefault(fig, OrderedDict()).setdefault(row["series"], [])
            series.append((float(row["n"]), float(row["value"])))
    for series in figures.values():
        for points in series.values():
            points.sort()
    return figures, units


def label(v):
    """A tick label: 1000 -> 1,000; 0.5 -> 0.5; 20.0 -> 20."""
    return f"{v:,.0f}" if v == int(v) else f"{v:,.3f}".rstrip("0")


def linear_ticks(top):
    """Ticks from 0 to at least top, ~5 of them on a 1/2/5 step."""
    raw = top / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def log_ticks(lo, hi):
    """1/2/5 ticks per decade covering lo..hi."""
    ticks = []
    for d in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0**d for m in (1, 2, 5)]
    first = max(t for t in ticks if t <= lo)
    last = min(t for t in ticks if t >= hi)
    return [t for t in ticks if first <= t <= last]


def svg(name, series, n_unit, unit):
    """The SVG text of one figure."""
    spec = FIGURES[name]
    ns = sorted({n for pts in series.values() for n, _ in pts})
    values = [v for pts in series.values() for _, v in pts]
    lo_x, hi_x = math.log10(ns[0]), math.log10(ns[-1])
    pad = (hi_x - lo_x) * 0.08 or 0.5
    lo_x, hi_x = lo_x - pad, hi_x + pad
    if spec["log_y"]:
        yt = log_ticks(min(values), max(values))
        fy = lambda v: math.log10(v)  # noqa: E731
    else:
        yt = linear_ticks(max(values) * 1.05)
        fy = lambda v: v  # noqa: E731
    lo_y, hi_y = fy(yt[0]), fy(yt[-1])

    def px(n):
        return LEFT + (math.log10(n) - lo_x) / (hi_x - lo_x) * (RIGHT - LEFT)

    def py(v):
        return BOTTOM - (fy(v) - lo_y) / (hi_y - lo_y) * (BOTTOM - TOP)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(spec['title'])}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{(LEFT + RIGHT) / 2}" y="28" text-anchor="middle" font-size="15" '
        f'font-weight="bold">{escape(spec["title"])}</text>',
    ]
    for t in yt:  # horizontal grid and y labels
        y = py(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label(t)}</text>')
    for n in ns:  # vertical grid at each measured N, and x labels
        x = px(n)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{BOTTOM}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{x:.1f}" y="{BOTTOM + 18}" text-anchor="middle">{label(n)}</text>')
    out.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" height="{BOTTOM - TOP}" '
        'fill="none" stroke="#444"/>'
    )
    scale = "log scale" if spec["log_y"] else ""
    y_title = f"{spec['what']} ({unit}{', ' + scale if scale else ''})"
    out.append(
        f'<text x="{LEFT + (RIGHT - LEFT) / 2}" y="{BOTTOM + 42}" text-anchor="middle">'
        f"N ({escape(n_unit)}, log scale)</text>"
    )
    mid = (TOP + BOTTOM) / 2
    out.append(
        f'<text x="22" y="{mid}" text-anchor="middle" transform="rotate(-90 22 {mid})">'
        f"{escape(y_title)}</text>"
    )
    for i, (name_, pts) in enumerate(series.items()):  # one polyline per series
        colour = COLOURS[i % len(COLOURS)]
        dash = "" if i % 2 == 0 else ' stroke-dasharray="6 4"'
        coords = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in pts)
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2.5"{dash}/>'
        )
        # a lone point (its polyline draws nothing) gets a larger ring, seen over other points
        mark = (
            f'r="7" fill="none" stroke="{colour}" stroke-width="2.5"'
            if len(pts) == 1
            else f'r="4" fill="{colour}"'
        )
        for n, v in pts:
            out.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" {mark}/>')
        ly = TOP + 10 + i * 22  # legend entry
        if len(pts) > 1:
            out.append(
                f'<line x1="{RIGHT + 16}" y1="{ly}" x2="{RIGHT + 46}" y2="{ly}" stroke="{colour}" '
                f'stroke-width="2.5"{dash}/>'
            )
        out.append(f'<circle cx="{RIGHT + 31}" cy="{ly}" {mark}/>')
        out.append(f'<text x="{RIGHT + 54}" y="{ly + 4}">{escape(name_)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=CSV, help="the points (default: %(default)s)")
    parser.add_argument("--out", default=OUT, help="where the SVGs go (default: %(default)s)")
    args = parser.parse_args(argv)
    figures, units = read_points(args.csv)
    os.makedirs(args.out, exist_ok=True)
    for name, series in figures.items():
        path = os.path.join(args.out, f"scale-{name}.svg")
        with open(path, "w", encoding="utf-8") as f:
            f.write(svg(name, series, *units[name]))
        print(path)


if __name__ == "__main__":
    sys.exit(main())
