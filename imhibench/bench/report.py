"""The printed table: per engine, time, output tokens/s, forward passes, wasted token slots,
weight traffic against the device's peak memory bandwidth, and peak memory."""

from __future__ import annotations

import argparse
import os

from imhibench.bench.timing import Side

# Peak HBM bandwidth (GB/s) by device-name fragment, most specific first (vendor datasheets);
# None: the name covers parts of different bandwidths (pass --peak-bandwidth-gbs).
PEAK_BANDWIDTH_GBS = {
    "GH200": None,  # 96 GB HBM3 4000, 144 GB HBM3e 4900; "H200" would match it otherwise
    "H200": 4800.0,
    "H100 NVL": 3900.0,
    "H100 PCIe": 2000.0,
    "H100": 3350.0,  # SXM5, HBM3
    "A100 80GB PCIe": 1935.0,
    "A100-SXM4-80GB": 2039.0,
    "A100-PCIE-40GB": 1555.0,
    "A100-SXM4-40GB": 1555.0,
}


def peak_bandwidth(args: argparse.Namespace, device: str) -> tuple[float | None, str]:
    """Peak GB/s from the flag, else from the table for a known GPU; with the device name."""
    import torch

    if not device.startswith("cuda"):
        cores = f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
        return args.peak_bandwidth_gbs, f"cpu ({cores})"
    name = torch.cuda.get_device_name(torch.device(device))
    if args.peak_bandwidth_gbs is not None:
        return args.peak_bandwidth_gbs, name
    return table_bandwidth(name), name


def table_bandwidth(name: str) -> float | None:
    """The table's peak GB/s for a device name (``torch.cuda.get_device_name``), or None."""
    return next((v for k, v in PEAK_BANDWIDTH_GBS.items() if k in name), None)


def report(sides: list[Side], peak_gbs: float | None) -> list[str]:
    lines = [
        f"{'engine':<11}{'dtype':<9}{'seconds':>9}{'out tokens':>11}{'tokens/s':>10}"
        f"{'vs static':>10}{'passes':>8}{'wasted':>8}{'weights GB/s':>13}{'roofline':>9}"
        f"{'peak GB':>8}"
    ]
    static = next((s for s in sides if s.name == "static"), None)
    for s in sides:
        rate = s.output_tokens / s.seconds
        ratio = f"{rate / (static.output_tokens / static.seconds):.2f}x" if static else "n/a"
        memory = f"{s.peak_memory_gb:.1f}" if s.peak_memory_gb is not None else "n/a"
        if s.forward_calls is None:  # not observable (another process ran the model)
            work = f"{'n/a':>8}{'n/a':>8}{'n/a':>13}{'n/a':>9}"
        else:
            wasted = 1 - s.useful_tokens / s.fed_tokens if s.fed_tokens else float("nan")
            gbs = s.forward_calls * s.weight_bytes / s.seconds / 1e9
            share = f"{100 * gbs / peak_gbs:.1f}%" if peak_gbs else "n/a"
            work = f"{s.forward_calls:>8}{100 * wasted:>7.1f}%{gbs:>13.2f}{share:>9}"
        lines.append(
            f"{s.name:<11}{s.dtype:<9}{s.seconds:>9.2f}{s.output_tokens:>11}{rate:>10.1f}"
            f"{ratio:>10}{work}{memory:>8}"
        )
    if static:
        for s in sides:
            if s is static:
                continue
            if s.own_weights:
                lines.append(f"{s.name}: own random weights, answers not compared")
                continue
            same = sum(a == b for a, b in zip(s.token_ids, static.token_ids, strict=True))
            lines.append(f"{s.name}: {same}/{len(s.token_ids)} answers identical to static")
    return lines
