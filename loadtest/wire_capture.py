"""Capture loopback TCP data segments with kernel timestamps into a pcap (run as a child).

``python -m loadtest.wire_capture SECONDS PATH`` opens an ``AF_PACKET`` socket on
``lo`` (packet(7); needs ``CAP_NET_RAW``, as tcpdump does), keeps the kernel's receive
timestamp of each packet (``SO_TIMESTAMPNS``, socket(7)), and writes the packets
stamped within the next SECONDS to PATH as a nanosecond pcap that Wireshark and tcpdump
read too. It prints one JSON line: packets written, and the kernel's count of packets
it dropped for want of buffer (``PACKET_STATISTICS``), which the report shows.

A classic BPF filter (``SO_ATTACH_FILTER``) keeps, in the kernel, only the incoming copy
of IPv4 TCP segments that carry data: each loopback packet passes the device twice (and
libpcap keeps the incoming one too), and pure ACKs say nothing here. So the capture's own CPU goes
on the packets it needs; it runs pinned with the tester, off the gateway's CPU. The
kernel stamps each packet as it crosses the device, so when this process runs late it
reads late, not wrong, while the socket's buffer (256 MB asked) holds what it has not
read. So it does not wait in ``recvmsg``: it drains the socket, then sleeps 20 ms. A
reader waiting in ``recvmsg`` is woken for every packet, and on loopback the wake-up
is made by the sender, inside its ``send()``: waiting, it cost the gateway ~30 % more
CPU at 120 calls; with nobody waiting, a packet costs the sender only the kernel's copy.
"""

from __future__ import annotations

import ctypes
import json
import socket
import struct
import sys
import time

from loadtest.wire import pcap_header, pcap_record

__all__ = ["capture", "check_permission", "main"]

_ETH_P_ALL = 0x0003
_SO_TIMESTAMPNS = 35  # asm-generic/socket.h (SCM_TIMESTAMPNS is the same number)
_SO_RCVBUFFORCE = 33
_SO_ATTACH_FILTER = 26
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_PACKET_HOST = 0
_BUFFER = 256 << 20
_SNAPLEN = 262_144
_IDLE_NS = 200_000_000  # after the end: what is still to come has come by then
_NAP_S = 0.02

# Classic BPF (linux/filter.h): accept incoming IPv4 TCP segments with data, whole.
# (The incoming copy: loopback_xmit clears the send path's timestamp, whose clock base
# differs, so the receive path stamps it afresh as the sender's send() hands it over.)
_LD_B_ABS, _LD_H_ABS, _LDX_MSH, _LD_B_IND = 0x30, 0x28, 0xB1, 0x50
_AND_K, _RSH_K, _ADD_X, _ST, _LDX_MEM = 0x54, 0x74, 0x0C, 0x02, 0x61
_JEQ_K, _JGT_X, _RET_K = 0x15, 0x2D, 0x06
_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE
_FILTER = (
    (_LD_B_ABS, 0, 0, _AD_PKTTYPE),
    (_JEQ_K, 0, 14, _PACKET_HOST),
    (_LD_H_ABS, 0, 0, 12),  # EtherType
    (_JEQ_K, 0, 12, 0x0800),
    (_LD_B_ABS, 0, 0, 23),  # IP protocol
    (_JEQ_K, 0, 10, 6),
    (_LDX_MSH, 0, 0, 14),  # X = IP header length
    (_LD_B_IND, 0, 0, 26),  # TCP data offset byte
    (_AND_K, 0, 0, 0xF0),
    (_RSH_K, 0, 0, 2),  # A = TCP header length
    (_ADD_X, 0, 0, 0),  # A = both headers
    (_ST, 0, 0, 0),
    (_LD_H_ABS, 0, 0, 16),  # IP total length
    (_LDX_MEM, 0, 0, 0),
    (_JGT_X, 0, 1, 0),  # data beyond the headers?
    (_RET_K, 0, 0, _SNAPLEN),
    (_RET_K, 0, 0, 0),
)


def _attach_filter(sock: socket.socket) -> None:
    program = (ctypes.c_ubyte * (8 * len(_FILTER)))()
    for i, (code, jt, jf, k) in enumerate(_FILTER):
        struct.pack_into("HBBI", program, 8 * i, code, jt, jf, k)
    fprog = struct.pack("HL", len(_FILTER), ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def _open() -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    _attach_filter(sock)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.bind(("lo", 0))
    return sock


def check_permission() -> str | None:
    """None when this process may capture on ``lo``; else why not (for the CLI)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL)).close()
    except PermissionError:
        return "--wire needs CAP_NET_RAW to capture on lo (run the tester as root)"
    except (OSError, AttributeError) as exc:  # not Linux: no AF_PACKET
        return f"--wire needs Linux packet sockets: {exc}"
    return None


def capture(seconds: float, path: str) -> dict[str, int | float]:
    """Write the segments stamped in the next ``seconds`` to ``path``; the counts.

    Raises:
        PermissionError: no ``CAP_NET_RAW``.
    """
    sock = _open()
    began_ns = time.time_ns()
    end_ns = began_ns + int(seconds * 1e9)
    written = 0
    with sock, open(path, "wb") as out:
        out.write(pcap_header(_SNAPLEN))
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(_SNAPLEN, 64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if time.time_ns() > end_ns + _IDLE_NS:
                    break
                time.sleep(_NAP_S)  # (not waiting in recvmsg: see the module doc)
                continue
            at_ns = _stamp(ancillary)
            if at_ns > end_ns:
                break
            out.write(pcap_record(at_ns, data))
            written += 1
        packets, drops = struct.unpack("II", sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
    return {"written": written, "seen": packets, "dropped": drops, "began": began_ns / 1e9}


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            seconds, nanos = struct.unpack("qq", data[:16])
            return int(seconds) * 1_000_000_000 + int(nanos)
    return time.time_ns()  # (the kernel always sends it once asked)


def main(argv: list[str] | None = None) -> int:
    """``SECONDS PATH``: capture, then print the counts as one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m loadtest.wire_capture SECONDS PATH\n")
        return 2
    try:
        counts = capture(float(args[0]), args[1])
    except PermissionError:
        sys.stdout.write(json.dumps({"error": "needs CAP_NET_RAW (run as root)"}) + "\n")
        return 1
    sys.stdout.write(json.dumps(counts) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
