"""The translators' cost: the same classical request through OpenAI's image edits and AUTOMATIC1111's img2img
against our own REST round trip, on one server in its own process."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
from PIL import Image

from .request_path import _body, _mask, _photo, _png, rest_server, round_trip
from .timing import Metric, interleaved, median_ratio, summary

# A classical model: its request is quick, so what a translator adds weighs most against it.
MODEL_ID = "opencv-telea"
# A translator's cost is milliseconds in a request of a few hundred: with the profile's rounds alone, the median
# ratio moved by +-0.15 from run to run on a loaded machine.
ROUNDS_PER_PROFILE_ROUND = 3


def compat_overhead(profile, work_dir: Path) -> Metric:
    side = 512 if profile.name == "quick" else 1024
    image, mask = _photo(side), _mask(side, "large")
    image_png, mask_png = _png(image), _png(mask)
    hole = Image.new("RGBA", mask.size, (0, 0, 0, 255))
    hole.putalpha(mask.point(lambda value: 0 if value else 255))  # OpenAI's mask: transparent is edited
    ours = _body(image_png, mask)
    edit = {"files": {"image": ("photo.png", image_png, "image/png"), "mask": ("mask.png", _png(hole), "image/png")},
            "data": {"prompt": "", "model": MODEL_ID, "seed": "0"}}
    img2img = {"init_images": [base64.b64encode(image_png).decode()], "mask": base64.b64encode(mask_png).decode(),
               "seed": 0, "override_settings": {"sd_model_checkpoint": MODEL_ID}}

    with rest_server(work_dir) as url, httpx.Client(base_url=url, timeout=600,
                                                     headers={"Authorization": "Bearer bench"}) as client:
        def openai() -> None:  # the answer carries the PNG, as b64_json
            client.post("/v1/images/edits", **edit).raise_for_status().json()["data"][0]["b64_json"]

        def a1111() -> None:
            client.post("/sdapi/v1/img2img", json=img2img).raise_for_status().json()["images"][0]

        times = interleaved({"rest": lambda: round_trip(client, ours), "openai": openai, "a1111": a1111},
                            profile.rounds * ROUNDS_PER_PROFILE_ROUND, warmup=1)
    ratios = {name: median_ratio(times, name, "rest") for name in ("openai", "a1111")}
    detail = (f"{MODEL_ID}, a {side}x{side} photo with its middle half masked, one result: POST /v1/images/edits "
              f"(multipart: the picture and an RGBA mask; the PNG back as b64_json) {ratios['openai']:.3f} and "
              f"POST /sdapi/v1/img2img (JSON with base64, the PNG back in it) {ratios['a1111']:.3f} / POST "
              f"/generate/inpaint?wait= and GET the result's PNG, on one server in its own process on loopback; the "
              f"worse of the two; {summary(times)}")
    return Metric("compat_overhead", round(max(ratios.values()), 3), "<= 1.05", "ratio", detail)
