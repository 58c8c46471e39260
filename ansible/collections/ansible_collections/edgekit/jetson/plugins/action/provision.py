"""edgekit.jetson.provision: `edgekit provision` through the play's connection (the same steps, one engine)."""

from __future__ import annotations

import json
from pathlib import Path

from ansible_collections.edgekit.jetson.plugins.plugin_utils.action import EdgekitAction, argument_spec, resolve

from edgekit import lockfile
from edgekit import provision as prov
from edgekit import state as controller_state
from edgekit.errors import UsageError
from edgekit.llamacpp.pack import check_pack


def checked_pack(path: str) -> str:
    """A build pack on the controller (pack_build + fetch_pack: NAME.tar.gz beside NAME.json), read and checked
    member by member here, before anything connects (edgekit.llamacpp.pack.check_pack)."""
    tarball = Path(path).expanduser()
    meta = tarball.with_name(tarball.name.removesuffix(".tar.gz") + ".json")
    try:
        data = json.loads(meta.read_text())
        name, sha256 = data["name"], data["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"build_pack {path}: cannot read its metadata {meta} ({e})",
                         hint="a pack is NAME.tar.gz with NAME.json beside it, as edgekit's fleet build leaves them "
                              "in its cache (builds/)") from None
    check_pack(tarball, sha256, name)
    return str(tarball)


class ActionModule(EdgekitAction):
    ARGUMENTS = {**argument_spec(), "build_pack": {"type": "path"}}

    def validate(self, args: dict, task_vars: dict):
        s = resolve(args, task_vars, self._templar)
        inventory_file = task_vars.get("inventory_file")
        if s.lock_file is None and inventory_file:
            s.values["lock_file"] = str(lockfile.for_inventory(inventory_file))
        pack = checked_pack(args["build_pack"]) if args.get("build_pack") else None
        return prov.options(s), pack

    def execute(self, transport, plan, task_vars: dict) -> dict:
        opts, pack = plan
        _, out = self.engine(transport, lambda ctx: prov.provision(ctx, opts, pack=pack), "provision")
        if not self._task.check_mode:
            saved = controller_state.load(transport.name) or {}
            out.update(url=saved.get("url"), model=saved.get("model"), api_key_file=saved.get("api_key_file"))
        return out
