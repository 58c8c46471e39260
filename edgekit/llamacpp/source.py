"""Getting llama.cpp sources to the device: a git clone of the pinned tag, or a local tree/tarball/URL pushed.

Controller side (this module): identify and validate the source (`resolve_source`), packing a local tree into
a tarball. Device side: the shell commands that clone or unpack it (`fetch_commands`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from edgekit import lockfile, paths
from edgekit.llamacpp import spec as S
from edgekit.llamacpp.cmake import SourceInfo
from edgekit.digest import sha256_file
from edgekit.errors import UsageError
from edgekit.remote.command import q

# What makes a tree llama.cpp (relative to its root).
MARKERS = ("CMakeLists.txt", "ggml/CMakeLists.txt", "include/llama.h", "tools/server/CMakeLists.txt")
# Left out when pushing a local tree: not needed to build, and most of its size.
PUSH_EXCLUDES = (".git", "docs", "models", "tests", "build", "media")
_TAG = re.compile(r"^b\d+$")


def resolve_source(build: S.BuildSpec) -> SourceInfo:
    """Identify the source the spec asks for; raise UsageError if it is not a llama.cpp tree."""
    src = build.source
    if not src:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", build.version):   # it names device paths
            raise UsageError(f"not a llama.cpp version: {build.version!r}", hint="use a release tag like b11312")
        commit = S.LLAMA_CPP_COMMIT if build.version == S.LLAMA_CPP_VERSION else None
        return SourceInfo("git", build.version, commit, build.version, url=build.repo)
    if re.match(r"^(https?|ftp)://", src):
        if src.endswith(".git"):
            return SourceInfo("git", build.version, None, build.version, url=src)
        path, digest = download(src)
        # edgekit.lock: refused here if it recorded other bytes for this URL (read only: planning and dry runs
        # write nothing); the build step records the first download (LlamaSource)
        lockfile.check("sources", src.split("#", 1)[0], digest)
        return tarball_source(path, digest=digest, url=src.split("#", 1)[0])
    path = Path(src).expanduser()
    if path.is_dir():
        return tree_source(path)
    if path.is_file():
        return tarball_source(path)
    raise UsageError(f"llama.cpp source not found: {src}",
                     hint="pass a llama.cpp source directory, a .tar.gz of one (e.g. the llama-cpp-python sdist), "
                          "or an http(s) URL to --llama-src")


def find_root(names: list[str]) -> str | None:
    """The llama.cpp root among archive member names ('' when at the top), shortest first; None if absent."""
    present = {n.rstrip("/").removeprefix("./") for n in names}
    candidates = sorted({n[: -len("include/llama.h")].rstrip("/") for n in present if n.endswith("include/llama.h")
                         and (n == "include/llama.h" or n.endswith("/include/llama.h"))}, key=len)
    for root in candidates:
        if all((f"{root}/{m}" if root else m) in present for m in MARKERS):
            return root
    return None


def tarball_source(path: Path, digest: str | None = None, url: str | None = None) -> SourceInfo:
    """A source tarball identified by its sha256 (`digest` when the caller just hashed it); `url`: where it was
    downloaded from (recorded in the stamp)."""
    digest = digest or sha256_file(path)
    cache = paths.cache() / "src" / f"{digest}.json"
    if digest in S.KNOWN_SOURCES:
        version, commit, inner = S.KNOWN_SOURCES[digest]
        return SourceInfo("tarball", version, commit, digest, local=str(path), inner=inner, url=url)
    if cache.is_file():
        meta = json.loads(cache.read_text())
        return SourceInfo("tarball", meta["version"], meta["commit"], digest, local=str(path), inner=meta["inner"],
                          url=url)
    try:
        with tarfile.open(path) as tar:
            names = tar.getnames()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UsageError(f"{path} is not a readable tarball ({e})",
                         hint="pass a .tar.gz of llama.cpp's source, or its directory, to --llama-src") from None
    root = find_root(names)
    if root is None:
        raise UsageError(f"{path} does not contain llama.cpp sources (no {', '.join(MARKERS)})",
                         hint="pass llama.cpp's source (a release tarball, a checkout, or the llama-cpp-python "
                              "sdist, which vendors it under vendor/llama.cpp) to --llama-src")
    version, commit = f"src-{digest[:12]}", None
    m = re.search(r"llama_cpp_python-([\d.]+)/vendor/llama\.cpp$", root)
    if m and m[1] in S.SDIST_VENDORED:
        version, commit = S.SDIST_VENDORED[m[1]]
    raw_root = next((n.rstrip("/") for n in names if n.rstrip("/").removeprefix("./") == root), root)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"version": version, "commit": commit, "inner": raw_root}))
    return SourceInfo("tarball", version, commit, digest, local=str(path), inner=raw_root, url=url)


def tree_source(path: Path) -> SourceInfo:
    path = path.resolve()
    missing = [m for m in MARKERS if not (path / m).is_file()]
    if missing:
        raise UsageError(f"{path} is not a llama.cpp source tree (missing {', '.join(missing)})",
                         hint="point --llama-src at the directory holding llama.cpp's top CMakeLists.txt "
                              "(in the llama-cpp-python sdist: vendor/llama.cpp)")
    version, commit = _git_version(path)
    m = re.search(r"llama_cpp_python-([\d.]+)/vendor/llama\.cpp$", str(path))
    if version is None and m and m[1] in S.SDIST_VENDORED:
        version, commit = S.SDIST_VENDORED[m[1]]
    tarball = pack_tree(path)
    digest = tarball.name.removesuffix(".tar.gz")
    return SourceInfo("tarball", version or f"src-{digest[:12]}", commit, digest, local=str(tarball),
                      inner="llama.cpp")


def _git_version(path: Path) -> tuple[str | None, str | None]:
    if not (path / ".git").exists():
        return None, None
    def git(*args):
        r = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    tag = git("describe", "--tags", "--exact-match")
    if tag and _TAG.match(tag):
        return tag, commit
    return (f"g{commit[:12]}" if commit else None), commit


def pack_tree(path: Path) -> Path:
    """A reproducible .tar.gz of a local tree (members under llama.cpp/), named by its sha256, in the cache."""
    dest = paths.cache() / "src"
    dest.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".tree-", suffix=".tar.gz.partial", dir=dest)
    os.close(fd)
    part = Path(name)
    excludes = [f"--exclude=llama.cpp/{e}" for e in PUSH_EXCLUDES]
    tar = ["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
           f"--transform=s,^{re.escape(path.name)},llama.cpp,", *[e.replace("llama.cpp/", f"{path.name}/")
                                                                  for e in excludes],
           "-C", str(path.parent), "-cf", "-", path.name]
    with open(part, "wb") as out:
        p1 = subprocess.Popen(tar, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p2 = subprocess.run(["gzip", "-n", "-1"], stdin=p1.stdout, stdout=out)
        p1.stdout.close()
        err = p1.stderr.read().decode(errors="replace")
        if p1.wait() != 0 or p2.returncode != 0:
            part.unlink(missing_ok=True)
            raise UsageError(f"cannot pack {path}: {err.strip()[-300:]}", hint="check the directory is readable")
    final = dest / f"{sha256_file(part)}.tar.gz"
    os.replace(part, final)
    return final


def download(url: str) -> tuple[Path, str]:
    """Fetch a source tarball to the controller's cache, named by its content: -> (path, sha256).

    Every run downloads it again (what a URL serves can change; the sha256 recorded in the stamp is what was
    built). `URL#sha256=HEX` pins the content: a cached copy with that sha256 is used without downloading, and a
    download with another sha256 is refused."""
    url, _, fragment = url.partition("#")
    want = fragment.removeprefix("sha256=").lower() if fragment.startswith("sha256=") else None
    if fragment and (want is None or not re.fullmatch(r"[0-9a-f]{64}", want)):
        raise UsageError(f"cannot read the URL fragment #{fragment} of {url}",
                         hint="pin a source URL's content with #sha256=<64 hex digits>, or leave the fragment out")
    dest = paths.cache() / "src"
    dest.mkdir(parents=True, exist_ok=True)
    if want and (dest / f"{want}.tar.gz").is_file() and sha256_file(dest / f"{want}.tar.gz") == want:
        return dest / f"{want}.tar.gz", want
    fd, part = tempfile.mkstemp(prefix=".download-", suffix=".partial", dir=dest)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=60) as r:
            while chunk := r.read(1 << 20):
                h.update(chunk)
                fh.write(chunk)
    except (OSError, ValueError) as e:
        os.unlink(part)
        raise UsageError(f"cannot download llama.cpp source {url}: {e}",
                         hint="check the URL, or download it yourself and pass the file to --llama-src") from None
    except BaseException:
        os.unlink(part)
        raise
    digest = h.hexdigest()
    if want and digest != want:
        os.unlink(part)
        raise UsageError(f"{url} served content with sha256 {digest}, not the pinned {want}",
                         hint="check the URL; if its content changed on purpose, update the #sha256= pin")
    final = dest / f"{digest}.tar.gz"
    os.replace(part, final)
    return final, digest


def remote_tarball(source: SourceInfo) -> str:
    return f"{S.SOURCE_CACHE}/{source.digest}.tar.gz"


def fetch_commands(source: SourceInfo, src_dir: str) -> list[str]:
    """Device commands (as root) that leave the llama.cpp tree at src_dir, atomically (temp dir, then mv)."""
    part = f"{src_dir}.partial"
    if source.kind == "git":
        get = (f"git clone --quiet --depth 1 --branch {q(source.digest)} {q(source.url or S.LLAMA_CPP_REPO)} "
               f"{q(part)}")
        verify = verify_commit_command(source, part)
    else:
        inner = source.inner
        strip = len([p for p in inner.split("/") if p]) if inner else 0
        excludes = " ".join(f"--exclude={q(f'{inner}/{e}' if inner else e)}" for e in PUSH_EXCLUDES
                            if e not in (".git",))
        get = (f"mkdir -p {q(part)} && tar -xzf {q(remote_tarball(source))} -C {q(part)} "
               f"--no-same-owner --strip-components={strip} {excludes} {q(inner) if inner else ''}").rstrip()
        verify = None
    return [f"rm -rf {q(part)} && mkdir -p {q(os.path.dirname(src_dir))}",
            get,
            *([verify] if verify else []),
            f"echo {q(source.digest)} > {q(part)}/.edgekit-source && rm -rf {q(src_dir)} && mv {q(part)} {q(src_dir)}"]


def verify_commit_command(source: SourceInfo, clone: str) -> str | None:
    """Device command: the clone's HEAD is the commit the tag is pinned to (a moved or forged tag fails here, with
    the two commits named); None when no commit is expected (a tag edgekit does not pin)."""
    expected = (source.commit or "").lower()
    if not re.fullmatch(r"[0-9a-f]{7,40}", expected):
        return None
    what = f"{source.digest} of {source.url or S.LLAMA_CPP_REPO}"
    said = q(f"edgekit: {what} is commit ") + '"$got"' + q(f", not the pinned {expected}: refusing to build it")
    return (f"got=$(git -C {q(clone)} rev-parse HEAD) && case \"$got\" in {expected}*) ;; *) "
            f"echo {said} >&2; rm -rf {q(clone)}; exit 1;; esac")


def marker_command(src_dir: str) -> str:
    return f"cat {q(src_dir)}/.edgekit-source 2>/dev/null || true"
