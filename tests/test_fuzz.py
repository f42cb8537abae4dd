"""The fuzz tier: `make fuzz`'s campaign for a short budget (make test), and the harness's own
verdicts (a timeout, memory over the cap and a crash fail a case and save its input)."""

from __future__ import annotations

import pickle

import pytest

from job.export import contract as c
from tests.fuzz import run, worker
from tests.fuzz.images import seed_corpus
from tests.fuzz.worker import Answer, Worker, make_export

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export"))


def test_a_short_fuzz_campaign_with_onednn_on_and_off_finds_nothing(small_export, tmp_path, capsys):
    found = tmp_path / "found"
    code = run.main(["--minutes", "0.4", "--export", str(small_export), "--found", str(found)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "oneDNN on " in out and "oneDNN off" in out and "; 0 failures" in out
    assert not found.exists()


def test_a_request_past_the_timeout_or_the_memory_cap_fails_and_the_worker_restarts(
    small_export, monkeypatch
):
    images = [seed_corpus()["noise.jpg"]] * c.MAX_BATCH
    slow = Worker(small_export, onednn=True, timeout=0.001)
    try:
        assert slow.ask(c.SIGNATURE_IMAGE_BYTES, images).status == "timeout"
        slow.timeout = 60
        assert slow.ask(c.SIGNATURE_IMAGE_BYTES, images[:1]).status == "ok"  # a new child
        monkeypatch.setattr(worker, "RSS_HEADROOM", -1e12)
        answer = slow.ask(c.SIGNATURE_IMAGE_BYTES, images[:1])
        assert answer.status == "memory" and answer.failed
    finally:
        slow.stop()


def test_a_crash_fails_the_campaign_and_saves_the_request(small_export, tmp_path, monkeypatch):
    monkeypatch.setattr(Worker, "start", lambda self: None)
    monkeypatch.setattr(Worker, "ask", lambda self, *request: Answer("crashed", "SIGABRT", 0, 0))
    campaign = run.fuzz(small_export, onednn=True, seconds=1, found=tmp_path)
    assert campaign.cases > 0 and len(campaign.failures) == campaign.cases
    saved = campaign.failures[0]
    assert "SIGABRT" in (saved / "answer.txt").read_text()
    signature, value = pickle.loads((saved / "request.pickle").read_bytes())
    assert signature in (c.SIGNATURE_IMAGE_BYTES, c.SIGNATURE_PIXELS, c.SIGNATURE_PIXELS_FLOAT)
