"""Hostile or broken HTTP input, sent over real sockets to a real Serve app: bounded, answered in OpenAI's error
shape, and unable to take capacity from other clients.

Two apps share one Serve: `hostile` (split layout, a small engine: max_ongoing 4 / max_queued 4, so the ingress
limit the old code derived from it was 64) and `hostile-single` (layout single, docs on, engine bound 2).
Timeouts are small (body read 2 s, keep-alive 3 s) to keep the module fast.
"""

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

import openai
import pytest
import requests
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.serve.conftest import running_app

pytestmark = pytest.mark.slow  # starts Ray, Serve, helm or a phifleet process (tests/conftest.py)

KEY = "sk-hostile-123"
READ_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 3
MAX_BODY = 65_536
MAX_HEADERS = 16_384
OLD_INGRESS_LIMIT = 64  # max((4 + 4) * 1, 64): what build_app gave this deployment's ingress before
HTTP = {
    "body_read_timeout_s": READ_TIMEOUT_S,
    "keep_alive_timeout_s": KEEP_ALIVE_S,
    "max_request_body_bytes": MAX_BODY,
    "max_header_bytes": MAX_HEADERS,
}


@pytest.fixture(scope="module")
def base_url(ray_local, tiny_dir, tmp_path_factory):
    keys = tmp_path_factory.mktemp("secrets") / "api-keys"
    keys.write_text(f"{KEY}\n")
    engine = {"model": str(tiny_dir), "served_model_name": "phi4-tiny"}
    auth = {"api_keys_file": str(keys)}
    split = {
        "engine": engine,
        "auth": auth,
        "http": HTTP,
        "deployment": {"max_ongoing_requests": 4, "max_queued_requests": 4},
    }
    single = {
        "engine": engine,
        "auth": auth,
        "http": {**HTTP, "openapi_docs": True},
        "deployment": {"layout": "single", "max_ongoing_requests": 1, "max_queued_requests": 1},
    }
    with running_app("hostile", split, more={"hostile-single": single}) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=30)


AUTH = {"Authorization": f"Bearer {KEY}"}


# --- raw HTTP/1.1 over a socket: what a hostile client sends, byte for byte --------------------------------------
def connect(base_url: str, timeout: float = 10.0) -> socket.socket:
    url = urlsplit(base_url)
    return socket.create_connection((url.hostname, url.port), timeout=timeout)


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body (every error here has one): status, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def parts(r: requests.Response) -> tuple[int, dict[str, str], bytes]:
    return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content


def assert_openai_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, (status, body[:300])
    assert headers["content-type"].startswith("application/json"), headers
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return err


# --- tests -------------------------------------------------------------------------------------------------------
def test_stalled_uploads_neither_block_others_nor_hold_engine_capacity(base_url, client):
    """More uploads than the old ingress limit send their headers and stall: a normal request is answered at once
    (not a 429 either: the engine admits 8, and the 96 uploads take none of it), and each stalled one gets a 408
    JSON (connection closed) within the read timeout plus slack."""
    n = OLD_INGRESS_LIMIT + 32
    partial = b'{"model": "phi4-tiny", "messages": ['
    headers = {**AUTH, "Content-Type": "application/json", "Content-Length": "1000"}
    stalled = []
    started = time.monotonic()
    for _ in range(n):
        sock = connect(base_url)
        sock.sendall(head("POST", "/v1/chat/completions", headers) + partial)
        stalled.append(sock)
    try:
        time.sleep(0.5)  # every stalled request has reached the ingress and waits for its body
        t0 = time.monotonic()
        out = client.completions.create(
            model="phi4-tiny", prompt="Hello", max_tokens=2, extra_body={"ignore_eos": True}, timeout=20
        )
        normal_s = time.monotonic() - t0
        assert out.usage.completion_tokens == 2
        assert normal_s < READ_TIMEOUT_S, f"the normal request waited {normal_s:.2f} s behind stalled uploads"
        deadline = started + READ_TIMEOUT_S + 8  # slack: n responses from a 2-core machine
        answered = []
        for sock in stalled:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            err = assert_openai_error(*read_response(sock), 408)
            answered.append(time.monotonic() - started)
            assert err["code"] == "request_timeout" and err["param"] == "body"
            assert closed_by_server(sock, within=5)
        print(f"\n{n} stalled uploads: normal request {normal_s:.3f} s; 408s by {max(answered):.2f} s after the first")
    finally:
        for sock in stalled:
            sock.close()


def test_oversized_headers_get_431_json(base_url):
    with connect(base_url) as sock:
        sock.sendall(head("GET", "/v1/models", {**AUTH, "X-Pad": "a" * 100_000}))
        err = assert_openai_error(*read_response(sock), 431)
        assert err["code"] == "request_header_fields_too_large"
        assert closed_by_server(sock, within=5)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversized_bodies_get_413_json(base_url, framing):
    with connect(base_url) as sock:
        if framing == "content-length":  # refused from the header alone: nothing of the body is read
            sock.sendall(head("POST", "/v1/chat/completions", {**AUTH, "Content-Length": str(MAX_BODY + 1)}))
        else:  # no length given: counted as it arrives
            sock.sendall(head("POST", "/v1/chat/completions", {**AUTH, "Transfer-Encoding": "chunked"}))
            for _ in range(MAX_BODY // 8192 + 1):
                sock.sendall(b"2000\r\n" + b" " * 8192 + b"\r\n")
        err = assert_openai_error(*read_response(sock), 413)
        assert err["code"] == "request_too_large" and err["param"] == "body"
        assert closed_by_server(sock, within=5)


@pytest.mark.parametrize(
    "body, says",
    [
        (b'{"model": "phi4-tiny", "messages": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested"),  # RecursionError
        (b'{"model": "phi4-tiny", "n": ' + b"7" * 5000 + b"}", "not valid JSON"),  # int() refuses > 4300 digits
        (b"{not json", "not valid JSON"),
        (b'{"model": "\xff\xfe"}', "UTF-8"),
        (b"", "not valid JSON"),
    ],
    ids=["deep-recursion", "huge-int", "invalid", "bad-utf8", "empty"],
)
def test_bodies_that_are_not_sane_json_get_400_naming_body(base_url, body, says):
    r = requests.post(f"{base_url}/v1/chat/completions", data=body, headers=AUTH, timeout=30)
    err = assert_openai_error(*parts(r), 400)
    assert err["param"] == "body" and says in err["message"], err


def test_bearer_scheme_is_case_insensitive_and_tolerates_spaces(base_url):
    for header in (f"bearer {KEY}", f"BEARER   {KEY}", f"Bearer {KEY}  ", f"Bearer\t{KEY}"):
        r = requests.get(f"{base_url}/v1/models", headers={"Authorization": header}, timeout=30)
        assert r.status_code == 200, (header, r.text)
    for header in (f"Basic {KEY}", f"Bearer {KEY}x", "Bearer", KEY):
        r = requests.get(f"{base_url}/v1/models", headers={"Authorization": header}, timeout=30)
        assert_openai_error(*parts(r), 401)


def test_docs_are_off_by_default_and_behind_the_key_when_on(base_url):
    for path in ("/docs", "/redoc", "/openapi.json"):
        r = requests.get(f"{base_url}{path}", headers=AUTH, timeout=30)
        assert_openai_error(*parts(r), 404)
        on = f"{base_url}/hostile-single{path}"
        assert_openai_error(*parts(requests.get(on, timeout=30)), 401)
        r = requests.get(on, headers=AUTH, timeout=30)
        assert r.status_code == 200, (path, r.text[:300])
        if path != "/openapi.json":  # the pages load the spec from under the app's route prefix
            assert "/hostile-single/openapi.json" in r.text
    spec = requests.get(f"{base_url}/hostile-single/openapi.json", headers=AUTH, timeout=30).json()
    assert "/v1/chat/completions" in spec["paths"]


def ingress_stats(app_name: str) -> dict[str, int]:
    """The ingress's own counters, over a Serve handle (bound to the loop it is first used on)."""
    from ray import serve

    async def ask() -> dict[str, int]:
        return await serve.get_deployment_handle("OpenAIIngress", app_name=app_name).stats.remote()

    return HANDLE_LOOP.run_until_complete(asyncio.wait_for(ask(), timeout=30))


HANDLE_LOOP = asyncio.new_event_loop()


def test_readyz_answers_from_state_not_a_replica_call_per_probe(base_url):
    assert requests.get(f"{base_url}/readyz", timeout=30).json() == {"status": "ready", "model": "phi4-tiny"}
    before = ingress_stats("hostile")["readiness_probes"]
    started = time.monotonic()
    with requests.Session() as http:
        for _ in range(50):
            assert http.get(f"{base_url}/readyz", timeout=30).status_code == 200
    elapsed = time.monotonic() - started
    probes = ingress_stats("hostile")["readiness_probes"] - before
    # The refresher probes at most once per interval (5 s), whatever the probe traffic.
    assert probes <= 1 + elapsed / 5, (probes, elapsed)


def test_idle_keep_alive_connections_are_closed_after_the_configured_timeout(base_url):
    with connect(base_url) as sock:
        sock.sendall(head("GET", "/healthz", {}))
        status, _, _ = read_response(sock)
        assert status == 200
        started = time.monotonic()
        assert closed_by_server(sock, within=KEEP_ALIVE_S + 5)
        assert time.monotonic() - started >= KEEP_ALIVE_S - 1


def test_single_layout_bounds_engine_work_with_429_not_serve_slots(base_url):
    """Engine bound 2 (1 ongoing + 1 queued) in the one replica: a burst of 6 gets 429 + Retry-After beyond it."""

    async def burst() -> list[tuple[int, str | None]]:
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/hostile-single/v1", api_key=KEY, max_retries=0, timeout=60)

        async def one() -> tuple[int, str | None]:
            try:
                await aclient.completions.create(
                    model="phi4-tiny", prompt="Once upon a time", max_tokens=100, extra_body={"ignore_eos": True}
                )
                return 200, None
            except openai.RateLimitError as exc:
                assert exc.body["type"] == "rate_limit_error"
                return 429, exc.response.headers.get("retry-after")

        return await asyncio.gather(*(one() for _ in range(6)))

    results = asyncio.run(burst())
    statuses = sorted(s for s, _ in results)
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    assert all(after == "1" for s, after in results if s == 429)
    assert ingress_stats("hostile-single")["engine_in_flight"] == 0


def test_an_unexpected_exception_is_an_openai_500_with_a_request_id():
    """The ingress's catch-all handler on an app whose route raises: JSON, a request id, no traceback."""
    from phifleet.serve.ingress import internal_error

    app = FastAPI()
    app.add_exception_handler(Exception, internal_error)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail")

    r = TestClient(app, raise_server_exceptions=False).get("/boom", headers={"x-request-id": "abc123"})
    err = assert_openai_error(*parts(r), 500)
    assert err["type"] == "server_error" and "abc123" in err["message"] and "secret" not in err["message"]


def test_the_chart_gives_serves_proxy_the_configs_keep_alive_and_port(helm):
    """KubeRay starts Serve from serveConfigV2: its http_options carry http.keep_alive_timeout_s (the template's
    fallback must be HttpConfig's default) and the chart's serve port."""
    from phifleet.serve.config import HttpConfig
    from tests.helm.conftest import by_kind, render

    def http_options(*args: str) -> dict:
        (svc,) = by_kind(render(helm, "--set", "apiKeys.existingSecret=k", *args), "RayService")
        return yaml.safe_load(svc["spec"]["serveConfigV2"])["http_options"]

    default = HttpConfig().keep_alive_timeout_s
    assert http_options() == {"host": "0.0.0.0", "port": 8000, "keep_alive_timeout_s": default}
    custom = http_options("--set", "serve.config.http.keep_alive_timeout_s=7", "--set", "serve.port=8123")
    assert custom == {"host": "0.0.0.0", "port": 8123, "keep_alive_timeout_s": 7}
