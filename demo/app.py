"""``python demo/app.py [OPTIONS]`` runs ``ovseg demo [OPTIONS]`` (see demo/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # From a source checkout that is not pip-installed, use the package next to this folder.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ovseg.commands.demo import main

    sys.exit(main())
