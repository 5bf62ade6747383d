"""Generation on tiny models as the workers' tests run it: a small request, and a barrier that shows two workers
generating at once."""

import functools
import threading

from tests.support.images import data_url, photo, rect_mask


def tiny_body(**fields):
    size = (96, 80)
    return {"modelId": "tiny-sd-1_5", "prompt": "fill", "image": data_url(photo(*size, seed=1)),
            "mask": data_url(rect_mask(*size, (24, 16, 64, 56))), "numInferenceSteps": 2, "numSamples": 1,
            "seed": 11, "width": 64, "height": 64, **fields}


def meeting_point(workers, timeout=60):
    """Each worker's generation waits at a barrier for the other's: it only passes if both run at once."""
    both_running = threading.Barrier(len(workers), timeout=timeout)
    for worker in workers:
        generate = worker._generate  # the work of a run, on its own thread

        @functools.wraps(generate)
        def meet(*args, generate=generate, **kwargs):
            both_running.wait()
            return generate(*args, **kwargs)
        worker._generate = meet
