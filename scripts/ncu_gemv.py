"""Where a gemv_mma launch's warps stall, instruction by instruction, with Nsight Compute's source page (CUDA).

    ncu --kernel-name regex:_gemv_mma --launch-skip 4 --launch-count 1 --section SourceCounters \\
        --section WarpStateStats --page source --print-source sass --csv \\
        python3 scripts/ncu_gemv.py run 4096 4096 > o.csv
    python3 scripts/ncu_gemv.py summarize o.csv

`run N K` launches the int4 GEMV six times on random codes of [N, K] (one row of x, plain launches); `summarize`
prints, as JSON, the stall samples before the main loop, in it and after it (the epilogue), the stall reasons
over the launch and the instructions with the most samples.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path


def run(n: int, k: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from yi_cli.kernels import gemv_mma, mma_layout

    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, device="cuda")
    sz = (torch.randn(k // 128, n, 2, device="cuda") * 0.01).to(torch.bfloat16)
    packed = mma_layout.pack(q)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    for _ in range(6):
        gemv_mma.gemv_mma(x, packed, sz, n, k, 128, pdl=False)
    torch.cuda.synchronize()


def summarize(path: str) -> dict:
    rows = list(csv.reader(open(path)))
    at = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    head = rows[at]
    data = [r for r in rows[at + 1 :] if len(r) == len(head)]
    col = head.index("Warp Stall Sampling (All Samples)")
    addr = [int(r[0], 16) for r in data]
    samples = [int(r[col]) for r in data]
    total = sum(samples) or 1
    loop = (0, -1)  # the longest backward branch: the main loop
    for i, r in enumerate(data):
        m = re.search(r"BRA\s+(0x[0-9a-f]+)", r[1])
        if m and int(m.group(1), 16) in addr and addr.index(int(m.group(1), 16)) < i:
            start = addr.index(int(m.group(1), 16))
            if i - start > loop[1] - loop[0]:
                loop = (start, i)
    a, b = loop
    share = {
        "prologue": sum(samples[:a]) / total,
        "loop": sum(samples[a : b + 1]) / total,
        "epilogue": sum(samples[b + 1 :]) / total,
    }
    reasons = {
        h: sum(int(r[i]) for r in data if r[i].isdigit())
        for i, h in enumerate(head)
        if h.startswith("stall_") and "Not Issued" not in h
    }
    top = sorted(range(len(data)), key=lambda i: -samples[i])[:8]
    return {
        "file": path,
        "samples": total,
        "instructions": len(data),
        "loop_instructions": b - a + 1,
        "share": {k: round(v, 3) for k, v in share.items()},
        "reasons": dict(sorted(((k, v) for k, v in reasons.items() if v), key=lambda kv: -kv[1])[:8]),
        "top": [{"at": i, "share": round(samples[i] / total, 3), "sass": data[i][1].strip()} for i in top],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    launch = sub.add_parser("run", help="launch the int4 GEMV on random [N, K] codes (under ncu)")
    launch.add_argument("n", type=int)
    launch.add_argument("k", type=int)
    sub.add_parser("summarize", help="one JSON line per ncu CSV").add_argument("csv", nargs="+")
    a = ap.parse_args(argv)
    if a.command == "run":
        run(a.n, a.k)
    else:
        for f in a.csv:
            print(json.dumps(summarize(f)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
