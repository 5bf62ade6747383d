"""The request path's files: inputs stored as received, fast lossless results, renditions made on request,
inputs handed over in memory, results written while the next ones are made."""

import errno
import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps, PngImagePlugin

from inpaint import assets, generate, imageops, seams
from inpaint.api import create_app
from inpaint.assets import AssetStore
from inpaint.catalog import Catalog
from inpaint.events import Done, Result
from inpaint.families.diffusion import Diffusers
from inpaint.generate import Engine
from inpaint.events import Result, results
from tests.support.images import as_url, cmyk_profile, encoded, photo, rect_mask, srgb_profile

CATALOG = Catalog.load()
ORIENTATION = 0x0112  # the EXIF tag


@pytest.fixture
def engine(tmp_path, pipeline_cache):
    engine = Engine(CATALOG, AssetStore(tmp_path / "data"), pipeline_cache, max_batch=1)
    yield engine
    engine.store.close()


def request_body(image_data: bytes, **fields) -> dict:
    with Image.open(io.BytesIO(image_data)) as image:
        size = ImageOps.exif_transpose(image).size  # the mask fits the image as shown
    return {"modelId": "opencv-telea", "prompt": "fill", "image": as_url(image_data),
            "mask": as_url(encoded(rect_mask(*size, (20, 16, 44, 40)), "PNG")), **fields}


def png_16_bit(image: Image.Image) -> bytes:
    rgb_np = (np.asarray(image, dtype=np.uint16) * 257).astype(">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in rgb_np)  # unfiltered rows: Pillow writes no 16-bit RGB

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", *image.size, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # shown turned 90 degrees clockwise
    return exif.tobytes()


# Orientation 6 as XMP says it, which Pillow's exif_transpose obeys too.
ROTATED_XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
               '<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')


def xmp_png(image: Image.Image) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", ROTATED_XMP)
    return encoded(image, "PNG", pnginfo=info)


def file_of(engine: Engine, asset_id: str) -> bytes:
    return engine.store.file_path(asset_id).read_bytes()


def decoded(engine: Engine, asset_id: str) -> np.ndarray:
    return np.asarray(engine.store.open_image(asset_id))


PICTURE = photo(96, 72, seed=4)
AS_SENT = {
    "png": ("image/png", ".png", encoded(PICTURE, "PNG")),
    "png with an sRGB profile": ("image/png", ".png", encoded(PICTURE, "PNG", icc_profile=srgb_profile())),
    "jpeg": ("image/jpeg", ".jpg", encoded(PICTURE, "JPEG", quality=85)),
    "lossy webp": ("image/webp", ".webp", encoded(PICTURE, "WEBP", quality=80)),
    "lossless webp": ("image/webp", ".webp", encoded(PICTURE, "WEBP", lossless=True)),
}


@pytest.mark.parametrize("name", AS_SENT)
def test_an_input_image_is_stored_as_the_bytes_received(engine, name):
    mime_type, suffix, data = AS_SENT[name]
    request = engine.prepare(request_body(data))
    asset = engine.store.get(request.image_asset_id)
    assert (asset.mime_type, engine.store.file_path(asset.id).suffix) == (mime_type, suffix)
    assert file_of(engine, asset.id) == data
    # What the store reads back is what the engine used.
    assert np.array_equal(decoded(engine, asset.id), np.asarray(imageops.load_image(data, field="image")))


def test_a_mask_file_that_is_the_prepared_mask_is_stored_as_received_and_any_other_is_made_binary(engine):
    box = (20, 10, 60, 50)
    plain = encoded(rect_mask(96, 72, box), "PNG")  # greyscale, 0 and 255 only: the mask as the engine uses it
    request = engine.prepare({**request_body(encoded(PICTURE, "PNG")), "mask": as_url(plain)})
    assert file_of(engine, request.mask_asset_id) == plain
    # Grey levels, a colour mask or one of another size are stored as the binary mask they become.
    grey = rect_mask(96, 72, box).point(lambda v: 200 if v else 0)
    for mask in (grey, rect_mask(96, 72, box).convert("RGB"), rect_mask(192, 144, (40, 20, 120, 100))):
        request = engine.prepare({**request_body(encoded(PICTURE, "PNG")), "mask": as_url(encoded(mask, "PNG"))})
        stored = engine.store.open_image(request.mask_asset_id)
        assert stored.size == (96, 72) and stored.mode == "L" and set(np.unique(np.asarray(stored))) == {0, 255}
        assert file_of(engine, request.mask_asset_id) != encoded(mask, "PNG")


@pytest.mark.parametrize("name", AS_SENT)
def test_an_upload_is_stored_as_the_bytes_received(engine, name):
    mime_type, suffix, data = AS_SENT[name]
    asset = engine.upload(data)
    assert (asset.mime_type, engine.store.file_path(asset.id).suffix) == (mime_type, suffix)
    assert file_of(engine, asset.id) == data


def test_an_upload_keeps_its_alpha_and_its_bytes(engine):
    rgba = PICTURE.convert("RGBA")
    rgba.putalpha(rect_mask(96, 72, (0, 0, 48, 72)))
    for data in (encoded(rgba, "PNG"), encoded(rgba, "WEBP", lossless=True)):
        asset = engine.upload(data)
        assert file_of(engine, asset.id) == data
        # Lossless WebP may change the colour under full transparency: the file's pixels, as decoded, count.
        assert decoded(engine, asset.id)[..., 3].min() == 0
        assert np.array_equal(decoded(engine, asset.id), np.asarray(Image.open(io.BytesIO(data))))


def cmyk_jpeg() -> bytes:
    return encoded(PICTURE.convert("CMYK"), "JPEG", quality=95, icc_profile=cmyk_profile((255, 0, 0)))


def with_alpha() -> Image.Image:
    rgba = PICTURE.convert("RGBA")
    rgba.putalpha(128)
    return rgba


def keyed_png() -> bytes:
    return encoded(PICTURE, "PNG", transparency=tuple(PICTURE.getpixel((0, 0))))


# Decoding changes these files' pixels: the store keeps the pixels used, re-encoded as PNG.
RE_ENCODED = {
    "exif-rotated jpeg": lambda: encoded(PICTURE, "JPEG", exif=rotated_exif()),
    "exif-rotated png": lambda: encoded(PICTURE, "PNG", exif=rotated_exif()),
    "exif-rotated webp": lambda: encoded(PICTURE, "WEBP", lossless=True, exif=rotated_exif()),
    "xmp-rotated jpeg": lambda: encoded(PICTURE, "JPEG", xmp=ROTATED_XMP.encode()),
    "xmp-rotated png": lambda: xmp_png(PICTURE),
    "alpha png": lambda: encoded(with_alpha(), "PNG"),
    "alpha webp": lambda: encoded(with_alpha(), "WEBP", lossless=True),
    "colour-keyed png": keyed_png,
    "cmyk jpeg": cmyk_jpeg,
    "16-bit png": lambda: png_16_bit(PICTURE),
    "palette png": lambda: encoded(PICTURE.quantize(64), "PNG"),
    "greyscale png": lambda: encoded(PICTURE.convert("L"), "PNG"),
    "greyscale jpeg": lambda: encoded(PICTURE.convert("L"), "JPEG"),
}


@pytest.mark.parametrize("name", RE_ENCODED)
def test_an_input_whose_pixels_differ_from_its_file_is_re_encoded(engine, name):
    data = RE_ENCODED[name]()
    used = imageops.load_image(data, field="image")
    request = engine.prepare(request_body(data))
    asset = engine.store.get(request.image_asset_id)
    assert (asset.mime_type, engine.store.file_path(asset.id).suffix) == ("image/png", ".png")
    assert file_of(engine, asset.id) != data
    assert np.array_equal(decoded(engine, asset.id), np.asarray(used))
    if "rotated" in name:
        assert (asset.width, asset.height) == (72, 96)


@pytest.mark.parametrize("name", ["exif-rotated jpeg", "colour-keyed png", "cmyk jpeg", "16-bit png", "palette png"])
def test_an_upload_whose_pixels_differ_from_its_file_is_re_encoded(engine, name):
    data = RE_ENCODED[name]()
    asset = engine.upload(data)
    assert asset.mime_type == "image/png" and file_of(engine, asset.id) != data


def captured_results(engine: Engine, monkeypatch) -> dict:
    """The images the engine hands the store as results, by asset id."""
    made, real = {}, engine.store.put

    def put(image, **fields):
        asset = real(image, **fields)
        if fields.get("kind") == "result":
            made[asset.id] = image.copy()
        return asset

    monkeypatch.setattr(engine.store, "put", put)
    return made


def test_results_are_stored_bit_exact_and_fast(engine, monkeypatch):
    made, icc = captured_results(engine, monkeypatch), srgb_profile()
    image = photo(320, 240, seed=2)
    request = engine.prepare(request_body(encoded(image, "PNG", icc_profile=icc)))
    [result] = results(engine.run(request))
    png = file_of(engine, result.id)
    with Image.open(io.BytesIO(png)) as stored:
        assert stored.format == "PNG" and stored.info["icc_profile"] == icc
        assert np.array_equal(np.asarray(stored), np.asarray(made[result.id]))
    # Written by the fast encoder: one IDAT, zlib's "fastest" header (FLEVEL 0), every row filtered with Up.
    idat = png.index(b"IDAT")
    length = int.from_bytes(png[idat - 4:idat], "big")
    assert png[idat + 4] == 0x78 and png[idat + 5] >> 6 == 0
    rows = zlib.decompress(png[idat + 4:idat + 4 + length])
    assert {rows[i * (1 + 3 * 320)] for i in range(240)} == {2}
    # No rendition until it is asked for.
    assert sorted(p.name for p in engine.store.root.glob(f"files/{result.id}.*")) == [f"{result.id}.png"]


def test_the_in_memory_inputs_and_the_stored_ones_give_identical_results(tmp_path, engine, monkeypatch, pipeline_cache):
    for data in (AS_SENT["jpeg"][2], RE_ENCODED["alpha png"](), AS_SENT["png with an sRGB profile"][2]):
        body = request_body(data)
        request = engine.prepare(body)
        # In memory: generate never reads its inputs from the store.
        with monkeypatch.context() as patch:
            patch.setattr(engine.store, "open_image", lambda *a, **k: pytest.fail("read from the store"))
            [in_memory] = results(engine.run(request))
        # From the store: as after a restart, with another engine on the same folder.
        again = engine.prepare(body)
        restarted = Engine(CATALOG, AssetStore(tmp_path / "data"), pipeline_cache)
        [from_store] = results(restarted.run(again))
        assert file_of(engine, in_memory.id) == file_of(engine, from_store.id)
        # And from the store once dropped from memory.
        third = engine.prepare(body)
        for asset_id in (third.image_asset_id, third.mask_asset_id):
            assert engine.inputs.take(asset_id) is not None
        [dropped] = results(engine.run(third))
        assert file_of(engine, dropped.id) == file_of(engine, in_memory.id)
        restarted.store.close()


def test_an_uploaded_image_with_alpha_gives_the_same_result_by_id_from_memory_or_the_store(engine):
    body = request_body(RE_ENCODED["alpha png"]())
    body["imageId"] = engine.upload(imageops.decode_data_url(body.pop("image"), field="image")).id
    files = []
    for drop in (False, True):
        request = engine.prepare(body)
        if drop:
            engine.inputs.take(request.image_asset_id)
        [result] = results(engine.run(request))
        files.append(file_of(engine, result.id))
    assert files[0] == files[1]


def test_the_input_cache_drops_the_least_recently_stored_past_its_pixels(tmp_path, pipeline_cache):
    engine = Engine(CATALOG, AssetStore(tmp_path / "data"), pipeline_cache, input_cache_pixels=3 * 96 * 72)
    requests = [engine.prepare(request_body(AS_SENT["png"][2])) for _ in range(2)]
    # Two images and two masks of 96x72 each: room for three, the first image is dropped.
    assert engine.inputs.take(requests[0].image_asset_id) is None
    assert engine.inputs.take(requests[0].mask_asset_id) is not None
    assert engine.inputs.take(requests[1].image_asset_id) is not None
    assert engine.inputs.take(requests[1].image_asset_id) is None  # taken: held no more
    engine.store.close()


# -- renditions ---------------------------------------------------------------------------------------

def test_the_rendition_is_made_once_for_concurrent_first_requests(tmp_path, monkeypatch):
    store, icc = AssetStore(tmp_path), srgb_profile()
    asset = store.put(photo(256, 192), icc_profile=icc)
    rendition = store.root / "files" / f"{asset.id}.webp"
    assert not rendition.exists()
    encodes, real = [], assets._encode

    def slow_encode(image, fmt, icc_profile=None):
        encodes.append(fmt)
        time.sleep(0.2)  # long enough for every thread to ask while it is being made
        return real(image, fmt, icc_profile)

    monkeypatch.setattr(assets, "_encode", slow_encode)
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(store.file_path(asset.id, original=False)))
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert encodes == ["WEBP"] and paths == [rendition] * 6
    with Image.open(rendition) as webp:
        assert (webp.format, webp.size, webp.info["icc_profile"]) == ("WEBP", (256, 192), icc)
    assert not [p for p in rendition.parent.iterdir() if p.suffix == ".tmp"]
    store.close()


def test_a_webp_original_is_its_own_rendition(tmp_path):
    store = AssetStore(tmp_path)
    data = AS_SENT["lossy webp"][2]
    asset = store.put(Image.open(io.BytesIO(data)), data=data)
    assert store.file_path(asset.id, original=False) == store.file_path(asset.id)
    assert [p.name for p in (store.root / "files").iterdir()] == [f"{asset.id}.webp"]
    store.close()


def test_the_api_makes_the_rendition_on_its_first_get_and_serves_originals_with_their_type(engine):
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        jpeg = AS_SENT["jpeg"][2]
        uploaded = client.post("/assets", json={"image": as_url(jpeg)}).json()["asset"]
        assert uploaded["mimeType"] == "image/jpeg"
        original = client.get(f"/assets/{uploaded['id']}/file", params={"original": "true"})
        assert original.headers["content-type"] == "image/jpeg" and original.content == jpeg
        assert "max-age" in original.headers["cache-control"]

        rendition = engine.store.root / "files" / f"{uploaded['id']}.webp"
        assert not rendition.exists()
        head = client.head(f"/assets/{uploaded['id']}/file")
        assert head.status_code == 200 and head.headers["content-type"] == "image/webp"
        assert int(head.headers["content-length"]) == rendition.stat().st_size
        made = rendition.stat().st_mtime_ns
        first = client.get(f"/assets/{uploaded['id']}/file")
        assert first.headers["content-type"] == "image/webp" and "max-age" in first.headers["cache-control"]
        assert first.content == rendition.read_bytes() and rendition.stat().st_mtime_ns == made
        with Image.open(io.BytesIO(first.content)) as webp:
            assert (webp.format, webp.size) == ("WEBP", (96, 72))


# -- results written while the next ones are made ------------------------------------------------------

def diffusion_body(samples: int) -> dict:
    return request_body(AS_SENT["png"][2], modelId="tiny-sd-1_5", numInferenceSteps=2, numSamples=samples,
                        seed=11, width=64, height=64)


def test_results_are_stored_in_order_while_the_next_micro_batch_generates(engine, monkeypatch):
    generating = [threading.Event() for _ in range(4)]
    writers, overlapped, real_put = set(), [], engine.store.put

    def diffuse(self, model, request, region, mask, seeds, on_step):
        generating[seeds[0] - 11].set()
        return [photo(64, 64, seed=seed) for seed in seeds]

    def put(image, **fields):
        if fields.get("kind") == "result":
            writers.add(threading.current_thread())
            sample = fields["seed"] - 11
            # Waits for the next sample's generation: stored inline, this would wait in vain.
            overlapped.append(sample == 2 or generating[sample + 1].wait(timeout=5))
        return real_put(image, **fields)

    monkeypatch.setattr(Diffusers, "run", diffuse)
    monkeypatch.setattr(engine.store, "put", put)
    assets_ = results(engine.run(engine.prepare(diffusion_body(3))))
    assert [a.seed for a in assets_] == [11, 12, 13]
    assert overlapped == [True] * 3 and threading.current_thread() not in writers
    assert all(engine.store.exists(a.id) for a in assets_)


@pytest.mark.skipif(generate.FINISH_WORKERS < 2, reason="one finishing thread on a single core")
def test_a_batchs_results_are_finished_at_once_and_reported_in_seed_order(engine, monkeypatch):
    real_match, finishing, lock, later_finished = seams.match_colors, [], threading.Lock(), threading.Event()
    first_waited = []

    def match_colors(*args):
        with lock:
            first = not finishing
            finishing.append(threading.current_thread())
        if first:  # the first result to start finishing ends after another one: only a pool gets past this
            first_waited.append(later_finished.wait(timeout=5))
        matched = real_match(*args)
        if not first:
            later_finished.set()
        return matched

    monkeypatch.setattr(Diffusers, "run", lambda self, model, request, region, mask, seeds, on_step:
                        [photo(64, 64, seed=seed) for seed in seeds])
    monkeypatch.setattr(seams, "match_colors", match_colors)
    events = list(engine.run(engine.prepare(diffusion_body(3))))
    assert [event.asset.seed for event in events if isinstance(event, Result)] == [11, 12, 13]
    assert isinstance(events[-1], Done)
    assert first_waited == [True] and len(set(finishing)) == 2


def test_a_failed_write_fails_the_generation_and_keeps_the_results_stored_before_it(engine, monkeypatch):
    real_put, calls = engine.store.put, []

    def diffuse(self, model, request, region, mask, seeds, on_step):
        calls.append(seeds)
        time.sleep(0.2)  # a sample takes time: the failed write is seen after the next one, not at the end
        return [photo(64, 64, seed=seed) for seed in seeds]

    def put(image, **fields):
        if fields.get("kind") == "result" and fields["seed"] == 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(image, **fields)

    monkeypatch.setattr(Diffusers, "run", diffuse)
    monkeypatch.setattr(engine.store, "put", put)
    events = list(engine.run(engine.prepare(diffusion_body(5))))
    assert events[-1].kind == "error" and "No space left on device" in events[-1].message
    reported = [event.asset for event in events if isinstance(event, Result)]
    stored = [a for a in engine.store.list(include_hidden=True) if a.kind == "result"]
    assert [a.seed for a in reported] == [a.seed for a in stored] == [11]
    assert len(calls) <= 4  # it stopped generating soon after the failure


def test_disk_full_while_a_job_stores_a_result_fails_it_and_keeps_the_results_before(engine, monkeypatch):
    from tests.support.api import TINY, assert_error, body, submit, wait

    written = []

    class FullDisk(io.FileIO):
        """After three whole files (the input, its mask, the first result) each write stores half its
        bytes and fails, as a full disk does."""

        def write(self, data):
            if len(written) < 3:
                written.append(self.name)
                return super().write(data)
            super().write(bytes(data)[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    files = engine.store.root / "files"
    with TestClient(create_app(engine, api_key=None, with_ui=False)) as client:
        monkeypatch.setattr(assets, "open", FullDisk, raising=False)
        job = wait(client, submit(client, body(**TINY, numSamples=3))["jobId"])
        assert job["status"] == "failure" and "No space left on device" in job["metadata"]["error"]
        [kept] = job["metadata"]["assetIds"]
        rows = engine.store.list(include_hidden=True)
        assert sorted(asset.kind for asset in rows) == ["image", "mask", "result"]
        # Each row has its one complete original, and nothing else is left.
        assert sorted(p.name for p in files.iterdir()) == sorted(f"{a.id}{engine.store.file_path(a.id).suffix}"
                                                                 for a in rows)
        # A rendition asked for on the full disk is refused cleanly, and made once there is room.
        assert_error(client.get(f"/assets/{kept}/file"), 507, "server", "disk is full")
        assert not (files / f"{kept}.webp").exists()
        monkeypatch.undo()
        with Image.open(io.BytesIO(client.get(f"/assets/{kept}/file").content)) as webp:
            assert webp.format == "WEBP"
        assert engine.store.integrity_ok()
