"""The server keeps the memory a request frees for the next one: picture-sized arrays allocated again are not
faulted in again page by page (inpaint/allocator.py)."""

import subprocess
import sys
import textwrap

import pytest

from inpaint import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")

# Picture-sized arrays made and freed as a request does (a 1 MP RGB picture and a copy), on the main thread;
# prints the page faults they cost.
FAULTS = textwrap.dedent("""
    import resource
    import numpy as np
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        picture = np.ones((1024, 1024, 3), np.uint8)
        copy = picture + 1
        del picture, copy
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def page_faults(setup: str, tmp_path) -> int:
    env = {"INPAINT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", setup + FAULTS], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return int(done.stdout.split()[-1])


def test_a_built_server_reuses_freed_picture_memory(tmp_path):
    # Fresh processes: one as glibc starts, one that built the server app (as `python app.py` does).
    default = page_faults("", tmp_path)
    server = page_faults("from inpaint.api import create_app; create_app(with_ui=False)\n", tmp_path)
    # 100 arrays of 3 MB: about 77,000 faults when each is mapped afresh; the server faults them in once.
    assert default > 30_000, default
    assert server < default / 10, (server, default)


def test_thresholds_set_in_the_environment_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(1 << 20))
    assert allocator.keep_freed_memory() is False
