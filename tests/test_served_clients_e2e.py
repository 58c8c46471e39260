"""The service as its users meet it, on the provisioned stand-in (tests/served.py): the official `openai` client,
curl's CORS preflight, and a real headless browser (Debian's Chromium) calling the API with fetch() from web pages
of other origins. By default no other origin gets `Access-Control-Allow-Origin`, with the key and with
--no-api-key on loopback; an origin named with --cors-origin gets it (docs/security.md)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_provision_e2e import sh, wait_health

pytestmark = pytest.mark.e2e

MODEL = "gemma3-270m"
EVIL = "http://evil.example"
PREFLIGHT = ['-X', 'OPTIONS', '-H', 'Access-Control-Request-Method: POST',
             '-H', 'Access-Control-Request-Headers: authorization,content-type']
# Chromium as the machine notes say it runs here: no sandbox as root, nothing fetched in the background.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def response_headers(raw: str) -> dict[str, str]:
    """The headers of the last response in `curl -i` output, names in lower case (repeats joined by ', ')."""
    blocks = [b for b in raw.replace("\r\n", "\n").split("\n\n") if b.startswith("HTTP/")]
    headers: dict[str, str] = {}
    for line in (blocks[-1] if blocks else "").splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


def curl_command(url: str, origin: str) -> list[str]:
    return ["curl", "-s", "-i", "--max-time", "10", *PREFLIGHT, "-H", f"Origin: {origin}",
            f"{url}/v1/chat/completions"]


def preflight(url: str, origin: str) -> dict[str, str]:
    """The issue's curl preflight from this machine (the browser's side of the network)."""
    out = subprocess.run(curl_command(url, origin), capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("HTTP/"), out.stdout + out.stderr
    return response_headers(out.stdout)


def preflight_on_device(served, url: str, origin: str) -> dict[str, str]:
    """The same preflight run on the stand-in itself (a server bound to loopback is reachable only there)."""
    return response_headers(sh(served, " ".join(f"'{a}'" for a in curl_command(url, origin))) + "\n")


def refused(headers: dict[str, str], origin: str) -> bool:
    """A browser at `origin` may not read the answer: no Allow-Origin naming it (nor `*`), no credentials."""
    return headers.get("access-control-allow-origin") not in (origin, "*") and \
        headers.get("access-control-allow-credentials") != "true"


def get(url: str, key: str | None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# -- pages in a real browser -----------------------------------------------------------------------------------
PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
fetch(%(api)s + "/v1/chat/completions", {method: "POST", headers: {"Authorization": "Bearer " + %(key)s,
      "Content-Type": "application/json"}, body: JSON.stringify({model: %(model)s, max_tokens: 4,
      messages: [{role: "user", content: "Say hi."}]})})
  .then(r => r.json().then(j => "answered " + r.status + " " + j.model))
  .catch(e => "refused " + e)
  .then(s => { document.getElementById("out").textContent = s; });
</script></body></html>"""


class Pages:
    """A web page that calls the service with fetch(), served from a port of its own on this machine's side of
    the stand-in's link: each port is another origin (http://10.77.N.1:PORT)."""

    def __init__(self, bind: str, api: str, key: str):
        self.dir = Path(tempfile.mkdtemp(prefix="edgekit-pages-"))
        (self.dir / "call.html").write_text(PAGE % {"api": json.dumps(api), "key": json.dumps(key),
                                                    "model": json.dumps(MODEL)})
        handler = functools.partial(_Quiet, directory=str(self.dir))
        self.servers = [http.server.ThreadingHTTPServer((bind, 0), handler) for _ in range(2)]
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        self.allowed, self.other = (f"http://{bind}:{s.server_address[1]}" for s in self.servers)

    def open(self, origin: str) -> str:
        """What the page at `origin` shows once its fetch() settled, as headless Chromium renders it."""
        profile = tempfile.mkdtemp(prefix="edgekit-chromium-")
        try:
            out = subprocess.run([shutil.which("chromium") or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                  "--virtual-time-budget=60000", "--dump-dom", f"{origin}/call.html"],
                                 capture_output=True, text=True, timeout=180)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        start = out.stdout.find('<pre id="out">')
        assert start >= 0, out.stdout[-2000:] + out.stderr[-2000:]
        return out.stdout[start + len('<pre id="out">'):].split("</pre>", 1)[0]

    def close(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def pages(served_standin):
    p = Pages(served_standin.standin.host_address, served_standin.url, served_standin.api_key)
    yield p
    p.close()


def provision(served, *extra: str) -> dict:
    res = served.cli(*served.provision_args("--json", *extra))
    assert res.returncode == 0, res.stderr[-4000:]
    return {s["step"]: s for s in json.loads(res.stdout)["steps"]}


@pytest.fixture(scope="module")
def restore(served_standin):
    """Tests below re-provision the shared stand-in; put its default settings back afterwards."""
    yield
    provision(served_standin)
    wait_health(served_standin.url, timeout=120)


# -- the official openai client ----------------------------------------------------------------------------------
@pytest.mark.needs("openai")
def test_openai_client_lists_completes_streams_and_refuses_a_wrong_key(served_standin):
    import openai

    client = openai.OpenAI(base_url=served_standin.url + "/v1", api_key=served_standin.api_key, max_retries=0,
                           timeout=300)
    assert [m.id for m in client.models.list()] == [MODEL]
    chat = client.chat.completions.create(model=MODEL, max_tokens=16, temperature=0,
                                          messages=[{"role": "user", "content": "Say hello."}])
    assert chat.choices[0].message.content.strip() and chat.usage.completion_tokens > 0
    text = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert text.choices[0].text.strip() and text.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=MODEL, max_tokens=24, temperature=0, stream=True,
                                                 messages=[{"role": "user", "content": "Count to five."}]))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2 and "".join(pieces).strip(), chunks
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    wrong = openai.OpenAI(base_url=served_standin.url + "/v1", api_key="ek-not-the-key", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "hi"}])


# -- other web origins --------------------------------------------------------------------------------------------
def test_env_file_states_origins_credentials_and_tools(served_standin):
    env = sh(served_standin, "cat /etc/edgekit/llama-server.env").splitlines()
    for line in ("LLAMA_ARG_CORS_ORIGINS=", "LLAMA_ARG_CORS_CREDENTIALS=0", "LLAMA_ARG_AGENT=0",
                 "LLAMA_ARG_UI_MCP_PROXY=0"):
        assert line in env, line
    for path in ("/tools", "/cors-proxy"):                 # the server's own word that they are off
        code, body = get(served_standin.url + path, served_standin.api_key)
        assert code == 403 and "feature_disabled" in body, (path, code, body)


@pytest.mark.needs("chromium")
def test_a_stranger_origin_gets_no_allow_origin_by_default(served_standin, pages):
    headers = preflight(served_standin.url, EVIL)
    assert refused(headers, EVIL), headers
    assert refused(preflight(served_standin.url, pages.allowed), pages.allowed)
    assert pages.open(pages.allowed).startswith("refused TypeError"), "no origin is allowed by default"


@pytest.mark.needs("chromium")
def test_an_allowed_origin_reads_the_api_in_a_browser_and_others_are_refused(served_standin, pages, restore):
    steps = provision(served_standin, "--cors-origin", pages.allowed)
    assert steps["server settings"]["status"] == "changed"
    assert f"LLAMA_ARG_CORS_ORIGINS={pages.allowed}" in sh(served_standin, "cat /etc/edgekit/llama-server.env")
    wait_health(served_standin.url, timeout=120)
    allowed = preflight(served_standin.url, pages.allowed)
    assert allowed.get("access-control-allow-origin") == pages.allowed, allowed
    assert allowed.get("access-control-allow-credentials") == "false", allowed
    assert refused(preflight(served_standin.url, EVIL), EVIL)
    assert pages.open(pages.allowed) == f"answered 200 {MODEL}"
    assert pages.open(pages.other).startswith("refused TypeError")


def test_without_an_api_key_on_loopback_a_stranger_is_still_refused(served_standin, restore):
    local = "http://localhost:5173"
    provision(served_standin, "--no-api-key", "--host", "127.0.0.1", "--cors-origin", local)
    env = sh(served_standin, "cat /etc/edgekit/llama-server.env")
    assert "LLAMA_ARG_HOST=127.0.0.1" in env and "LLAMA_ARG_API_KEY_FILE" not in env
    url = "http://127.0.0.1:8080"
    assert sh(served_standin, f"curl -s -o /dev/null -w '%{{http_code}}' {url}/v1/models") == "200", "no key needed"
    assert refused(preflight_on_device(served_standin, url, EVIL), EVIL)
    assert preflight_on_device(served_standin, url, local).get("access-control-allow-origin") == local
    journal = sh(served_standin, "journalctl -u edgekit-llama-server -b --no-pager -o cat | tail -400")
    assert "CORS allows all origins" not in journal, "llama-server's own warning must not appear"
