"""The release watch against a local HTTP server standing in for the hub API (no mock objects)."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time

import pytest

OLD, NEW, TAG = "a" * 40, "b" * 40, "c" * 40
SHAS = {"org/changing": NEW, "org/steady": OLD}


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers GET /api/models/<repo>[/revision/<rev>] the way the hub does."""

    calls: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        FakeHub.calls.append(self.path)
        path = self.path.split("?")[0].removeprefix("/api/models/")
        repo, _, rev = path.partition("/revision/")
        if repo == "org/broken":
            return self._send(500, {"error": "internal"})
        if repo == "org/slow":
            time.sleep(3)
            return self._send(200, {"id": repo, "sha": OLD})
        if repo not in SHAS:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        sha = TAG if rev == "v1" else SHAS[repo]
        self._send(200, {"id": repo, "sha": sha, "modelId": repo, "private": False})

    def _send(self, code, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def hub():
    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the timeout case hangs up before the slow answer is written

    server = Server(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _suite(tmp_path, models):
    lines = []
    for m in models:
        lines += ["[[models]]"] + [f'{k} = "{v}"' for k, v in m.items()]
    p = tmp_path / "suite.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _releases(hub, suite, lock, *extra, offline="0"):
    env = {**os.environ, "HF_HUB_OFFLINE": offline, "HF_ENDPOINT": hub}
    return subprocess.run([sys.executable, "-m", "generator", "releases", "--suite", str(suite),
                           "--lock", str(lock), "--timeout", "1", *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def _lock(path, **shas):
    path.write_text(json.dumps({"models": {k: {"id": f"org/{k}", "revision": "main", "sha": v}
                                           for k, v in shas.items()}}))
    return path


def test_changed_sha_is_reported_then_recorded_with_update(hub, tmp_path):
    suite = _suite(tmp_path, [{"name": "changing", "id": "org/changing"},
                              {"name": "steady", "id": "org/steady"},
                              {"name": "local", "path": "/models/x.gguf"}])
    lock = _lock(tmp_path / "models.lock.json", changing=OLD, steady=OLD)
    r = _releases(hub, suite, lock)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "changing" in r.stdout and "changed" in r.stdout and "unchanged" in r.stdout
    assert "local" not in r.stdout  # a local file has no release to watch
    assert json.loads(lock.read_text())["models"]["changing"]["sha"] == OLD  # not touched
    r = _releases(hub, suite, lock, "--update")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(lock.read_text())["models"]["changing"]["sha"] == NEW
    before = lock.read_bytes()
    r = _releases(hub, suite, lock)
    assert r.returncode == 0 and r.stdout.count("unchanged") == 2
    r = _releases(hub, suite, lock, "--update")
    assert lock.read_bytes() == before and "updated" not in r.stdout


def test_pinned_revisions_are_respected(hub, tmp_path):
    suite = _suite(tmp_path, [{"name": "sha", "id": "org/changing", "revision": OLD},
                              {"name": "tag", "id": "org/changing", "revision": "v1"}])
    FakeHub.calls.clear()
    r = _releases(hub, suite, tmp_path / "new.lock.json", "--update")
    assert r.returncode == 0, r.stdout + r.stderr
    lock = json.loads((tmp_path / "new.lock.json").read_text())["models"]
    assert lock["sha"]["sha"] == OLD and lock["tag"]["sha"] == TAG
    asked = [c for c in FakeHub.calls if c.startswith("/api/models/")]
    assert asked == ["/api/models/org/changing/revision/v1"]  # the pinned sha needed no request


@pytest.mark.parametrize("repo,words", [("org/nope", "not found"), ("org/broken", "HTTP 500"),
                                        ("org/slow", "did not answer within 1s")])
def test_unknown_repo_server_error_and_timeout_are_reported_not_raised(hub, tmp_path, repo, words):
    suite = _suite(tmp_path, [{"name": "bad", "id": repo}, {"name": "steady", "id": "org/steady"}])
    lock = _lock(tmp_path / "models.lock.json", bad=OLD, steady=OLD)
    t0 = time.time()
    r = _releases(hub, suite, lock, "--update")
    assert r.returncode == 3, r.stdout + r.stderr
    assert words in r.stdout and "Traceback" not in r.stderr
    assert time.time() - t0 < 60
    models = json.loads(lock.read_text())["models"]
    assert models["bad"]["sha"] == OLD  # an unchecked model keeps its entry


def test_offline_says_it_cannot_check(hub, tmp_path):
    suite = _suite(tmp_path, [{"name": "steady", "id": "org/steady"}])
    FakeHub.calls.clear()
    r = _releases(hub, suite, tmp_path / "l.json", offline="1")
    assert r.returncode == 3 and "offline" in r.stdout and not FakeHub.calls


def test_corrupt_lock_is_a_clear_error(hub, tmp_path):
    suite = _suite(tmp_path, [{"name": "steady", "id": "org/steady"}])
    lock = tmp_path / "l.json"
    lock.write_text("{not json")
    r = _releases(hub, suite, lock)
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "fix:" in r.stderr
    assert lock.read_text() == "{not json"
