"""Run one benchmark phase in a fresh process and measure it cleanly.

The child prints one line `RESULT {json}` (with `self_rss_mb`, its own memory high-water
mark from /proc: VmHWM, which starts fresh at exec, unlike ru_maxrss, which carries the
parent's size over the fork); the parent samples the resident memory of the child and
everything it starts (e.g. a Spark JVM) every 20 ms and reports the larger peak.
"""
from __future__ import annotations

import json
import subprocess
import time


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (VmRSS) or its high-water mark (VmHWM), MB, from /proc."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def report(result: dict) -> None:
    """In the child: print the result line the parent reads, with this process's own peak."""
    print("RESULT " + json.dumps({**result, "self_rss_mb": rss_mb("VmHWM")}), flush=True)


def run_measured(cmd: list, what: str) -> dict:
    """Run `cmd`; its RESULT dict plus `peak_rss_mb` of its process tree. A failure names `what`."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [me] + me.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    out, err = proc.communicate()
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{(err or out)[-3000:]}")
    got = json.loads(line[len("RESULT "):])
    got["peak_rss_mb"] = max(peak / 2 ** 20, got["self_rss_mb"])
    return got
