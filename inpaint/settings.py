"""Environment variables turned into typed, clamped constants, read once at import."""

import importlib.util
import os
import sys
from pathlib import Path


def env_int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    return max(low, min(high, value))


def _optional_int(name: str, low: int, high: int) -> int | None:
    """Unset means off. Out of range is refused, not clamped: these settings delete data, and a 0 clamped
    to the lowest value would delete what the user meant to keep."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SystemExit(f"{name} must be between {low} and {high} (or unset to keep everything), got {value}")
    return value


def _cuda_count() -> int:
    """How many GPUs torch would find, asked without importing torch: that import takes seconds and hundreds of
    MB, and this runs when the server starts and when a classical model runs from the command line, neither of
    which needs torch. Asked of the driver itself (what torch.cuda.is_available asks in the end), so it
    honours CUDA_VISIBLE_DEVICES and a driver that is installed but has no device; the files under
    /proc/driver/nvidia would not. A torch built without CUDA uses no GPU, whatever the machine has."""
    import ctypes

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return 0
    torch_lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    if any(torch_lib.glob("*torch_hip*")):  # ROCm builds answer torch.cuda for AMD GPUs
        return 1 if Path("/dev/kfd").exists() else 0  # counting them would mean importing torch
    if not any(torch_lib.glob("*torch_cuda*")):
        return 0
    try:
        driver = ctypes.WinDLL("nvcuda.dll") if os.name == "nt" else ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver
        return 0
    count = ctypes.c_int(0)
    return count.value if driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 else 0


def _devices(name: str, cuda_count: int) -> tuple[str, ...]:
    """The devices to run generations on, one worker each: a torch device name per entry (`cuda:1`, `cpu`),
    an entry twice meaning two workers on it; empty when unset. A device this machine does not have is refused
    now, naming it: the server would start, then fail every job that runs on it."""
    raw = [entry.strip().lower() for entry in os.environ.get(name, "").split(",") if entry.strip()]
    for entry in raw:
        kind, _, index = entry.partition(":")
        if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
            raise SystemExit(f"{name} must list devices like cuda:0,cuda:1 or cpu, got {entry!r}")
        if kind == "cuda" and int(index or 0) >= cuda_count:
            found = f"{cuda_count} GPU(s): cuda:0 to cuda:{cuda_count - 1}" if cuda_count else "no GPU torch can use"
            raise SystemExit(f"{name} names {entry!r}, but this machine has {found}")
        if kind == "mps" and sys.platform != "darwin":
            raise SystemExit(f"{name} names {entry!r}, but Apple's GPU (mps) exists only on macOS")
    return tuple(raw)


DATA_DIR = Path(os.environ.get("INPAINT_DATA_DIR") or Path.home() / ".cache" / "inpaint").expanduser()
# Tiny models are built here on first use; real Hub models stay in the Hugging Face cache.
MODELS_DIR = Path(os.environ.get("INPAINT_MODELS_DIR") or DATA_DIR / "models").expanduser()
USER_CATALOG = os.environ.get("INPAINT_CATALOG") or None

CUDA_COUNT = _cuda_count()
HAS_CUDA = CUDA_COUNT > 0
# Without a GPU: PatchMatch, the best of the models that need no download (it continues textures where OpenCV's
# fills blur; bench `classical_quality`), when its package is there.
DEFAULT_MODEL = os.environ.get("INPAINT_DEFAULT_MODEL") or (
    "sd-1_5-inpainting" if HAS_CUDA else "patchmatch" if importlib.util.find_spec("patchmatch") else "opencv-telea")

GIVEN_DEVICES = _devices("INPAINT_DEVICES", CUDA_COUNT)
DEVICES = GIVEN_DEVICES or tuple(f"cuda:{i}" for i in range(CUDA_COUNT)) or ("cpu",)  # default: every GPU, else the CPU
# A Ray cluster to run the generations on (`auto`, or `ray://host:10001`); unset runs them on DEVICES.
RAY_ADDRESS = os.environ.get("INPAINT_RAY_ADDRESS", "").strip() or None
MAX_PIPELINES = env_int("INPAINT_MAX_PIPELINES", 2, 1, 16)  # loaded pipelines kept in memory (LRU)
# Samples per pipeline call; numSamples runs in these. A CPU gains nothing from a batch (it takes as long as the
# samples one by one) and shows none of it until all are made, nor keeps any when the run is stopped.
MAX_BATCH = env_int("INPAINT_MAX_BATCH", 4 if HAS_CUDA else 1, 1, 128)
MAX_QUEUE = env_int("INPAINT_MAX_QUEUE", 32, 1, 10_000)  # queued REST jobs before 429
MAX_BODY_BYTES = env_int("INPAINT_MAX_BODY_MB", 50, 1, 1024) * 1024 * 1024
# Pixels decoded at once over every request being prepared (~19 MB of memory per megapixel at the peak).
# At least 80 MP: one request may carry a 40 MP image and a 40 MP mask.
PREPARE_PIXELS = env_int("INPAINT_PREPARE_MP", 120, 80, 100_000) * 1_000_000
# Previews, and input images and masks that nothing names, are deleted once older than this; results never.
RETENTION_DAYS = _optional_int("INPAINT_RETENTION_DAYS", 1, 3650)

API_KEY = os.environ.get("INPAINT_API_KEY") or None
# Without a key the server is open, so it listens on loopback unless the user asks otherwise.
HOST = os.environ.get("HOST") or ("0.0.0.0" if API_KEY or os.environ.get("SPACE_ID") else "127.0.0.1")
# The host names the server answers to (patterns like *.example.com; * for any). Without a key anyone who
# reaches it may use it, so by default only loopback names (and a Space's own host name): a page on another
# site whose name resolves to 127.0.0.1 (DNS rebinding) is refused. With a key, any host name.
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
ALLOWED_HOSTS = tuple(name.strip().lower() for name in os.environ.get("INPAINT_ALLOWED_HOSTS", "").split(",")
                      if name.strip()) or (("*",) if API_KEY else
                                          (*_LOOPBACK_NAMES, *filter(None, [os.environ.get("SPACE_HOST")])))
PORT = env_int("PORT", 7860, 1, 65535)
