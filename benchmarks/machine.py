"""The machine line every benchmark prints beside its figures."""

import os
import platform
from pathlib import Path


def cpu_fields() -> dict:
    """The first processor's ``/proc/cpuinfo`` fields (empty where there is none)."""
    fields = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    """CPU model name, with its family and model numbers and AVX-512 when it has it.

    Cloud machines often report only ``AMD EPYC``: the family and model tell
    apart generations that ran the main job's stages 1.6-2.1x apart (1.8x the
    whole job; RESULTS.md, "Run of 2026-12-02 (afternoon)").
    """
    fields = cpu_fields()
    name = fields.get("model name") or platform.processor() or platform.machine()
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"family {fields['cpu family']} model {fields['model']}")
    if "avx512f" in fields.get("flags", "").split():
        details.append("AVX-512")
    return f"{name} ({', '.join(details)})" if details else name


def machine_line() -> str:
    """``<cpu>, <n> CPUs, Python <version>``."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
