"""What ptxas makes of the decode GEMV (yi_cli/kernels/gemv.py) for sm_90, without a GPU: Gluon compiles offline with
the triton wheel's own ptxas and nvdisasm, so registers, spills and instruction counts cost no device time.

    python scripts/sass.py                     # each Yi-6B decode specialization: registers, spills, instructions
    python scripts/sass.py --against 2f60e4a   # and whether the plain GEMV's instructions equal that revision's
    python scripts/sass.py --mma [--against dcd14d0]  # the tensor-core GEMV (gemv_mma) at each Yi-6B configuration,
                                                      # plain and with the chained step's epilogues (int4 codes; a
                                                      # gate_up of int8 codes and of bf16 weights)
    python scripts/sass.py --mma --unroll 2    # its main loop unrolled 2 x the units loaded ahead ('full': no loop)
    python scripts/sass.py --mma --early 0     # no epilogue read before the loop (gemv_mma.early_bits; default: as
                                               # gemv_mma launches it)

Needs triton (3.6) importable; torch's CPU wheel is enough. Prints one JSON line per specialization (--mma: with
`moves`, the register-to-register moves in the whole kernel). Instructions are compared after renaming registers and
kernel-parameter offsets (adding parameters moves them), so "same" means the same instructions in the same order.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if "TRITON_CACHE_DIR" not in os.environ:  # a cache of its own, removed as it exits (imported by tests too)
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="yi-sass-")
    atexit.register(shutil.rmtree, os.environ["TRITON_CACHE_DIR"], True)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

from yi_cli.kernels import gemv, gemv_mma, tinygemm  # noqa: E402

TYPES = {"X": "*bf16", "P": "*i32", "SZ": "*bf16", "Y": "*bf16", "N": "i32", "MX": "i32", "P2": "*i32", "SZ2": "*bf16"}
TYPES |= {"NORM_IN": "*fp32", "XR": "*bf16", "WN": "*bf16", "NORM_OUT": "*fp32", "eps": "fp32", "POS": "*i64"}
TYPES |= {
    "COS": "*bf16",
    "SIN": "*bf16",
    "KC": "*bf16",
    "VC": "*bf16",
    "S": "i32",
    "KCACHE": "*bf16",
    "VCACHE": "*bf16",
}
OFF = {"PLANES": 1, "NP": 0, "RESIDUAL": False, "HD": 0, "NH": 0, "NKV": 0, "SILU": False}
# Yi-6B (hidden 4096, 32 heads of 128, 4 KV heads, intermediate 11008): the chained decode step's GEMVs
SPECS = {
    "qkv (layer 0: rope)": dict(n=5120, k=4096, HD=128, NH=32, NKV=4),
    "qkv (rope + norm)": dict(n=5120, k=4096, HD=128, NH=32, NKV=4, NP=512),
    "o (residual)": dict(n=4096, k=4096, RESIDUAL=True),
    "gate_up (silu + norm)": dict(n=22016, k=4096, SILU=True, NP=512),
    "down (residual)": dict(n=4096, k=11008, RESIDUAL=True),
    "down (last layer)": dict(n=4096, k=11008),
    "gptq8 down (two planes, residual)": dict(n=4096, k=11008, PLANES=2, R=gemv.ROWS_TWO_PLANES, RESIDUAL=True),
    "plain 5120x4096": dict(n=5120, k=4096),
}


# Yi-6B's decode matmuls on gemv_mma: (n, k, silu, bits of the weights: 4 int4 codes / 8 int8 / 16 bf16, the folds
# and fp16 x)
MMA_SPECS = {
    "qkv": (5120, 4096, False, 4, {}),
    "o": (4096, 4096, False, 4, {}),
    "gate_up (silu)": (22016, 4096, True, 4, {}),
    "down": (4096, 11008, False, 4, {}),
    "gptq8 gate_up (int8 codes)": (22016, 4096, True, 8, {}),
    "gptq8 gate_up (int8 codes, fp16 x)": (22016, 4096, True, 8, dict(fp16=True)),  # GPTQ 8-bit's default on CUDA
    "fp16 gate_up (bf16 weights)": (22016, 4096, True, 16, {}),
    # the chained decode step's (runtime/llama.py): norms, residual adds and rope in the epilogues
    "qkv (rope + norm)": (5120, 4096, False, 4, dict(HALVES=128, NH=32, NKV=4, NP=256)),
    "o (residual)": (4096, 4096, False, 4, dict(RESIDUAL=True)),
    "gate_up (silu + norm)": (22016, 4096, True, 4, dict(NP=256)),
    "down (residual)": (4096, 11008, False, 4, dict(RESIDUAL=True)),
}
MMA_OFF = dict(NP=0, RESIDUAL=False, HALVES=0, NH=0, NKV=0)


def bindir() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def compile_sass(fn, n: int, k: int, group: int = 128, **const) -> tuple[dict, list[str]]:
    """ptxas's resource line and the normalized SASS of fn (a gemv._gemv_int4 of any revision) for one shape."""
    wpr = 2 * tinygemm.inner_k_tiles(k)
    values = {"KT": k // (8 * wpr), "G": group, "WPR": wpr, "R": gemv.ROWS, "WARPS": gemv.WARPS, "PDL": True}
    return _compile(fn, values | OFF | const)


def _compile(fn, values: dict, types: dict | None = None, maxnreg: int = 0) -> tuple[dict, list[str]]:
    """Compile fn with these constexprs (the rest typed by TYPES, or `types` where it names them) for sm_90, its
    registers capped at maxnreg (0: not); (resources and the main loop's size, normalized instructions)."""
    names = fn.arg_names
    sig = {a: ("constexpr" if a in values else (types or {}).get(a, TYPES[a])) for a in names}
    if any(values.get(a, OFF.get(a)) != OFF.get(a) for a in OFF if a not in names):
        raise ValueError("this revision's kernel has no such specialization")
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(names) if sig[a].startswith("*") or a == "N"}
    src = GluonASTSource(fn, sig, {(i,): values[a] for i, a in enumerate(names) if a in values}, attrs)
    options = {"num_warps": values["WARPS"]} | ({"maxnreg": maxnreg} if maxnreg else {})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.TemporaryDirectory() as d:
        ptx, cubin = Path(d) / "k.ptx", Path(d) / "k.cubin"
        ptx.write_text(ck.asm["ptx"])
        info = subprocess.run(
            [f"{bindir()}/ptxas", "-v", "-arch=sm_90a", str(ptx), "-o", str(cubin)], capture_output=True, text=True
        ).stderr
        sass = subprocess.run([f"{bindir()}/nvdisasm", "-c", str(cubin)], capture_output=True, text=True).stdout
    loop, hmma = _main_loop(sass)
    regs = int(re.search(r"Used (\d+) registers", info).group(1))
    spills = sum(int(x) for x in re.findall(r"(\d+) bytes spill", info))
    lines = [
        re.sub(r"\bU?R\d+\b", "R", re.sub(r"c\[0x0\]\[0x[0-9a-f]+\]", "c[P]", re.sub(r"/\*[0-9a-f]+\*/", "", ln)))
        .replace(".reuse", "")
        .strip()
        for ln in sass.splitlines()
        if re.match(r"^\s+/\*[0-9a-f]+\*/", ln)
    ]
    row = {"registers": regs, "spill_bytes": spills, "instructions": len(lines)}
    return row | {"loop_instructions": loop, "loop_hmma": hmma}, lines


def _main_loop(sass: str) -> tuple[int, int]:
    """Instructions and HMMAs between the label and the backward branch of the longest loop in nvdisasm's text."""
    text = sass.splitlines()
    labels = {m.group(1): i for i, ln in enumerate(text) if (m := re.match(r"^(\.L_x_\d+):", ln))}
    best = (0, 0)
    for i, ln in enumerate(text):
        m = re.search(r"BRA `\((\.L_x_\d+)\)", ln)
        if m and labels.get(m.group(1), i) < i:
            body = [x for x in text[labels[m.group(1)] : i + 1] if re.match(r"^\s+/\*[0-9a-f]+\*/", x)]
            best = max(best, (len(body), sum("HMMA" in x for x in body)))
    return best


def mma_row(
    mod,
    n: int,
    k: int,
    silu: bool,
    bits: int,
    folds: dict,
    unroll: str | None = None,
    early: str | None = None,
    gather: str | None = None,
) -> tuple[dict, list[str]]:
    """gemv_mma._gemv_mma of module mod at mod.config's configuration for one Yi-6B matmul: resources and the
    main loop's instructions per block of 16 x 64 weights (a warp's chunk of K has 4·tiles HMMAs of the weights and,
    but for bf16 weights, 4 of the chunk sums of x; None where ptxas unrolled the whole loop); and the normalized
    instructions. Revisions before BITS name the kind PLANES (1: int4, 8: int8 codes, 0: bf16). folds may also
    hold fp16=True: x, the scales and the result in fp16 (else bf16)."""
    folds = dict(folds)
    fp16 = folds.pop("fp16", False)
    names = mod._gemv_mma.arg_names
    kind = bits
    if "BITS" not in names:
        kind = {4: 1, 8: getattr(mod, "INT8_PLANES", None), 16: 0 if hasattr(mod, "_dense_words") else None}[bits]
        if kind is None:
            raise ValueError("this revision's kernel has no such specialization")
    rt, warps, ahead, xahead, *pair = mod.config(n, k, kind)
    if silu:
        rt = max(rt, 2)
    values = dict(KC=k // 64, G=128, RT=rt, WARPS=warps, PDL=True, SILU=silu, AHEAD=ahead)
    values |= dict(BITS=bits) if "BITS" in names else dict(PLANES=kind)
    values |= dict(XAHEAD=xahead) if "XAHEAD" in names else {}
    values |= dict(PAIR=pair[0] if mod.pairs(k, 128, bits) else 1) if "PAIR" in names else {}
    if "UNROLL" in names:  # the configuration's own, TIMES x ahead, or every unit static ('full': no loop)
        iters = (k // 64 // values["PAIR"] + warps - 1) // warps
        own = pair[1] if len(pair) > 1 else ahead
        if unroll is None:
            values["UNROLL"] = own
        elif unroll == "full":
            values["UNROLL"] = -(-iters // ahead) * ahead
        else:
            values["UNROLL"] = int(unroll) * ahead
    elif unroll is not None:
        raise ValueError("this revision's kernel has no UNROLL")
    if any(v != MMA_OFF[key] for key, v in folds.items()) and not all(key in names for key in folds):
        raise ValueError("this revision's kernel has no such epilogue")
    values |= {key: v for key, v in (MMA_OFF | folds).items() if key in names}
    if "GATHER" in names:  # the warps' sums: as gemv_mma launches it, or --gather's
        values["GATHER"] = mod.gather_sums(n, k, bits) if gather is None else gather == "1"
    if "EARLY" in names:  # the epilogue reads issued before the loop: as gemv_mma launches it, or --early's
        values["EARLY"] = mod.early_bits(
            n, k, bits, values["NP"] > 0, values["RESIDUAL"], values["NH"] > 0, None if early is None else int(early)
        )
    types = {"P": {4: "*i32", 8: "*u8", 16: "*bf16"}[bits]}
    if fp16:
        types |= {a: "*fp16" for a in ("X", "SZ", "Y", "XR", "WN", "COS", "SIN", "KCACHE", "VCACHE")}
    # the launch's register cap (revisions with max_registers but before register_cap: the same rule)
    rule = getattr(mod, "register_cap", gemv_mma.register_cap if hasattr(mod, "max_registers") else None)
    row, lines = _compile(mod._gemv_mma, values, types, (rule and rule(n, k, bits, warps)) or 0)
    row["moves"] = sum(1 for ln in lines if ln.startswith(("IMAD.MOV", "MOV ")))
    loop, hmma = row.pop("loop_instructions"), row.pop("loop_hmma")
    chunks = hmma // (4 * rt + (4 if bits < 16 else 0))
    per = round(loop / (chunks * rt), 1) if chunks else None
    config = [rt, warps, ahead, xahead, values.get("PAIR", 1)] + ([values["UNROLL"]] if "UNROLL" in values else [])
    if "EARLY" in values:
        config += [values["EARLY"], int(values["GATHER"])]
    return {"config": config, **row, "loop_instructions_per_block": per}, lines


def revision_module(rev: str, name: str = "gemv"):
    """yi_cli/kernels/<name>.py as it was at git revision rev, its relative imports (gemv_mma's parts in mma_*.py,
    gemv, glue) the same revision's: that revision's kernels package, imported under a name of its own."""
    root = Path(tempfile.mkdtemp(prefix="yi-rev-"))
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "yi_cli/kernels"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=tar.stdout, check=True)
    pkg = f"yi_kernels_{re.sub(r'[^0-9A-Za-z]', '_', rev)}"
    where = root / "yi_cli" / "kernels"
    spec = importlib.util.spec_from_file_location(pkg, where / "__init__.py", submodule_search_locations=[str(where)])
    sys.modules[pkg] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[pkg])
    return importlib.import_module(f"{pkg}.{name}")


def revision_kernel(rev: str):
    """gemv._gemv_int4 as it was at git revision rev."""
    return revision_module(rev)._gemv_int4


def unroll_times(text: str) -> str:
    """--unroll: a whole number from 1, or 'full' (else a usage error)."""
    if text != "full" and not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: TIMES (a whole number from 1) or 'full'")
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", help="a git revision: compare each specialization it also has")
    ap.add_argument("--mma", action="store_true", help="the tensor-core GEMV (gemv_mma) instead")
    ap.add_argument(
        "--unroll",
        type=unroll_times,
        help="--mma: its main loop unrolled TIMES x the units loaded ahead, or 'full' (no loop)",
    )
    ap.add_argument(
        "--early", type=int, help="--mma: the epilogue reads issued before the loop (gemv_mma.NORM | RESIDUAL | ...)"
    )
    ap.add_argument("--gather", choices=["0", "1"], help="--mma: the warps' sums added in each lane (1) or by gl.sum")
    a = ap.parse_args()
    if a.mma:
        old = revision_module(a.against, "gemv_mma") if a.against else None
        for name, (n, k, silu, bits, folds) in MMA_SPECS.items():
            new, lines = mma_row(gemv_mma, n, k, silu, bits, folds, a.unroll, a.early, a.gather)
            row = {"gemv_mma": name, "n": n, "k": k, **new}
            if old is not None:
                try:
                    base, base_lines = mma_row(old, n, k, silu, bits, folds)
                    row |= {f"{a.against}_{key}": v for key, v in base.items()}
                    row["same_instructions"] = lines == base_lines
                except ValueError:
                    row["same_instructions"] = None  # the older kernel has no such epilogue
            print(json.dumps(row), flush=True)
        return
    old = revision_kernel(a.against) if a.against else None
    for name, spec in SPECS.items():
        spec = dict(spec)
        n, k = spec.pop("n"), spec.pop("k")
        row, lines = compile_sass(gemv._gemv_int4, n, k, **spec)
        row = {"gemv": name, "n": n, "k": k, **row}
        if old is not None:
            try:
                base, base_lines = compile_sass(old, n, k, **spec)
                row |= {f"{a.against}_{key}": v for key, v in base.items()}
                row["same_instructions"] = lines == base_lines
            except ValueError:
                row["same_instructions"] = None  # the older kernel has no such epilogue
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
