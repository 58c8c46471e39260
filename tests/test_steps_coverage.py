"""Every step edgekit has is exercised without SSH (tests/test_steps_*.py), and provision's preflight on fakes."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import UnsuitableDevice
from edgekit.facts.deployed import Device
from edgekit.provision import Preflight
from edgekit.remote.plan import Noop
from edgekit.remote.run_state import RunState
from tests.steps_harness import plan_and_apply
from tests.test_build import jetson_facts

TESTS = Path(__file__).parent


def step_classes() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(edgekit.__path__, "edgekit."):
        if info.name.startswith("edgekit.device.") or info.name.endswith("__main__"):   # no steps there
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_") \
                    and not getattr(obj, "_is_protocol", False) \
                    and callable(getattr(obj, "plan", None)) and "ctx" in inspect.signature(obj.plan).parameters:
                found.append(obj)
    return found


def test_every_step_has_unit_tests_with_fake_facts():
    text = "".join(p.read_text() for p in TESTS.glob("test_steps_*.py"))
    classes = step_classes()
    assert len(classes) >= 20
    missing = [c.__qualname__ for c in classes if f"{c.__name__}(" not in text]
    assert not missing, f"steps without a test in tests/test_steps_*.py: {missing}"


def test_preflight_reads_the_facts_and_names_the_board():
    dry, _, ctx = plan_and_apply(Preflight(), {Device(None): jetson_facts()}, run=RunState)
    assert isinstance(dry, Noop) and "Orin Nano" in dry.reason and ctx.run.facts.hostname == "orin"
    assert ctx.reads == ["true"]                 # sudo is tried before any change


def test_preflight_refuses_a_device_without_systemd_or_sudo():
    facts = jetson_facts()
    with pytest.raises(UnsuitableDevice, match="systemd"):
        plan_and_apply(Preflight(), {Device(None): dataclasses.replace(facts, systemd=False)}, run=RunState)
    with pytest.raises(UnsuitableDevice, match="sudo"):
        plan_and_apply(Preflight(), {Device(None): dataclasses.replace(facts, sudo="none")}, run=RunState)
