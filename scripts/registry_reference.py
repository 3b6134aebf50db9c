"""Write docs/registry.md, the registry reference rendered from the JSON Schema.

python scripts/registry_reference.py            # rewrite the file
python scripts/registry_reference.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from saga_registry.registry.reference import render_reference

DEFAULT = Path(__file__).resolve().parent.parent / "docs" / "registry.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=DEFAULT, help="the file to write")
    args = parser.parse_args(argv)
    path: Path = args.output
    text = render_reference()
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except OSError:
            current = None
        if current != text:
            print(
                f"{path}: out of date with the registry schema; "
                "run python scripts/registry_reference.py",
                file=sys.stderr,
            )
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
