import errno
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from inpaint import assets
from inpaint.responses import AssetOut
from inpaint.assets import ASSET_ID_PATTERN, JOB_ID_PATTERN, AssetStore, new_id
from inpaint.errors import NotFoundError, RequestError
from tests.support.store import files_of, job, noise, saved_job, stored_files


def row_count(store):
    return len(store.list(include_hidden=True, limit=1000))


def test_new_id_matches_patterns():
    ids = {new_id("asset") for _ in range(100)}
    assert len(ids) == 100 and all(ASSET_ID_PATTERN.fullmatch(i) for i in ids)
    assert JOB_ID_PATTERN.fullmatch(new_id("job"))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_put_get_round_trip_is_lossless(store, mode):
    image = noise(mode=mode)
    asset = store.put(image, kind="result", seed=42, model_id="tiny-sd-1_5")
    assert store.get(asset.id) == asset
    assert (asset.kind, asset.mime_type, asset.width, asset.height, asset.seed) == ("result", "image/png", 40, 24, 42)
    assert asset.created_at.endswith("Z") and store.exists(asset.id)
    loaded = store.open_image(asset.id)
    assert loaded.mode == mode and np.array_equal(np.asarray(loaded), np.asarray(image))
    with Image.open(store.file_path(asset.id, original=False)) as webp:
        assert webp.format == "WEBP" and webp.size == (40, 24)
    assert store.file_path(asset.id).suffix == ".png"


def test_the_api_shows_an_asset_in_camel_case(store):
    asset = store.put(noise(), hidden=True, seed=7, model_id="m")
    body = AssetOut.of(asset, "/assets/x").model_dump()
    assert body == {"id": asset.id, "url": "/assets/x", "mimeType": "image/png", "width": 40, "height": 24,
                    "hidden": True, "parentId": None, "jobId": None, "seed": 7, "modelId": "m",
                    "createdAt": asset.created_at, "kind": "image"}


def test_list_order_limit_hidden_and_job_filter(store):
    job_id = new_id("job")
    a = store.put(noise(seed=1))
    b = store.put(noise(seed=2), hidden=True, job_id=job_id)
    c = store.put(noise(seed=3), job_id=job_id)
    assert [x.id for x in store.list()] == [c.id, a.id]
    assert [x.id for x in store.list(include_hidden=True)] == [c.id, b.id, a.id]
    assert [x.id for x in store.list(include_hidden=True, limit=1, offset=1)] == [b.id]
    assert [x.id for x in store.list(include_hidden=True, job_id=job_id)] == [c.id, b.id]
    with pytest.raises(RequestError) as err:
        store.list(limit=0)
    assert err.value.field == "limit"


def test_parent_chain_and_unknown_parent(store):
    root = store.put(noise())
    child = store.put(noise(seed=1), parent_id=root.id)
    grandchild = store.put(noise(seed=2), parent_id=child.id)
    assert store.get(store.get(grandchild.id).parent_id).parent_id == root.id
    before = stored_files(store)
    with pytest.raises(NotFoundError) as err:
        store.put(noise(), parent_id=new_id("asset"))
    assert (err.value.field, err.value.status) == ("parentId", 404)
    with pytest.raises(RequestError) as err:
        store.put(noise(), parent_id="../etc/passwd")
    assert (err.value.field, err.value.status) == ("parentId", 400)
    assert stored_files(store) == before and row_count(store) == 3


@pytest.mark.parametrize("bad", ["../etc/passwd", "asset_x' OR 1=1 --", "job_" + "a" * 22, "asset_" + "a" * 21,
                                 "asset_" + "a" * 20 + "/.", "asset_" + "a" * 22 + "\n", "", None])
def test_malformed_ids_are_rejected_naming_the_field(store, bad):
    for call in (lambda: store.get(bad, field="image"), lambda: store.open_image(bad, field="image")):
        with pytest.raises(RequestError) as err:
            call()
        assert (err.value.field, err.value.status) == ("image", 400) and "asset_<22 chars>" in err.value.message
    with pytest.raises(RequestError):
        store.file_path(bad)
    assert not store.exists(bad)


@pytest.mark.parametrize("bad", ["../jobs", "job_x' OR 1=1 --", "asset_" + "a" * 22, "job_" + "a" * 23, None])
def test_malformed_job_ids_are_rejected(store, bad):
    for call in (lambda: store.get_job(bad), lambda: store.save_job({**job(), "jobId": bad})):
        with pytest.raises(RequestError) as err:
            call()
        assert (err.value.field, err.value.status) == ("jobId", 400) and "job_<22 chars>" in err.value.message


def test_unknown_ids(store):
    unknown = new_id("asset")
    with pytest.raises(NotFoundError) as err:
        store.get(unknown, field="maskId")
    assert (err.value.field, err.value.status) == ("maskId", 404) and unknown in err.value.message
    with pytest.raises(NotFoundError):
        store.file_path(unknown)
    assert not store.exists(unknown) and store.get_job(new_id("job")) is None


def test_file_path_refuses_a_symlink_out_of_the_root(store, tmp_path):
    asset = store.put(noise())
    outside = tmp_path / "outside.png"
    noise().save(outside)
    path = store.file_path(asset.id)
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(RequestError):
        store.file_path(asset.id)


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fail_on", ["fsync", "replace"])
def test_disk_full_leaves_no_file_and_no_row(store, monkeypatch, fail_on):
    kept = store.put(noise())
    monkeypatch.setattr(assets.os, fail_on, disk_full)
    with pytest.raises(OSError) as err:
        store.put(noise(seed=5))
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert stored_files(store) == [f"{kept.id}.png"]
    assert [a.id for a in store.list(include_hidden=True)] == [kept.id] and store.integrity_ok()


def test_failed_row_insert_removes_the_files(store):
    store.put(noise())
    before = stored_files(store)
    with pytest.raises(OverflowError):  # the row is refused after both files were written: beyond SQLite's int64
        store.put(noise(), seed=2**70)
    assert stored_files(store) == before and row_count(store) == 1


def test_reopen_keeps_assets_and_jobs(tmp_path):
    first = AssetStore(tmp_path)
    image = noise(seed=3)
    asset = first.put(image, seed=3)
    saved = job("success", progress=1.0)
    first.save_job(saved)
    first.close()
    second = AssetStore(tmp_path)
    assert second.get(asset.id) == asset
    assert np.array_equal(np.asarray(second.open_image(asset.id)), np.asarray(image))
    assert second.get_job(saved["jobId"]) == saved and second.integrity_ok()
    second.close()


def test_save_job_upserts(store):
    saved = job()
    store.save_job(saved)
    store.save_job({**saved, "status": "in-progress", "progress": 0.5})
    assert store.get_job(saved["jobId"])["status"] == "in-progress"
    assert store.get_job(saved["jobId"])["progress"] == 0.5


def test_fail_interrupted_jobs(tmp_path):
    store = AssetStore(tmp_path)
    jobs = {status: job(status) for status in ("queued", "in-progress", "success", "failure", "canceled")}
    for j in jobs.values():
        store.save_job(j)
    store.close()
    store = AssetStore(tmp_path)
    assert store.fail_interrupted_jobs("server restarted") == 2
    for status, j in jobs.items():
        after = store.get_job(j["jobId"])
        if status in ("queued", "in-progress"):
            assert after["status"] == "failure" and after["metadata"]["error"] == "server restarted"
            assert after["updatedAt"] > j["updatedAt"] and after["metadata"]["input"] == j["metadata"]["input"]
        else:
            assert after == j
    assert store.fail_interrupted_jobs("again") == 0
    store.close()


def test_stale_temp_and_orphan_files_removed_on_open(tmp_path):
    store = AssetStore(tmp_path)
    kept = store.put(noise())
    store.file_path(kept.id, original=False)  # its rendition, made on request
    store.close()
    files = tmp_path / "files"
    old = time.time() - assets.STALE_AFTER_S - 1
    stale = [files / f".{kept.id}.png.dead.tmp", *(files / f"{new_id('asset')}.{ext}" for ext in ("png", "jpg", "webp"))]
    fresh = files / f".{new_id('asset')}.png.busy.tmp"  # another process may be writing it right now
    for path in [*stale, fresh]:
        path.write_bytes(b"partial")
    for path in [*stale, files / f"{kept.id}.png", files / f"{kept.id}.webp"]:
        os.utime(path, (old, old))
    store = AssetStore(tmp_path)
    assert sorted(p.name for p in files.iterdir()) == sorted([fresh.name, f"{kept.id}.png", f"{kept.id}.webp"])
    assert store.open_image(kept.id).size == (40, 24)
    store.close()


def test_concurrent_puts(store):
    results, errors = [], []

    def worker(i):
        try:
            results.append((i, store.put(noise(seed=i), seed=i)))
        except Exception as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len({a.id for _, a in results}) == 8
    assert {a.id for a in store.list()} == {a.id for _, a in results}
    for i, asset in results:
        assert np.array_equal(np.asarray(store.open_image(asset.id)), np.asarray(noise(seed=i)))
    assert store.integrity_ok()


def made_job(store, status="success"):
    """The assets one generation leaves: input image, its mask, two results and a preview, all under one job."""
    job_id = new_id("job")
    image = store.put(noise(seed=1))
    mask = store.put(noise(seed=2), kind="mask", hidden=True, parent_id=image.id)
    results = [store.put(noise(seed=3 + i), kind="result", parent_id=image.id, job_id=job_id, seed=i) for i in range(2)]
    preview = store.put(noise(seed=9), kind="preview", hidden=True, parent_id=image.id, job_id=job_id)
    saved_job(store, status, image=image, mask=mask, results=results, previews=[preview], job_id=job_id)
    return job_id, image, mask, results, preview


def test_delete_asset_removes_the_row_and_both_files(store):
    gone, kept = store.put(noise(seed=1)), store.put(noise(seed=2))
    for asset in (gone, kept):
        store.file_path(asset.id, original=False)
    assert store.delete_asset(gone.id) == gone
    assert stored_files(store) == sorted([f"{kept.id}.png", f"{kept.id}.webp"])
    assert [a.id for a in store.list(include_hidden=True)] == [kept.id]
    with pytest.raises(NotFoundError) as err:
        store.delete_asset(gone.id)
    assert (err.value.field, err.value.status) == ("assetId", 404)
    with pytest.raises(RequestError) as err:
        store.delete_asset("../inpaint.db")
    assert (err.value.field, err.value.status) == ("assetId", 400) and store.integrity_ok()


def test_delete_asset_is_refused_while_an_asset_names_it_as_parent(store):
    root = store.put(noise())
    child = store.put(noise(seed=1), parent_id=root.id)
    with pytest.raises(RequestError) as err:
        store.delete_asset(root.id)
    assert (err.value.field, err.value.status) == ("assetId", 409) and child.id in err.value.message
    assert store.get(root.id) == root and stored_files(store) == files_of(store, root, child)
    store.delete_asset(child.id)
    store.delete_asset(root.id)
    assert stored_files(store) == [] and row_count(store) == 0


@pytest.mark.parametrize("use", ["image", "mask", "results", "previews"])
def test_delete_asset_is_refused_while_a_saved_job_names_it(store, use):
    job_id = new_id("job")
    made = use in ("results", "previews")  # the job's own output carries its id
    asset = store.put(noise(), kind={"image": "image", "mask": "mask", "results": "result", "previews": "preview"}[use],
                      job_id=job_id if made else None)
    saved_job(store, job_id=job_id, **{use: [asset] if made else asset})
    with pytest.raises(RequestError) as err:
        store.delete_asset(asset.id)
    assert (err.value.field, err.value.status) == ("assetId", 409) and job_id in err.value.message
    assert store.get(asset.id) == asset and stored_files(store) == files_of(store, asset)


def test_delete_asset_is_refused_for_a_running_jobs_preview_not_yet_on_its_row(store):
    job_id = saved_job(store, "in-progress")  # previews reach the row only when the job ends
    preview = store.put(noise(), kind="preview", hidden=True, job_id=job_id)
    with pytest.raises(RequestError) as err:
        store.delete_asset(preview.id)
    assert err.value.status == 409 and job_id in err.value.message and store.exists(preview.id)


def test_delete_job_removes_its_row_and_every_asset_only_it_names(store):
    unrelated = store.put(noise(seed=20))
    job_id, image, mask, results, preview = made_job(store)
    answer = store.delete_job(job_id)
    assert answer == {"jobId": job_id, "deletedAssetIds": [image.id, mask.id, results[0].id, results[1].id, preview.id],
                      "keptAssetIds": []}
    assert store.get_job(job_id) is None
    assert [a.id for a in store.list(include_hidden=True)] == [unrelated.id]
    assert stored_files(store) == files_of(store, unrelated) and store.integrity_ok()
    with pytest.raises(NotFoundError) as err:
        store.delete_job(job_id)
    assert (err.value.field, err.value.status) == ("jobId", 404)


def test_delete_job_keeps_what_others_still_name(store):
    job_id, image, mask, results, preview = made_job(store)
    edit = store.put(noise(seed=30), parent_id=results[0].id)  # a result taken on as a new input
    other_mask = store.put(noise(seed=31), kind="mask", hidden=True, parent_id=image.id)
    other_job = saved_job(store, image=image, mask=other_mask)  # the same image inpainted again
    answer = store.delete_job(job_id)
    assert answer["deletedAssetIds"] == [mask.id, results[1].id, preview.id]
    assert answer["keptAssetIds"] == [image.id, results[0].id]
    assert stored_files(store) == files_of(store, image, results[0], edit, other_mask)
    assert store.get(results[0].id).parent_id == image.id and store.get_job(other_job) is not None
    # Once the other job and the edit are gone too, nothing keeps them.
    assert store.delete_job(other_job)["deletedAssetIds"] == [other_mask.id]  # the image is still results[0]'s parent
    store.delete_asset(edit.id)
    store.delete_asset(results[0].id)
    store.delete_asset(image.id)
    assert stored_files(store) == [] and row_count(store) == 0


def test_delete_job_keeps_an_input_a_result_of_another_job(store):
    first_id, _, _, first_results, _ = made_job(store)
    mask = store.put(noise(seed=40), kind="mask", hidden=True, parent_id=first_results[0].id)
    second = saved_job(store, image=first_results[0], mask=mask)
    assert store.delete_job(second) == {"jobId": second, "deletedAssetIds": [mask.id],
                                        "keptAssetIds": [first_results[0].id]}
    assert store.exists(first_results[0].id) and store.get_job(first_id) is not None


@pytest.mark.parametrize("status", ["queued", "in-progress"])
def test_delete_job_is_refused_while_it_runs(store, status):
    job_id, *made = made_job(store, status)
    before = stored_files(store)
    with pytest.raises(RequestError) as err:
        store.delete_job(job_id)
    assert (err.value.field, err.value.status) == ("jobId", 409) and "cancel it first" in err.value.message
    assert store.get_job(job_id)["status"] == status and stored_files(store) == before and row_count(store) == 5


def test_delete_job_is_one_transaction(store, monkeypatch):
    job_id, *made = made_job(store)
    before = stored_files(store)

    def crash(*args):
        raise RuntimeError("killed mid-delete")
    monkeypatch.setattr(assets, "_still_parents", crash)  # after the job's row was deleted
    with pytest.raises(RuntimeError):
        store.delete_job(job_id)
    assert store.get_job(job_id) is not None and row_count(store) == 5 and stored_files(store) == before
