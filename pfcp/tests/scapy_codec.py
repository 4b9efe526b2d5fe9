#!/usr/bin/env python3
"""scapy's PFCP layers as an independent encoder/decoder for mecgw's codec tests.

Reads requests, one JSON object per line, on stdin; writes one JSON object per line:
  {"op": "encode", "msg": MSG}  ->  {"hex": "<the datagram scapy builds>"}
  {"op": "decode", "hex": "..."} ->  {"msg": MSG}   (what scapy dissects)
  anything that fails           ->  {"error": "..."}
  {"op": "version"}             ->  {"scapy": "<version>"}

MSG is {"header": {field: value}, "ies": [IE, ...]} where header fields are those of
scapy's PFCP class (version, MP, S, message_type, seid, seq, priority) and an IE is
{"cls": "<scapy class, e.g. IE_NodeId>", "fields": {name: value}, "ies": [IE, ...]}
("ies" only for grouped IEs). Values: numbers and strings as scapy takes them (IP addresses
as text), {"b": "<hex>"} for octets, {"s": "<text>"} for text that scapy holds as octets.

The mapping from mecgw's values to scapy's fields lives in the Rust test, not here: this
helper only builds and dissects what it is told, so scapy's own field layout decides the
bytes.
"""

import json
import sys

try:
    import scapy
    from scapy.contrib import pfcp
    from scapy.packet import NoPayload, Raw
except ImportError as e:  # the Rust test turns this into a failure with this text
    print(json.dumps({"error": f"scapy is not importable ({e}); run: cargo xtask setup"}))
    sys.exit(3)

MESSAGE_CLASS = {
    1: pfcp.PFCPHeartbeatRequest,
    2: pfcp.PFCPHeartbeatResponse,
    5: pfcp.PFCPAssociationSetupRequest,
    6: pfcp.PFCPAssociationSetupResponse,
    7: pfcp.PFCPAssociationUpdateRequest,
    8: pfcp.PFCPAssociationUpdateResponse,
    9: pfcp.PFCPAssociationReleaseRequest,
    10: pfcp.PFCPAssociationReleaseResponse,
    11: pfcp.PFCPVersionNotSupportedResponse,
    50: pfcp.PFCPSessionEstablishmentRequest,
    51: pfcp.PFCPSessionEstablishmentResponse,
    52: pfcp.PFCPSessionModificationRequest,
    53: pfcp.PFCPSessionModificationResponse,
    54: pfcp.PFCPSessionDeletionRequest,
    55: pfcp.PFCPSessionDeletionResponse,
    56: pfcp.PFCPSessionReportRequest,
    57: pfcp.PFCPSessionReportResponse,
}


def value_in(v):
    if isinstance(v, dict):
        if "b" in v:
            return bytes.fromhex(v["b"])
        if "s" in v:
            return v["s"].encode()
    return v


def value_out(v):
    if isinstance(v, (bytes, bytearray)):
        return {"b": bytes(v).hex()}
    if isinstance(v, (list, tuple)):
        return [value_out(x) for x in v]
    if isinstance(v, (int, str)) or v is None:
        return v
    return str(v)


def ie_in(d):
    cls = getattr(pfcp, d["cls"])
    fields = {k: value_in(v) for k, v in d.get("fields", {}).items()}
    if "ies" in d:
        fields["IE_list"] = [ie_in(x) for x in d["ies"]]
    return cls(**fields)


def ie_out(ie):
    out = {"cls": type(ie).__name__, "fields": {}}
    for f in ie.fields_desc:
        if f.name == "IE_list":
            out["ies"] = [ie_out(x) for x in (ie.IE_list or [])]
        elif f.name in ie.fields and ie.fields[f.name] is not None:
            out["fields"][f.name] = value_out(ie.fields[f.name])
    return out


def encode(msg):
    h = {k: value_in(v) for k, v in msg["header"].items()}
    body = MESSAGE_CLASS[h["message_type"]](IE_list=[ie_in(x) for x in msg["ies"]])
    return bytes(pfcp.PFCP(**h) / body).hex()


def decode(hexstr):
    p = pfcp.PFCP(bytes.fromhex(hexstr))
    header = {}
    for f in p.fields_desc:
        if f.name in p.fields and p.fields[f.name] is not None:
            header[f.name] = value_out(p.fields[f.name])
    body = p.payload
    if isinstance(body, NoPayload):  # a message without IEs
        return {"header": header, "ies": []}
    if isinstance(body, Raw) or not hasattr(body, "IE_list"):
        raise ValueError("scapy did not dissect a PFCP message body")
    return {"header": header, "ies": [ie_out(x) for x in (body.IE_list or [])]}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            if req["op"] == "encode":
                resp = {"hex": encode(req["msg"])}
            elif req["op"] == "decode":
                resp = {"msg": decode(req["hex"])}
            elif req["op"] == "version":
                resp = {"scapy": scapy.__version__}
            else:
                resp = {"error": f"unknown op {req['op']!r}"}
        except Exception as e:  # one bad request must not end the session
            resp = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(resp), flush=True)


if __name__ == "__main__":
    main()
