"""One model fetch, as the operations a FetchModel change prints and runs: on the device (it downloads itself,
resuming) or via the controller (download to its cache, check, push). Either way the file is checked to be a
valid GGUF and recorded in edgekit.lock before it takes its place; a file that fails is removed."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit import lockfile
from edgekit.errors import EdgekitError
from edgekit.device.files import sidecar_path
from edgekit.models import download
from edgekit.models.gguf_header import GGUFError, check_file
from edgekit.models.on_device import GgufOnDevice, fetch_args, fetch_command, run_check, run_fetch
from edgekit.remote.helper import helper_command
from edgekit.models.request import ModelRequest, invalid_file, redact
from edgekit.remote.command import Check, Cmd, Later, Local, Upload, q
from edgekit.remote.plan import Context


@dataclass
class Fetch:
    request: ModelRequest
    entry: object
    quant: object
    dest: str
    url: str
    want_sha: str | None
    mode: str                          # device | controller
    lock_name: str
    fit_url: Callable                  # (ctx, request, header, size) -> (entry, n_ctx, verdict): a model by URL

    @property
    def cache(self) -> Path:
        return download.cache_path(self.entry.name, self.quant.file)

    def _checks(self, where: str) -> list:
        lock = lockfile.location(self.request.lock_file)
        ops: list = [Check(f"{where} is a valid GGUF (header, tensor infos, tensor data within the file), else "
                           "it is removed"),
                     Local(f"check its sha256 against {lock} (recorded there the first time)")]
        if self.request.by_url:
            ops.append(Local("check the fit from its GGUF header"))
        return ops

    def _prepare_dir(self, ctx: Context) -> str:
        """The models folder (root's), and this model's (the login user's: downloads and pushes run as it)."""
        user, model_dir = ctx.transport.user, posixpath.dirname(self.dest)
        return (f"install -d -m 0755 {q(posixpath.dirname(model_dir))} && install -d -m 0755 -o {q(user)} "
                f"-g $(id -gn {q(user)}) {q(model_dir)}")

    def ops(self, ctx: Context) -> list:
        size = self.quant.size or None
        if self.mode == "device":
            return [self._prepare_dir(ctx),
                    fetch_command(ctx.transport, {"mode": "fetch", "url": self.url, "dest": self.dest,
                                                  "sha256": self.want_sha, "size": size}, bool(download.token())),
                    *self._checks(self.dest)]
        return [Local(f"download {redact(self.url)} -> {self.cache} (resume, sha256 "
                      f"{self.want_sha or 'X-Linked-Etag'})"), *self._checks(str(self.cache)),
                Check(f"room for it on the device: {self._space_command(ctx, size)}" if size else
                      "room for it on the device, once its size is known from the download (the helper's fetch "
                      "space check)"),
                self._prepare_dir(ctx),
                Upload(f"{self.dest}.partial", local=str(self.cache), root=False, sha256=self.want_sha),
                Cmd(self._adopt_command(ctx, self.want_sha)) if self.want_sha else
                Later(f"check the pushed file's sha256 on the device and move it to {self.dest} (the helper's fetch "
                      "adopt)", "no sha256 is pinned for this model, so the command carries the sha256 the "
                      "controller computes while downloading")]

    def _space_command(self, ctx: Context, size) -> str:
        return helper_command(ctx.transport, "fetch", fetch_args({"mode": "space", "dest": self.dest, "size": size},
                                                                 False))

    def _adopt_command(self, ctx: Context, sha: str) -> str:
        """Check the pushed file's sha256 (which covers its size) on the device, then move it into place."""
        return helper_command(ctx.transport, "fetch", fetch_args({"mode": "adopt", "dest": self.dest, "sha256": sha},
                                                                 False))

    def _accept(self, ctx: Context, sha: str, header, size: int) -> None:
        """The last checks before the file is put in place: edgekit.lock, then (a model by URL) the fit."""
        lockfile.check_or_record("model", self.lock_name, sha, redact(self.url), self.request.lock_file)
        if self.request.by_url:
            entry, n_ctx, _ = self.fit_url(ctx, self.request, header, size)
            model = ctx.run.table(self.request)[self.entry.name]
            model.entry, model.n_ctx = entry.to_json(), n_ctx

    def apply(self, ctx: Context, ops: list) -> None:
        done = self._on_device(ctx, ops) if self.mode == "device" else self._via_controller(ctx, ops)
        model = ctx.run.table(self.request)[self.entry.name]
        model.sha256, model.size = done["sha256"], done["size"]

    def _on_device(self, ctx: Context, ops: list) -> dict:
        ctx.do(ops[0])

        def on_event(event: dict) -> None:
            if event.get("event") == "progress":
                ctx.progress(download.Progress(event["done"], event["total"], event["rate"],
                                               event["eta"]).text(), event["done"], event["total"])
            elif event.get("event") == "warning":
                ctx.progress(event["message"])

        done = run_fetch(ctx, ops[1], download.token(), self.url, on_event)
        try:
            status, found = ctx.fact(GgufOnDevice(self.dest))
            if status != "valid":
                raise invalid_file(f"{redact(self.url)} (fetched to {self.dest})", str(found or "the file is missing"))
            self._accept(ctx, done["sha256"], found, done["size"])
        except EdgekitError:                                        # cleanup after a refusal: not a planned change
            ctx.read(f"rm -f {q(self.dest)} {q(sidecar_path(self.dest))}", sudo=False)
            raise
        ctx.run.model_transfer = {"mode": "device", "downloaded": done["downloaded"],
                                  "resumed_from": done["resumed_from"]}
        return done

    def _via_controller(self, ctx: Context, ops: list) -> dict:
        local = self.cache
        got = download.fetch(self.url, local, self.want_sha, self.quant.size or None,
                             on_progress=lambda p: ctx.progress(p.text(), p.done, p.total))
        try:
            header = check_file(local)
        except GGUFError as e:
            for path in (local, Path(sidecar_path(str(local)))):
                path.unlink(missing_ok=True)
            raise invalid_file(f"{redact(self.url)} (cached as {local})", e.message) from None
        for warning in got.warnings:
            ctx.progress(warning)
        self._accept(ctx, got.sha256, header, got.size)
        run_check(ctx, self._space_command(ctx, got.size))   # room on the device? (exit 5 before any copy)
        ctx.do(ops[-3])
        ctx.progress(f"pushing {local.name} to {ctx.transport.name}")
        ctx.do(ops[-2])
        adopt = ops[-1] if self.want_sha else Cmd(self._adopt_command(ctx, got.sha256))
        events_done = run_fetch(ctx, adopt, None, self.url)
        ctx.run.model_transfer = {"mode": "controller", "downloaded": got.downloaded,
                                  "resumed_from": got.resumed_from, "cache": str(local)}
        return events_done
