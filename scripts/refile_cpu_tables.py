"""Move measured CPU tables to the slug their fingerprint gives (``profilers.tables.refile_cpu_tables``).

    .venv/bin/python scripts/refile_cpu_tables.py [latency_tables]

For tables filed before a CPU slug named the microarchitecture where the model name has no
model number (``cpu-amd-epyc-2c`` held Zen 3 and Zen 4 tables; now ``cpu-amd-epyc-zen3-2c`` and
``cpu-amd-epyc-zen4-2c``). Nothing is measured; each CSV moves as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    from nas.errors import AnyshapeError
    from profilers.tables import refile_cpu_tables

    root = argv[0] if argv else str(ROOT / "latency_tables")
    try:
        moves = refile_cpu_tables(root)
    except AnyshapeError as e:
        print(f"refile_cpu_tables: error: {e}", file=sys.stderr)
        return 1
    for source, target in moves:
        print(f"{source} -> {target}")
    print(f"{len(moves)} table(s) moved")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
