"""The release watch against a local HTTP server standing in for the hub API (no mock objects),
and runs pinned to the lock against a fake Hugging Face cache whose `refs/main` disagrees."""

import http.server
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from helpers import only_experiments, save_tiny_folder, tiny_gpt2, write_suite

OLD, NEW, TAG = "a" * 40, "b" * 40, "c" * 40
SHAS = {"org/changing": NEW, "org/steady": OLD}
MODIFIED = "2026-11-20T10:00:00.000Z"
LISTED = [{"id": "org/changing", "lastModified": "2026-11-21T00:00:00.000Z"},
          {"id": "org/brand-new", "lastModified": "2026-11-22T00:00:00.000Z"},
          {"id": "other/unrelated", "lastModified": "2026-11-23T00:00:00.000Z"}]


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers GET /api/models/<repo>[/revision/<rev>] the way the hub does."""

    calls: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        FakeHub.calls.append(self.path)
        if self.path.split("?")[0] == "/api/models":  # list_models(author=..., sort=..., limit=...)
            query = dict(p.split("=", 1) for p in self.path.split("?", 1)[1].split("&"))
            found = [m for m in LISTED if m["id"].startswith(query.get("author", "") + "/")]
            return self._send(200, found[: int(query.get("limit", 100))])
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
        self._send(200, {"id": repo, "sha": sha, "modelId": repo, "private": False,
                         "lastModified": MODIFIED})

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


def test_lock_records_last_modified_and_the_pr_body_lists_changes_and_watch_candidates(hub, tmp_path):
    suite = _suite(tmp_path, [{"name": "changing", "id": "org/changing"},
                              {"name": "steady", "id": "org/steady"}])
    suite.write_text(suite.read_text() + '[[watch]]\nauthor = "org"\nlimit = 5\n')
    lock = _lock(tmp_path / "models.lock.json", changing=OLD, steady=OLD)
    body = tmp_path / "pr.md"
    FakeHub.calls.clear()
    r = _releases(hub, suite, lock, "--update", "--pr-body", str(body))
    assert r.returncode == 0, r.stdout + r.stderr
    entry = json.loads(lock.read_text())["models"]["changing"]
    assert entry == {"id": "org/changing", "revision": "main", "sha": NEW,
                     "last_modified": "2026-11-20T10:00:00+00:00"}
    text = body.read_text()
    assert "| changing | `org/changing@main` | `aaaaaaaaaaaa` | `bbbbbbbbbbbb` |" in text
    assert "steady |" not in text  # unchanged models are not news
    assert "org/brand-new" in text and "other/unrelated" not in text
    assert "`org/changing`" not in text.split("candidates")[1]  # already in the suite
    assert "candidate        org/brand-new" in r.stdout
    listed = [c for c in FakeHub.calls if c.startswith("/api/models?")]
    assert len(listed) == 1 and "author=org" in listed[0] and "sort=lastModified" in listed[0]
    assert "[[models]]" in open(suite).read() and "brand-new" not in suite.read_text()  # never added


def test_a_watch_entry_needs_author_or_search(tmp_path):
    from generator.errors import SuiteError
    from generator.suite import load_suite

    suite = _suite(tmp_path, [{"name": "steady", "id": "org/steady"}])
    suite.write_text(suite.read_text() + "[[watch]]\nlimit = 3\n")
    with pytest.raises(SuiteError, match="needs `author` or `search`"):
        load_suite(suite)


# ---- runs pinned to the lock, against a fake Hugging Face cache -------------------------------

CACHED, LOCKED = "1" * 40, "2" * 40


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory):
    """HF_HOME with org/tiny: snapshots CACHED (what refs/main says) and LOCKED (other weights)."""
    root = tmp_path_factory.mktemp("hf")
    repo = root / "hub" / "models--org--tiny"
    save_tiny_folder(repo / "snapshots" / CACHED, tiny_gpt2(seed=1))
    save_tiny_folder(repo / "snapshots" / LOCKED, tiny_gpt2(seed=2))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(CACHED)
    return root


def _pinned_run(tmp_path, hf_home, lock_models, ci):
    tmp_path.mkdir(parents=True, exist_ok=True)
    suite = only_experiments(write_suite(tmp_path / "suite.toml", [{"name": "tiny", "id": "org/tiny"}]),
                             ("norms",))
    if lock_models is not None:
        (tmp_path / "models.lock.json").write_text(json.dumps({"models": lock_models}))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", **({"CI": "true"} if ci else {})})
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "generator", "run", "--suite", str(suite), "--out",
                        str(out), "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    return r, out


def _metrics(out):
    return json.loads((out / "tiny/norms/result.json").read_text())["metrics"]


def test_a_run_builds_the_locked_commit_not_the_one_refs_main_points_at(fake_cache, tmp_path):
    from generator import pipeline
    from generator.suite import load_suite

    lock = {"tiny": {"id": "org/tiny", "revision": "main", "sha": LOCKED, "last_modified": None}}
    r, out = _pinned_run(tmp_path / "pinned", fake_cache, lock, ci=True)
    assert r.returncode == 0, r.stdout + r.stderr
    status = json.loads((out / "tiny/status.json").read_text())
    assert status["provenance"]["revision"] == LOCKED and status["provenance"]["id"] == "org/tiny"
    manifest = json.loads((out / "manifest.json").read_text())
    by_path = {}
    for sha in (CACHED, LOCKED):  # the same weights loaded by path, for reference
        folder = fake_cache / "hub/models--org--tiny/snapshots" / sha
        suite = only_experiments(write_suite(tmp_path / f"{sha[0]}.toml",
                                             [{"name": "tiny", "path": str(folder)}]), ("norms",))
        pipeline.run(load_suite(suite), tmp_path / sha[0], progress=False)
        by_path[sha] = _metrics(tmp_path / sha[0])
    assert by_path[CACHED] != by_path[LOCKED]
    assert _metrics(out) == by_path[LOCKED]
    # the cache key covers the model fingerprint, which now names the locked commit
    prov = json.loads((out / "tiny/norms/provenance.json").read_text())
    assert prov["model"]["revision"] == LOCKED and prov["cache_key"] == manifest["tiny/norms"]["key"]


def test_a_model_missing_from_the_lock_is_an_error_in_ci_and_a_note_locally(fake_cache, tmp_path):
    r, out = _pinned_run(tmp_path / "ci", fake_cache, {}, ci=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "tiny (not in the lock)" in r.stderr and "make releases" in r.stderr
    assert not (out / "tiny").exists()  # nothing was built
    r, out = _pinned_run(tmp_path / "local", fake_cache, None, ci=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note       tiny: not in the lock" in r.stdout
    status = json.loads((out / "tiny/status.json").read_text())
    assert status["provenance"]["revision"] == CACHED  # the cache's refs/main, as before


def test_pin_leaves_local_models_and_suite_shas_alone(tmp_path):
    from generator.models import ModelSpec
    from generator.releases import pin

    lock = tmp_path / "models.lock.json"
    lock.write_text(json.dumps({"models": {"hub": {"id": "org/hub", "revision": "main", "sha": NEW}}}))
    specs = [ModelSpec("hub", id="org/hub"), ModelSpec("sha", id="org/x", revision=OLD),
             ModelSpec("local", path="/m"), ModelSpec("tag", id="org/y", revision="v1")]
    pinned, notes = pin(specs, lock, ci=False)
    assert [s.revision for s in pinned] == [NEW, OLD, None, "v1"]
    assert len(notes) == 1 and notes[0].startswith("tag: not in the lock")
    from generator.errors import AtlasError

    with pytest.raises(AtlasError, match="tag \\(not in the lock\\)"):
        pin(specs, lock, ci=True)
    stale = [ModelSpec("hub", id="org/renamed")]  # the suite changed the id: the entry is stale
    with pytest.raises(AtlasError, match="entry is for org/hub@main, the suite asks for org/renamed@main"):
        pin(stale, lock, ci=True)
