"""The machine line every benchmark prints beside its figures."""

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """``<cpu>, <n> CPUs, Python <version>``."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
