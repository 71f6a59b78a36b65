"""API baselines (rlkit.api): ``eval --model openai:NAME`` against a real OpenAI-compatible HTTP server on
127.0.0.1 (stdlib http.server in a thread), with retries, the response cache and the key kept off disk."""

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import write_experiment

pytest.importorskip("openai")

ROOT = Path(__file__).parent.parent
ANSWER = "<answer> 2.0 </answer>"
USAGE = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}


class FakeServer:
    """POST /v1/chat/completions: ANSWER with USAGE, except for the HTTP requests numbered in ``fail``
    (default: the 1st gets a 429, the 3rd a 500); ``always``: that status for every request; a 401 (with
    the key echoed in the message, as OpenAI does) after ``refuse_after`` requests; the 1st request
    answered only after ``stall`` seconds."""

    def __init__(self, fail=None, always=None, refuse_after=None, stall=0.0, stall_all=False, payload=None):
        self.fail = {1: 429, 3: 500} if fail is None else fail
        self.always, self.refuse_after, self.stall = always, refuse_after, stall
        self.stall_all, self.payload = stall_all, payload  # every request stalls; a 200 with this body
        self.hits, self.bodies, self.auth, self.lock = 0, [], set(), threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code: int, payload: dict, headers=()):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.hits += 1
                    n = server.hits
                    server.bodies.append(body)
                    server.auth.add(self.headers.get("Authorization"))
                if self.path != "/v1/chat/completions":
                    return self.reply(404, {"error": {"message": f"no route {self.path}"}})
                status = server.always or server.fail.get(n)
                if status == 401 or (server.refuse_after is not None and n > server.refuse_after):
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    return self.reply(401, {"error": {"message": f"Incorrect API key provided: {key}",
                                                      "type": "invalid_request_error", "code": "invalid_api_key"}})
                if status:  # a 429 or an endless failure says when to retry (fast); a single 500 gets the client's backoff
                    wait = [("retry-after-ms", "5")] if status == 429 or server.always else []
                    return self.reply(status, {"error": {"message": f"status {status}"}}, wait)
                if server.payload is not None:
                    return self.reply(200, server.payload)
                if (n == 1 or server.stall_all) and server.stall:
                    time.sleep(server.stall)
                    try:
                        return self.reply(200, {"error": "too late"})
                    except OSError:  # the client gave up on this connection
                        return
                self.reply(200, {"id": f"c{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": ANSWER}}],
                                 "usage": USAGE})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def _eval(exp, key, *args):
    env = {**os.environ, "OPENAI_API_KEY": key}
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "rlkit", "eval", str(exp), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_api_eval_matches_the_constant_baseline_and_never_pays_twice(tmp_path, synth_dir, server):
    exp = write_experiment(tmp_path, synth_dir, prompt={"template": "generalist"})
    key = "sk-test-" + secrets.token_hex(16)
    cache = tmp_path / "api-cache"
    r = _eval(exp, key, "--model", "openai:fake-vlm", "--api-base", server.url, "--api-concurrency", 3,
              "--api-cache", cache, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    n = m["eval_samples"]
    datasets = [d for d in m["metrics"]["model"] if d != "avg"]
    assert datasets == ["indoor", "outdoor"] and n > 0
    for d in datasets:  # every answer parses to 2.0: exactly the constant baseline, parse failures none
        assert m["metrics"]["model"][d]["delta1"] == m["metrics"]["constant 2 m"][d]["delta1"]
        assert m["metrics"]["model"][d] == m["metrics"]["constant 2 m"][d]
    api = m["api"]
    assert api["model"] == "fake-vlm" and api["api_base"].startswith(server.url)
    assert (api["requests"], api["cache_hits"], api["failures"]) == (n, 0, 0)
    assert (api["prompt_tokens"], api["completion_tokens"]) == (100 * n, 7 * n)
    assert api["wall_seconds"] >= 0 and api["concurrency"] == 3
    assert server.hits == n + 2  # the 429 and the 500 were retried by the client
    assert server.auth == {f"Bearer {key}"}  # the key from the environment was sent

    # the requests: the image first (a PNG data URL), then the kit's question, greedy, eval.max_new_tokens
    body = server.bodies[-1]
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 12 and body["temperature"] == 0.0
    (msg,) = body["messages"]
    assert [c["type"] for c in msg["content"]] == ["image_url", "text"]
    assert msg["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "marked in the image" in msg["content"][1]["text"] and "<answer> </answer>" in msg["content"][1]["text"]
    preds = (tmp_path / "a" / "predictions.csv").read_text()
    assert preds.count(ANSWER) == n

    # again, into another folder: every answer comes from the cache, the server sees no request
    hits = server.hits
    r2 = _eval(exp, key, "--model", "openai:fake-vlm", "--api-base", server.url, "--api-cache", cache,
               "--out", tmp_path / "b")
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert server.hits == hits
    m2 = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert m2["metrics"] == m["metrics"]
    assert (m2["api"]["requests"], m2["api"]["cache_hits"], m2["api"]["prompt_tokens"]) == (0, n, 0)
    assert m2["api"]["cached_prompt_tokens"] == 100 * n
    assert len(list(cache.rglob("*.json"))) == n and not list(cache.rglob("*.tmp"))

    # the key is in no file written and in no output
    assert _files_containing(tmp_path, key) == []
    for out in (r.stdout, r.stderr, r2.stdout, r2.stderr):
        assert key not in out


def test_failed_requests_are_empty_answers_not_a_crash_and_not_cached(tmp_path, synth_dir, monkeypatch):
    from rlkit.api import predict_api

    evalset = _small_evalset(tmp_path, synth_dir)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-failing")
    s = FakeServer(always=500)
    try:
        texts, stats = predict_api("openai:m", evalset, 8, api_base=s.url, cache_dir=tmp_path / "c", max_retries=2,
                                   progress=False)
    finally:
        s.close()
    n = len(evalset)
    assert texts == {k: "" for k in range(n)}
    assert (stats["requests"], stats["failures"], stats["cache_hits"]) == (n, n, 0)
    assert s.hits == 3 * n  # 1 + 2 retries each
    assert not list((tmp_path / "c").rglob("*.json"))


def test_a_refused_key_stops_with_one_line_and_no_key(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, eval={"samples_per_dataset": 2})
    key = "sk-test-" + secrets.token_hex(16)
    s = FakeServer(always=401)
    try:
        r = _eval(exp, key, "--model", "openai:m", "--api-base", s.url, "--api-cache", tmp_path / "c",
                  "--out", tmp_path / "o")
    finally:
        s.close()
    assert r.returncode == 2
    assert "error: openai:m at" in r.stderr and "AuthenticationError (HTTP 401)" in r.stderr
    assert key not in r.stderr + r.stdout
    assert not (tmp_path / "o" / "metrics.json").exists()
    assert _files_containing(tmp_path, key) == []


def test_missing_openai_client_names_the_extra(monkeypatch):
    from rlkit import api

    monkeypatch.setitem(sys.modules, "openai", None)  # import openai -> ImportError
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[api\]'"):
        api.import_openai()


def test_cache_key_covers_model_base_prompt_image_and_settings():
    from PIL import Image

    from rlkit.api import cache_key, display_base, redact

    img = Image.new("RGB", (4, 3), (10, 20, 30))
    other = Image.new("RGB", (4, 3), (10, 20, 31))
    parts, settings = [("image", img), ("text", "How far?")], {"max_tokens": 32, "temperature": 0.0}
    k = cache_key("m", "http://a/v1", parts, settings)
    assert k == cache_key("m", "http://a/v1", [("image", img.copy()), ("text", "How far?")], dict(settings))
    assert len({k, cache_key("m2", "http://a/v1", parts, settings), cache_key("m", "http://b/v1", parts, settings),
                cache_key("m", "http://a/v1", [("image", img), ("text", "How near?")], settings),
                cache_key("m", "http://a/v1", [("image", other), ("text", "How far?")], settings),
                cache_key("m", "http://a/v1", parts, {**settings, "max_tokens": 64})}) == 6
    assert display_base("https://user:secret@host:8000/v1") == "https://host:8000/v1"
    assert redact("Incorrect API key provided: sk-abc123xyz and K", "K") == "Incorrect API key provided: sk-*** and ***"


def test_generalist_template():
    from rlkit.camera import Camera
    from rlkit.prompts import Query, answer, parse_answer, question

    q = Query("depth", Camera(100.0, 100.0, 50.0, 40.0, 100, 80), 10, 20, 3.456)
    text = question(q, reference="marker", strategy="unify_focal", template="generalist")
    assert text.startswith("The point in question is marked in the image. How many meters is this point")
    assert text.endswith("the distance in meters, even if you are unsure, as a single number without units "
                         "inside <answer> </answer> tags.")
    assert "marked" not in question(q, reference="text", strategy="unify_focal", template="generalist")
    assert answer(q, strategy="unify_focal", template="generalist") == "<answer>3.46</answer>"
    assert parse_answer(ANSWER) == 2.0


def _small_evalset(tmp_path, synth_dir):
    from rlkit.config import load_experiment
    from rlkit.run import build_evalset, load_sources

    exp = load_experiment(write_experiment(tmp_path, synth_dir, eval={"samples_per_dataset": 3}))
    return build_evalset(exp, load_sources(exp, ("eval",)))


def test_a_timed_out_request_is_retried(tmp_path, synth_dir, monkeypatch):
    from rlkit.api import predict_api

    evalset = _small_evalset(tmp_path, synth_dir)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-timeout")
    s = FakeServer(fail={}, stall=2.0)
    try:
        texts, stats = predict_api("openai:m", evalset, 8, api_base=s.url, cache_dir=tmp_path / "c", timeout=0.5,
                                   concurrency=1, progress=False)
    finally:
        s.close()
    assert set(texts.values()) == {ANSWER} and stats["failures"] == 0
    assert s.hits == len(evalset) + 1


def test_an_interrupted_eval_keeps_what_it_paid_for(tmp_path, synth_dir, monkeypatch):
    from rlkit.api import predict_api
    from rlkit.config import ConfigError

    evalset = _small_evalset(tmp_path, synth_dir)
    n = len(evalset)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-interrupted")
    s = FakeServer(fail={}, refuse_after=3)  # the 4th request stops the evaluation (a revoked key)
    try:
        with pytest.raises(ConfigError, match="AuthenticationError"):
            predict_api("openai:m", evalset, 8, api_base=s.url, cache_dir=tmp_path / "c", concurrency=1,
                        progress=False)
        assert len(list((tmp_path / "c").rglob("*.json"))) == 3
        s.refuse_after, hits = None, s.hits
        texts, stats = predict_api("openai:m", evalset, 8, api_base=s.url, cache_dir=tmp_path / "c", concurrency=1,
                                   progress=False)
    finally:
        s.close()
    assert (stats["cache_hits"], stats["requests"]) == (3, n - 3) and s.hits == hits + n - 3
    assert [texts[k] for k in range(n)] == [ANSWER] * n


@pytest.mark.parametrize("payload", [{"choices": []}, {"object": "chat.completion"},
                                     {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]},
                                     {"choices": [{"index": 0, "message": "a string"}], "usage": {"prompt_tokens": "x"}}],
                         ids=["no choices", "no choices key", "null content", "string message"])
def test_an_answer_without_text_is_a_failure_and_never_cached(tmp_path, synth_dir, monkeypatch, payload):
    from rlkit.api import predict_api

    evalset = _small_evalset(tmp_path, synth_dir)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-empty")
    s = FakeServer(fail={}, payload=payload)
    try:
        texts, stats = predict_api("openai:m", evalset, 8, api_base=s.url, cache_dir=tmp_path / "c", progress=False)
    finally:
        s.close()
    assert stats["failures"] == stats["requests"] == len(evalset) and set(texts.values()) == {""}
    assert stats["prompt_tokens"] == 0
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]  # nothing cached: the next run asks again


def test_a_stalled_server_ends_within_the_timeout_and_retry_budget(tmp_path, synth_dir, monkeypatch):
    import time

    from rlkit.api import predict_api

    evalset = _small_evalset(tmp_path, synth_dir)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-stall")
    s = FakeServer(fail={}, stall=60.0, stall_all=True)
    t = time.time()
    try:
        texts, stats = predict_api("openai:m", evalset, 8, api_base=s.url, cache_dir=tmp_path / "c", timeout=0.3,
                                   max_retries=1, concurrency=len(evalset), progress=False)
    finally:
        s.httpd.server_close()
    # every request: 2 tries of 0.3 s plus the client's backoff (under 1 s), all side by side
    assert time.time() - t < 6.0
    assert stats["failures"] == len(evalset) and s.hits == 2 * len(evalset) and set(texts.values()) == {""}


def test_a_credential_in_the_api_base_query_reaches_no_file_and_no_message(tmp_path, synth_dir, monkeypatch):
    """A key passed as ?key= (Gemini) or api_key= lands neither in the recorded base (metrics.json, the cache
    entries) nor in an error message."""
    from rlkit.api import display_base, predict_api, redact
    from rlkit.errors import ConfigError

    assert display_base("https://h/v1?key=AIzaS3cr3t&alt=json") == "https://h/v1?key=***&alt=json"
    assert display_base("https://u:p@h/v1?api_key=X1&token=Y2") == "https://h/v1?api_key=***&token=***"
    assert redact("POST https://u:pw@h/v1?access_token=abc failed", None) == "POST https://***@h/v1?access_token=*** failed"
    evalset = _small_evalset(tmp_path, synth_dir)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    secret = "QSECRET" + "9" * 20
    s = FakeServer(fail={})
    try:  # the client keeps the query on the base: the server sees another path (404 stops the eval)
        with pytest.raises(ConfigError) as e:
            predict_api("openai:m", evalset, 8, api_base=f"{s.url}?key={secret}", cache_dir=tmp_path / "c",
                        progress=False)
    finally:
        s.close()
    assert secret not in str(e.value) and "key=***" in str(e.value)
    assert _files_containing(tmp_path, secret) == []
