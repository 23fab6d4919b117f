"""Pack a training run as a shipped model (temseg/pretrained; docs/models.md)."""

from __future__ import annotations

import argparse
import json

from temseg.pretrained.pack import pack


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run")
    p.add_argument("name")
    p.add_argument("--summary", default="")
    p.add_argument("--classes-seen", nargs="*", default=())
    p.add_argument("--info", default="{}", help="JSON object of further card fields")
    a = p.parse_args(argv)
    print(json.dumps(pack(a.run, a.name, a.summary, tuple(a.classes_seen), json.loads(a.info)),
                     indent=2))


if __name__ == "__main__":
    main()
