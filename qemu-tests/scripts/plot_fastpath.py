#!/usr/bin/env python3
"""Plots sluice-fastpath's CSV (forwarder,flows,offered_pps,delivered_pps:
every trial of the lossless-rate search and the flat-out one) to a PNG, one
panel per forwarder, one line per flow count: `plot_fastpath.py CSV PNG`."""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

series = {}
with open(sys.argv[1]) as f:
    for row in csv.DictReader(f):
        by_flows = series.setdefault(row["forwarder"], {})
        by_flows.setdefault(int(row["flows"]), []).append(
            (float(row["offered_pps"]), float(row["delivered_pps"]))
        )
if not series:
    sys.exit("no rows")
cols = min(3, len(series))
rows = math.ceil(len(series) / cols)
fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
for ax, (name, by_flows) in zip(axes.flat, series.items()):
    top = 0.0
    for flows, points in sorted(by_flows.items()):
        points.sort()
        top = max(top, max(p[0] for p in points))
        ax.plot([p[0] / 1000 for p in points], [p[1] / 1000 for p in points], marker="o", ms=3, label=f"{flows} flows")
    ax.plot([0, top / 1000], [0, top / 1000], linestyle=":", color="grey")
    ax.set_title(name, fontsize="medium")
    ax.set_xlabel("offered, lan side (kpps)")
    ax.set_ylabel("delivered back (kpps)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
for ax in list(axes.flat)[len(series):]:
    ax.axis("off")
fig.suptitle("64-byte UDP round trips through the forwarder on vhost-user (same run)")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
