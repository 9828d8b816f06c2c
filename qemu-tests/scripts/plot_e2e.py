#!/usr/bin/env python3
"""Plots sluice-e2e's CSV (forwarder,asked,delivered: the rate asked of
trafgen and the rate delivered) to a PNG: `plot_e2e.py CSV PNG`."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

series = {}
with open(sys.argv[1]) as f:
    for row in csv.DictReader(f):
        series.setdefault(row["forwarder"], []).append((float(row["asked"]), float(row["delivered"])))

fig, ax = plt.subplots(figsize=(8, 5))
for name, points in series.items():
    points.sort()
    ax.plot([p[0] / 1000 for p in points], [p[1] / 1000 for p in points], marker="o", label=name)
top = max(p[0] for pts in series.values() for p in pts) / 1000
ax.plot([0, top], [0, top], linestyle=":", color="grey", label="delivered = asked")
ax.set_xlabel("asked of trafgen (kpps)")
ax.set_ylabel("delivered (kpps)")
ax.set_title("64-byte UDP through the forwarder (same run, TCG, 1 vCPU)")
ax.legend(fontsize="small")
ax.grid(True, alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
