"""Which machine a run used: CPU model, core count, torch threads and GPU name."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_record() -> dict:
    """``cpu``, ``cpu_count``, ``torch_threads``, ``gpu`` (``None`` without CUDA) and a
    one-line ``summary`` such as ``NVIDIA H200 (AMD EPYC host)`` or ``AMD EPYC, 2 cores``."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu, cores = cpu_model(), os.cpu_count()
    summary = f"{gpu} ({cpu} host)" if gpu else f"{cpu}, {cores} cores"
    return {
        "cpu": cpu,
        "cpu_count": cores,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "summary": summary,
    }
