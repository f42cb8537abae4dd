"""A child process that loads an export once and answers requests to its signatures, under a
memory cap; the parent (``Worker``) times each request out, notices a crash, and restarts it.

Run as ``python -m tests.fuzz.worker EXPORT_DIR`` by ``Worker`` only; requests and answers are
pickles over the child's stdin and a private copy of its stdout (TensorFlow's own output goes
to stderr).
"""

from __future__ import annotations

import io
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GIB = 1024**3
# The address space a request may add to the loaded model's: past it, allocations fail.
ADDRESS_SPACE_HEADROOM = 6 * GIB
# The resident memory a request may add (the bound is 1.5 GB for the worst accepted one).
RSS_HEADROOM = 1.5e9


@dataclass
class Answer:
    status: str  # "ok", "refused" (InvalidArgument), "error", "crashed", "timeout", "memory"
    detail: str
    seconds: float
    rss_growth: float  # bytes of peak resident memory over the loaded model's, so far
    cpu_seconds: float = 0.0  # the child's, all its threads

    @property
    def failed(self) -> bool:
        return self.status not in ("ok", "refused")


def _send(stream, value) -> None:
    data = pickle.dumps(value)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    return pickle.loads(stream.read(struct.unpack("<Q", header)[0]))  # noqa: S301 - our child


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(export_dir: str) -> None:
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever TensorFlow prints stays out of the answers
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from job.export import contract as c

    signatures = tf.saved_model.load(export_dir).signatures
    blank = np.zeros((1, 28, 28), np.uint8)
    signatures[c.SIGNATURE_PIXELS](images=tf.constant(blank))
    signatures[c.SIGNATURE_PIXELS_FLOAT](images=tf.constant(blank, tf.float32))
    png = io.BytesIO()
    Image.new("L", (28, 28)).save(png, "PNG")
    signatures[c.SIGNATURE_IMAGE_BYTES](image_bytes=tf.constant([png.getvalue()]))
    loaded_rss = _rss()
    cap = _vm_size() + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    _send(answers, ("ready", loaded_rss))
    requests = os.fdopen(0, "rb")
    while (request := _receive(requests)) is not None:
        signature, value = request
        name = c.INPUT_IMAGE_BYTES if signature == c.SIGNATURE_IMAGE_BYTES else c.INPUT_PIXELS
        dtype = {c.SIGNATURE_PIXELS: tf.uint8, c.SIGNATURE_PIXELS_FLOAT: tf.float32}
        start, cpu = time.perf_counter(), time.process_time()
        try:
            out = signatures[signature](**{name: tf.constant(value, dtype.get(signature))})
            answer = ("ok", str(out[c.OUTPUT_DIGIT].numpy().tolist())[:200])
        except tf.errors.InvalidArgumentError as exc:
            reason = [line for line in exc.message.splitlines() if "assertion failed" in line]
            answer = ("refused", (reason or exc.message.splitlines())[0][:300])
        except Exception as exc:  # noqa: BLE001 - everything else is what the fuzzer looks for
            answer = ("error", f"{type(exc).__name__}: {str(exc)[:300]}")
        took = time.perf_counter() - start
        _send(answers, (*answer, took, _peak_rss() - loaded_rss, time.process_time() - cpu))


def request_bytes(value) -> int:
    """What a request holds: its encoded images' bytes or its pixel array's."""
    if isinstance(value, list | tuple):
        return sum(len(item) for item in value)
    return value.nbytes


class Worker:
    """The parent's handle on one child; ``ask`` restarts the child after a crash or timeout."""

    def __init__(self, export_dir: Path, onednn: bool, timeout: float = 20.0):
        self.export_dir, self.onednn, self.timeout = export_dir, onednn, timeout
        self.process: subprocess.Popen | None = None
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-worker-{os.getpid()}.log"

    def start(self) -> None:
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if self.onednn else "0"}
        env.update(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fuzz.worker", str(self.export_dir)],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        ready = self._answer(timeout=300)
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"the fuzz worker did not start; see {self.log}")

    def _answer(self, timeout: float):
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        return _receive(self.process.stdout) if readable else None

    def ask(self, signature: str, value) -> Answer:
        if self.process is None or self.process.poll() is not None:
            self.start()
        start = time.perf_counter()
        try:
            _send(self.process.stdin, (signature, value))
            reply = self._answer(self.timeout)
        except BrokenPipeError:
            reply = None
        seconds = time.perf_counter() - start
        if reply is None:
            self.stop()
            code = self.process.returncode
            if seconds >= self.timeout:
                return Answer("timeout", f"no answer in {self.timeout:.0f} s", seconds, 0)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            return Answer("crashed", how, seconds, 0)
        answer = Answer(*reply)
        # The request's own bytes are held by the server whatever the model does with them
        # (1024 copies of a 2 MB GIF are 2 GB before the graph refuses them): not counted.
        if answer.rss_growth - request_bytes(value) > RSS_HEADROOM:
            self.stop()  # its peak stays over the cap: start afresh
            return Answer("memory", f"{answer.rss_growth / 1e9:.2f} GB over the model", *reply[2:])
        return answer

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
        if self.process:
            self.process.wait()


def make_export(folder: Path) -> Path:
    """A real export (the job's own export_for_serving) of the untrained model: the fuzzer
    tests the serving graph around the model, which training does not change."""
    from job.export.savedmodel import export_for_serving
    from job.model import get_model

    return export_for_serving(get_model((28, 28, 1)), folder / "mnist", version=1)


if __name__ == "__main__":
    _child(sys.argv[1])
