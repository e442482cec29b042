"""What the machine can do: CPU flags, native bf16, and the `machine` string of every result.

Training precision is a hyper-parameter ("auto", "fp32", "bf16"); "auto" becomes bf16 only
where bf16 is native (CPU: the `avx512_bf16` or `amx_bf16` flag; CUDA:
`torch.cuda.is_bf16_supported()`). Without native support bf16 autocast is emulated and
an epoch is about 3x slower, so a result would depend on which CPU a run landed on.
The flags come from `cpu_flags()`; every function that reads them takes `flags=` instead
(tests, or a machine described elsewhere).
"""
from __future__ import annotations

import os
import platform

# oneDNN (PyTorch's CPU bf16 kernels) keeps a compiled kernel, with its scratch memory, for each
# matmul shape it meets, up to 1,024 by default. Training batches come in hundreds of shapes (window
# lengths, target counts), so in bf16 the cache grew with every epoch: interest-text+id on ML-1M
# users 1-2999, batch 32, 3 epochs: peak RSS 2,503 MB with the default against 1,693 MB with 8
# kernels kept, at the same speed (69.7 against 70.2 s). ideep, PyTorch's bridge to oneDNN, keeps
# its own cache of the same kind (LRU_CACHE_CAPACITY, 1,024 by default; pytorch/pytorch#27971): with
# only oneDNN's bounded, the same model's 2-epoch fit on a Zen 5 (bf16) still peaked at 1,969 MB
# against 1,549 MB with ideep's bounded too, 40.5 against 37.9 s (fp32: 1,609 MB). A value the user
# set wins; both are read when the first kernel is built, so they are set when migrec is imported.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")
os.environ.setdefault("LRU_CACHE_CAPACITY", "16")

PRECISIONS = ("auto", "fp32", "bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# shown in the machine string, present or not: what decides speed and precision here
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _cpuinfo(path: str = "/proc/cpuinfo") -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none, e.g. macOS)."""
    fields: dict = {}
    try:
        with open(path) as fh:
            for line in fh:
                if not line.strip():
                    break                      # the first processor's block ends
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset:
    """The CPU's feature flags (Linux: /proc/cpuinfo `flags`); empty where unknown."""
    return frozenset(_cpuinfo(path).get("flags", "").split())


def native_bf16(device="cpu", flags=None) -> bool:
    """True where bf16 matmuls run natively on `device` (a torch.device or its type name)."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def resolve_precision(precision: str, device="cpu", flags=None) -> str:
    """"fp32" or "bf16": `precision` itself, or for "auto" bf16 exactly where it is native."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device, flags) else "fp32"
    return precision


def machine_description(flags=None) -> str:
    """One line for every result's `machine`: OS, CPU model, cores, the flags that decide speed
    and precision, what precision="auto" picks on CPU, RAM and GPUs; e.g. "Linux x86_64, AMD EPYC
    (family 25 model 17), 2 CPU cores; CPU flags: avx2 avx512f avx512_bf16, lacks amx_bf16 (auto
    precision: bf16); 24 GiB RAM; no GPU"."""
    info = _cpuinfo()
    flags = frozenset(info.get("flags", "").split()) if flags is None else flags
    cpu = info.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in info and "model" in info:
        cpu += f" (family {info['cpu family']} model {info['model']})"
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    text = f"{platform.system()} {platform.machine()}, {cpu}, {cores} CPU cores" + \
        (f" ({usable} usable)" if usable != cores else "")
    has = [f for f in REPORTED_FLAGS if f in flags]
    lacks = [f for f in REPORTED_FLAGS if f not in flags]
    text += (f"; CPU flags: {' '.join(has) or 'none of ' + ' '.join(REPORTED_FLAGS)}"
             + (f", lacks {' '.join(lacks)}" if has and lacks else "")
             + f" (auto precision: {resolve_precision('auto', 'cpu', flags)})") if flags else "; CPU flags unknown"
    try:
        with open("/proc/meminfo") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal"))
        text += f"; {kb / 2 ** 20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            gpu += f" (bf16 {'native' if torch.cuda.is_bf16_supported() else 'emulated'})"
    except Exception:      # torch missing or a broken CUDA setup: report no GPU
        pass
    return f"{text}; {gpu}"
