"""Bring the measured tables under a folder to the current rules, from what their meta.json kept.

    .venv/bin/python scripts/rescale_tables.py [latency_tables]

Tables written before anyshape scaled rows by compute share (every row scaled in full by the
reference probe) are scaled again (``profilers.run.rescale_table``); staggered tables written
before their rows kept the middle pass are moved to it (``profilers.run.rekeep_middle_pass``);
the others are left alone. Nothing is measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    from nas.errors import AnyshapeError
    from profilers.run import rekeep_middle_pass, rescale_table
    from profilers.tables import list_tables

    root = argv[0] if argv else str(ROOT / "latency_tables")
    tables = list_tables(root)
    if not tables:
        print(f"no latency tables under {root}")
        return 1
    failed = 0
    for info in tables:
        try:
            rescaled = rescale_table(info["path"])
            rekept = rekeep_middle_pass(info["path"])
        except AnyshapeError as e:
            print(f"{info['path']}: {e}")
            failed += 1
            continue
        done = [f"{rescaled} rows scaled by compute share"] if rescaled else []
        done += [f"{rekept} rows moved to their middle pass"] if rekept else []
        print(f"{info['path']}: {', '.join(done) or 'left as it is'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
