#!/usr/bin/env python3
"""Splits the BGP messages out of a pcap (Ethernet, IPv4/IPv6, TCP port 179) into hex files.

usage: pcap-bgp-messages.py CAPTURE.pcap OUT_DIR ADDR=SESSION...

ADDR is the address speaker A uses for a session; a TCP flow from ADDR is named
SESSION-a2b, the reverse SESSION-b2a. Each message becomes
OUT_DIR/SESSION-DIR-NNN-TYPE.hex (NNN counts the messages of that direction in order).
"""
import ipaddress
import os
import struct
import sys

TYPES = {1: "open", 2: "update", 3: "notification", 4: "keepalive", 5: "route-refresh"}


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise SystemExit("not a pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise SystemExit(f"unsupported link type {linktype}")
    pos = 24
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[pos : pos + 16])
        yield data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl


def tcp_segments(path):
    for frame in packets(path):
        ethertype = struct.unpack(">H", frame[12:14])[0]
        ip = frame[14:]
        if ethertype == 0x0800:
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            if ip[9] != 6:
                continue
            src, dst = ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20])
            tcp = ip[ihl:total]
        elif ethertype == 0x86DD:
            if ip[6] != 6:
                continue
            plen = struct.unpack(">H", ip[4:6])[0]
            src, dst = ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40])
            tcp = ip[40 : 40 + plen]
        else:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        offset = (tcp[12] >> 4) * 4
        flags = tcp[13]
        yield (str(src), sport, str(dst), dport), seq, flags, tcp[offset:]


def streams(path):
    """Reassembled payload of every TCP flow, flows in order of first appearance."""
    flows = {}
    for key, seq, flags, payload in tcp_segments(path):
        flow = flows.setdefault(key, {"isn": None, "segs": {}})
        if flags & 0x02:  # SYN
            flow["isn"] = seq
        if payload:
            flow["segs"].setdefault(seq, payload)
    for key, flow in flows.items():
        if flow["isn"] is None or not flow["segs"]:
            continue
        expected = (flow["isn"] + 1) & 0xFFFFFFFF
        buf = bytearray()
        for seq in sorted(flow["segs"], key=lambda s: (s - expected) & 0xFFFFFFFF):
            payload = flow["segs"][seq]
            skip = (expected - seq) & 0xFFFFFFFF
            if skip >= len(payload):
                continue
            if skip > 0x7FFFFFFF:
                raise SystemExit(f"gap in flow {key}")
            buf += payload[skip:]
            expected = (seq + len(payload)) & 0xFFFFFFFF
        yield key, bytes(buf)


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    pcap, out = sys.argv[1], sys.argv[2]
    sessions = {}
    for arg in sys.argv[3:]:
        addr, name = arg.split("=", 1)
        sessions[str(ipaddress.ip_address(addr))] = name
    counters = {}
    for (src, _, dst, _), data in streams(pcap):
        if src in sessions:
            name = f"{sessions[src]}-a2b"
        elif dst in sessions:
            name = f"{sessions[dst]}-b2a"
        else:
            continue
        pos = 0
        while pos + 19 <= len(data):
            if data[pos : pos + 16] != b"\xff" * 16:
                raise SystemExit(f"{name}: lost BGP framing at offset {pos}")
            length, mtype = struct.unpack(">HB", data[pos + 16 : pos + 19])
            if pos + length > len(data):
                break
            n = counters.get(name, 0)
            counters[name] = n + 1
            fname = f"{name}-{n:03}-{TYPES.get(mtype, 'type%d' % mtype)}.hex"
            with open(os.path.join(out, fname), "w") as f:
                f.write(data[pos : pos + length].hex() + "\n")
            pos += length


if __name__ == "__main__":
    main()
