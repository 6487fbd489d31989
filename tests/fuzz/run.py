"""Run one coverage-guided fuzz target under atheris (libFuzzer).

    python tests/fuzz/run.py TARGET [--seconds 60] [--work DIR] [--summary FILE.json] [-- libFuzzer flags]

The committed seed corpus (``tests/fuzz/corpus/TARGET``) and kept crashers are read, never
written: new interesting inputs go to ``--work`` (default: a temporary folder). Limits: each
input gets ``--input-timeout`` seconds (a hang is a crash) and the process ``--rss-limit-mb``
(unbounded memory is a crash). A crash leaves ``crash-*`` / ``timeout-*`` / ``oom-*`` files in
``--work``; copy them to ``tests/fuzz/crashers/TARGET/`` to keep them as regression tests.

``--summary`` writes JSON: target, seconds, inputs tried (libFuzzer's run count), corpus size,
coverage, crash files. Exit status: 0 no crash, else libFuzzer's status.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def child(target: str, flags: list[str]) -> None:
    import atheris

    import targets

    with atheris.instrument_imports(include=list(targets.INSTRUMENT[target])):
        for mod in targets.INSTRUMENT[target]:
            try:
                __import__(mod)
            except ImportError:
                pass
        # the modules the target reaches (imported here so they are instrumented)
        import semgir_engine.datasets  # noqa: F401
        import semgir_engine.images  # noqa: F401
        import semgir_engine.results  # noqa: F401
        import semgir_engine.runtime.manifest  # noqa: F401
        if target == "request":
            import semgir_engine.serve  # noqa: F401 (instrumented for coverage)
    fn = targets.TARGETS[target]
    if target == "request":
        fn(b"")  # build the service (model load) before the clock starts
    atheris.Setup([sys.argv[0]] + flags, fn)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--work", default=None)
    ap.add_argument("--summary", default=None)
    ap.add_argument("--input-timeout", type=int, default=20)
    ap.add_argument("--rss-limit-mb", type=int, default=3072)
    ap.add_argument("--max-len", type=int, default=1 << 16)
    ap.add_argument("--seed", type=int, default=None, help="libFuzzer's -seed (default: random)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, extra = ap.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if args.child:
        child(args.target, extra)
        return 0
    import targets

    if args.target not in targets.TARGETS:
        ap.error(f"unknown target {args.target!r}; valid: {', '.join(targets.TARGETS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix=f"fuzz-{args.target}-"))
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    flags = [f"-max_total_time={max(1, int(args.seconds))}", f"-timeout={args.input_timeout}",
             f"-rss_limit_mb={args.rss_limit_mb}", f"-malloc_limit_mb={args.rss_limit_mb}",
             f"-max_len={args.max_len}", f"-artifact_prefix={work}/", "-print_final_stats=1"]
    if args.seed is not None:
        flags.append(f"-seed={args.seed}")
    dirs = [str(work / "corpus")] + [str(d / args.target) for d in (targets.CORPUS, targets.CRASHERS)
                                      if (d / args.target).is_dir()]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    t0 = time.time()
    proc = subprocess.run([sys.executable, __file__, args.target, "--child", *flags, *extra, *dirs], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    log = proc.stdout
    (work / "fuzz.log").write_text(log)
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    cov = re.findall(r"\bcov: (\d+)", log)
    summary = {
        "target": args.target, "seconds": round(time.time() - t0, 1), "max_total_time": int(args.seconds),
        "inputs_tried": int(runs[-1]) if runs else None, "coverage_edges": int(cov[-1]) if cov else None,
        "new_corpus_inputs": len(list((work / "corpus").iterdir())),
        "crash_files": sorted(p.name for p in work.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-",
                                                                                      "leak-", "slow-unit-"))),
        "exit_status": proc.returncode, "work": str(work),
    }
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    sys.stdout.write(log[-6000:] if proc.returncode else "")
    print(json.dumps(summary))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
