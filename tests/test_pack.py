"""Packs are checked on the controller before upload: crafted tarballs that would write outside the unpack
directory (or carry set-uid bits, devices, links out) are refused; the device unpacks without the archive's owners
and modes. Pure, plus local GNU tar where a test shows what tar itself would do."""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.prereqs import unavailable

from edgekit.llamacpp.pack import UnsafePack, check_members, check_pack, stripped, unpack_command
from edgekit.remote.transport import Result

NAME = "b11312-abcdef12"


def _member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "", data: bytes = b""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, data


def _pack(path: Path, members: list) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


GOOD = [
    _member(NAME, tarfile.DIRTYPE, 0o755),
    _member(f"{NAME}/bin", tarfile.DIRTYPE, 0o755),
    _member(f"{NAME}/bin/llama-server", mode=0o755, data=b"#!/bin/sh\necho version\n"),
    _member(f"{NAME}/lib", tarfile.DIRTYPE, 0o755),
    _member(f"{NAME}/lib/libllama.so.0.0.1", mode=0o644, data=b"\x7fELF"),
    _member(f"{NAME}/lib/libllama.so.0", tarfile.SYMTYPE, 0o777, "libllama.so.0.0.1"),
    _member(f"{NAME}/lib/libllama.so", tarfile.SYMTYPE, 0o777, "libllama.so.0"),
    _member(f"{NAME}/bin/libs", tarfile.SYMTYPE, 0o777, "../lib"),
    _member(f"{NAME}/build-stamp.json", data=b'{"version": "b11312"}\n'),
]


def _infos(members):
    return [info for info, _ in members]


def test_a_pack_from_pack_build_passes(tmp_path):
    assert check_members(_infos(GOOD), NAME) == []
    path = _pack(tmp_path / f"{NAME}.tar.gz", GOOD)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    got = check_pack(path, sha, NAME)
    assert got.members == len(GOOD) and got.sha256 == sha


def test_strip_emulates_gnu_tar():
    assert stripped(f"{NAME}/bin/llama-server") == "bin/llama-server"
    assert stripped(NAME) == "" and stripped(f"{NAME}/") == ""
    assert stripped(f"{NAME}//tmp/x") == "/tmp/x"          # absolute once the first component is gone


@pytest.mark.needs("tar")
def test_gnu_tar_writes_a_double_slash_member_outside_and_the_check_refuses_it(tmp_path):
    """What the check guards against, shown with the real tar (inside tmp_path): `name//ABS` lands at ABS."""
    outside = tmp_path / "outside" / "evil"
    outside.parent.mkdir()
    evil = [_member(NAME, tarfile.DIRTYPE, 0o755), _member(f"{NAME}/{outside}", mode=0o755, data=b"boom")]
    assert evil[1][0].name == f"{NAME}/{outside}" and f"{NAME}//" in evil[1][0].name
    path = _pack(tmp_path / "evil.tar.gz", evil)
    dest = tmp_path / "dest"
    dest.mkdir()
    res = subprocess.run(["tar", "-xzf", str(path), "-C", str(dest), "--strip-components=1"],
                         capture_output=True, text=True)
    if not outside.exists():
        unavailable("tar", f"this tar strips leading slashes after --strip-components ({res.stderr.strip()})")
    assert outside.read_bytes() == b"boom" and not any(dest.iterdir())
    with pytest.raises(UnsafePack, match="absolute name"):
        check_pack(path, top=NAME)


@pytest.mark.parametrize("members, words", [
    ([_member(f"{NAME}//etc/cron.d/x", data=b"x")], "absolute name"),
    ([_member(f"/{NAME}/bin/x", data=b"x")], "absolute name"),
    ([_member(f"{NAME}/../../etc/passwd", data=b"x")], "`..`"),
    ([_member(f"{NAME}/bin/../../x", data=b"x")], "`..`"),
    ([_member(f"{NAME}/bin//x", data=b"x")], "empty component"),
    ([_member(f"{NAME}/bin/su", mode=0o4755, data=b"x")], "set-uid"),
    ([_member(f"{NAME}/bin", tarfile.DIRTYPE, 0o2775)], "set-uid/set-gid"),
    ([_member(f"{NAME}/tmp", tarfile.DIRTYPE, 0o1777)], "sticky"),
    ([_member(f"{NAME}/dev/null", tarfile.CHRTYPE)], "device"),
    ([_member(f"{NAME}/dev/sda", tarfile.BLKTYPE)], "device"),
    ([_member(f"{NAME}/fifo", tarfile.FIFOTYPE)], "fifo"),
    ([_member(f"{NAME}/bin/shadow", tarfile.LNKTYPE, link="/etc/shadow")], "hard link"),
    ([_member(f"{NAME}/lib/x", tarfile.SYMTYPE, link="/etc/shadow")], "points outside"),
    ([_member(f"{NAME}/lib/x", tarfile.SYMTYPE, link="../../../etc")], "points outside"),
    ([_member(f"{NAME}/up", tarfile.SYMTYPE, link="..")], "points outside"),
    # lexically inside, but `a` is the top itself, so a/b -> .. leaves it
    ([_member(f"{NAME}/a", tarfile.SYMTYPE, link="."), _member(f"{NAME}/c", tarfile.SYMTYPE, link="a/..")],
     "points outside"),
    ([_member(f"{NAME}/a", tarfile.SYMTYPE, link="b"), _member(f"{NAME}/b", tarfile.SYMTYPE, link="a")],
     "points outside"),                                         # a loop
    ([_member(f"{NAME}/lib", tarfile.SYMTYPE, link="."), _member(f"{NAME}/lib/x", data=b"x")],
     "written through the symlink"),
    ([_member(f"{NAME}/bin/x", data=b"x"), _member(f"{NAME}/bin/x", data=b"y")], "appears twice"),
    ([_member("other/bin/x", data=b"x")], "outside b11312-abcdef12/"),
])
def test_crafted_members_are_refused(members, words, tmp_path):
    problems = check_members(_infos(GOOD[:1] + members), NAME)
    assert any(words in p for p in problems), problems
    with pytest.raises(UnsafePack, match="refusing to install") as e:
        check_pack(_pack(tmp_path / "bad.tar.gz", GOOD[:1] + members), top=NAME)
    assert e.value.exit_code == 2 and "`edgekit build TARGET`" in e.value.hint


def test_more_than_one_top_without_a_name():
    assert any("more than one top" in p for p in check_members(_infos([_member("a/x"), _member("b/y")])))


def test_sha256_must_match_the_metadata(tmp_path):
    path = _pack(tmp_path / "p.tar.gz", GOOD)
    with pytest.raises(UnsafePack, match="does not match the sha256"):
        check_pack(path, "0" * 64, NAME)
    (tmp_path / "junk.tar.gz").write_bytes(b"junk")
    with pytest.raises(UnsafePack, match="not a readable tar.gz"):
        check_pack(tmp_path / "junk.tar.gz")


def test_unpack_command_drops_owners_and_modes(tmp_path):
    cmd = unpack_command("/var/cache/edgekit/packs/p.tar.gz", "/opt/edgekit/llama.cpp/p.partial")
    assert "--strip-components=1 --no-same-owner --no-same-permissions" in cmd
    assert cmd.endswith("chmod -R u+rwX,go+rX,go-w,a-st /opt/edgekit/llama.cpp/p.partial")


@pytest.mark.needs("tar")
def test_unpack_command_runs_with_local_tar(tmp_path):
    """A world-writable file and a set-gid directory (refused by the check; here to show the device side alone)
    come out 0755/0644-like, with no set-uid bits."""
    members = GOOD + [_member(f"{NAME}/open", mode=0o6777, data=b"x"),
                      _member(f"{NAME}/share", tarfile.DIRTYPE, 0o2777)]
    path = _pack(tmp_path / "p.tar.gz", members)
    dest = tmp_path / "p.partial"
    subprocess.run(["sh", "-c", unpack_command(str(path), str(dest))], check=True)
    assert (dest / "bin" / "llama-server").read_text().startswith("#!/bin/sh")
    assert (dest / "lib" / "libllama.so").resolve() == (dest / "lib" / "libllama.so.0.0.1").resolve()
    for p in [dest / "open", dest / "share", dest / "bin" / "llama-server"]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert not mode & 0o7022, (p, oct(mode))
    assert stat.S_IMODE((dest / "open").stat().st_mode) == 0o755


def test_install_pack_refuses_a_crafted_pack_before_uploading(tmp_path):
    from edgekit.llamacpp.packs import InstallPack
    from edgekit.remote.plan import Context, run_steps

    evil = GOOD + [_member(f"{NAME}//etc/sudoers.d/edgekit", data=b"ALL ALL=(ALL) NOPASSWD: ALL\n")]
    path = _pack(tmp_path / f"{NAME}.tar.gz", evil)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(f"{NAME}.json").write_text(json.dumps({"name": NAME, "sha256": sha, "stamp": {
        "version": "b11312", "flags_hash": "abcdef12", "backend": "cpu", "arch": "aarch64"}}))
    ran, uploaded = [], []
    transport = SimpleNamespace(
        name="orin", run=lambda command, **kw: ran.append(command) or Result(
            command, 0, "aarch64\n" if command == "uname -m" else "", ""),
        sudo=lambda command, **kw: ran.append(command) or Result(command, 0, "", ""),
        put=lambda *a, **kw: uploaded.append(a))
    for dry_run in (True, False):
        with pytest.raises(UnsafePack, match="absolute name"):
            run_steps(Context(transport=transport, dry_run=dry_run), [InstallPack(path)])
    assert not uploaded and not any("tar -x" in c for c in ran)


# -- what a pack records: who built it, and from exactly which source --------------------------------------------
MACHINE_ID = "3d1219c7c4c5404aaa1f6d2a48adfda4"
APP_ID = "d04aa105c3bb42cd820020108c8831e7"   # `systemd-id128 machine-id --app-specific=<EDGEKIT_APP_ID>` (systemd 252)


def test_built_on_is_hostname_and_app_specific_machine_id():
    from edgekit.facts.build import app_machine_id, parse_built_on

    assert parse_built_on(f"orin-nano\n{MACHINE_ID}\n") == {"hostname": "orin-nano", "machine_id": APP_ID}
    assert parse_built_on("orin-nano\n") == {"hostname": "orin-nano", "machine_id": None}
    assert app_machine_id("not-an-id") is None


@pytest.mark.needs("systemd-id128")
def test_app_machine_id_is_what_systemd_derives():
    from edgekit.facts.build import EDGEKIT_APP_ID, app_machine_id

    res = subprocess.run(["systemd-id128", "machine-id", f"--app-specific={EDGEKIT_APP_ID}"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        unavailable("systemd-id128", res.stderr.strip())
    assert app_machine_id(Path("/etc/machine-id").read_text()) == res.stdout.strip()


def test_the_installed_stamp_records_built_on_and_the_source_sha256():
    from edgekit.llamacpp import spec as S
    from edgekit.llamacpp.cmake import plan_build
    from edgekit.llamacpp.steps import LlamaInstall, Resolved
    from edgekit.facts.deployed import BuiltOn, InstalledBuild
    from edgekit.remote.command import Upload
    from edgekit.remote.run_state import RunState
    from tests.steps_harness import plan_and_apply
    from tests.test_build import SDIST, jetson_facts

    facts = jetson_facts()
    plan = plan_build(facts, S.BuildSpec(), SDIST)

    def answer(command: str) -> str:
        if "--version" in command:
            return "version: 11312 (0c1e570)\n"
        return "libggml-base.so => /x\nlibggml-cuda.so => /x\nlibllama.so => /x\n" if command.startswith("ldd") else ""

    def run() -> RunState:
        state = RunState(facts=facts)
        state.resolved_builds[S.BuildSpec()] = Resolved(facts, SDIST, plan)
        return state

    given = {InstalledBuild(plan.prefix): {"current": None, "server": False, "stamp": None},
             BuiltOn(): BuiltOn.parse(f"orin\n{MACHINE_ID}\n")}
    _, _, ctx = plan_and_apply(LlamaInstall(S.BuildSpec()), given, run=run, answer=answer)
    upload = next(op for op in ctx.transport.ran if isinstance(op, Upload))
    stamp = json.loads(upload.data)
    assert upload.dest == f"{plan.prefix}.partial/{S.STAMP_NAME}"
    assert stamp["built_on"] == {"hostname": "orin", "machine_id": APP_ID}
    assert stamp["source"]["sha256"] == SDIST.digest and stamp["commit"] == S.LLAMA_CPP_COMMIT


def test_make_stamp_stays_backward_compatible():
    from edgekit.llamacpp import spec as S
    from edgekit.llamacpp.cmake import SourceInfo, plan_build
    from edgekit.llamacpp.stamp import make_stamp
    from tests.test_build import SDIST, jetson_facts

    plan = plan_build(jetson_facts(), S.BuildSpec(), SDIST)
    stamp = make_stamp(plan, SDIST, 1.0, "2026-01-01T00:00:00+00:00", [])
    assert stamp["built_on"] is None and stamp["source"]["sha256"] == SDIST.digest
    git = SourceInfo("git", "b11312", S.LLAMA_CPP_COMMIT, "b11312", url=S.LLAMA_CPP_REPO)
    assert make_stamp(plan, git, 1.0, "x", [])["source"]["sha256"] is None
    assert make_stamp(plan, git, 1.0, "x", [], source_sha256="ab" * 32)["source"]["sha256"] == "ab" * 32


# -- a git clone is the pinned commit ---------------------------------------------------------------------------
def _git(*args, cwd):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.needs("git")
def test_clone_of_a_moved_tag_is_refused(tmp_path):
    """The device commands, run here against a local repository: the tag's commit is checked after cloning."""
    from edgekit.llamacpp.cmake import SourceInfo
    from edgekit.llamacpp.source import fetch_commands

    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    (repo / "f").write_text("1")
    _git("add", "f", cwd=repo)
    _git("commit", "-q", "-m", "one", cwd=repo)
    pinned = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "f").write_text("2")
    _git("commit", "-q", "-am", "two", cwd=repo)
    moved = _git("rev-parse", "HEAD", cwd=repo)
    _git("tag", "b1", cwd=repo)                        # the tag now names another commit than the pinned one

    def fetch(commit, dest):
        src = SourceInfo("git", "b1", commit, "b1", url=f"file://{repo}")
        for command in fetch_commands(src, str(dest)):
            res = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                                 env={"PATH": "/usr/bin:/bin:/usr/local/bin", "GIT_CONFIG_NOSYSTEM": "1",
                                      "HOME": str(tmp_path)})
            if res.returncode:
                return res
        return None

    res = fetch(pinned, tmp_path / "a" / "src")
    assert res is not None and res.returncode == 1
    assert f"is commit {moved}, not the pinned {pinned}: refusing to build it" in res.stderr
    assert not (tmp_path / "a" / "src").exists() and not (tmp_path / "a" / "src.partial").exists()
    assert fetch(moved, tmp_path / "b" / "src") is None and (tmp_path / "b" / "src" / "f").read_text() == "2"
    assert fetch(moved[:10], tmp_path / "c" / "src") is None         # a short pin is a prefix


# -- a source URL is cached by content ------------------------------------------------------------------------------
LLAMA_FILES = ["CMakeLists.txt", "ggml/CMakeLists.txt", "include/llama.h", "tools/server/CMakeLists.txt"]


def _source_tarball(text: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in LLAMA_FILES:
            data = f"{f} {text}".encode()
            info = tarfile.TarInfo(f"llama.cpp-x/{f}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def served():
    """A local HTTP server whose one file's bytes a test sets: -> (url, state dict with 'body' and 'hits')."""
    import http.server
    import threading

    state = {"body": b"", "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["hits"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/llama.tar.gz", state
    server.shutdown()
    server.server_close()


def test_source_url_is_hashed_and_cached_by_content(served):
    from edgekit.llamacpp import spec as S
    from edgekit.llamacpp.source import resolve_source

    url, state = served
    state["body"] = first = _source_tarball("one")
    a = resolve_source(S.BuildSpec(source=url))
    assert a.digest == hashlib.sha256(first).hexdigest() and Path(a.local).name == f"{a.digest}.tar.gz"
    assert a.to_json()["url"] == url
    state["body"] = _source_tarball("two")               # the same URL now serves other bytes:
    from edgekit.lockfile import LockMismatch

    from edgekit import lockfile

    lockfile.check_or_record("sources", url, a.digest, url)      # what the build step records on first use
    with pytest.raises(LockMismatch, match="recorded sha256"):   # edgekit.lock recorded the first (fleets agree)
        resolve_source(S.BuildSpec(source=url))
    assert Path(a.local).read_bytes() == first            # content-addressed: the first copy is still that content
    assert not list(Path(a.local).parent.glob("*.partial")) and not list(Path(a.local).parent.glob("url-*"))


def test_source_url_pinned_by_sha256(served):
    from edgekit.llamacpp import spec as S
    from edgekit.llamacpp.source import resolve_source
    from edgekit.errors import UsageError

    url, state = served
    state["body"] = _source_tarball("one")
    sha = hashlib.sha256(state["body"]).hexdigest()
    assert resolve_source(S.BuildSpec(source=f"{url}#sha256={sha}")).digest == sha
    hits = state["hits"]
    assert resolve_source(S.BuildSpec(source=f"{url}#sha256={sha}")).digest == sha
    assert state["hits"] == hits                          # pinned and cached: not downloaded again
    state["body"] = _source_tarball("two")
    with pytest.raises(UsageError, match="not the pinned"):
        resolve_source(S.BuildSpec(source=f"{url}#sha256={'0' * 64}"))
    with pytest.raises(UsageError, match="fragment"):
        resolve_source(S.BuildSpec(source=f"{url}#md5=abc"))


# -- on a real stand-in (e2e: not run in the unit suite) -----------------------------------------------------------
@pytest.mark.e2e
def test_a_real_pack_passes_the_check_and_unpacks_root_owned_without_writable_bits(served_standin, tmp_path):
    """pack_build's output passes check_pack; the device's unpack leaves root-owned files, nothing group/world
    writable, no set-uid bits, even for members packed 0666/0777; the stamp says who built it from what."""
    from edgekit.llamacpp.packs import fetch_pack, pack_build
    from edgekit.remote.plan import Context
    from edgekit.remote.target import parse_target
    from edgekit.remote.transport import Transport
    from tests.conftest import LLAMA_SDIST_SHA256

    with Transport(parse_target(served_standin.target)) as t:
        ctx = Context(t)
        pack = pack_build(ctx)
        built_on = pack["stamp"]["built_on"]
        assert built_on["hostname"] == t.run("hostname").stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", built_on["machine_id"] or "")
        assert pack["stamp"]["source"]["sha256"] == LLAMA_SDIST_SHA256
        local = fetch_pack(ctx, pack)
        assert check_pack(local, pack["sha256"], pack["name"]).members > 3
        loose = tmp_path / f"{pack['name']}.tar.gz"          # the same build, its modes loosened
        with tarfile.open(local) as src, tarfile.open(loose, "w:gz") as dst:
            for m in src.getmembers():
                m.mode = 0o777 if m.isdir() else 0o666 | (m.mode & 0o111)
                dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        check_pack(loose, top=pack["name"])
        remote, dest = "/var/cache/edgekit/packs/e2e-loose.tar.gz", "/opt/edgekit/e2e-unpack.partial"
        try:
            t.put(loose, remote, sudo=True)
            t.sudo(unpack_command(remote, dest))
            assert t.sudo(f"find {dest} ! -type l \\( -perm /7022 -o ! -user root \\)").stdout.strip() == ""
            assert "version" in t.sudo(f"{dest}/bin/llama-server --version 2>&1", check=False).stdout
        finally:
            t.sudo(f"rm -rf {remote} {dest}", check=False)


@pytest.mark.e2e
def test_a_crafted_pack_is_refused_before_anything_reaches_the_device(served_standin, tmp_path):
    from edgekit.llamacpp.packs import InstallPack
    from edgekit.remote.plan import Context, run_steps
    from edgekit.remote.target import parse_target
    from edgekit.remote.transport import Transport

    name = "b11312-evil0000"
    evil = [_member(name, tarfile.DIRTYPE, 0o755), _member(f"{name}/bin", tarfile.DIRTYPE, 0o755),
            _member(f"{name}/bin/llama-server", mode=0o4755, data=b"#!/bin/sh\n"),
            _member(f"{name}//etc/cron.d/edgekit-evil", data=b"* * * * * root touch /evil\n")]
    path = _pack(tmp_path / f"{name}.tar.gz", evil)
    path.with_name(f"{name}.json").write_text(json.dumps({"name": name, "sha256": hashlib.sha256(
        path.read_bytes()).hexdigest(), "stamp": {"version": "b11312", "flags_hash": "evil0000", "backend": "cpu",
                                          "arch": "x86_64"}}))
    with Transport(parse_target(served_standin.target)) as t:
        with pytest.raises(UnsafePack, match="absolute name"):
            run_steps(Context(t), [InstallPack(path)])
        assert not t.run(f"test -e /var/cache/edgekit/packs/{name}.tar.gz", check=False).ok
        assert not t.run("test -e /etc/cron.d/edgekit-evil", check=False).ok
