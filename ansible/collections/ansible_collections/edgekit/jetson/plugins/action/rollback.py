"""edgekit.jetson.rollback: `edgekit rollback` through the play's connection (edgekit.rollback's steps)."""

from __future__ import annotations

from ansible_collections.edgekit.jetson.plugins.plugin_utils.action import EdgekitAction

from edgekit import rollback as back


class ActionModule(EdgekitAction):
    ARGUMENTS: dict = {}

    def execute(self, transport, plan, task_vars: dict) -> dict:
        return self.engine(transport, back.rollback, "rollback")[1]
