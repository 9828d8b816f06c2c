#!/usr/bin/env python3
"""Plots sluice-fastpath's CSV (forwarder,flows,trial,offered_pps,
delivered_pps,loss: every paced trial of the lossless-rate search, and the
flat-out one) to a PNG, one panel per forwarder, one line per flow count
(paced trials), the flat-out delivery as a dashed level of the same colour:
`plot_fastpath.py CSV PNG`."""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

series = {}
flat = {}
with open(sys.argv[1]) as f:
    for row in csv.DictReader(f):
        key = (row["forwarder"], int(row["flows"]))
        if row["trial"] == "flat-out":
            flat[key] = float(row["delivered_pps"])
            continue
        by_flows = series.setdefault(row["forwarder"], {})
        by_flows.setdefault(key[1], []).append((float(row["offered_pps"]), float(row["delivered_pps"])))
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
        line = ax.plot(
            [p[0] / 1000 for p in points], [p[1] / 1000 for p in points], marker="o", ms=3, label=f"{flows} flows"
        )[0]
        if (name, flows) in flat:
            ax.axhline(flat[(name, flows)] / 1000, linestyle="--", linewidth=0.8, color=line.get_color())
    ax.plot([0, top / 1000], [0, top / 1000], linestyle=":", color="grey")
    ax.set_title(name, fontsize="medium")
    ax.set_xlabel("offered, lan side (kpps)")
    ax.set_ylabel("delivered back (kpps)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
for ax in list(axes.flat)[len(series):]:
    ax.axis("off")
fig.suptitle("64-byte UDP round trips on vhost-user (dashed: flat out)", fontsize="medium")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
