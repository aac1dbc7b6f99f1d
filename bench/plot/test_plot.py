"""Checks of bench/plot/plot.py and its CSV: `python3 -m unittest bench/plot/test_plot.py`.

The script is run into a temporary directory; every SVG must parse and hold one
polyline per series of its figure. Every number in the CSV must appear in the
BENCHMARKS.md section the CSV names for it.
"""

import csv
import os
import re
import subprocess
import sys
import tempfile
import unittest
import xml.dom.minidom
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "plot.py")
CSV = os.path.join(HERE, "scale-curves.csv")


def rows(path=CSV):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def series_per_figure(path=CSV):
    figures = defaultdict(set)
    for row in rows(path):
        figures[row["figure"]].add(row["series"])
    return figures


def run(out, csv_path=CSV):
    subprocess.run(
        [sys.executable, SCRIPT, "--csv", csv_path, "--out", out],
        check=True, capture_output=True, text=True,
    )


def polylines(path):
    return xml.dom.minidom.parse(path).getElementsByTagName("polyline")


class PlotTest(unittest.TestCase):
    def test_every_figure_parses_with_one_polyline_per_series(self):
        with tempfile.TemporaryDirectory() as out:
            run(out)
            figures = series_per_figure()
            self.assertEqual(
                sorted(os.listdir(out)), sorted(f"scale-{f}.svg" for f in figures)
            )
            for fig, series in figures.items():
                with self.subTest(figure=fig):
                    self.assertEqual(len(polylines(os.path.join(out, f"scale-{fig}.svg"))), len(series))

    def test_a_series_with_missing_points_is_drawn_with_the_points_it_has(self):
        with tempfile.TemporaryDirectory() as out:
            extended = os.path.join(out, "extended.csv")
            with open(CSV, encoding="utf-8") as src, open(extended, "w", encoding="utf-8") as dst:
                dst.write(src.read())
                # made-up values: they only exercise the drawing, not BENCHMARKS.md
                dst.write("etcd-fanout,a partial series,200,watchers,2,ms,test\n")
                dst.write("etcd-fanout,a partial series,2000,watchers,3,ms,test\n")
            before = len(series_per_figure()["etcd-fanout"])
            run(out, extended)
            lines = polylines(os.path.join(out, "scale-etcd-fanout.svg"))
            self.assertEqual(len(lines), before + 1)
            self.assertEqual(len(lines[-1].getAttribute("points").split()), 2)

    def test_every_number_is_in_the_section_it_cites(self):
        with open(os.path.join(ROOT, "BENCHMARKS.md"), encoding="utf-8") as f:
            text = f.read().splitlines()
        for row in rows():
            with self.subTest(figure=row["figure"], series=row["series"], n=row["n"]):
                starts = [i for i, line in enumerate(text)
                          if re.fullmatch(r"#+ " + re.escape(row["section"]), line)]
                self.assertEqual(len(starts), 1, f"no single heading {row['section']!r}")
                body = []  # up to the next heading of any level
                for line in text[starts[0] + 1:]:
                    if re.match(r"#+ ", line):
                        break
                    body.append(line)
                value = re.escape(row["value"])
                self.assertRegex("\n".join(body), rf"(?<![\d.]){value}(?![\d.])")


if __name__ == "__main__":
    unittest.main()
