"""The CUDA toolkit: found in /usr/local/cuda*/bin even when nvcc is not on PATH (the usual case over SSH)."""

from __future__ import annotations

import json
import re

from edgekit.facts.base import Fact


class CudaToolkit(Fact):
    name = "cuda"
    command = (
        'seen=""; for n in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc $(command -v nvcc); do '
        '[ -x "$n" ] || continue; r=$(readlink -f "$n"); case " $seen " in *" $r "*) continue;; esac; '
        'seen="$seen $r"; echo "@@nvcc $r"; "$n" --version; '
        'v="${r%/bin/nvcc}/version.json"; [ -f "$v" ] && { echo "@@json"; cat "$v"; }; done'
    )

    @staticmethod
    def parse(output: str) -> dict | None:
        """The newest toolkit found: {'version': '12.6', 'full_version': '12.6.68', 'nvcc': ..., 'home': ...}."""
        toolkits = []
        for block in output.split("@@nvcc ")[1:]:
            path, _, rest = block.partition("\n")
            nvcc_text, _, json_text = rest.partition("@@json")
            m = re.search(r"release (\d+)\.(\d+)(?:, V([\d.]+))?", nvcc_text)
            if not m:
                continue
            full = m[3]
            try:
                full = json.loads(json_text)["cuda"]["version"] if json_text.strip() else full
            except (ValueError, KeyError, TypeError):
                pass
            toolkits.append({"version": f"{m[1]}.{m[2]}", "full_version": full, "nvcc": path.strip(),
                             "home": path.strip().rsplit("/bin/nvcc", 1)[0]})
        if not toolkits:
            return None
        return max(toolkits, key=lambda t: tuple(int(x) for x in t["version"].split(".")))


def parse_arch_override(text: str | None) -> str | None:
    """'compute_87', 'sm_87', '87', '8.7' -> '87'. None or '' -> None. Anything else raises ValueError."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(?:compute_|sm_)?(\d{2,3})\s*|\s*(\d+)\.(\d)\s*", text)
    if not m:
        raise ValueError(text)
    return m[1] if m[1] else f"{m[2]}{m[3]}"
