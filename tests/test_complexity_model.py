"""The shipped complexity model as a process sees it: loaded with no network and without the
training-only packages, refused at proxy start-up when missing or corrupt, and the same score
in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane.routing import complexity

ROOT = Path(__file__).resolve().parent.parent

PAYLOADS = [
    {"messages": [{"role": "user", "content": "Write a short poem about the sea, in the style of Emily Dickinson."}]},
    {"messages": [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then she sold "
                                              "half as many clips in May. How many clips did she sell altogether?"}]},
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Explain why the sky is blue. Ünïcödé, 北京, emoji 🙂, \ud800."}]},
    {"messages": [{"role": "user", "content": "x" * 20000}]},
]

# Runs in a fresh interpreter: every socket refused, proxies pointing nowhere, and the training
# packages made unimportable — the proxy needs none of them.
_OFFLINE = r"""
import json, socket, sys
class _NoNetwork(socket.socket):
    def connect(self, *a, **k):
        raise OSError("network blocked by the test")
    connect_ex = connect
socket.socket = _NoNetwork
socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network blocked by the test"))
for name in ("wordllama", "numpy", "sklearn", "scipy", "safetensors", "tokenizers"):
    sys.modules[name] = None
from dataplane.routing import complexity
complexity.use_model()
payloads = json.loads(sys.stdin.read())
print(json.dumps([[r.score, r.needed_quality, r.exam_like] for r in map(complexity.estimate, payloads)]))
assert not any(sys.modules.get(n) for n in ("wordllama", "numpy", "sklearn")), "a training package was imported"
"""


def _score_in_subprocess(seed: str) -> list:
    env = {**os.environ, "PYTHONHASHSEED": seed, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY":
           "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _OFFLINE], input=json.dumps(PAYLOADS), capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_shipped_weights_load_offline_and_score_the_same_in_every_process() -> None:
    first = _score_in_subprocess("1")
    second = _score_in_subprocess("12345")
    assert first == second                      # bit for bit, whatever the hash seed
    here = [[r.score, r.needed_quality, r.exam_like] for r in map(complexity.estimate, PAYLOADS)]
    assert first == here
    # Not a constant: the poem, the word problem and the explanation are told apart.
    assert len({round(row[0], 6) for row in first}) == len(PAYLOADS)
    assert first[1][2] > 0.5 > first[0][2]      # the word problem looks like an exam question, the poem does not


def _start_proxy(model_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "megarouter", "proxy", "--listen", "127.0.0.1:0",
                           "--control-plane", "127.0.0.1:9", "--complexity-model", str(model_path),
                           "--cache-file", ""], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered piece table", "wrong format"])
def test_a_missing_or_corrupt_weights_file_stops_the_proxy_at_start_up(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "complexity_model.json"
    text = complexity.MODEL_PATH.read_text(encoding="utf-8")
    if damage == "truncated":
        path.write_text(text[: len(text) // 2], encoding="utf-8")
    elif damage == "altered piece table":
        data = json.loads(text)
        data["piece_weights"]["chat"] = data["piece_weights"]["chat"][:-1]
        path.write_text(json.dumps(data), encoding="utf-8")
    elif damage == "wrong format":
        data = json.loads(text)
        data["format"] = "megarouter-complexity/1"
        path.write_text(json.dumps(data), encoding="utf-8")
    done = _start_proxy(path)
    assert done.returncode != 0
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("megarouter proxy: ")
    assert str(path) in message and "scripts/train_complexity.py" in message
    assert "Traceback" not in done.stderr
    expected = {"missing": "cannot read", "truncated": "corrupt", "altered piece table": "piece_weights.chat",
                "wrong format": "megarouter-complexity/1"}[damage]
    assert expected in message


def test_the_segmenter_is_total_and_matches_the_vocabulary() -> None:
    model = complexity.load_model()
    seg = model.segmenter
    pieces = [p for p, _ in sorted(seg.vocab.items(), key=lambda kv: kv[1])]
    assert [pieces[i] for i in seg.pieces("Hello, naïve wörld 12")] == \
        ["▁Hello", ",", "▁na", "ï", "ve", "▁w", "ör", "ld", "▁", "1", "2"]
    # Any text, even unpaired surrogates and unknown scripts, segments into known pieces.
    assert all(0 <= i < len(pieces) for i in seg.pieces("\ud800 \U0001F600 ᚠᛇᚻ"))
    assert seg.pieces("") == []
