"""Every parser of outside data returns a typed value or raises edgekit's typed error, never anything else.

Property-based (hypothesis): for each parser a strategy of valid inputs (known answers, or a round trip) and of
mutated and random ones. Crashes hypothesis found are kept below as explicit regression examples (`@example`).
Examples stay few (max_examples 40..200, no deadline) so the unit suite stays under a minute.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import pkgutil
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import edgekit
from edgekit.errors import EdgekitError, ParseError
from edgekit.models import gguf_header
from edgekit.models.tiny import _ARR, _STR, _U32, _kv, tiny_llama_bytes
from tests.fixtures import captured

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def holds(parse, *args, **kwargs):
    """parse(...)'s value, or None when it raised edgekit's typed error (with a message); anything else fails."""
    try:
        return parse(*args, **kwargs)
    except EdgekitError as e:
        assert e.message and "\n" not in e.message.splitlines()[0]
        return None


@st.composite
def mutated(draw, samples, alphabet=None):
    """One of `samples` (str or bytes) with a few random edits: cut, duplicate, insert, overwrite, truncate."""
    value = draw(st.sampled_from(samples))
    is_bytes = isinstance(value, bytes)
    piece = (st.binary(max_size=12) if is_bytes else st.text(max_size=12) if alphabet is None
             else st.text(alphabet=alphabet, max_size=12))
    for _ in range(draw(st.integers(0, 4))):
        n = len(value)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 16)))
        op = draw(st.sampled_from(["cut", "dup", "insert", "overwrite", "truncate"]))
        if op == "cut":
            value = value[:i] + value[j:]
        elif op == "dup":
            value = value[:j] + value[i:j] + value[j:]
        elif op == "insert":
            value = value[:i] + draw(piece) + value[i:]
        elif op == "overwrite":
            new = draw(piece)
            value = value[:i] + new + value[i + len(new):]
        else:
            value = value[:i]
    return value


def text_or_mutated(samples):
    return st.one_of(mutated(samples), st.text(max_size=200), mutated(samples, alphabet=st.characters(max_codepoint=0x7f)))


# -- every fact's parser (one command + a pure parser: facts/, tuning/facts, metrics/steps, ...) --------------
def _fact_parsers():
    for info in pkgutil.walk_packages(edgekit.__path__, "edgekit."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if (inspect.isclass(cls) and cls.__module__ == module.__name__
                    and isinstance(vars(cls).get("parse"), staticmethod)
                    and inspect.isfunction(cls.parse)
                    and list(inspect.signature(cls.parse).parameters) == ["output"]):
                yield pytest.param(cls.parse, id=f"{cls.__module__}.{cls.__name__}")


FACT_SAMPLES = [captured.NV_TEGRA_RELEASE_R36_4_4, captured.NV_TEGRA_RELEASE_R32_7_6_NANO,
                captured.DT_MODEL_AGX_ORIN_JP7 + "\0", captured.DT_COMPATIBLE_AGX_ORIN_64GB_AS_DISPLAYED,
                captured.NVPMODEL_CONF_ORIN_NX_CUSTOM, captured.JETSON_CLOCKS_SHOW_AGX_ORIN_JP5,
                captured.PROC_SWAPS_ZRAM_AND_PARTITION, captured.ZRAMCTL_DEFAULT_FOUR_DEVICES,
                captured.NVCC_VERSION_JP6_CUDA_12_6, captured.NVPMODEL_Q_THOR_JP7,
                "MemTotal: 7620 kB\nMemAvailable: 100 kB\n", "@@present\nx=1\n", "12\n", "active\nsocket\n",
                "Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/root 100 50 50 50% /\n",
                '{"a": [1, {"b": 2}]}', "root 0644 /etc/x\n", "LISTEN 0 128 0.0.0.0:8080 users:((\"x\",pid=1,fd=3))"]


FACT_PARSERS = [p for p in _fact_parsers() if not p.id.endswith(".Fact")]   # the bases' parse is abstract


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parse=st.sampled_from([p.values[0] for p in FACT_PARSERS]), output=text_or_mutated(FACT_SAMPLES))
@example(parse=__import__("edgekit.facts.system", fromlist=["CpuCount"]).CpuCount.parse, output="\u00b2")
def test_every_fact_parser_returns_a_value_or_a_typed_error(parse, output):
    holds(parse, output)


def test_the_fact_parsers_are_found():
    names = {p.id for p in FACT_PARSERS}
    assert {"edgekit.facts.jetson.JetsonRelease", "edgekit.facts.jetson.DeviceModel",
            "edgekit.facts.tuning.NvpmodelConf", "edgekit.facts.system.MemInfo",
            "edgekit.facts.deployed.FileText"} <= names, names


# -- nv_tegra_release and the device-tree model: known answers ------------------------------------------------
@FAST
@given(major=st.integers(1, 99), minor=st.integers(0, 99), patch=st.integers(0, 99),
       board=st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True))
def test_nv_tegra_release_round_trip(major, minor, patch, board):
    from edgekit.facts.jetson import JetsonRelease
    line = f"# R{major} (release), REVISION: {minor}.{patch}, GCID: 1, BOARD: {board}, EABI: aarch64, DATE: x"
    assert JetsonRelease.parse(line) == {"l4t": f"{major}.{minor}.{patch}", "board": board}


@FAST
@given(model=st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=60))
def test_device_tree_model_round_trip(model):
    from edgekit.facts.jetson import DeviceModel
    assert DeviceModel.parse(model + "\0") == model


# -- nvpmodel.conf ----------------------------------------------------------------------------------------------
@FAST
@given(modes=st.lists(st.tuples(st.integers(0, 20), st.from_regex(r"[A-Z0-9_]{1,8}", fullmatch=True)),
                      min_size=1, max_size=4, unique_by=lambda m: m[0]),
       default=st.integers(0, 20))
def test_nvpmodel_conf_round_trip(modes, default):
    from edgekit.facts.power_modes import parse_conf
    text = "# nvpmodel\n" + "".join(f"< POWER_MODEL ID={i} NAME={n} >\nCPU_ONLINE CORE_0 1\n\n" for i, n in modes)
    text += f"< PM_CONFIG DEFAULT={default} >\n"
    table = parse_conf(text)
    assert [(m.id, m.name) for m in table.modes] == modes
    assert table.default == default


@FAST
@given(text=text_or_mutated([captured.NVPMODEL_CONF_ORIN_NX_CUSTOM, captured.NVPMODEL_CONF_NANO_JP4_BIRDEDGE]))
@example(text="< POWER_MODEL ID=99999999999999999999999 NAME=x >\n")
def test_nvpmodel_conf_never_crashes(text):
    from edgekit.facts.power_modes import parse_conf
    holds(parse_conf, text)


# -- tegrastats and jtop ------------------------------------------------------------------------------------
TEGRASTATS = [v for k, v in vars(captured).items() if k.startswith("TEGRASTATS_")]


def test_tegrastats_known_answer():
    from edgekit.telemetry.tegrastats import parse_line
    s = parse_line(captured.TEGRASTATS_ORIN_NANO_JP6_GPU_BUSY)
    assert (s.ram_used_mb, s.ram_total_mb, s.gpu_load_pct, s.gpu_freq_mhz) == (6185, 7620, 63, 621)


@FAST
@given(line=text_or_mutated(TEGRASTATS))
@example(line="RAM 1/2MB GR3D_FREQ 5%@[,]")
@example(line="RAM 1/2MB CPU [5%@" + "9" * 400 + "]")
def test_tegrastats_lines_never_crash(line):
    from edgekit.telemetry.tegrastats import parse_line
    try:
        parse_line(line)
    except ParseError:
        pass


JTOP_NUMBERS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                         st.sampled_from(["OFF", "nan", "inf", "-inf", "1e999", "50%"]))


@FAST
@given(stats=st.dictionaries(st.sampled_from(["CPU1", "CPU2", "GPU", "RAM", "SWAP", "EMC", "Temp gpu", "Power VDD_SOC",
                                              "Power TOT", "power cur", "jetson_clocks", "nvp model", "time", "CPUx"]),
                             JTOP_NUMBERS),
       memory=st.one_of(st.none(), st.dictionaries(st.sampled_from(["RAM", "SWAP", "EMC"]),
                                                   st.one_of(JTOP_NUMBERS, st.dictionaries(
                                                       st.sampled_from(["used", "tot", "cur"]), JTOP_NUMBERS)))),
       gpu=st.one_of(st.none(), st.just({"gpu": {"freq": {"cur": "x"}}}), st.just({"gpu": "x"})))
@example(stats={"RAM": 0.5}, memory={"RAM": {"used": "x"}}, gpu=None)
def test_jtop_stats_never_crash(stats, memory, gpu):
    from edgekit.telemetry.jtop import from_stats
    holds(from_stats, stats, memory, gpu, ram_total_mb=1000.0)


@FAST
@given(text=text_or_mutated([captured.JTOP_STATS_XAVIER_OLD_API_AS_PRINTED]))
@example(text="GPU, inf\nRAM, nan\n")
def test_jtop_printed_listing_never_crashes(text):
    from edgekit.telemetry.jtop import parse_old_api_as_printed
    holds(parse_old_api_as_printed, text)


# -- /proc files ----------------------------------------------------------------------------------------------
PROC_STAT = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\ncpu1 5 0 5 50 0 0 0 0 0 0\nintr 1 2\n"
MEMINFO = "MemTotal:        7620000 kB\nMemFree:  100 kB\nMemAvailable:    3000000 kB\nSwapTotal: 0 kB\n"


def test_proc_known_answers():
    from edgekit.telemetry.procfs import parse_meminfo, parse_stat
    assert parse_stat(PROC_STAT) == {0: (10, 60), 1: (10, 60)}
    assert parse_meminfo(MEMINFO)["MemAvailable"] == 3000000


@FAST
@given(text=text_or_mutated([PROC_STAT, MEMINFO]))
@example(text="cpu0 1 2 x 4\n")
def test_proc_files_never_crash(text):
    from edgekit.telemetry.procfs import cpu_loads, memory_fields, parse_meminfo, parse_stat
    times = holds(parse_stat, text)
    if times is not None:
        cpu_loads(times, times)
    info = holds(parse_meminfo, text)
    if info is not None:
        memory_fields(info)


# -- llama-server answers: JSON, SSE, Prometheus text -------------------------------------------------------
MODELS = [json.dumps({"data": [{"id": "a", "status": {"value": "loaded"}}, {"id": "b", "status": {"value": "x"}}]}),
          json.dumps({"data": [{"id": "m"}]})]


def json_like():
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6))
    return st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                  st.dictionaries(st.sampled_from(["data", "id", "status", "value",
                                                                                   "error", "message", "code",
                                                                                   "choices", "content"]), c,
                                                                  max_size=3)),
                        max_leaves=12)


def test_models_known_answer():
    from edgekit.exporter.llama import models
    assert models(200, MODELS[0]) == (True, [("a", True), ("b", False)])
    assert models(200, MODELS[1]) == (False, [("m", True)])


@FAST
@given(body=st.one_of(text_or_mutated(MODELS), json_like().map(json.dumps)))
@example(body='{"data": [{"id": "a", "status": {"v": 1}}, {"id": "b", "status": "x"}]}')
@example(body='{"data": 5}')
@example(body='{"data": ' + "[" * 100_000)
def test_server_models_answer_never_crashes(body):
    from edgekit.exporter.llama import models
    holds(models, 200, body)


@FAST
@given(body=st.one_of(json_like().map(json.dumps), st.binary(max_size=80).map(lambda b: b.decode("latin-1"))))
@example(body="[" * 100_000)
def test_server_error_answers_never_crash(body):
    from edgekit.chat.client import _is_context_error, _server_message
    message, data = holds(_server_message, body.encode("utf-8", "surrogatepass"))
    _is_context_error(400, message, data)


SSE = [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n',
       b'data: {"content": "x", "stop": false}\r\n\r\nerror: {"code": 500}\n\n']


@FAST
@given(stream=st.one_of(mutated(SSE), st.binary(max_size=120)), cut=st.integers(1, 7))
def test_sse_never_crashes_and_chunking_does_not_change_events(stream, cut):
    from edgekit.chat.sse import iter_sse
    whole = list(iter_sse(iter([stream])))
    chunks = [stream[i:i + cut] for i in range(0, len(stream), cut)]
    assert list(iter_sse(iter(chunks))) == whole


METRICS = ['# HELP llamacpp:tokens x\n# TYPE llamacpp:tokens counter\nllamacpp:tokens{a="b\\"c"} 12\n',
           'x_bucket{le="+Inf"} 3 1700000000\nx 1e3\n']


@FAST
@given(text=text_or_mutated(METRICS))
def test_prometheus_text_never_crashes(text):
    from edgekit.exporter.textformat import parse
    try:
        parse(text)
    except ParseError:
        pass


# -- GGUF headers ---------------------------------------------------------------------------------------------
GGUF = tiny_llama_bytes()


def _nested_arrays(depth: int) -> bytes:
    value = struct.pack("<IQ", _ARR, 1) * depth + struct.pack("<IQ", _U32, 0)
    key = b"tokenizer.x"
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<I", _ARR) + value)


def test_gguf_known_answer():
    header = gguf_header.read_header(io.BytesIO(GGUF))
    assert header.architecture == "llama" and header.block_count and header.chat_template in (True, False)
    assert gguf_header.check(io.BytesIO(GGUF), len(GGUF)).data_offset


def test_deeply_nested_gguf_arrays_are_a_typed_error():
    blob = _nested_arrays(50_000)
    with pytest.raises(gguf_header.GGUFError, match="nested more than"):
        gguf_header.read_header(io.BytesIO(blob))
    with pytest.raises(gguf_header.GGUFError):
        gguf_header.check(io.BytesIO(blob), len(blob))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=st.one_of(mutated([GGUF[:4096], _nested_arrays(3),
                               b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _kv("llama.context_length", 6, 0.0)]),
                      st.binary(max_size=64).map(lambda b: b"GGUF\x03\0\0\0" + b)))
@example(blob=b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + _kv("general.architecture", _STR, "llama")
         + _kv("llama.context_length", 6, float("inf")))
@example(blob=b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + _kv("general.architecture", _STR, "llama")
         + _kv("llama.block_count", 6, float("nan")))
def test_gguf_headers_never_crash(blob):
    holds(gguf_header.read_header, io.BytesIO(blob))
    holds(gguf_header.check, io.BytesIO(blob), len(blob))


# -- inventories (edgekit.toml, Ansible INI and YAML) and the lock file: typed errors, and the CLI's one line ---
INVENTORIES = {
    "toml": ['[defaults]\nmodel = "m"\n[groups.lab]\nhosts = ["orin-1"]\nctx = 2048\n[hosts.orin-1]\naddress = "10.0.0.11"\n'
             'port = 22\n'],
    "ini": ["[lab]\norin-1 ansible_host=10.0.0.11 ansible_port=22\n[lab:vars]\nedgekit_ctx=2048\n"
            "[all:children]\nlab\n"],
    "yml": ["all:\n  children:\n    lab:\n      hosts:\n        orin-1:\n          ansible_host: 10.0.0.11\n"
            "      vars:\n        edgekit_ctx: 2048\n"],
}


def test_inventory_known_answers(tmp_path):
    from edgekit.fleet.inventory import load
    for suffix, (text,) in INVENTORIES.items():
        path = tmp_path / f"inv.{suffix}"
        path.write_text(text)
        host = load(path).select(["@lab"])[0]
        assert (host.name, host.address, host.settings.get("ctx") in (2048, "2048")) == ("orin-1", "10.0.0.11", True)


@FAST
@given(suffix=st.sampled_from(sorted(INVENTORIES)), data=st.data())
@example(suffix="toml", data=None)
def test_inventories_never_crash(tmp_path_factory, suffix, data):
    from edgekit.fleet.inventory import load
    blob = (b'[hosts]\norin = "x"\n' if data is None else
            data.draw(st.one_of(mutated([t.encode() for t in INVENTORIES[suffix]]), st.binary(max_size=60))))
    path = tmp_path_factory.mktemp("inv") / f"inv.{suffix}"
    path.write_bytes(blob)
    inv = holds(load, path)
    if inv is not None:
        for host in inv.hosts.values():
            assert isinstance(host.target, str)


@FAST
@given(blob=st.one_of(mutated([json.dumps({"version": 1, "model": {"m/f.gguf": {"sha256": "a" * 64}}}).encode()]),
                      st.binary(max_size=40)))
@example(blob=b"\xff\xfe{}")
@example(blob=b"[" * 100_000)
def test_lock_files_never_crash(tmp_path_factory, blob):
    from edgekit import lockfile
    path = tmp_path_factory.mktemp("lock") / "edgekit.lock"
    path.write_bytes(blob)
    holds(lockfile.validate, path)
    holds(lockfile.check, "model", "m/f.gguf", "a" * 64, path)


CRAFTED = {
    "lock file: invalid UTF-8": ("edgekit.lock", b'{"version": 1, "model": {"\xff": {}}}'),
    "lock file: deep nesting": ("edgekit.lock", b"[" * 100_000 + b"]" * 100_000),
    "GGUF: deeply nested arrays": ("model.gguf", _nested_arrays(100_000)),
    "inventory: [hosts] orin = \"x\"": ("edgekit.toml", b'[hosts]\norin = "x"\n'),
    "inventory: a YAML list": ("hosts.yml", b"- orin\n- nano\n"),
    "inventory: a YAML syntax error": ("hosts.yml", b"all:\n  hosts: [orin\n   nano: {\n"),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_inputs_give_exit_2_and_one_error_line(tmp_path, edgekit_home, name):
    from tests.conftest import run_cli_inprocess
    file_name, blob = CRAFTED[name]
    path = tmp_path / file_name
    path.write_bytes(blob)
    if file_name == "edgekit.lock":
        args = ["provision", "local", "--dry-run", "--lock-file", str(path)]
    elif file_name == "model.gguf":
        args = ["provision", "local", "--dry-run", "--model-url", str(path), "--sha256", "a" * 64]
    else:
        args = ["facts", "orin", "--inventory", str(path)]
    result = run_cli_inprocess(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[:1], result.stderr
    assert any(line.startswith("hint:") for line in lines[1:]), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# -- who holds the device lock (/proc/locks + the owner record) ---------------------------------------------
WHO_EDGEKIT = ("holder 4242 Tue Dec 8 00:32:23 2026 :: flock -w 30 -E 75 /run/edgekit/lock sh -c ...\n"
               "owner 4242 laptop pid 77 since 2026-12-08T00:32:23+0000 (provision)\n")
WHO_FOREIGN = ("holder 5151 Tue Dec 8 00:40:00 2026 :: flock -n /run/edgekit/lock sleep 120\n"
               "owner 4242 laptop pid 77 since 2026-12-08T00:32:23+0000 (provision)\n")


def test_the_lock_holder_is_the_one_the_kernel_names():
    from edgekit.remote.lock import describe_holder
    assert describe_holder(WHO_EDGEKIT) == "laptop pid 77 since 2026-12-08T00:32:23+0000 (provision), device pid 4242"
    # a record left by a run that has finished (or a foreign process holding the lock) never names that run
    assert describe_holder(WHO_FOREIGN) == ("pid 5151 (flock -n /run/edgekit/lock sleep 120, since Tue Dec 8 "
                                            "00:40:00 2026), not an edgekit run")
    assert describe_holder(WHO_EDGEKIT.splitlines()[1]) is None          # a record alone: nothing holds the lock


@FAST
@given(output=text_or_mutated([WHO_EDGEKIT, WHO_FOREIGN]))
def test_lock_holder_output_never_crashes(output):
    from edgekit.remote.lock import describe_holder
    assert describe_holder(output) is None or isinstance(describe_holder(output), str)
