"""Entry point: ``.venv/bin/python bench/run.py [--quick] [--runs N]``.

Run as a script, Python puts ``bench/`` (not the repository root) on
``sys.path``; the benchmark also reuses ``tests/support`` (the registry
launcher and image builder the tests trust), so the root goes first.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.main import main

if __name__ == "__main__":
    sys.exit(main())
