#!/usr/bin/env python3
"""Parses Prometheus text from stdin with prometheus_client's parser (the
reference implementation) and prints `name{labels} value` per sample, so the
tests can check values. Fails on anything the parser refuses."""
import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value:g}")
