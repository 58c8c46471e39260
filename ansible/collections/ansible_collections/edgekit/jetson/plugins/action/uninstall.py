"""edgekit.jetson.uninstall: `edgekit uninstall` through the play's connection (edgekit.uninstall's steps)."""

from __future__ import annotations

from ansible_collections.edgekit.jetson.plugins.plugin_utils.action import EdgekitAction

from edgekit import uninstall as remove


class ActionModule(EdgekitAction):
    ARGUMENTS = {"purge_models": {"type": "bool", "default": False}}

    def execute(self, transport, plan, task_vars: dict) -> dict:
        return self.engine(transport, lambda ctx: remove.uninstall(ctx, plan["purge_models"]), "uninstall")[1]
