"""The machine a benchmark ran on, recorded the same way in every result JSON.

This project's numbers come from 2-core VMs whose CPUs differ: the same demo takes 4 min 47 s on a
Xeon with AVX-512, 6 min 33 s on an AMD EPYC Zen 5 (AVX-512) and 15 min on an older AMD EPYC with
AVX2 only, all sold as "AMD EPYC" or "Xeon". A ratio is only comparable with one measured on the same
CPU under a similar load, so each result names the CPU model, whether it has AVX-512, the cores
visible and the load averages when it was written.
`platform.processor()` is empty on most Linux systems, so the model comes from /proc/cpuinfo.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's fields of a /proc/cpuinfo text (every processor repeats them)."""
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def describe_cpu(info: dict[str, str]) -> dict[str, Any]:
    """Model and AVX-512 (None when the flags are unknown) from parsed cpuinfo fields."""
    flags = set(info.get("flags", "").split())
    return {
        "cpu_model": info.get("model name") or platform.processor() or platform.machine(),
        "avx512": "avx512f" in flags if flags else None,
    }


def describe_host() -> dict[str, Any]:
    """CPU model, AVX-512 or not, visible CPUs, Python, OS and the 1/5/15-minute load averages."""
    try:
        info = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:  # macOS, a container without /proc
        info = {}
    return {
        **describe_cpu(info),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
