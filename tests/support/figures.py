"""Where tests put the pictures they draw: a git-ignored folder, or the README's own when `python -m bench.figures`
runs them (it names the folder in INPAINT_FIGURES_DIR). A test run changes no file of the repository."""

import os
from pathlib import Path

FOLDER_ENV = "INPAINT_FIGURES_DIR"
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "figures"


def figure_path(name: str) -> Path:
    """Where the picture `name` goes, its folder made."""
    folder = Path(os.environ.get(FOLDER_ENV) or ARTIFACTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
