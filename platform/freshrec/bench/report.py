"""One output format for every benchmark: ``<name>.json`` (figures and how they were made) and ``<name>.md``."""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path


def machine() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpus": __import__("os").cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return "" if value is None else str(value)


def write(out_dir: Path, name: str, rows: list[dict], command: str, columns: list[str] | None = None,
          extra: dict | None = None) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps({**meta, **(extra or {}), "rows": rows}, indent=2, default=str))
    md_path = out_dir / f"{name}.md"
    md_path.write_text(f"{markdown_table(rows, columns)}\n\n`{command}` ({meta['machine']})\n")
    return json_path, md_path
