"""benchmarks/compare_peers.py --frontier without the peers' venvs (as in CI): each missing peer is skipped with
a message, ours still runs end to end through peer_worker.py (a real pipeline in a child process, scored
against heldout.py's truth), and the frontier logic names a match or a miss."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_peers  # noqa: E402


def test_missing_peers_are_skipped_and_ours_is_scored(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(compare_peers, "PEERS_ROOT", tmp_path / "no-venvs")
    monkeypatch.setattr(compare_peers, "frontier_systems", lambda group: [
        compare_peers.System("faster-paddle 1.0.4 tiny", "peer", "faster-paddle", "faster-paddle", {"model_size": "tiny"}),
        compare_peers.ours_system("OCR_PP-OCRv6_tiny", "onnxruntime fp32"),
    ])
    out = tmp_path / "frontier.json"
    code = compare_peers.main(["--frontier", "fast", "--no-install", "--iters", "1", "--page-step", "15",
                               "--max-images", "3", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "faster-paddle" in printed.err and "no venv with its pins at" in printed.err
    data = json.loads(out.read_text(encoding="utf-8"))
    peer, ours = data["systems"]
    assert peer["error"].startswith("no venv with its pins at") and peer["scores"] is None
    assert ours["error"] is None and "onnxruntime" in ours["settings"]
    assert len(ours["texts"]) == 3 and len(ours["seconds"]) == 1 and all(s > 0 for s in ours["seconds"][0])
    # A clean rendered page and two receipts: PP-OCRv6 tiny reads them nearly perfectly (measured 0.0-0.8 % CER).
    assert ours["scores"]["all"]["cer"] < 0.05 and ours["scores"]["all"]["empty_images"] == 0
    assert data["frontier"] == []  # no peer ran, so nothing to match


def _system(name: str, side: str, seconds: float, texts) -> "compare_peers.System":
    system = compare_peers.System(name, side, None, "hpinfer", {})
    system.texts, system.boxes, system.seconds = [texts], [[[0, 0, 100, 20]] * len(texts)], [[seconds], [seconds]]
    return system


@pytest.mark.parametrize("ours_seconds, ours_text, verdict", [
    (0.5, "hello world", "MATCHED by ours-a"),  # as accurate, 2x faster
    (2.0, "hello world", "runs at 0.50x its speed"),  # as accurate, slower
    (0.5, "hellx world", "has CER 10.00%"),  # faster, less accurate
])
def test_frontier_verdicts(ours_seconds, ours_text, verdict):
    truth = [[{"text": "hello world", "box": [0, 0, 100, 20]}]]
    peer = _system("peer-a", "peer", 1.0, ["hello world"])
    ours = _system("ours-a", "ours", ours_seconds, [ours_text])
    scores = {s.name: compare_peers.score(s, truth, ["page_en"]) for s in (peer, ours)}
    rows = compare_peers.frontier_rows([peer, ours], scores)
    table = compare_peers.frontier_table([peer, ours], scores, rows, 1)
    assert verdict in table
