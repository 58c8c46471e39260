"""`edgekit bench --sweep` without SSH: a recording transport whose nvpmodel and jetson_clocks are the stand-in scripts
(edgekit/sandbox/jetson_tools, run in this process against a temp root holding a captured nvpmodel.conf), a fake
measurement instead of the workload. Checked: what runs and in which order, the restore on Ctrl-C (also a second
one during the restore) and on errors, mode names resolved from captured confs, rows, JSON and compare of sweeps."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from edgekit import layout as L
from edgekit.bench import limits, report, sweep
from edgekit.bench.runner import BenchSettings, CaseRun, run_sweep
from edgekit.bench.timing import RequestResult
from edgekit.bench.workload import DEFAULT, QUICK
from edgekit.errors import EdgekitError, UnsuitableDevice, UsageError
from edgekit.facts import boards
from edgekit.facts.deployed import FileText
from edgekit.remote.command import Upload
from edgekit.telemetry.sample import Sample
from edgekit.facts.power_modes import parse_conf
from tests.conftest import run_cli_inprocess
from tests.fixtures import captured as cap
from tests.steps_harness import RecordingTransport
from tests.test_jetson_tools import TOOLS, tool

SUPER = (TOOLS / "nvpmodel-p3767-0003-super.conf").read_text()      # 15W (0), 25W (1), MAXN_SUPER (2)
PLAIN = (TOOLS / "nvpmodel-p3767-0003.conf").read_text()            # 15W (0), 7W (1): other GPU power-gating


class Jetson(RecordingTransport):
    """Records every command; nvpmodel / jetson_clocks are answered by the stand-in scripts on a temp root."""

    def __init__(self, root: Path, conf: str | None = SUPER, mode: int | None = 1, env: str | None = None,
                 answer=None):
        self.root = root
        if conf is not None:
            (root / "etc").mkdir(parents=True, exist_ok=True)
            (root / "etc/nvpmodel.conf").write_text(conf)
        if mode is not None:
            (root / "var/lib/nvpmodel").mkdir(parents=True, exist_ok=True)
            (root / "var/lib/nvpmodel/status").write_text(f"pmode:{mode:04d}\n")
        self.env, self.extra = env, answer or (lambda command: None)
        super().__init__(self.device)

    def device(self, command: str):
        extra = self.extra(command)
        if extra is not None:
            return extra
        if command.startswith("cat /etc/nvpmodel.conf"):
            path = self.root / "etc/nvpmodel.conf"
            return path.read_text() if path.exists() else ""
        if command.startswith("nvpmodel -q"):
            status = self.root / "var/lib/nvpmodel/status"
            return (tool(self.root, "nvpmodel", "-q").stdout + "@@status\n" +
                    (status.read_text() if status.exists() else "") + "@@boot\nboot-1\n")
        if command.startswith("nvpmodel -m "):
            done = tool(self.root, "nvpmodel", "-m", command.split()[2])
            return done.returncode, done.stdout
        if command.startswith("jetson_clocks"):
            return tool(self.root, "jetson_clocks", *command.split()[1:]).stdout
        if command == FileText(L.ENV_PATH).command:           # the env file, read as a fact
            return "@@present\n" + self.env if self.env is not None else "@@edgekit-missing\n"
        return ""

    def mode(self) -> str:
        return tool(self.root, "nvpmodel", "-q").stdout.split()[3]


def synthetic_run(tg: float = 40.0, watts: float | None = None, rail: str = "VDD_IN", server=None,
                  bandwidth: float | None = None) -> dict:
    """A bench result (runner.measure's shape) for QUICK: each case 2 s, telemetry every 0.5 s."""
    cases, t = [], 1000.0
    for case in QUICK.cases():
        run = CaseRun(case, started=t, ended=t + 2.0)
        run.batches.append([RequestResult(True, t, 1.0, 0.1, prompt_n=case.prompt_tokens, predicted_n=32, cache_n=0,
                                          prompt_per_second=10.0 * case.prompt_tokens ** 0.5,
                                          predicted_per_second=tg - case.prompt_tokens / 128)
                            for _ in range(case.concurrency)])
        cases.append(run.to_json())
        t += 3.0
    samples = [Sample("tegrastats" if watts else "procfs", time=1000.0 + i / 2, temps_c={"cpu": 40 + i / 10},
                      power_total_mw=None if watts is None else watts * 1000 + (i % 2) * 1000,
                      power_total_from=rail if watts else None).to_json() for i in range(18)]
    result = {"schema": report.RESULT_SCHEMA, "url": "http://orin:8080", "target": "orin", "workload": QUICK.to_json(),
              "model": {"name": "m.gguf", "size_bytes": 500_000_000},
              "server": server or {"build_info": "b1", "total_slots": 2, "slot_n_ctx": 1024},
              "cases": cases, "telemetry": {"samples": samples, "interval_ms": 500},
              "ceiling": limits.ceiling_for(500_000_000, bandwidth and {"memory_bandwidth_gbs": bandwidth,
                                                                       "module": "Orin Nano"}).to_json(),
              "errors": [], "complete": True}
    result["summary"] = report.summarize(result)
    return result


def measuring(t: Jetson, fail: dict | None = None, **run_kwargs):
    """A fake runner.measure: records `MEASURE <mode>` (or the setting's value) and raises at a chosen one."""
    def measure(settings, transport, on_progress, telemetry):
        on_progress("reading device facts")                       # as runner.measure does before its workload
        what = t.mode() if (t.root / "etc/nvpmodel.conf").exists() else "server"
        transport.ran.append(f"MEASURE {what}")
        if fail and what in fail:
            raise fail[what]
        return synthetic_run(**run_kwargs)
    return measure


def sweep_with(t: Jetson, spec: str = "power-mode", fail=None, out=None, result=None, **kwargs) -> dict:
    settings = BenchSettings(url="http://orin:8080", workload=QUICK, out_dir=str(out) if out else None)
    return run_sweep(settings, sweep.parse_sweep(spec), t, result=result,
                     measure=kwargs.pop("measure", None) or measuring(t, fail, **kwargs),
                     poll=lambda: [Sample("jtop", gpu_freq_mhz=1020.0, emc_freq_mhz=3199.0)] * 3,
                     sleep=lambda s: t.ran.append(f"SLEEP {s:g}"), lock=lambda transport, what: _nothing())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def changes(t: Jetson) -> list:
    return [str(c) if isinstance(c, Upload) else c for c in t.ran
            if isinstance(c, Upload) or c.split()[0] in ("nvpmodel", "MEASURE", "SLEEP", "jetson_clocks", "systemctl",
                                                         "mkdir", "rm") and not c.startswith(("nvpmodel -q",
                                                                                              "jetson_clocks --show"))]


# -- the spec and the modes ------------------------------------------------------------------------------------
def test_parse_sweep():
    assert sweep.parse_sweep("power-mode") == sweep.SweepSpec("power-mode", ())
    assert sweep.parse_sweep("power_mode=15W, max,15W").values == ("15W", "max")
    assert sweep.parse_sweep("ctx=512,1024").values == ("512", "1024")
    assert sweep.parse_sweep("cache-type=f16,q8_0").setting == "cache-type"
    for bad, said in (("clocks", "no such setting"), ("ctx", "needs values"), ("ctx=12", "context size"),
                      ("parallel=0", "number of slots"), ("cache-type=q3", "one of f32")):
        with pytest.raises(UsageError, match=said):
            sweep.parse_sweep(bad)


def test_mode_names_resolved_from_captured_confs():
    table = parse_conf(SUPER)
    points = sweep.power_points(sweep.SweepSpec("power-mode"), table, 1)
    assert [(p.value, p.mode.id, p.skipped) for p in points] == [("15W", 0, None), ("25W", 1, None),
                                                                  ("MAXN_SUPER", 2, None)]
    named = sweep.power_points(sweep.SweepSpec("power-mode", ("max", "efficient", "maxn_super")), table, 1)
    assert [(p.value, p.mode.id) for p in named] == [("MAXN_SUPER", 2), ("15W", 0)]
    assert named[0].how == "`max` is MAXN_SUPER here"
    gated = sweep.power_points(sweep.SweepSpec("power-mode"), parse_conf(PLAIN), 0)
    assert gated[0].skipped is None and gated[1].skipped.startswith("needs a reboot: 7W power-gates")
    birdedge = parse_conf(cap.NVPMODEL_CONF_NANO_JP4_BIRDEDGE)       # MAXN (0), 5W (1), BirdEdge (2)
    assert [p.mode.id for p in sweep.power_points(sweep.SweepSpec("power-mode", ("max", "BirdEdge")), birdedge, 0)] \
        == [0, 2]
    with pytest.raises(UsageError, match="not an id"):
        sweep.power_points(sweep.SweepSpec("power-mode", ("2",)), table, 1)
    with pytest.raises(UnsuitableDevice, match="no power mode 'MAXN_SUPER'.*JetPack 6.2"):
        sweep.power_points(sweep.SweepSpec("power-mode", ("MAXN_SUPER",)), parse_conf(PLAIN), 0)
    # before JetPack 6.2 a conf's Super mode is never switched to: a row saying why when every mode is swept, a
    # refusal (before any change) when it is named
    old = sweep.power_points(sweep.SweepSpec("power-mode"), table, 1, "36.3.0")
    assert [p.skipped for p in old][:2] == [None, None] and "need JetPack 6.2 (L4T 36.4.3)" in old[2].skipped
    with pytest.raises(UnsuitableDevice, match=r"MAXN_SUPER is refused.*JetPack 6.2 \(L4T 36.4.3\)"):
        sweep.power_points(sweep.SweepSpec("power-mode", ("MAXN_SUPER",)), table, 1, "36.3.0")


def test_the_ceiling_follows_the_mode_named_in_the_conf():
    """The bandwidth table (facts.boards) knows the modes by the names the captured confs give them."""
    nano = boards.module("p3767-0005")
    assert {m.name: nano.bandwidth_in(m.name) for m in parse_conf(SUPER).modes} == {
        "15W": 68.0, "25W": 102.0, "MAXN_SUPER": 102.0}
    assert {m.name: nano.bandwidth_in(m.name) for m in parse_conf(PLAIN).modes} == {"15W": 68.0, "7W": 68.0}


def test_settle_waits_for_steady_clocks_bounded():
    now = [0.0]
    clock, sleep = (lambda: now[0]), (lambda s: now.__setitem__(0, now[0] + s))
    moving = iter([[1020.0, 612.0, 918.0], [918.0, 918.0, 919.0]])

    def poll():
        now[0] += 2.0
        return [Sample("jtop", gpu_freq_mhz=f, emc_freq_mhz=3199.0) for f in next(moving)]

    out = sweep.settle(poll, sleep, 3.0, 30.0, clock)
    assert out["stable"] is True and out["gpu_mhz"] == 919.0 and out["waited_s"] == 7.0
    never = sweep.settle(lambda: (now.__setitem__(0, now[0] + 2.0), [Sample("jtop", gpu_freq_mhz=300.0 + now[0])] * 1
                                  + [Sample("jtop", gpu_freq_mhz=900.0 + now[0])])[1], sleep, 3.0, 10.0, clock)
    assert never["stable"] is False and "still moving after 10s" in never["why"] and never["waited_s"] <= 13.0
    procfs = sweep.settle(lambda: [Sample("procfs")], sleep, 3.0, 30.0, clock)
    assert procfs["stable"] is None and "no GPU or EMC clock" in procfs["why"]
    assert sweep.settle(None, sleep, 3.0, 30.0, clock)["why"] == "no telemetry: fixed wait only"


# -- the sweep on a device -------------------------------------------------------------------------------------
def test_each_mode_switched_settled_measured_then_the_original_restored(tmp_path):
    t = Jetson(tmp_path)                                                           # runs 25W (id 1)
    result = sweep_with(t)
    assert changes(t) == ["nvpmodel -m 0 </dev/null", "SLEEP 3", "MEASURE 15W",
                          "nvpmodel -m 1 </dev/null", "SLEEP 3", "MEASURE 25W",
                          "nvpmodel -m 2 </dev/null", "SLEEP 3", "MEASURE MAXN_SUPER",
                          "nvpmodel -m 1 </dev/null"]                            # restored
    assert t.mode() == "25W" and (tmp_path / "var/lib/nvpmodel/status").read_text() == "pmode:0001\n"
    s = result["sweep"]
    assert s["restored"] and s["original"] == {"id": 1, "name": "25W", "clocks_pinned": False}
    assert [(r["value"], r["mode_id"], r["complete"]) for r in s["rows"]] == [
        ("15W", 0, True), ("25W", 1, True), ("MAXN_SUPER", 2, True)]
    assert result["complete"] and len(result["runs"]) == 3 and result["model"]["name"] == "m.gguf"
    assert s["rows"][0]["settle"]["stable"] is True and s["rows"][0]["settle"]["emc_mhz"] == 3199.0


def test_pinned_clocks_are_pinned_again_after_each_switch_and_at_the_end(tmp_path):
    t = Jetson(tmp_path)
    tool(tmp_path, "jetson_clocks")
    sweep_with(t, "power-mode=MAXN_SUPER")
    assert changes(t) == ["nvpmodel -m 2 </dev/null", "jetson_clocks", "SLEEP 3", "MEASURE MAXN_SUPER",
                          "nvpmodel -m 1 </dev/null", "jetson_clocks"]
    assert "CurrentFreq" in tool(tmp_path, "jetson_clocks", "--show").stdout and t.mode() == "25W"


def test_ctrl_c_mid_sweep_restores_and_keeps_the_partial_result(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "plot_sweep", lambda result, path: None)           # matplotlib: in the e2e test
    t, partial = Jetson(tmp_path), {}
    with pytest.raises(KeyboardInterrupt):
        sweep_with(t, fail={"MAXN_SUPER": KeyboardInterrupt()}, out=tmp_path / "out", result=partial)
    assert changes(t)[-2:] == ["MEASURE MAXN_SUPER", "nvpmodel -m 1 </dev/null"] and t.mode() == "25W"
    saved = json.loads(Path(partial["files"]["json"]).read_text())
    assert Path(partial["files"]["json"]).name.startswith("bench-sweep-power-mode-orin-")
    assert saved["kind"] == "sweep" and not saved["complete"] and saved["errors"] == ["interrupted (Ctrl-C)"]
    assert [r["value"] for r in saved["sweep"]["rows"]] == ["15W", "25W"] and saved["sweep"]["restored"]


def test_a_ctrl_c_that_a_remote_command_swallowed_still_stops_the_sweep(tmp_path):
    def like_invoke(command):
        if command.startswith("nvpmodel -m 2"):
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pass                     # invoke: a ^C to the remote command's stdin, then it waits on
        return None

    t = Jetson(tmp_path, answer=like_invoke)
    with pytest.raises(KeyboardInterrupt):
        sweep_with(t)
    assert changes(t)[-3:] == ["nvpmodel -m 2 </dev/null", "SLEEP 3", "nvpmodel -m 1 </dev/null"]
    assert t.mode() == "25W" and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_mid_sweep_restores_and_is_raised(tmp_path):
    t = Jetson(tmp_path)
    with pytest.raises(RuntimeError, match="bug"):
        sweep_with(t, fail={"15W": RuntimeError("bug")})
    assert changes(t)[-1] == "nvpmodel -m 1 </dev/null" and t.mode() == "25W"


def test_a_second_ctrl_c_during_the_restore_waits_for_it(tmp_path):
    def interrupt_again(command):
        if command == "nvpmodel -m 1 </dev/null" and "MEASURE 15W" in t.ran:
            os.kill(os.getpid(), signal.SIGINT)                                    # held until the restore is done
        return None

    t = Jetson(tmp_path, answer=interrupt_again)
    with pytest.raises(KeyboardInterrupt):
        sweep_with(t, fail={"15W": KeyboardInterrupt()})
    assert t.mode() == "25W" and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_value_failing_leaves_the_others_to_run(tmp_path):
    t = Jetson(tmp_path)
    result = sweep_with(t, fail={"15W": EdgekitError("llama-server did not come back")})
    rows = result["sweep"]["rows"]
    assert rows[0]["error"] == "EdgekitError: llama-server did not come back" and rows[1]["complete"]
    assert not result["complete"] and t.mode() == "25W"


def test_modes_that_need_a_reboot_are_skipped_saying_so(tmp_path):
    t = Jetson(tmp_path, conf=PLAIN, mode=0)                                       # 15W; 7W gates the GPU otherwise
    result = sweep_with(t)
    assert changes(t) == ["SLEEP 3", "MEASURE 15W"]        # already in 15W: no switch, nothing to restore
    assert result["sweep"]["rows"][1]["skipped"].startswith("needs a reboot") and result["complete"]

    def asks(command):
        return (255, "NVPM WARN: Reboot required for changing to this power mode: 2\nNVPM ERROR: bad input!\n") \
            if command.startswith("nvpmodel -m 2") else None

    t2 = Jetson(tmp_path / "b", answer=asks)
    rows = sweep_with(t2, "power-mode=MAXN_SUPER,15W")["sweep"]["rows"]
    assert rows[0]["skipped"].startswith("nvpmodel asks for a reboot") and rows[1]["complete"]
    assert t2.mode() == "25W"


def test_checks_refuse_before_any_change(tmp_path):
    for t, spec, error, said in (
            (Jetson(tmp_path / "a", conf=None, mode=None), "power-mode", UnsuitableDevice, "no /etc/nvpmodel.conf"),
            (Jetson(tmp_path / "b"), "power-mode=30W", UnsuitableDevice, "no power mode '30W'"),
            (Jetson(tmp_path / "c", env=None), "ctx=512", UnsuitableDevice, "no edgekit service"),
            (Jetson(tmp_path / "d", env="LLAMA_ARG_MODELS_PRESET=/etc/edgekit/models.ini\n"), "ctx=512",
             UnsuitableDevice, "is a router"),
            (Jetson(tmp_path / "e", env="LLAMA_ARG_PORT=8081\n"), "ctx=512", UsageError, "listens on 8081")):
        with pytest.raises(error, match=said):
            sweep_with(t, spec)
        assert changes(t) == []
    with pytest.raises(UsageError, match="needs a TARGET"):
        run_sweep(BenchSettings(url="http://x:1"), sweep.parse_sweep("power-mode"), None)


def test_server_settings_go_through_a_runtime_dropin_and_come_back(tmp_path):
    t = Jetson(tmp_path, conf=None, env="LLAMA_ARG_CTX_SIZE=4096\nLLAMA_ARG_N_PARALLEL=2\n")
    result = sweep_with(t, "ctx=1024,2048", server={"total_slots": 1, "slot_n_ctx": 1024})   # 2048 not applied
    ran = changes(t)
    dropin = "/run/systemd/system/edgekit-llama-server.service.d/60-edgekit-bench-sweep.conf"
    assert ran[0] == "mkdir -p /run/systemd/system/edgekit-llama-server.service.d"
    assert ran[1].startswith("upload → /run/edgekit-bench-sweep.env (0644 root") and ran[2].startswith(
        f"upload → {dropin} (0644 root")
    assert ran[3:6] == ["systemctl daemon-reload", "systemctl restart edgekit-llama-server.service", "MEASURE server"]
    assert ran[-3:] == [f"rm -f {dropin} /run/edgekit-bench-sweep.env", "systemctl daemon-reload",
                        "systemctl restart edgekit-llama-server.service"]
    env = next(u for u in t.ran if isinstance(u, Upload) and u.dest == sweep.SWEEP_ENV)
    assert env.data.decode().endswith("LLAMA_ARG_CTX_SIZE=1024\n")
    assert "EnvironmentFile=/run/edgekit-bench-sweep.env" in sweep.env_ops({})[2].text
    rows = result["sweep"]["rows"]
    assert result["sweep"]["original"] == {"LLAMA_ARG_CTX_SIZE": "4096"}
    assert [r["applied"] for r in rows] == [True, False] and "do not show ctx 2048" in rows[1]["error"]


# -- rows, JSON, compare ---------------------------------------------------------------------------------------
def test_a_row_from_a_run():
    point = sweep.Point("15W", mode=parse_conf(SUPER).by_id(0))
    row = sweep.row_for(point, synthetic_run(watts=10.0, bandwidth=68.0))
    assert (row["pp_case"], row["tg_case"]) == ("p512-c1", "p128-c1")
    assert row["pp_tps"] == pytest.approx(10.0 * 512 ** 0.5) and row["tg_tps"] == pytest.approx(39.0)
    assert row["power_mean_w"] == pytest.approx(10.5, abs=0.1) and row["power_peak_w"] == 11.0
    assert row["j_per_token"] == pytest.approx(row["power_mean_w"] * 6.0 / (32 * 4), rel=0.05)
    assert row["temp_max_c"] == pytest.approx(41.7) and row["decode_ceiling_tps"] == pytest.approx(136.0)
    assert row["ceiling_share_pct"] == pytest.approx(100 * 39.0 / 136.0)
    summed = sweep.row_for(point, synthetic_run(watts=10.0, rail="sum of rails"))
    assert summed["power_mean_w"] is None and summed["j_per_token"] is None       # VDD_IN only, else null
    bare = sweep.row_for(point, synthetic_run())
    assert bare["power_mean_w"] is None and bare["ceiling_share_pct"] is None and "--bandwidth" in bare[
        "bandwidth_from"]
    assert sweep.applied("parallel", "2", {"total_slots": 2}) and sweep.applied("cache-type", "q8_0", {}) is None


def sweep_file(tmp_path, name: str, tg: float) -> Path:
    return report.write_json(sweep_with(Jetson(tmp_path / name), tg=tg, watts=10.0), tmp_path / f"{name}.json")


def test_sweep_json_and_compare(tmp_path):
    a, b = sweep_file(tmp_path, "a", 40.0), sweep_file(tmp_path, "b", 44.0)
    data = report.load(a)
    assert report.is_sweep(data) and set(data["sweep"]["rows"][0]) >= {
        "value", "mode_id", "pp_tps", "tg_tps", "power_mean_w", "power_peak_w", "j_per_token", "temp_max_c",
        "bandwidth_gbs", "ceiling_share_pct", "skipped", "settle"}
    assert report.describe(data)["sweep"] == "power-mode: 15W, 25W, MAXN_SUPER"
    rows = {r["metric"]: r for r in report.compare(data, report.load(b))}
    assert rows["MAXN_SUPER gen tok/s"]["change_pct"] == pytest.approx(100 * 4 / 39) and rows[
        "15W J/token"]["value"] == "15W"
    single = report.write_json(synthetic_run(), tmp_path / "single.json")
    out = run_cli_inprocess("bench-compare", str(a), str(single))
    assert out.returncode == 2 and "A (a.json) is a sweep over power-mode and B (single.json) is a single run" in \
        " ".join(out.stderr.split())
    shown = run_cli_inprocess("bench-compare", str(a), str(b), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["b"]["power_mode"] == "swept"
    ctx = json.loads(a.read_text())
    ctx["sweep"]["setting"] = "ctx"
    (tmp_path / "ctx.json").write_text(json.dumps(ctx))
    with pytest.raises(UsageError, match="over power-mode and B over ctx"):
        report.compare(data, report.load(tmp_path / "ctx.json"))


def test_cli_refuses_a_sweep_it_cannot_run():
    for args, said in ((["--url", "http://x:8080", "--sweep", "power-mode"], "needs a TARGET"),
                       (["orin", "--sweep", "clocks"], "no such setting"),
                       (["orin", "--full"], "--full is for --sweep")):
        out = run_cli_inprocess("bench", *args)
        assert out.returncode == 2 and said in out.stderr, out.stderr


def test_settings_are_copied_per_value_without_an_out_dir(tmp_path):
    seen = []
    t = Jetson(tmp_path)

    def measure(settings, transport, on_progress, telemetry):
        seen.append((settings.out_dir, telemetry))
        on_progress("run 1/1")
        return synthetic_run()

    said = []
    settings = BenchSettings(url="http://orin:8080", workload=QUICK, out_dir=None)
    run_sweep(replace(settings), sweep.parse_sweep("power-mode=15W"), t, on_progress=said.append, telemetry=False,
              measure=measure, sleep=lambda s: None, lock=lambda transport, what: _nothing())
    assert seen == [(None, False)] and "[1/1] power-mode 15W: run 1/1" in said


@pytest.mark.parametrize("spec,pinned_clocks,env", [("power-mode", True, None), ("power-mode=MAXN_SUPER,15W", False, None),
                                                    ("ctx=1024,2048", False, "LLAMA_ARG_CTX_SIZE=4096\n")])
def test_the_dry_run_prints_exactly_the_commands_the_sweep_runs(tmp_path, spec, pinned_clocks, env):
    """`bench --sweep ... --server-cpus 0 --dry-run`: every check, then the plan, nothing changed; the run on a device
    in the same state executes exactly the printed device commands, in the printed order (pinning and restore too)."""
    def device(name):
        t = Jetson(tmp_path / name, conf=SUPER if env is None else None, env=env)
        if pinned_clocks:
            tool(t.root, "jetson_clocks")
        return t

    settings = BenchSettings(url="http://orin:8080", workload=QUICK, server_cpus=[0])
    dry_t = device("dry")
    dry = run_sweep(settings, sweep.parse_sweep(spec), dry_t, dry_run=True, lock=None)
    assert changes(dry_t) == [] and dry["dry_run"] and dry["runs"] == [] and dry["files"] is None
    printed = dry["sweep"]["plan"]
    t = device("real")
    run_sweep(settings, sweep.parse_sweep(spec), t, measure=measuring(t), poll=None, sleep=lambda s: None,
              lock=lambda transport, what: _nothing())
    ran = [c for c in changes(t) if not c.startswith("MEASURE")]
    assert ran == [p for p in printed if not p.startswith("check: ")], "\n".join(printed)
    assert printed[0] == "mkdir -p /run/systemd/system/edgekit-llama-server.service.d"        # pinned first,
    assert printed[-1] == "systemctl restart edgekit-llama-server.service"                     # unpinned last
    measured = [p for p in printed if p.startswith("check: measure")]
    assert len(measured) == len([r for r in dry["sweep"]["rows"] if not r["skipped"]]) == (3 if spec == "power-mode"
                                                                                           else 2)
    if pinned_clocks:
        assert printed.count("jetson_clocks") == 4            # after each switch (15W, 25W, MAXN_SUPER) and the restore


def test_cli_bench_dry_run_without_a_device_prints_the_measurement_only():
    out = run_cli_inprocess("bench", "--url", "http://127.0.0.1:9", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    cases = len(DEFAULT.cases())                    # the full workload: --quick is not given
    assert plan["dry_run"] and plan["commands"] == [f"check: measure: workload v{DEFAULT.version} ({cases} cases) "
                                                    "against http://127.0.0.1:9"]
    assert "would run 0 command(s) that change the device" in out.stderr
