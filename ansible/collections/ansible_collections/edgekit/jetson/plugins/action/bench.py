"""edgekit.jetson.bench: `edgekit bench` through the play's connection: the fixed workload against the device's
llama-server, or a sweep (one row per power mode or server setting, then restored) under the device lock."""

from __future__ import annotations

from ansible_collections.edgekit.jetson.plugins.plugin_utils.action import EdgekitAction

from edgekit.bench.pinning import parse_cpu_list
from edgekit.bench.runner import BenchSettings, bench_plan, reach_server, run_bench, run_sweep
from edgekit.bench.sweep import parse_sweep
from edgekit.bench.workload import DEFAULT, QUICK
from edgekit.errors import PartialFailure, UsageError
from edgekit.redact import redact


class ActionModule(EdgekitAction):
    ARGUMENTS = {"sweep": {"type": "str"}, "full": {"type": "bool", "default": False},
                 "quick": {"type": "bool", "default": False}, "llama_bench": {"type": "bool", "default": False},
                 "server_cpus": {"type": "str"}, "port": {"type": "int", "default": 8080},
                 "out": {"type": "path", "default": "bench-results"},
                 "telemetry": {"type": "bool", "default": True}}

    def validate(self, args: dict, task_vars: dict):
        spec = parse_sweep(args["sweep"]) if args.get("sweep") else None
        if args["full"] and (spec is None or args["quick"]):
            raise UsageError("full is for a sweep, without quick", hint="sweep: power-mode, full: true")
        workload = (DEFAULT if args["full"] else QUICK) if spec else QUICK if args["quick"] else DEFAULT
        settings = BenchSettings(url="", api_key=None, workload=workload, llama_bench=args["llama_bench"],
                                 out_dir=args["out"],
                                 server_cpus=parse_cpu_list(args["server_cpus"]) if args.get("server_cpus") else None)
        return settings, spec, args

    def execute(self, transport, plan, task_vars: dict) -> dict:
        settings, spec, args = plan
        reach_server(settings, transport, args["port"])
        if self._task.check_mode:          # `edgekit bench --dry-run`: every check, then the commands, in order
            commands = (run_sweep(settings, spec, transport, dry_run=True)["sweep"]["plan"] if spec is not None
                        else [str(op) for op in bench_plan(settings)])
            return {"changed": False, "commands": commands, "msg": f"bench would run {len(commands)} command(s)"}
        if spec is not None:
            result = run_sweep(settings, spec, transport, telemetry=args["telemetry"])
            failed = [r["value"] for r in result["sweep"]["rows"] if r["error"] or not (r["skipped"] or r["complete"])]
        else:
            needs_device = settings.llama_bench or settings.server_cpus or args["telemetry"]
            result = run_bench(settings, transport if needs_device else None, telemetry=args["telemetry"])
            failed = [f"{n} request(s)" for n in [sum(c["failed"] for c in result["summary"]["cases"])] if n]
        result = redact(result, [settings.api_key])
        if failed or not result["complete"]:
            raise PartialFailure(f"not measured in full: {', '.join(map(str, failed)) or 'incomplete'}",
                                 hint=f"partial results saved in {(result.get('files') or {}).get('json')}")
        # a bench measures; a sweep puts back what it changed: the device ends as it was
        return {"changed": False, "result": result, "files": result.get("files"), "summary": result.get("summary")}
