"""The environment a measurement was taken in, what the machine was doing meanwhile, and peak memory.

``LoadProbe(device)`` brackets one point: the 1-minute load average, the CPU seconds the whole
machine spent busy (``/proc/stat``) less this process's own (``getrusage``: every thread), i.e.
what *other* processes took during the point, and on CUDA the SM and memory clocks, throttle
reasons, utilization and temperature before and after (pynvml). ``tf32_mode(on)`` sets and
restores TF32 matmuls.

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

import contextlib

import os
import platform
import resource
import time
from functools import lru_cache

import torch

from lcprof._version import __version__

from lcprof.results import ENV_COLUMNS, LOAD_COLUMNS  # noqa: E402 - the schema's one owner


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


# ----------------------------------------------------------------------------------------------
# What the machine was doing during a point
# ----------------------------------------------------------------------------------------------

def _proc_stat_busy_s() -> float | None:
    """CPU seconds every CPU spent not idle since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    vals = [int(x) for x in fields[1:]]
    busy = sum(vals[:3]) + sum(vals[5:8])  # user nice system | irq softirq steal (idle, iowait excluded)
    return busy / float(os.sysconf("SC_CLK_TCK"))


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


#: NVML throttle-reason bits worth naming (nvmlClocksEventReasons / nvmlClocksThrottleReasons).
_THROTTLE_NAMES = {0x2: "app_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal",
                   0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clocks"}


def throttle_names(mask: int) -> str:
    """NVML throttle-reason bits as names ('' when none but idle)."""
    return "+".join(name for bit, name in _THROTTLE_NAMES.items() if mask & bit)


def _gpu_state(index: int) -> dict:
    """Clocks (MHz), throttle reasons, utilization (%) and temperature (C) now; {} without pynvml."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - optional
        return {}
    out: dict = {}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        readers = {
            "sm_clock": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "throttle": lambda: throttle_names(int(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h))),
            "util": lambda: pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
            "temp": lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        }
        for key, read in readers.items():
            try:
                out[key] = read()
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


class LoadProbe:
    """``start()`` before a point, ``stop()`` after: a dict of ``lcprof.results.LOAD_COLUMNS``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._t0 = self._busy0 = self._self0 = None
        self._gpu0: dict = {}

    def _gpu_index(self) -> int:
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def start(self) -> "LoadProbe":
        if self.device.type == "cuda":
            self._gpu0 = _gpu_state(self._gpu_index())
        self._t0, self._busy0, self._self0 = time.perf_counter(), _proc_stat_busy_s(), _self_cpu_s()
        return self

    def stop(self) -> dict:
        wall = time.perf_counter() - self._t0
        busy, mine = _proc_stat_busy_s(), _self_cpu_s() - self._self0
        ncpu = os.cpu_count() or 1
        row = {c: None for c in LOAD_COLUMNS}
        try:
            row["load_avg_1m"] = os.getloadavg()[0]
        except OSError:
            pass
        row.update({"cpu_count": ncpu, "point_wall_s": wall, "self_cpu_s": mine})
        if busy is not None and self._busy0 is not None:
            other = max(0.0, busy - self._busy0 - mine)
            row["other_cpu_s"] = other
            row["other_cpu_frac"] = other / (wall * ncpu) if wall > 0 else None
        if self.device.type == "cuda":
            after = _gpu_state(self._gpu_index())
            for key, col in (("sm_clock", "gpu_sm_clock"), ("mem_clock", "gpu_mem_clock")):
                row[f"{col}_before_mhz"] = self._gpu0.get(key)
                row[f"{col}_after_mhz"] = after.get(key)
            row["gpu_throttle_before"] = self._gpu0.get("throttle")
            row["gpu_throttle_after"] = after.get("throttle")
            row["gpu_util_before_pct"] = self._gpu0.get("util")
            row["gpu_util_after_pct"] = after.get("util")
            row["gpu_temp_before_c"] = self._gpu0.get("temp")
            row["gpu_temp_after_c"] = after.get("temp")
        return row


class tf32_mode:  # noqa: N801 - used as a context manager
    """TF32 matmuls on (dtype tf32) or off (every other dtype) inside; the previous mode restored."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.on
        torch.backends.cudnn.allow_tf32 = self.on
        return self

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


@contextlib.contextmanager
def flush_denormals():
    """Flush subnormal floats to zero inside (``torch.set_flush_denormal``), as GPUs do, and put the
    process back as it was after (the setting is global processor state: left on, it changes every
    later float computation of the process). The linear-time mixers' in-chunk decays reach the
    float32 subnormal range, where CPU arithmetic slows down by orders of magnitude at lengths that
    depend on the data."""
    was_on = torch.tensor(1e-40, dtype=torch.float32).item() == 0.0  # no getter: probe a subnormal
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)
