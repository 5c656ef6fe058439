"""Type stub of the C extension built from _mask.c (see gateway.server.ws_frames)."""

def unmask(payload: bytes | bytearray | memoryview, mask: bytes, /) -> bytes:
    """``payload`` XOR the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
