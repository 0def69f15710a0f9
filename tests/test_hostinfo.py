"""benchmarks/hostinfo.py: every result JSON names the CPU it was measured on."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from hostinfo import describe_cpu, describe_host, parse_cpuinfo  # noqa: E402

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse sse2 avx avx2 fma

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse sse2 avx avx2 fma
"""


def test_the_first_processors_fields_are_read():
    info = parse_cpuinfo(CPUINFO)
    assert info["model name"] == "AMD EPYC 9B14" and info["processor"] == "0"
    assert describe_cpu(info) == {"cpu_model": "AMD EPYC 9B14", "avx512": False}


def test_avx512_is_told_from_the_flags_and_unknown_without_them():
    xeon = parse_cpuinfo("model name\t: Intel(R) Xeon(R) Platinum\nflags\t: avx2 avx512f avx512bw\n")
    assert describe_cpu(xeon)["avx512"] is True
    assert describe_cpu({})["avx512"] is None
    assert describe_cpu({})["cpu_model"]  # platform's processor or machine name, never empty


def test_this_host_is_described():
    host = describe_host()
    assert set(host) == {"cpu_model", "avx512", "cpus", "python", "platform", "load_avg"}
    assert host["cpu_model"] and host["cpus"] >= 1 and len(host["load_avg"]) == 3
