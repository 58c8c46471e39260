"""The LoRA adapter's step on fake facts, no SSH: installed once (as printed), a no-op when the device holds the same
bytes, recorded in edgekit.lock and refused when the lock recorded other bytes (tests/steps_harness.py)."""

from __future__ import annotations

import json

import pytest

from edgekit import lockfile
from edgekit.facts.deployed import FileSha256
from edgekit.models import lora
from edgekit.remote.command import Upload
from edgekit.remote.plan import Change, Noop
from tests.steps_harness import plan_and_apply
from tests.test_lora import write_adapter


@pytest.fixture
def adapter(tmp_path):
    from dataclasses import replace

    return replace(lora.read_adapter(f"{write_adapter(tmp_path / 'a.gguf', rank=2)}:0.5"),
                   base="smollm2-135m-instruct")


def test_the_adapter_is_uploaded_once_and_recorded_in_the_lock(adapter, tmp_path):
    lock = tmp_path / "edgekit.lock"
    step = lora.LoraFile(adapter, str(lock))
    dry, real, _ = plan_and_apply(step, {FileSha256(adapter.device_path): None})
    assert isinstance(dry, Change) and dry.summary == (f"install a.gguf for smollm2-135m-instruct as "
                                                       f"{adapter.device_path}")
    upload = [op for op in real.commands if isinstance(op, Upload)][0]
    assert (upload.dest, upload.mode, upload.local) == (adapter.device_path, "0644", adapter.path)
    recorded = json.loads(lock.read_text())["lora"]["smollm2-135m-instruct/a.gguf"]
    assert recorded["sha256"] == adapter.sha256
    again, _, _ = plan_and_apply(step, {FileSha256(adapter.device_path): adapter.sha256})
    assert isinstance(again, Noop) and again.reason.startswith(f"{adapter.device_path} present, sha256 "
                                                               f"{adapter.sha256[:12]}")


def test_other_bytes_than_the_lock_recorded_are_refused(adapter, tmp_path):
    lock = tmp_path / "edgekit.lock"
    lockfile.check_or_record("lora", "smollm2-135m-instruct/a.gguf", "0" * 64, "elsewhere", str(lock))
    with pytest.raises(lockfile.LockMismatch):
        plan_and_apply(lora.LoraFile(adapter, str(lock)), {FileSha256(adapter.device_path): None})
