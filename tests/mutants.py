"""Mutation testing of the modules that guard data, outputs and the gate (``make mutants``).

mutmut makes small deliberate bugs (mutants) in one module at a time and runs the fast tests
that cover it against each; a mutant the tests still pass survived. Each module runs in a
work folder of its own under build/mutants/, with the tests named in TARGETS, and the script
ends with a table: killed, survived and timed out per module, and the score (killed / all).
It exits 1 when a module scores under --min-score.

    .venv/bin/python tests/mutants.py [--only job/gate.py ...]
    cd build/mutants/job.gate && ../../../.venv/bin/mutmut show NAME   # what a survivor changed
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "mutants"
COPIED = ("job", "serving", "tests")


@dataclass(frozen=True)
class Target:
    """The pytest arguments that select the fast tests covering a module, and which of its
    functions to mutate (globs over mutmut's mutant names, ``x_<function>__mutmut_<n>``)."""

    tests: tuple[str, ...]
    functions: tuple[str, ...] = ("*",)


# Module -> the fast tests that cover it. Only tests that run a mutated function are run
# against its mutants (mutmut records which tests call which function first).
TARGETS = {
    "job/data/arrays.py": Target(
        (
            "tests/test_boundaries.py",
            "tests/test_data.py::test_bad_files_are_rejected_with_the_file_named",
            "tests/test_data.py::test_float_pixels_that_are_whole_numbers_are_accepted",
        )
    ),
    "job/files.py": Target(
        ("tests/test_outputs.py", "tests/test_data.py::test_cache_is_written_atomically")
    ),
    "job/rundir.py": Target(
        ("tests/test_outputs.py", "tests/test_cli.py::test_a_rerun_resumes_only_the_same_run")
    ),
    "job/gate.py": Target(
        ("tests/test_boundaries.py", "-k", "gate or tolerance or floor or bless")
    ),
    "job/export/versions.py": Target(
        (
            "tests/test_boundaries.py",
            "tests/test_gate.py::test_gate_decisions",
            "-k",
            "version or rename or baseline or gate",
        )
    ),
    # The input limits only: the batch and request bounds, the headers read before decoding,
    # the GIF walk, decoding, the pixel rule.
    "job/export/signatures.py": Target(
        ("tests/test_signature_limits.py",),
        functions=(
            "x__checked__*",
            "x__within_batch_limit__*",
            "x__unsigned__*",
            "x__bmp_dimension__*",
            "x__follow__*",
            "x_gif_frames__*",
            "x__is__*",
            "x_image_header_size__*",
            "x__check_request__*",
            "x__within_request_bytes__*",
            "x__decode_to_pixels__*",
            "x_decode_images__*",
            "x__pixel_rule__*",
        ),
    ),
    "serving/inputs.py": Target(
        ("tests/test_boundaries.py", "-k", "client or npy or index or image_to")
    ),
    # The report's schema lives in job/schemas/metrics.schema.json (data, checked by the
    # tests with jsonschema); the Python that writes and reads reports back is mutated.
    "job/report.py": Target(
        ("tests/test_outputs.py", "-k", "report or schema"),
        functions=("x_write_report__*", "x_read_report__*"),
    ),
}

PYTEST_ARGS = ["-p", "no:cacheprovider", "-m", "not slow and not slurm and not containers"]


def prepare(module: str, target: Target) -> Path:
    """A fresh work folder: the packages, the tests and a pyproject.toml that tells mutmut
    what to mutate and which tests to run."""
    work = WORK / module.removesuffix(".py").replace("/", ".")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in COPIED:
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    settings = {
        "source_paths": ["job", "serving"],
        "only_mutate": [module],
        "pytest_add_cli_args_test_selection": list(target.tests),
        "pytest_add_cli_args": PYTEST_ARGS,
        # TensorFlow and gRPC are not fork-safe once used: fork from a clean server process.
        "process_isolation": "forkserver",
        "use_git_change_detection": False,
    }
    table = "\n[tool.mutmut]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    (work / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + table)
    return work


def statuses(work: Path, module: str, target: Target) -> dict[str, str]:
    """mutant name -> mutmut's status, for the target's functions."""
    mutmut = Path(sys.executable).with_name("mutmut")
    listing = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True, check=True
    ).stdout
    prefix = module.removesuffix(".py").replace("/", ".") + "."
    found = {}
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        local = name.removeprefix(prefix)
        if name.startswith(prefix) and any(fnmatch.fnmatch(local, f) for f in target.functions):
            found[name] = status
    return found


def run_module(module: str, target: Target, log) -> tuple[dict[str, str], float]:
    work = prepare(module, target)
    prefix = module.removesuffix(".py").replace("/", ".") + "."
    names = [] if target.functions == ("*",) else [prefix + f for f in target.functions]
    mutmut = Path(sys.executable).with_name("mutmut")
    start = time.monotonic()
    done = subprocess.run([mutmut, "run", *names], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"mutmut failed on {module} (exit {done.returncode}); see {log.name}")
    return statuses(work, module, target), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(TARGETS), help="modules to mutate")
    parser.add_argument("--min-score", type=float, default=0.9, help="fail under this score")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    rows, survivors, total_seconds = [], [], 0.0
    with open(WORK / "mutmut.log", "w") as log:
        for module in args.only or TARGETS:
            print(f"mutating {module} ...", flush=True)
            found, seconds = run_module(module, TARGETS[module], log)
            total_seconds += seconds
            counts = {s: sum(v == s for v in found.values()) for s in ("killed", "survived")}
            timeouts = sum(v == "timeout" for v in found.values())
            other = len(found) - counts["killed"] - counts["survived"] - timeouts
            score = counts["killed"] / len(found) if found else 0.0
            rows.append((module, counts["killed"], counts["survived"], timeouts, other, score))
            survivors += [n for n, s in sorted(found.items()) if s != "killed"]
            print(f"  {len(found)} mutants in {seconds:.0f} s", flush=True)
    print()
    print(f"{'module':<26} {'killed':>6} {'survived':>8} {'timeout':>7} {'other':>5} {'score':>6}")
    for module, killed, survived, timeouts, other, score in rows:
        print(f"{module:<26} {killed:>6} {survived:>8} {timeouts:>7} {other:>5} {score:>6.1%}")
    print(f"\n{total_seconds / 60:.1f} minutes; other: no test ran, suspicious or not checked")
    if survivors:
        print("not killed (mutmut show NAME in build/mutants/<module>):")
        print("\n".join(f"  {name}" for name in survivors))
    failing = [row[0] for row in rows if row[5] < args.min_score]
    if failing:
        print(f"under {args.min_score:.0%}: {', '.join(failing)}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
