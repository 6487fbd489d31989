"""A longer fuzz session over every target, one after another, with a committed summary.

    python tests/fuzz/campaign.py --minutes 60 [--targets image,request,...] [--out bench/results/fuzz]

The time is split by weight (image decoding and request parsing get the most). Writes
``OUT/summary.json`` and ``OUT/summary.md``: per target the inputs tried, coverage, new corpus
inputs and crash files (copy crash files to ``tests/fuzz/crashers/TARGET/`` and fix them). Work
folders (the grown corpora) go to ``--work`` (default: a temporary folder), not into the repository.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WEIGHTS = {"image": 6, "request": 5, "results_jsonl": 1, "results_csv": 1, "results_parquet": 2,
           "manifest_csv": 1, "export_manifest": 1, "artifact_record": 1}


def main(argv: list[str] | None = None) -> int:
    import targets

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--targets", default=",".join(targets.TARGETS))
    ap.add_argument("--out", default=str(HERE.parent.parent / "bench" / "results" / "fuzz"))
    ap.add_argument("--work", default=None)
    args = ap.parse_args(argv)
    names = [t for t in args.targets.split(",") if t]
    unknown = [t for t in names if t not in targets.TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; valid: {', '.join(targets.TARGETS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="fuzz-campaign-"))
    total = sum(WEIGHTS.get(t, 1) for t in names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for t in names:
        seconds = max(5, int(60 * args.minutes * WEIGHTS.get(t, 1) / total))
        summary = work / f"{t}.json"
        subprocess.run([sys.executable, str(HERE / "run.py"), t, "--seconds", str(seconds), "--work", str(work / t),
                        "--summary", str(summary)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        s = json.loads(summary.read_text()) if summary.exists() else {"target": t, "exit_status": "no summary"}
        s.pop("work", None)
        results.append(s)
        (out / "summary.json").write_text(json.dumps({"started": started, "minutes": args.minutes,
                                                      "python": platform.python_version(),
                                                      "targets": results}, indent=2) + "\n")
    lines = [f"# Fuzz campaign ({started}, {args.minutes:g} minutes planned, {platform.machine()}, "
             f"Python {platform.python_version()})", "",
             f"`python tests/fuzz/campaign.py --minutes {args.minutes:g}`", "",
             "| target | seconds | inputs tried | coverage (edges) | new corpus inputs | crashes |",
             "|---|---|---|---|---|---|"]
    for s in results:
        lines.append(f"| {s['target']} | {s.get('seconds')} | {s.get('inputs_tried')} | {s.get('coverage_edges')} | "
                     f"{s.get('new_corpus_inputs')} | {', '.join(s.get('crash_files') or []) or 'none'} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(not s.get("crash_files") for s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
