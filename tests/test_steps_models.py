"""The model steps on fake facts, no SSH: the fit's verdicts, the fetch's Noop and both Change paths, each run as
printed (tests/steps_harness.py). Real downloads, resumes and refusals: test_models*, test_gguf_validate."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest

from edgekit import layout as L
from edgekit.errors import UnsuitableDevice, UsageError
from edgekit.models import download
from edgekit.models.gguf_header import read_header_file
from edgekit.models.on_device import GgufOnDevice, ModelFile, TcpReachable
from edgekit.models.steps import FetchModel, FitCheck, ModelRequest
from edgekit.models.tiny import write_tiny_llama
from edgekit.remote.command import Cmd, Upload
from edgekit.remote.plan import Change, Noop
from edgekit.remote.run_state import RunState
from tests.steps_harness import HELPER, context, plan_and_apply

GIB = 2**30


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


def board(gib: float):
    return lambda: RunState(facts=SimpleNamespace(memory={"total_bytes": int(gib * GIB)}))


def test_fit_check_fits_and_sets_the_model():
    dry, _, ctx = plan_and_apply(FitCheck(ModelRequest("chinese-alpaca-2-1.3b")), {}, run=board(7.4))
    assert isinstance(dry, Noop) and dry.reason.startswith("fits: chinese-alpaca-2-1.3b")
    assert ctx.run.model.name == "chinese-alpaca-2-1.3b" and ctx.run.model.n_ctx and ctx.run.model.entry


def test_fit_check_refuses_a_model_too_big_with_the_numbers():
    with pytest.raises(UnsuitableDevice, match="short") as info:
        plan_and_apply(FitCheck(ModelRequest("llama-3-chinese-8b-instruct-v3:q8_0", allow_unpinned=True)), {},
                       run=board(3.5))
    assert info.value.exit_code == 5


@pytest.fixture
def local_model(tmp_path):
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, sha


def url_request(path, sha, tmp_path, **kw) -> ModelRequest:
    return ModelRequest("tiny", source_url=str(path), sha256=sha, lock_file=str(tmp_path / "edgekit.lock"), **kw)


def dest(name="tiny", file="tiny.gguf") -> str:
    return f"{L.MODELS_DIR}/{name}/{file}"


def test_fetch_noop_when_the_file_there_is_verified_and_a_gguf(local_model, tmp_path):
    path, sha = local_model
    given = {ModelFile(dest(), sha): {"event": "check", "state": "verified", "sha256": sha, "size": 1},
             GgufOnDevice(dest()): ("valid", read_header_file(path))}
    dry, _, ctx = plan_and_apply(FetchModel(url_request(path, sha, tmp_path)), given, run=board(7.4))
    assert isinstance(dry, Noop) and "verified, a valid GGUF" in dry.reason and ctx.run.model.sha256 == sha


def test_fetch_via_the_controller_pushes_and_adopts_as_printed(local_model, tmp_path):
    path, sha = local_model
    given = {ModelFile(dest(), sha): {"event": "check", "state": "missing"}}

    def answer(command: str) -> str:
        if '"mode": "space"' in command:
            return '@@edgekit {"event": "space", "free": 1, "need": 1}'
        if '"mode": "adopt"' in command:
            return "@@edgekit " + json.dumps({"event": "done", "sha256": sha, "size": path.stat().st_size,
                                              "downloaded": 0, "resumed_from": 0})
        return ""

    dry, _, ctx = plan_and_apply(FetchModel(url_request(path, sha, tmp_path)), given, run=board(7.4), answer=answer)
    assert isinstance(dry, Change) and dry.detail["mode"] == "controller"
    assert dry.shown[0].startswith("on the controller: download")
    prepare, push, adopt = ctx.transport.ran
    assert prepare.startswith(f"install -d -m 0755 {L.MODELS_DIR} && install -d -m 0755 -o ubuntu")
    assert isinstance(push, Upload) and push.dest == dest() + ".partial" and not push.root
    assert adopt.startswith(f"python3 {HELPER} fetch") and sha in adopt
    assert any('"mode": "space"' in r for r in ctx.reads)              # a check, not a change
    assert ctx.run.model.sha256 == sha and ctx.run.model_transfer["mode"] == "controller"
    assert json.loads((tmp_path / "edgekit.lock").read_text())["model"]["tiny/tiny.gguf"]["sha256"] == sha


def test_an_unpinned_push_prints_no_placeholder_and_adopts_the_sha256_it_computed(local_model, tmp_path):
    """No sha256 is pinned: the dry run cannot know the adopt command's sha256, and says so instead of printing a
    command with a placeholder in it; the run adopts with the sha256 the controller computed."""
    path, sha = local_model
    given = {ModelFile(dest(), None): {"event": "check", "state": "missing"}}

    def answer(command: str) -> str:
        if '"mode": "space"' in command:
            return '@@edgekit {"event": "space", "free": 1, "need": 1}'
        if '"mode": "adopt"' in command:
            return "@@edgekit " + json.dumps({"event": "done", "sha256": sha, "size": path.stat().st_size,
                                              "downloaded": 0, "resumed_from": 0})
        return ""

    dry, _, ctx = plan_and_apply(FetchModel(url_request(path, None, tmp_path)), given, run=board(7.4), answer=answer)
    assert isinstance(dry, Change) and not [line for line in dry.shown if "<" in line], [l for l in dry.shown if "<" in l]
    assert dry.shown[-1].startswith(f"then: check the pushed file's sha256 on the device and move it to {dest()}")
    assert "known only during the run: no sha256 is pinned" in dry.shown[-1]
    adopt = ctx.transport.ran[-1]
    assert adopt.startswith(f"python3 {HELPER} fetch") and f'"sha256": "{sha}"' in adopt


def test_fetch_on_the_device_downloads_there_as_printed(local_model, tmp_path, monkeypatch):
    path, sha = local_model
    url = "https://mirror.example/tiny.gguf"
    given = {ModelFile(dest(), sha): {"event": "check", "state": "mismatch"},
             TcpReachable("mirror.example", 443): True, GgufOnDevice(dest()): ("valid", read_header_file(path))}

    def answer(command: str) -> str:
        if '"mode": "fetch"' in command:
            return "\n".join("@@edgekit " + json.dumps(e) for e in (
                {"event": "progress", "done": 1, "total": 2, "rate": 1.0, "eta": 1.0},
                {"event": "done", "sha256": sha, "size": 2, "downloaded": 2, "resumed_from": 0}))
        return ""

    request = ModelRequest("tiny", source_url=url, sha256=sha, lock_file=str(tmp_path / "edgekit.lock"))
    dry, _, ctx = plan_and_apply(FetchModel(request), given, run=board(7.4), answer=answer)
    assert dry.summary.startswith("replace mismatching file: tiny:gguf") and dry.detail["mode"] == "device"
    prepare, fetch = ctx.transport.ran
    assert fetch.startswith(f"python3 {HELPER} fetch ") and url in fetch and "--token-stdin" not in fetch
    assert isinstance(dry.commands[1], Cmd)                        # runs as the login user, not root
    assert ctx.run.model_transfer == {"mode": "device", "downloaded": 2, "resumed_from": 0}


def test_the_token_goes_on_stdin_never_in_the_printed_command(local_model, tmp_path, monkeypatch):
    path, sha = local_model
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    request = ModelRequest("tiny", source_url="https://mirror.example/tiny.gguf", sha256=sha,
                           lock_file=str(tmp_path / "edgekit.lock"), fetch_on="device")
    given = {ModelFile(dest(), sha): {"event": "check", "state": "missing"}}
    change = FetchModel(request).plan(context(given, dry_run=True, run=board(7.4)()))
    assert "--token-stdin" in change.shown[1] and "hf_secret_value" not in " ".join(change.shown)
    assert download.token() == "hf_secret_value"


# -- router mode: how many models stay loaded together ----------------------------------------------------------
def test_models_that_fit_together_become_models_max():
    from edgekit.models.router import ModelSetFits
    from edgekit.remote.run_state import ModelState

    def run():
        state = board(7.4)()
        state.models = {n: ModelState(n, need_bytes=int(gib * GIB)) for n, gib in (("a", 2.0), ("b", 3.0), ("c", 2.5))}
        return state

    dry, _, ctx = plan_and_apply(ModelSetFits(), {}, run=run)
    assert dry.reason.startswith("--models-max 2: 2 of 3 fit") and ctx.run.models_max == 2   # 3.0 + 2.5 <= 6.5
    with pytest.raises(UnsuitableDevice, match="only 2 of these models") as info:
        plan_and_apply(ModelSetFits(models_max=3), {}, run=run)
    assert "--models-max 2" in info.value.hint
    assert plan_and_apply(ModelSetFits(models_max=3, force=True), {}, run=run)[1].reason.startswith("--models-max 3")


def test_loadable_together_counts_the_largest_needs():
    from edgekit.models.fit import loadable_together

    assert loadable_together([1, 2, 3], 5) == 2 and loadable_together([4], 3) == 0 and loadable_together([], 9) == 0


# -- the fit check counts what the Jetson tuning frees or costs --------------------------------------------------
def jetson_board(gib: float, **tuning):
    from edgekit.remote.run_state import TuningState

    return lambda: RunState(facts=SimpleNamespace(memory={"total_bytes": int(gib * GIB)}, jetson={"module": "x"}),
                            tuning=TuningState(**tuning))


def test_a_desktop_session_counts_as_taken_on_a_jetson():
    from edgekit.tuning.facts import BootTarget, DesktopMemory

    given = {BootTarget(): "graphical", DesktopMemory(): {"bytes": 800 * 2**20, "processes": {"gnome-shell": 1}}}
    dry, _, ctx = plan_and_apply(FitCheck(ModelRequest("chinese-alpaca-2-1.3b")), given, run=jetson_board(7.4))
    assert "the desktop holds 0.78 GiB, counted as taken" in dry.reason and ctx.run.tuning.desktop_held_bytes


def test_going_headless_frees_it_and_swap_is_not_counted():
    run = jetson_board(7.4, desktop_bytes=800 * 2**20, swap_bytes=8 * GIB)
    dry, _, _ = plan_and_apply(FitCheck(ModelRequest("chinese-alpaca-2-1.3b")), {}, run=run)
    assert "--headless frees the desktop's 0.78 GiB from the next boot" in dry.reason
    assert "swap is not counted" in dry.reason


def test_default_model_moves_the_load_at_start_line_and_refuses_others():
    from edgekit import layout as L
    from edgekit.facts.deployed import FileText
    from edgekit.models.router import DefaultModel
    from edgekit.service.settings import preset_models
    from edgekit.service.settings import render_preset, router_model

    preset = render_preset({"edgekit_models": [
        router_model(name=n, path=f"/m/{n}.gguf", ctx=1024, chat_template=None, sampling={}) for n in ("a", "b")],
        "edgekit_models_max": 1})
    assert plan_and_apply(DefaultModel("a"), {FileText(L.PRESET_PATH): preset})[0].reason == "a is the default already"
    dry, _, ctx = plan_and_apply(DefaultModel("b"), {FileText(L.PRESET_PATH): preset})
    moved = ctx.transport.ran[0].data.decode()
    assert preset_models(moved) == ["a", "b"] and moved.split("[b]")[1].count("load-on-startup = true") == 1
    assert "load-on-startup" not in moved.split("[b]")[0]
    with pytest.raises(UsageError, match="not one of the models"):
        plan_and_apply(DefaultModel("c"), {FileText(L.PRESET_PATH): preset})
    with pytest.raises(UsageError, match="serves one model"):
        plan_and_apply(DefaultModel("a"), {FileText(L.PRESET_PATH): None})
