"""Soak under signals: two piped `yi-chat` sessions at once on one YI_CHAT_HOME, each for N turns, each process
sent SIGINT, SIGTERM, SIGHUP or SIGQUIT at random instants (then restarted for the turns left); at the end every
finished exchange that either run printed must be on disk in some session file, and every session file must be
whole and well-formed. Prints one JSON line; exits 1 when a check fails.

    OMP_WAIT_POLICY=PASSIVE python scripts/soak_signals.py --turns 500 --model demo --max-new-tokens 8

The instant of each signal: after a random number of replies (uniform in 0 .. 2 x --every, again after each
signal), plus a random fraction of a second, so signals land while the model loads, mid-reply, between turns and
during autosaves. SIGINT cuts the reply in flight (the pipe goes on); SIGTERM, SIGHUP and SIGQUIT end the process
(exit 130, 129, 131: README's exit codes), after saving the reply in flight.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lane(name: str, args, home: Path, rng: random.Random, log: dict) -> None:
    """One session's worth of turns, through as many processes as the signals make it take."""
    done = 0  # turns answered (finished or cut): a cut turn is not sent again
    env = {**os.environ, "YI_CHAT_HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    while done < args.turns:
        lines = [
            f"{name} turn {i}: say one word about {rng.choice(['rain', 'owls', 'tea', 'chess'])}"
            for i in range(done, args.turns)
        ]
        errf = tempfile.TemporaryFile()  # a file, not a pipe: a long run's notices cannot fill it and stall
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "yi_cli",
                "-m",
                args.model,
                "--json",
                "--max-new-tokens",
                str(args.max_new_tokens),
                "--temperature",
                "0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errf,
            env=env,
        )
        log["processes"] += 1
        feeder = threading.Thread(target=_feed, args=(proc, lines), daemon=True)
        feeder.start()
        out, n = [], 0
        next_at = rng.randrange(0, 2 * args.every + 1)  # signal after this many replies (0: while it loads)
        if next_at == 0:
            time.sleep(rng.random() * args.jitter * 6)
            _signal(proc, rng, log)
            next_at = rng.randrange(1, 2 * args.every + 1)
        for raw in proc.stdout:  # SIGINT cuts the reply in flight and the pipe goes on; the others end the run
            out.append(raw)
            n += 1
            if n >= next_at and n < len(lines):
                time.sleep(rng.random() * args.jitter)
                _signal(proc, rng, log)
                next_at = n + rng.randrange(1, 2 * args.every + 1)
        rc = proc.wait()
        errf.seek(0)
        err = errf.read().decode(errors="replace")
        errf.close()
        feeder.join()
        log["exit_codes"][rc] += 1
        if "Traceback" in err:
            log["tracebacks"].append(err[-1500:])
        for raw in out:
            rec = json.loads(raw)
            if "reply" not in rec:
                continue
            done += 1
            kind = "finished" if rec.get("finish_reason") in ("stop", "length") else "cut"
            log[kind].append((rec["prompt"], rec["reply"]))
        if rc not in EXITS:
            log["bad_exit"].append((rc, err[-500:]))
            return


# the signals sent, and the exits they may lead to (a signal before the handlers are installed: killed by it)
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]
EXITS = {0, 129, 130, 131, *(-s for s in SIGNALS)}


def _signal(proc, rng: random.Random, log: dict) -> None:
    sig = rng.choice(SIGNALS)
    proc.send_signal(sig)
    log["signals"][sig.name] += 1


def _feed(proc, lines: list[str]) -> None:
    try:
        for line in lines:
            proc.stdin.write((line + "\n").encode())
            proc.stdin.flush()
        proc.stdin.close()
    except (BrokenPipeError, OSError, ValueError):  # the process ended (a signal) before reading everything
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="as yi-chat -m (a tiny checkpoint makes a fast smoke run)")
    ap.add_argument("--turns", type=int, default=500, help="turns of each of the two sessions")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--every", type=int, default=25, help="mean replies between two signals to one process")
    ap.add_argument("--jitter", type=float, default=0.5, help="most seconds added after the chosen reply")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="yi-soak-signals-"))
    cache = Path(os.environ.get("YI_CHAT_HOME", ROOT / ".pytest_home")) / "cache"
    if cache.is_dir():  # reuse the converted demo model
        os.symlink(cache.resolve(), home / "cache")
    logs = {
        n: {
            "processes": 0,
            "exit_codes": Counter(),
            "signals": Counter(),
            "finished": [],
            "cut": [],
            "tracebacks": [],
            "bad_exit": [],
        }
        for n in ("A", "B")
    }
    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=lane, args=(n, args, home, random.Random(f"{args.seed}-{n}"), logs[n])) for n in logs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run_s = time.perf_counter() - t0

    on_disk, bad_files, files = set(), [], sorted((home / "data" / "sessions").glob("*.json"))
    for f in files:
        try:
            turns = json.loads(f.read_text(encoding="utf-8"))["turns"]
            roles = [t["role"] for t in turns]
            assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) % 2 == 0
        except (ValueError, KeyError, TypeError, AssertionError):
            bad_files.append(f.name)
            continue
        on_disk.update((turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2))
    finished = [x for log in logs.values() for x in log["finished"]]
    cut = [x for log in logs.values() for x in log["cut"]]
    missing = [x for x in finished if x not in on_disk]
    tracebacks = [t for log in logs.values() for t in log["tracebacks"]]
    bad_exit = [b for log in logs.values() for b in log["bad_exit"]]
    answered = {n: len(log["finished"]) + len(log["cut"]) for n, log in logs.items()}
    ok = (
        not missing
        and not bad_files
        and not tracebacks
        and not bad_exit
        and all(v == args.turns for v in answered.values())
    )
    result = {
        "script": "soak_signals",
        "model": args.model,
        "turns_per_session": args.turns,
        "seed": args.seed,
        "processes": sum(log["processes"] for log in logs.values()),
        "signals": dict(sum((log["signals"] for log in logs.values()), Counter())),
        "exit_codes": {str(k): v for k, v in sum((log["exit_codes"] for log in logs.values()), Counter()).items()},
        "answered": answered,
        "finished_exchanges": len(finished),
        "cut_replies": len(cut),
        "cut_on_disk": sum(x in on_disk for x in cut),
        "finished_missing_on_disk": len(missing),
        "session_files": len(files),
        "bad_session_files": len(bad_files),
        "tracebacks": len(tracebacks),
        "bad_exits": len(bad_exit),
        "run_s": round(run_s, 1),
        "ok": ok,
    }
    print(json.dumps(result))
    for x in missing[:3] + tracebacks[:2] + bad_exit[:2]:
        print(x, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
