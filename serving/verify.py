"""A post-deploy check: does the served model answer as the run that made it reported?"""

import json
import statistics
import time
from pathlib import Path

import numpy as np

from job.export import contract as c
from serving import ServingError
from serving.load import percentile


def check_signatures(metadata: dict) -> None:
    """Raise ServingError unless the served signatures carry the contract's names."""
    served = metadata["metadata"]["signature_def"]["signature_def"]
    outputs = sorted([c.OUTPUT_PROBABILITIES, c.OUTPUT_DIGIT])
    for name, tensor, _ in c.SIGNATURES:
        if name not in served:
            raise ServingError(f"the served model has no signature {name!r}")
        got = sorted(served[name]["inputs"]), sorted(served[name]["outputs"])
        if got != ([tensor], outputs):
            raise ServingError(
                f"signature {name!r} has inputs {got[0]} and outputs {got[1]}; "
                f"the contract says {[tensor]} and {outputs}"
            )


def reported_accuracy(version: int, run_dir: Path | None, export_dir: Path) -> tuple[str, float]:
    """(where the figure comes from, the reported test accuracy) for ``version``: the given
    run's report, else the run record the export of ``version`` carries."""
    if run_dir is not None:
        source, path = f"run {run_dir}", run_dir / c.REPORT_FILE
    else:
        path = export_dir / str(version) / "assets.extra" / c.RUN_INFO_FILE
        source = f"export {export_dir / str(version)}"
    try:
        record = json.loads(path.read_text())
        run = record.get("config", {}).get("run_dir") if run_dir is None else None
        return (f"{source}, run {run}" if run else source), float(record["test"]["accuracy"])
    except OSError as exc:
        hint = "" if run_dir else "; give --export-dir (the model base path here) or --run"
        raise ServingError(f"{path}: cannot read ({exc.strerror}){hint}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ServingError(f"{path}: no test accuracy in it") from None


def verify(server, model, version, run_dir, export_dir, images, labels, batch_size) -> str:
    """The version that answers for ``version``, checked against the report of the run that made
    it (or ``run_dir``'s) -> one line; ServingError naming both sides when they disagree."""
    meta = server.metadata(model, version)
    served = int(meta["model_spec"]["version"])
    source, reported = reported_accuracy(served, run_dir, export_dir)
    check_signatures(meta)
    correct, latencies = 0, []
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        sent = time.perf_counter()
        answer = server.predict(model, version=served, pixels=images[start : start + batch_size])
        latencies.append(time.perf_counter() - sent)
        correct += int(np.sum(answer[c.OUTPUT_DIGIT] == labels[start : start + batch_size]))
    wall = time.perf_counter() - started
    # The same number of correct answers agrees: the report's figure is a float32 mean.
    agrees = correct == round(reported * len(images))
    line = (
        f"{model} version {served} ({source}): served accuracy {correct / len(images):.4f} "
        f"{'=' if agrees else '!='} reported {reported:.4f}; {len(images)} images in "
        f"{len(latencies)} requests, {len(images) / wall:.0f} images/s, "
        f"p50 {1000 * statistics.median(latencies):.1f} ms, "
        f"p99 {1000 * percentile(latencies, 0.99):.1f} ms"
    )
    if not agrees:
        raise ServingError(f"{server.target}: {line}")
    return line
