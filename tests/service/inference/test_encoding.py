"""Response bodies: the encoder pool's admission (a burst is admitted as far as the pool
can serve it). The PNG encoder itself: tests/aae/test_images.py."""

from __future__ import annotations

import asyncio
import contextvars

from service.inference.encoding import Encoder
from service.core.errors import Overloaded


def test_a_burst_is_admitted_as_far_as_the_pool_can_serve_it():
    """Bodies of 0.8 s of encoding each, one thread, a 2 s deadline: the first three
    would start within it (after 0, 0.8 and 1.6 s) and are admitted; the others are
    refused at once, saying the wait (Retry-After 3 s). An admission whose deadline has
    passed no longer counts."""
    pixels = 256 * 784 * 16 * 16

    async def go() -> tuple[int, list[Overloaded], Encoder]:
        encoder = Encoder(threads=1, offload_pixels=200_000, max_queue=0, deadline_s=2.0)
        encoder.seconds_per_pixel["png"] = 0.8 / pixels
        admitted, refused = 0, []
        for _ in range(5):  # each request in a context of its own, as under ASGI
            try:
                contextvars.copy_context().run(encoder.admit, "png", pixels)
                admitted += 1
            except Overloaded as exc:
                refused.append(exc)
        encoder.admit("png", 100_000)  # a small body is made inline: always admitted
        encoder.close()
        return admitted, refused, encoder

    admitted, refused, encoder = asyncio.run(go())
    assert admitted == 3 and len(refused) == 2
    assert all(e.reason == "deadline" and e.headers["Retry-After"] == "3" and
               "would wait about 2400 ms" in e.detail for e in refused)

    async def later() -> None:
        for ticket in list(encoder.admitted):  # their deadlines pass
            encoder.admitted[ticket] = (0.8, asyncio.get_running_loop().time() - 1)
        encoder.admit("png", pixels)

    asyncio.run(later())
    assert len(encoder.admitted) == 1
