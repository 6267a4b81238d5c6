import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest

from lorasweep.errors import LorasweepError
from lorasweep.base.hub import hub_status, resolve_source

MODEL = "SimpleStories/SimpleStories-1.25M"


@pytest.fixture(autouse=True)
def no_cache_no_flags(monkeypatch, tmp_path):
    """An empty HF cache and no offline flags, whatever the machine has."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def closed_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed(fn, *args, **kwargs):
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


def test_offline_flag_answers_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_local_port()}")
    (usable, reason), seconds = timed(hub_status, MODEL)
    assert not usable and "OFFLINE" in reason and seconds < 1


def test_closed_port_is_unusable_within_seconds(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_local_port()}")
    (usable, reason), seconds = timed(hub_status, MODEL, timeout_s=2.0)
    assert not usable and "unreachable" in reason and seconds < 5


def test_silent_endpoint_is_abandoned_after_the_timeout(monkeypatch):
    # Accepts connections (the kernel backlog does) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        (usable, _), seconds = timed(hub_status, MODEL, timeout_s=0.5)
    assert not usable and seconds < 3


@pytest.fixture
def local_hub(monkeypatch):
    """A loopback server answering HEAD: 200 for the model's config.json, else 404."""
    paths = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            paths.append(self.path)
            self.send_response(200 if self.path == f"/{MODEL}/resolve/main/config.json" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield paths
    server.shutdown()
    server.server_close()


def test_answering_hub_is_usable_and_missing_model_is_not(local_hub):
    assert hub_status(MODEL)[0]
    usable, reason = hub_status("nobody/no-such-model")
    assert not usable and "404" in reason
    assert local_hub == [f"/{MODEL}/resolve/main/config.json",
                         "/nobody/no-such-model/resolve/main/config.json"]


def test_cached_model_is_usable_even_offline(monkeypatch, tmp_path):
    repo = tmp_path / "hf-cache" / "models--SimpleStories--SimpleStories-1.25M"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    usable, reason = hub_status(MODEL)
    assert usable and "cache" in reason


def test_resolve_hub_without_hub_names_the_model_and_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LorasweepError) as error:
        resolve_source("hub", MODEL, timeout_s=1.0)
    assert MODEL in str(error.value) and "base.source: embedded" in str(error.value)


def test_resolve_auto_falls_back_to_embedded(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_local_port()}")
    source, reason = resolve_source("auto", MODEL, timeout_s=1.0)
    assert source == "embedded" and "unreachable" in reason


def test_resolve_auto_and_hub_take_a_usable_hub(local_hub):
    assert resolve_source("auto", MODEL)[0] == "hub"
    assert resolve_source("hub", MODEL)[0] == "hub"


def test_resolve_embedded_does_not_probe(monkeypatch, local_hub):
    assert resolve_source("embedded", MODEL)[0] == "embedded"
    assert local_hub == []


def test_unknown_source_names_the_config_key():
    with pytest.raises(LorasweepError, match="base.source"):
        resolve_source("cloud", MODEL)


def test_importing_hub_does_not_import_torch():
    code = "import sys, lorasweep.base.hub; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
