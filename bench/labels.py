"""Label loading: kseg (cold: parse + write cache; warm: read cache) vs the tutorial's np.loadtxt per file.

    python bench/labels.py [--data PATH] [--mask regions] [--repeat 3]

Prints one JSON object. Times are the best of ``--repeat`` runs, in seconds,
over all label files of the mask (715 for iccv09). The tutorial reads each
file with ``np.loadtxt(path)`` (float parsing); ``np.loadtxt(path, dtype=int)``
is shown too, as the faster form of the same method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kseg.data import iccv09 as ic  # noqa: E402


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="iccv09Data folder or archive (default: find it)")
    p.add_argument("--mask", default="regions", choices=ic.MASKS)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)

    root = ic.find_iccv09(args.data, quiet=True)
    ids = ic.verify_layout(root, args.mask)
    paths = [root / "labels" / f"{i}.{args.mask}.txt" for i in ids]
    nbytes = sum(p.stat().st_size for p in paths)
    n_classes = len(ic.CLASS_NAMES[args.mask])

    t_float, ref = best_of(lambda: [np.loadtxt(p) for p in paths], args.repeat)
    t_int, _ = best_of(lambda: [np.loadtxt(p, dtype=int) for p in paths], args.repeat)

    with tempfile.TemporaryDirectory() as tmp:
        def cold():
            cache = Path(tmp) / f"cold-{time.perf_counter_ns()}.npz"
            arrays, stats = ic.load_labels(paths, n_classes, cache)
            assert stats["parsed"] == len(paths)
            return arrays

        t_cold, arrays = best_of(cold, args.repeat)
        warm_cache = Path(tmp) / "warm.npz"
        ic.load_labels(paths, n_classes, warm_cache)

        def warm():
            arrays, stats = ic.load_labels(paths, n_classes, warm_cache)
            assert stats["parsed"] == 0
            return arrays

        t_warm, warm_arrays = best_of(warm, args.repeat)
        cache_bytes = warm_cache.stat().st_size

    same = all(np.array_equal(np.maximum(r, -1).astype(np.int8), a) for r, a in zip(ref, arrays))
    same &= all(np.array_equal(a, b) for a, b in zip(arrays, warm_arrays))
    result = {
        "bench": "label_loading",
        "mask": args.mask,
        "files": len(paths),
        "text_mb": round(nbytes / 1e6, 1),
        "cache_mb": round(cache_bytes / 1e6, 1),
        "repeat": args.repeat,
        "seconds": {
            "tutorial_np_loadtxt_float": round(t_float, 3),
            "np_loadtxt_int": round(t_int, 3),
            "kseg_cold_parse_and_cache": round(t_cold, 3),
            "kseg_warm_cache": round(t_warm, 4),
        },
        "speedup_vs_tutorial": {"cold": round(t_float / t_cold, 1), "warm": round(t_float / t_warm, 1)},
        "speedup_vs_loadtxt_int": {"cold": round(t_int / t_cold, 1), "warm": round(t_int / t_warm, 1)},
        "identical_arrays": bool(same),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "processor": platform.processor() or platform.machine()},
    }
    print(json.dumps(result, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
