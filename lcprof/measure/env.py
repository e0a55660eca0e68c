"""The environment a measurement was taken in, and peak memory per point.

``environment(device)`` returns flat, unit-suffixed facts: torch and CUDA versions, GPU name, driver,
memory, clocks and power limit (pynvml, when importable), CPU model and thread count, lcprof
version. Every results row carries them.

Peak memory (``PeakMemory``), reset before each point:
  * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` -- the absolute
    peak of tensors torch allocated on the device (layer weights included); source
    ``cuda_max_allocated``;
  * CPU (Linux): the process's peak RSS (VmHWM, reset by writing 5 to /proc/self/clear_refs) minus
    its RSS when the point started, after glibc's ``malloc_trim(0)`` has returned freed heap pages
    to the OS -- what the point's inputs and activations added; weights built before the point are
    excluded; source ``rss_hwm_delta``. A lower bound: pages the allocator keeps are not seen;
  * anything else: unknown (empty cell, source ``unknown``).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

import torch

from lcprof._version import __version__

ENV_COLUMNS = ("torch_version", "cuda_version", "gpu_name", "driver_version", "gpu_memory_bytes",
               "gpu_sm_clock_max_mhz", "gpu_mem_clock_max_mhz", "gpu_power_limit_w", "cpu_model",
               "threads", "lcprof_version")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _nvml_facts(index: int) -> dict:
    """Driver, memory, max clocks and power limit from pynvml; {} when it cannot be read."""
    try:
        import pynvml  # nvidia-ml-py
    except Exception:  # noqa: BLE001 - optional
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001
        return {}
    out: dict = {}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        readers = {
            "driver_version": lambda: pynvml.nvmlSystemGetDriverVersion(),
            "gpu_name_nvml": lambda: pynvml.nvmlDeviceGetName(h),
            "gpu_memory_bytes": lambda: int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
            "gpu_sm_clock_max_mhz": lambda: int(pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)),
            "gpu_mem_clock_max_mhz": lambda: int(pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)),
            "gpu_power_limit_w": lambda: pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0,
        }
        for key, read in readers.items():
            try:
                v = read()
                out[key] = v.decode() if isinstance(v, bytes) else v
            except Exception:  # noqa: BLE001 - one unreadable field is not fatal
                pass
    except Exception:  # noqa: BLE001
        pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return out


def environment(device: torch.device | str = "cpu") -> dict:
    """Flat facts about torch, the device and the host (see ENV_COLUMNS)."""
    device = torch.device(device)
    env = {k: None for k in ENV_COLUMNS}
    env.update({
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "lcprof_version": __version__,
    })
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        env["gpu_name"] = props.name
        env["gpu_memory_bytes"] = int(props.total_memory)
        nv = _nvml_facts(idx)
        nv.pop("gpu_name_nvml", None)
        env.update(nv)
    return env


def _proc_status_bytes(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        return None
    return None


@lru_cache(maxsize=1)
def _libc():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _trim_heap() -> None:
    """glibc's malloc_trim(0): give freed heap pages back to the OS, so that memory a point reuses
    from earlier points is touched again and counted in its peak RSS."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: ``with PeakMemory(device) as pm: ...; pm.peak_bytes, pm.source``."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self.source = "unknown"
        self._base: int | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.source = "cuda_max_allocated"
        else:
            _trim_heap()
            if not _reset_hwm():
                return self
            self._base = _proc_status_bytes("VmRSS")
            self.source = "rss_hwm_delta" if self._base is not None else "unknown"
        return self

    def __exit__(self, *exc) -> None:
        self.read()

    def read(self) -> int | None:
        if self.source == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.source == "rss_hwm_delta":
            hwm = _proc_status_bytes("VmHWM")
            self.peak_bytes = None if hwm is None else max(0, hwm - self._base)
        return self.peak_bytes


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Bytes this process could still use: CUDA free + what torch holds in its cache; CPU MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
