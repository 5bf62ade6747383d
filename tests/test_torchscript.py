"""TorchScript erasers: tiny stand-ins built, loaded and run; weights downloaded from a local server and verified."""

import hashlib
import logging
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from inpaint import torchscript
from inpaint.errors import ModelUnavailable


def test_importing_the_module_does_not_import_torch():
    code = "import sys, inpaint.torchscript; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


# ---- tiny models ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    files = {kind: folder / f"{kind}.pt" for kind in ("lama", "mi-gan")}
    for kind, path in files.items():
        torchscript.build_tiny(kind, path)
    return files


@pytest.fixture(scope="module")
def tiny(tiny_files):
    return {kind: torchscript.load(path) for kind, path in tiny_files.items()}


def test_tiny_models_load_through_the_one_call_site(tiny_files, monkeypatch):
    calls = []
    real_load = torch.jit.load

    def counting_load(*args, **kwargs):
        calls.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", counting_load)
    modules = [torchscript.load(path) for path in tiny_files.values()]
    assert calls == [str(path) for path in tiny_files.values()]
    assert all(isinstance(m, torch.jit.ScriptModule) and not m.training for m in modules)


def test_build_tiny_is_deterministic_and_leaves_no_temporary_file(tiny_files, tmp_path):
    again = tmp_path / "again.pt"
    torchscript.build_tiny("lama", again)
    assert [p.name for p in tmp_path.iterdir()] == ["again.pt"]
    first, second = torchscript.load(tiny_files["lama"]).state_dict(), torchscript.load(again).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(ValueError, match="unknown tiny model kind"):
        torchscript.build_tiny("big-lama", tmp_path / "no.pt")


def _picture(width, height, seed=0):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    mask = Image.new("L", (width, height))
    mask.paste(255, (width // 4, height // 4, width // 2, height // 2))
    return image, mask


@pytest.mark.parametrize("size", [(53, 37), (64, 64), (8, 1)])
def test_lama_inpaint_keeps_the_size(tiny, size):
    image, mask = _picture(*size)
    result = torchscript.lama_inpaint(tiny["lama"], image, mask, torch.device("cpu"))
    assert (result.mode, result.size) == ("RGB", size)


def test_tiny_lama_rejects_unpadded_input_as_the_real_one_does(tiny):
    with pytest.raises(RuntimeError):
        tiny["lama"](torch.rand(1, 3, 37, 53), torch.zeros(1, 1, 37, 53))


class Recorder(torch.nn.Module):
    """Keeps what it is called with; returns the image (LaMa) or the known part of it (MI-GAN)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, *inputs):
        self.seen.append([t.clone() for t in inputs])
        return inputs[0] if len(inputs) == 2 else inputs[0][:, 1:]


def test_lama_pads_bottom_right_to_a_multiple_of_8_by_mirroring():
    image, mask = _picture(53, 37)
    mask.putpixel((0, 36), 128)  # the hole threshold: >= 128 is a hole...
    mask.putpixel((1, 36), 127)  # ...127 is not
    recorder = Recorder()
    result = torchscript.lama_inpaint(recorder, image, mask, "cpu")

    (seen_image, seen_mask), = recorder.seen
    assert seen_image.shape == (1, 3, 40, 56) and seen_mask.shape == (1, 1, 40, 56)
    assert seen_image.dtype == seen_mask.dtype == torch.float32
    pixels = np.asarray(image).transpose(2, 0, 1) / 255
    padded = seen_image[0].numpy()
    assert np.allclose(padded[:, :37, :53], pixels)
    # Mirrored with the edge repeated: row 37 is row 36, row 39 is row 34; the same for columns.
    assert np.allclose(padded[:, 37:, :53], pixels[:, [36, 35, 34], :])
    assert np.allclose(padded[:, :37, 53:], pixels[:, :, [52, 51, 50]])
    holes = seen_mask[0, 0].numpy()
    assert set(np.unique(holes)) == {0.0, 1.0}
    assert holes[36, 0] == 1 and holes[36, 1] == 0
    assert np.array_equal(holes[:37, :53], np.asarray(mask) >= 128)
    assert np.array_equal(holes[37:, :53], holes[[36, 35, 34], :53])
    # Cropped back, and [0,1] -> uint8 loses nothing.
    assert np.array_equal(np.asarray(result), np.asarray(image))


def test_lama_sees_at_most_its_working_area_and_keeps_the_known_pixels(monkeypatch):
    monkeypatch.setattr(torchscript, "LAMA_MAX_PIXELS", 64 * 64)
    image, mask = _picture(400, 200)
    mask.paste(255, (300, 150, 301, 151))  # a one-pixel stroke survives the scaling down
    recorder = Recorder()
    result = torchscript.lama_inpaint(recorder, image, mask, "cpu")

    (seen_image, seen_mask), = recorder.seen
    assert seen_image.shape[2] * seen_image.shape[3] <= 96 * 48  # 91x45, padded to a multiple of 8
    holes = seen_mask[0, 0].numpy()
    assert holes[150 * 45 // 200, 300 * 91 // 400] == 1
    # Full size again; outside the holes the picture itself, bit for bit.
    assert result.size == image.size
    known = np.asarray(mask) < 128
    assert np.array_equal(np.asarray(result)[known], np.asarray(image)[known])
    assert not np.array_equal(np.asarray(result)[~known], np.asarray(image)[~known])  # the fill, scaled back


def test_lama_inpaint_checks_the_mask_size(tiny):
    image, _ = _picture(16, 16)
    with pytest.raises(ValueError, match="mask"):
        torchscript.lama_inpaint(tiny["lama"], image, Image.new("L", (8, 16)), "cpu")


@pytest.mark.parametrize("size", [(53, 37), (512, 512), (700, 300)])
def test_migan_inpaint_repaints_only_the_hole(tiny, size):
    image, mask = _picture(*size)
    result = torchscript.migan_inpaint(tiny["mi-gan"], image, mask, "cpu")
    assert (result.mode, result.size) == ("RGB", size)
    outside = np.asarray(mask) <= 120
    assert np.array_equal(np.asarray(result)[outside], np.asarray(image)[outside])
    assert not np.array_equal(np.asarray(result)[~outside], np.asarray(image)[~outside])


def test_migan_sees_512_square_4_channels_as_iopaint_builds_them():
    image, mask = _picture(53, 37)
    recorder = Recorder()
    torchscript.migan_inpaint(recorder, image, mask, "cpu")
    (x,), = recorder.seen
    assert x.shape == (1, 4, 512, 512)
    hole = 0.5 - x[0, 0]  # channel 0 is 0.5 - mask
    assert set(hole.unique().tolist()) == {0.0, 1.0}
    known = x[0, 1:]
    assert known.min() >= -1 and known.max() <= 1
    assert torch.all(known[:, hole == 1] == 0)  # the hole is erased from the image channels
    # The mask went through nearest resizing: the 1/4..1/2 box scaled to 512 is where the holes are.
    assert hole[200, 200] == 1 and hole[100, 100] == 0 and hole[300, 300] == 0


# ---- weights downloads ------------------------------------------------------------------------------------------

@pytest.fixture
def server():
    """A local HTTP server: `routes` maps a path to (body, Content-Length); `hits` counts the requests."""
    routes, hits = {}, Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits[self.path] += 1
            if self.path not in routes:
                self.send_error(404)
                return
            body, length = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.routes, httpd.hits = routes, hits
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


PAYLOAD = os.urandom(3_000_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def test_a_verified_download_is_put_in_place_once(server, tmp_path, caplog, monkeypatch):
    server.routes["/w.pt"] = (PAYLOAD, len(PAYLOAD))
    monkeypatch.setattr(torchscript, "_PROGRESS_EVERY_S", 0.0)  # a progress line for every chunk
    with caplog.at_level(logging.INFO, logger="inpaint.torchscript"):
        path = torchscript.weights_file("lama", f"{server.base}/w.pt", PAYLOAD_MD5, tmp_path / "models")
    assert path == tmp_path / "models" / "w.pt"
    assert path.read_bytes() == PAYLOAD
    assert "downloading w.pt: 1.0 of 3.0 MB" in caplog.messages
    assert torchscript.weights_file("lama", f"{server.base}/w.pt", PAYLOAD_MD5, tmp_path / "models") == path
    assert server.hits["/w.pt"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["w.pt"]


def test_a_download_with_the_wrong_md5_is_deleted(server, tmp_path):
    server.routes["/w.pt"] = (PAYLOAD, len(PAYLOAD))
    with pytest.raises(ModelUnavailable, match=f"has md5 {PAYLOAD_MD5}, expected 0+; it was deleted") as raised:
        torchscript.weights_file("mi-gan", f"{server.base}/w.pt", "0" * 32, tmp_path)
    assert raised.value.model_id == "mi-gan"
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_file_in_place_is_replaced(server, tmp_path):
    server.routes["/w.pt"] = (PAYLOAD, len(PAYLOAD))
    (tmp_path / "w.pt").write_bytes(PAYLOAD[:1000])  # an interrupted copy
    path = torchscript.weights_file("lama", f"{server.base}/w.pt", PAYLOAD_MD5, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.hits["/w.pt"] == 1


def test_a_connection_closed_early_is_a_network_failure(server, tmp_path):
    server.routes["/w.pt"] = (PAYLOAD[:1000], len(PAYLOAD))
    with pytest.raises(ModelUnavailable, match="needs a download of .*w.pt .3 MB. and network access"):
        torchscript.weights_file("lama", f"{server.base}/w.pt", PAYLOAD_MD5, tmp_path)
    assert list(tmp_path.iterdir()) == []


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_url_fails_saying_what_it_needs(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/x.pt"
    with pytest.raises(ModelUnavailable, match="needs a download of .*x.pt and network access") as raised:
        torchscript.weights_file("lama", url, "0" * 32, tmp_path, timeout_s=2)
    assert f"put the file at {tmp_path / 'x.pt'} by hand" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # listens, so the connect succeeds, but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        # Without the timeout this would wait for ever: ending with the error is the test.
        with pytest.raises(ModelUnavailable, match="needs a download"):
            torchscript.weights_file("lama", f"http://127.0.0.1:{silent.getsockname()[1]}/x.pt", "0" * 32, tmp_path,
                                     timeout_s=0.5)


def test_offline_refuses_at_once(server, tmp_path, monkeypatch):
    server.routes["/w.pt"] = (PAYLOAD, len(PAYLOAD))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="HF_HUB_OFFLINE is set"):
        torchscript.weights_file("lama", f"{server.base}/w.pt", PAYLOAD_MD5, tmp_path)
    assert server.hits["/w.pt"] == 0
    # A file already in place is still used offline.
    (tmp_path / "w.pt").write_bytes(PAYLOAD)
    assert torchscript.weights_file("lama", f"{server.base}/w.pt", PAYLOAD_MD5, tmp_path) == tmp_path / "w.pt"


def test_the_published_files_are_named():
    assert torchscript.LAMA_URL.endswith("/big-lama.pt") and torchscript.MIGAN_URL.endswith("/migan_traced.pt")
    assert all(len(md5) == 32 for md5 in (torchscript.LAMA_MD5, torchscript.MIGAN_MD5))
