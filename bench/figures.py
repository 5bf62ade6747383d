"""`python -m bench.figures [PYTEST ARGS]`: redraws the README's pictures into tests/screenshots.

The tests that check what a picture shows also draw it (they are marked `figure`); on their own they leave it
in a git-ignored folder. This runs them with tests/screenshots as that folder: review the pictures with
`git diff --stat tests/screenshots` and commit those meant to change. Extra arguments go to pytest (`-k seams`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.figures import FOLDER_ENV

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "tests" / "screenshots"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(args):
        print(__doc__)
        return 0
    env = {**os.environ, FOLDER_ENV: str(SCREENSHOTS)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "figure", "tests", *args], cwd=ROOT,
                          env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
