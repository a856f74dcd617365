"""Where training and inference run, and in what arithmetic."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from aae.config import Precision


def default_device() -> torch.device:
    """CUDA when present, else the CPU: the same code runs on both."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bf16 matrices natively (so bf16 is faster, not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks: list[Callable[[], bool]] = [
            getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False),
            getattr(torch.cpu, "_is_amx_tile_supported", lambda: False),
        ]
        return any(check() for check in checks)
    return False


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    if precision is Precision.AUTO:
        return Precision.BF16 if native_bf16(device) else Precision.FP32
    return precision


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for the matrix products; weights, optimiser state and losses stay fp32."""
    if precision is Precision.BF16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def flush_denormals() -> bool:
    """Treat subnormal floats (below 1.2e-38) as zero in this process's CPU arithmetic.

    Once the 100 labels are memorised, the classification phase's gradients die out and
    Adam's second moments for the class head sink into the subnormal range, where x86
    arithmetic takes a slow path: the fused Adam step alone then took half of every
    training step, and an epoch 65-70 s instead of 20 s (``benchmarks/denormals.py``).
    Flushing them changes values that small only.

    The setting is per thread, and threads inherit it when they start: entry points
    call this first, before torch's first parallel operation starts its thread pool
    (threads already running keep their setting). Returns whether it is on.
    """
    torch.set_flush_denormal(True)
    return subnormals_flushed()


def subnormals_flushed() -> bool:
    """Whether this thread's CPU arithmetic treats subnormal floats as zero."""
    return (torch.tensor(1e-40) * 1.0).item() == 0.0


def tune_cpu_allocator() -> bool:
    """Keep freed buffers of up to 32 MiB in the heap instead of returning them to the OS.

    glibc hands buffers over its mmap threshold straight back to the kernel, so every
    training step page-faults its activations in again (about a fifth of a CPU step
    here). Raising the mmap and trim thresholds, as jemalloc or tcmalloc would behave,
    removes that. Entry points call this once; it is a no-op where glibc is absent.
    Returns whether the allocator was tuned.
    """
    import ctypes
    import ctypes.util

    path = ctypes.util.find_library("c")
    if path is None:
        return False
    try:
        mallopt = ctypes.CDLL(path).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 1024 * 1024)
                and mallopt(m_trim_threshold, 1024 * 1024 * 1024))
