"""The draft steps on fake facts, no SSH: the fit counting a draft, the pair compared from the files' GGUF headers
on the device (tests/steps_harness.py). The pair's refusals before connecting: test_drafts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgekit.models.drafts import DraftMismatch, DraftPair
from edgekit.models.gguf_header import check_file
from edgekit.models.on_device import GgufOnDevice
from edgekit.models.steps import FitCheck, ModelRequest
from edgekit.remote.run_state import ModelState, RunState
from tests.steps_harness import plan_and_apply
from tests.test_demo_e2e import smollm2_gguf  # noqa: F401  (the session fixture: SmolLM2-135M-Instruct Q4_1)
from tests.test_drafts import copy_tokenizer

GIB = 2**30


def board(gib: float):
    return lambda: RunState(facts=SimpleNamespace(memory={"total_bytes": int(gib * GIB)}))


def test_fit_counts_the_drafts_weights_and_kv_cache():
    alone = plan_and_apply(FitCheck(ModelRequest("chinese-alpaca-2-7b-64k:q2_k", n_ctx=2048)), {}, run=board(16))
    paired, _, ctx = plan_and_apply(FitCheck(ModelRequest("chinese-alpaca-2-7b-64k:q2_k", n_ctx=2048,
                                                          draft="chinese-alpaca-2-1.3b:q2_k")), {}, run=board(16))
    assert "+ draft chinese-alpaca-2-1.3b:q2_k 0." in paired.reason and "draft" not in alone[0].reason
    assert ctx.run.model.draft == "chinese-alpaca-2-1.3b"
    assert ctx.run.drafts["chinese-alpaca-2-1.3b"].path.endswith("/chinese-alpaca-2-1.3b/ggml-model-q2_k.gguf")
    # on an 8 GB Orin Nano the 7B q4_k and the 1.3B draft fit only at a lower context: the fit lowers it, and
    # refuses the recommended 4096 with the context that fits them both
    lowered, _, ctx = plan_and_apply(FitCheck(ModelRequest("chinese-alpaca-2-7b-64k:q4_k", allow_unpinned=True,
                                                           draft="chinese-alpaca-2-1.3b:q4_k")), {}, run=board(7.44))
    assert ctx.run.model.n_ctx == 1792 and "ctx 1792" in lowered.reason
    with pytest.raises(Exception, match=r"short") as e:
        plan_and_apply(FitCheck(ModelRequest("chinese-alpaca-2-7b-64k:q4_k", allow_unpinned=True, n_ctx=4096,
                                             draft="chinese-alpaca-2-1.3b:q4_k")), {}, run=board(7.44))
    assert "--ctx 1792" in e.value.hint
    assert e.value.exit_code == 5


def _header(path):
    return ("valid", check_file(path))


def test_draft_pair_step_compares_the_files_on_the_device(smollm2_gguf, gemma_gguf, tmp_path):  # noqa: F811
    def run():
        state = RunState()
        state.models = {"t": ModelState("t", "/opt/edgekit/models/t/t.gguf", draft="d")}
        state.drafts = {"d": ModelState("d", "/opt/edgekit/models/d/d.gguf")}
        return state

    same = copy_tokenizer(smollm2_gguf, tmp_path / "same.gguf")
    given = {GgufOnDevice("/opt/edgekit/models/t/t.gguf"): _header(smollm2_gguf),
             GgufOnDevice("/opt/edgekit/models/d/d.gguf"): _header(same)}
    dry, _, _ = plan_and_apply(DraftPair("t", "d"), given, run=run)
    assert dry.reason.startswith("d drafts for t: same tokenizer (49152 tokens")
    given[GgufOnDevice("/opt/edgekit/models/d/d.gguf")] = _header(gemma_gguf)
    with pytest.raises(DraftMismatch, match="vocabulary size 49152 vs 262144"):
        plan_and_apply(DraftPair("t", "d"), given, run=run)
    given[GgufOnDevice("/opt/edgekit/models/d/d.gguf")] = ("missing", None)
    assert "compared once /opt/edgekit/models/d/d.gguf is on the device" in plan_and_apply(
        DraftPair("t", "d"), given, run=run)[0].reason
