"""Evaluate a model behind an OpenAI-compatible server (OpenAI, Gemini's compatible endpoint, a vLLM
server): ``./run.sh eval EXP.yaml --model openai:MODEL [--api-base URL]``.

Each eval item is one chat request built from the kit's own row (``builder.to_row``): the image as a
base64 PNG data URL, then the question text, greedy (temperature 0), at most ``eval.max_new_tokens``
tokens. The key is read from $OPENAI_API_KEY only and never written anywhere.

- Requests run on a bounded thread pool; the openai client retries 408/409/429/5xx, connection
  errors and timeouts with exponential backoff (honouring Retry-After). A request that still fails
  becomes an empty answer (a counted parse failure). A refused key (401/403) or an unknown model
  (404) stops the evaluation instead: every other request would fail the same way.
- Responses are cached, one JSON file per request in a folder shared across runs (default
  ``.cache/api``), keyed by (model, API base, prompt text, image pixels, generation settings) and
  written atomically: an interrupted or repeated evaluation never pays for a response twice.
  Failed requests are not cached.
- ``predict_api`` returns the texts per item and the statistics that go into metrics.json under
  "api": requests made, cache hits, failures, tokens (from the responses' usage), wall time.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from rlkit.builder import EvalSet, to_row
from rlkit.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "openai:"
DEFAULT_CACHE = ".cache/api"
INSTALL_HINT = "pip install -e '.[api]'"
CACHE_VERSION = 1  # part of every key: bump when the request format changes


def is_api_model(model_path) -> bool:
    """True for ``openai:MODEL`` (a model behind an OpenAI-compatible server)."""
    return isinstance(model_path, str) and model_path.startswith(PREFIX)


def import_openai():
    """The openai package, or a one-line error saying how to install it."""
    try:
        import openai
    except ImportError:
        raise SystemExit(f"evaluating an API model needs the openai client: {INSTALL_HINT}") from None
    return openai


# query parameters that can carry a credential (Gemini's ?key=, Azure's api-key, tokens)
SECRET_PARAMS = re.compile(r"([?&](?:key|api[_-]?key|apikey|token|access[_-]?token|secret|password|sig)=)[^&#\s'\"]*",
                           re.IGNORECASE)


def redact(text: str, key: str | None) -> str:
    """The text without the key, anything shaped like an OpenAI key (error bodies echo a masked key), a URL's
    user:password or a credential in its query string."""
    if key:
        text = text.replace(key, "***")
    text = re.sub(r"(://)[^/@\s]+@", r"\1***@", text)
    text = SECRET_PARAMS.sub(r"\1***", text)
    return re.sub(r"\bsk-[\w*\-.]{4,}", "sk-***", text)


def display_base(url: str) -> str:
    """The API base as recorded in metrics.json and the cache entries: without user:password@ and with the values
    of credential query parameters (key, api_key, token, ...) replaced by ***."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return SECRET_PARAMS.sub(r"\1***", urlunsplit(parts))


def image_hash(img) -> str:
    """A hash of the pixels (not of an encoding, which may differ between Pillow versions)."""
    h = hashlib.sha256(f"{img.mode} {img.size[0]}x{img.size[1]}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def png_data_url(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def request_parts(row: dict) -> list[tuple[str, object]]:
    """The row's user turn in order: ("image", PIL image) and ("text", str) parts."""
    images = iter(row["images"])
    parts = []
    for turn in row["prompt"]:
        for c in turn["content"]:
            parts.append(("image", next(images)) if c["type"] == "image" else ("text", c["text"]))
    return parts


def messages(parts) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": png_data_url(v)}} if kind == "image"
               else {"type": "text", "text": v} for kind, v in parts]
    return [{"role": "user", "content": content}]


def cache_key(model: str, base: str, parts, settings: dict) -> str:
    sig = [[kind, image_hash(v) if kind == "image" else v] for kind, v in parts]
    blob = json.dumps({"v": CACHE_VERSION, "model": model, "api_base": base, "prompt": sig, "settings": settings},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """One small JSON file per key under ``root/ab/abcd....json``, written atomically (temp file + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            entry = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("text"), str) else None

    def put(self, key: str, entry: dict) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def answer_text(resp) -> str | None:
    """The first choice's message text, or None when the response holds none (not JSON, no choices, a message
    that is not an object or whose content is not a string)."""
    try:
        content = resp.choices[0].message.content
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _count(value) -> int:
    """A usage count as an int; 0 for anything that is not a whole number (a malformed ``usage``)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class _Fatal(Exception):
    """A request error that every other request would repeat (bad key, unknown model)."""


def open_client(model_path: str, api_base: str | None, concurrency: int, max_retries: int, timeout: float):
    """(the openai client, the model name, the key or None), after checking the request settings."""
    openai = import_openai()
    model = model_path[len(PREFIX):] if is_api_model(model_path) else model_path
    if not model:
        raise ConfigError(f"--model {model_path!r}: name the model after '{PREFIX}', e.g. {PREFIX}gpt-4o")
    if concurrency < 1:
        raise ConfigError(f"--api-concurrency must be >= 1, got {concurrency}")
    if not (timeout > 0) or max_retries < 0:
        raise ConfigError(f"--api-timeout must be > 0 and --api-retries >= 0, got {timeout} and {max_retries}")
    key = os.environ.get("OPENAI_API_KEY") or None
    if key is None:
        if not api_base:
            raise ConfigError("set OPENAI_API_KEY to evaluate an OpenAI model (the key is read from the "
                              "environment only), or pass --api-base URL for a server that needs no key")
        log.info("OPENAI_API_KEY is not set: sending a placeholder key (fine for a vLLM server started without one)")
    client = openai.OpenAI(api_key=key or "EMPTY", base_url=api_base or None, max_retries=max_retries,
                           timeout=timeout)
    for name in ("httpx", "httpx2"):  # one INFO line per request otherwise; retries are still logged by openai
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    return client, model, key


class _Requests:
    """The requests of one evaluation, sent from worker threads: each answer is cached and counted in ``stats``;
    a failed or text-less one is an empty answer, counted and never cached."""

    FAILURES_LOGGED = 10

    def __init__(self, client, model: str, key: str | None, settings: dict, cache: ResponseCache, stats: dict):
        openai = import_openai()
        self.client, self.model, self.key, self.settings, self.cache, self.stats = \
            client, model, key, settings, cache, stats
        self.fatal = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
        self.lock = threading.Lock()
        self.to_log = self.FAILURES_LOGGED

    def describe(self, e: Exception) -> str:
        status = getattr(e, "status_code", None)
        return redact(f"{type(e).__name__}{f' (HTTP {status})' if status else ''}: {e}", self.key)

    def _failed(self, message: str, *args) -> str:
        with self.lock:
            self.stats["requests"] += 1
            self.stats["failures"] += 1
            if self.to_log:
                self.to_log -= 1
                log.warning(message, *args)
        return ""

    def send(self, k: int, ck: str, parts) -> str:
        try:
            resp = self.client.chat.completions.create(model=self.model, messages=messages(parts), **self.settings)
        except self.fatal as e:
            raise _Fatal(self.describe(e)) from None
        except Exception as e:  # retries spent (or an unreadable response)
            return self._failed("item %d: request failed (an empty answer; retried up to %d times where retrying "
                                "helps): %s", k, self.stats["max_retries"], self.describe(e))
        text = answer_text(resp)
        if text is None:  # 200 without a usable answer (an HTML page, no choices, a null message)
            return self._failed("item %d: the server answered without a text (an empty answer, not cached): %s",
                                k, redact(repr(resp)[:200], self.key))
        usage = getattr(resp, "usage", None)
        tokens = {t: _count(getattr(usage, t, 0)) for t in ("prompt_tokens", "completion_tokens")}
        try:
            self.cache.put(ck, {"model": self.model, "api_base": self.stats["api_base"], "settings": self.settings,
                                "text": text, **tokens, "created": time.time()})
        except OSError as e:  # the answer still counts; only the next run pays for it again
            log.warning("could not write the response cache (%s): %s", self.cache.root, e)
        with self.lock:
            self.stats["requests"] += 1
            for t, n in tokens.items():
                self.stats[t] += n
        return text


def predict_api(model_path: str, evalset: EvalSet, max_new_tokens: int = 32, *, api_base: str | None = None,
                concurrency: int = 8, cache_dir: str | Path | None = None, max_retries: int = 2,
                timeout: float = 60.0, progress: bool = True) -> tuple[dict[int, str], dict]:
    """Generated text per eval item (like ``evaluate.predict``) and the request statistics. A request waits at
    most ``timeout`` seconds per try and is tried 1 + ``max_retries`` times (with the client's backoff)."""
    client, model, key = open_client(model_path, api_base, concurrency, max_retries, timeout)
    base = display_base(str(client.base_url))
    settings = {"max_tokens": int(max_new_tokens), "temperature": 0.0}
    cache = ResponseCache(cache_dir or DEFAULT_CACHE)
    stats = {"model": model, "api_base": base, "items": len(evalset), "requests": 0, "cache_hits": 0, "failures": 0,
             "prompt_tokens": 0, "completion_tokens": 0, "cached_prompt_tokens": 0, "cached_completion_tokens": 0,
             "concurrency": concurrency, "max_retries": max_retries, "timeout_s": timeout, **settings,
             "cache_dir": str(cache.root)}
    requests = _Requests(client, model, key, settings, cache, stats)
    texts: dict[int, str] = {}
    t0 = time.time()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="api")
    pending: dict = {}
    bar = tqdm(total=len(evalset), desc=f"eval {model}", disable=not progress)

    def collect(done) -> None:
        for f in done:
            texts[pending.pop(f)] = f.result()  # _Fatal propagates
            bar.update()

    try:
        for k in range(len(evalset)):
            sample = evalset.try_sample(k)  # rendered here: the image cache is not thread-safe
            if sample is None:  # an unusable image (data.skip_invalid): no request, counted in eval_skipped
                bar.update()
                continue
            parts = request_parts(to_row(sample))
            ck = cache_key(model, base, parts, settings)
            hit = cache.get(ck)
            if hit is not None:
                texts[k] = hit["text"]
                stats["cache_hits"] += 1
                stats["cached_prompt_tokens"] += int(hit.get("prompt_tokens") or 0)
                stats["cached_completion_tokens"] += int(hit.get("completion_tokens") or 0)
                bar.update()
                continue
            pending[pool.submit(requests.send, k, ck, parts)] = k
            if len(pending) >= 2 * concurrency:  # a bounded window: never every image in memory at once
                collect(wait(pending, return_when=FIRST_COMPLETED).done)
        while pending:
            collect(wait(pending, return_when=FIRST_COMPLETED).done)
    except _Fatal as e:
        raise ConfigError(f"{PREFIX}{model} at {base}: {e}") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    stats["wall_seconds"] = round(time.time() - t0, 2)
    log.info("%s: %d requests, %d cache hits, %d failed; %d prompt + %d completion tokens; %.1f s", model,
             stats["requests"], stats["cache_hits"], stats["failures"], stats["prompt_tokens"],
             stats["completion_tokens"], stats["wall_seconds"])
    return texts, stats
