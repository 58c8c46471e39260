"""edgekit.jetson.facts: what edgekit finds on the device (`edgekit facts`), as the `edgekit` fact."""

from __future__ import annotations

from ansible_collections.edgekit.jetson.plugins.plugin_utils.action import EdgekitAction

from edgekit import settings
from edgekit.errors import UsageError
from edgekit.facts.device import read_facts


class ActionModule(EdgekitAction):
    ARGUMENTS = {"cuda_arch": {"type": "str"}}

    def validate(self, args: dict, task_vars: dict):
        try:
            return settings.by_name()["cuda_arch"].check(args.get("cuda_arch"))
        except ValueError as e:
            raise UsageError(f"cuda_arch: {e}", hint="use a form like 87, compute_87, sm_87 or 8.7") from None

    def execute(self, transport, plan, task_vars: dict) -> dict:
        found = read_facts(transport, plan).to_json()
        return {"changed": False, "ansible_facts": {"edgekit": found}, "edgekit": found}
