"""Per-message cost of the media parsers and builders (prints figures; asserts nothing).

Run: ``.venv/bin/python -m loadtest.carriers_bench``.
"""

from __future__ import annotations

import sys
import timeit

from gateway.carriers import PlayAudio, get


def main() -> None:
    """Print µs per inbound media message and per outbound PlayAudio, per carrier."""
    for name in ("twilio", "plivo", "vonage"):
        adapter = get(name)
        side = adapter.simulate_carrier("c", {})
        stream = adapter.open_stream()
        for message in side.open():
            stream.receive(message)
        frame = 640 if name == "vonage" else 160
        inbound = side.audio(bytes(frame))
        command = PlayAudio(bytes(frame))
        n = 200_000
        receive, send = stream.receive, stream.send
        t_in = min(timeit.repeat(lambda: receive(inbound), number=n, repeat=3)) / n  # noqa: B023
        t_out = min(timeit.repeat(lambda: send(command), number=n, repeat=3)) / n  # noqa: B023
        sys.stdout.write(
            f"{name:7s} inbound media {t_in * 1e6:.2f} us/msg"
            f"  outbound media {t_out * 1e6:.2f} us/msg\n"
        )


if __name__ == "__main__":
    main()
