#!/usr/bin/env python3
"""mecgw-smf: a test SMF (the control plane of N4, 3GPP TS 29.244) built on scapy's PFCP
layers only, for driving mecgw's PFCP endpoint from the testbed's tests and demo.

It is independent of mecgw on purpose: every message it sends is built by scapy
(`scapy.contrib.pfcp`), every answer is dissected by scapy, and nothing of mecgw's own codec
is used. A mistake shared by both sides would otherwise pass unseen.

Run it inside a network namespace (`ip netns exec mecgw-tb-core python3 smf.py ...`). It
speaks JSON lines: one command per line on stdin, one result per line on stdout (logs go to
stderr). While it runs it answers mecgw's Heartbeat Requests and Session Report Requests on
every socket it has (unless told to go silent), and counts them.

    smf.py --local 198.18.2.2 --peer 198.18.2.1 [--port 8805] [--timeout-ms 2000]

Every result has "ok" (false with "error" when the command could not be carried out; a
request mecgw did not answer is not an error: "answered" is false). Commands ("cmd"):

  associate    {recovery_ts?, from?}        Association Setup Request with our Node ID and
                                            Recovery Time Stamp (NTP seconds; default: now).
               -> cause, node_id, recovery_ts, up_features (hex), ftup
  association_update {from?}                -> cause
  release      {from?}                      Association Release Request -> cause
  heartbeat    {recovery_ts?, from?}        -> answered, recovery_ts (mecgw's); a
                                            recovery_ts given is the SMF's from then on
  establish    {name, ue_v4, ue_v6?, gnb, dl_teid, qfi, edge: [prefix...],
                imsi?, msisdn?, imei?, catch_all: {mode: "pass"|"psa", teid?, addr?},
                urr?: {period?, volume_threshold?}, explicit_teid?: {teid, ipv4},
                catch_action?: [flag...], dl_action?: [flag...], dl_source?: "sgi"|"core",
                create_bar?, dangling_far?, mutate?: [...], from?}
               A UL CL session (see build_establishment). Flags are Apply Action's
               (DROP FORW BUFF NOCP DUPL; default FORW). With dl_action lacking FORW the
               downlink FAR has no Outer Header Creation (the gNB's tunnel is not known
               yet, as Open5GS establishes); dl_source "core" puts the downlink PDR on
               Source Interface Core (UE IP Address, no F-TEID: mecgw as the PSA);
               create_bar adds a Create BAR (BAR ID 1) and the downlink FAR's BAR ID.
               -> cause, offending_ie, up_seid,
               up_ipv4, created_pdrs [{pdr_id, teid, ipv4}], teid (the uplink TEID), ipv4
  modify       {name | seid, add_edge?: [prefix], remove_pdr?: [id],
                update_far?: {far_id, mode: "pass"|"psa"|"edge"|"drop"|"gnb"|"buffer",
                              teid?, addr?},
                update_bar?, remove_bar?,
                update_qer?: {qer_id, gate?: {ul, dl: "OPEN"|"CLOSED"}, qfi?},
                remove_qer?: [id], update_urr?: {urr_id, volume_threshold?},
                query_urr?: [id], mutate?}
               -> cause, offending_ie, created_pdrs, usage_reports, pdr_ids (new PDRs)
  delete       {name | seid, mutate?}       -> cause, offending_ie, usage_reports
  retransmit   {}                           resends the last request, same sequence number
               -> answered, identical (byte for byte with the first answer), first, second
  silent       {on: bool}                   stop (or resume) answering mecgw's requests
  restart      {recovery_ts?}               answer mecgw's heartbeats with a new Recovery
                                            Time Stamp from now on (a restart mecgw must
                                            notice by itself)
  raw          {hex, from?, wait_ms?}       sends the bytes as they are
               -> answers [{hex, type, seq, cause, offending_ie}]
  fuzz         {count, seed, from?, associate?, wait_ms?}
               scapy fuzz() of every PFCP message class, then byte mutations of valid
               messages, `count` of each, reproducible from `seed`
               -> sent, answered, by_type, causes, bad_answers, samples
  stats        {}                           counts of what mecgw sent us and we answered
  reports      {name?}                      the usage reports of mecgw's Session Report
                                            Requests, in arrival order
  downlink_reports {name?}                  the Downlink Data Reports of mecgw's Session
                                            Report Requests, in arrival order:
                                            [{session, seid, report_type: [names], pdr_ids}]
  wait         {heartbeat_requests?, report_requests?, usage_reports?,
                downlink_data_reports?, timeout_ms}
               returns once the counts reach these (reached: true) or at the timeout
  add_address  {addr}                       opens another PFCP socket on addr (which must
                                            exist in the namespace), for "from"
  build        {request: COMMAND}           the bytes an associate/heartbeat/establish/
                                            modify/delete/release command would send,
                                            without sending (offline checks) -> hex
  quit         {}

update_far modes: "gnb" forwards to Access with Outer Header Creation to the session's gNB
and downlink TEID, or teid and addr given (the downlink FAR once the gNB's tunnel is
known), "buffer" sets
BUFF|NOCP. update_bar / remove_bar add Update BAR / Remove BAR (BAR ID 1).

Usage reports are {urr_id, ur_seqn, triggers: [names], volume: {total, uplink, downlink,
total_packets, uplink_packets, downlink_packets}, start_time, end_time}.

scapy quirks handled here (scapy 2.8): the header's S flag defaults to 1, so node messages
set S=0; PDN Type "IPv4" is encoded 0 where TS 29.244 §8.2.79 says 1, so the number 1 is
given; dissection ignores the header's length (trailing octets would become IEs), so
datagrams are cut to it first; Volume Measurement lacks the packet-count flags and fields,
so it is read from its octets here; User ID fields are octets, so digits are TBCD-encoded
here (TS 29.274 §8.3).
"""

import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import threading
import time

try:
    from scapy.contrib import pfcp
    from scapy.packet import NoPayload, Raw, fuzz
except ImportError as e:
    print(json.dumps({"ok": False, "error": f"scapy is not importable ({e}); run: cargo xtask setup"}),
          flush=True)
    sys.exit(3)

PFCP_PORT = 8805
# Seconds between 1900-01-01 (NTP era 0) and 1970-01-01.
NTP_OFFSET = 2208988800

# Message types (TS 29.244 Table 7.3-1).
HEARTBEAT_REQUEST = 1
HEARTBEAT_RESPONSE = 2
ASSOCIATION_SETUP_REQUEST = 5
ASSOCIATION_UPDATE_REQUEST = 7
ASSOCIATION_RELEASE_REQUEST = 9
NODE_REPORT_REQUEST = 12
SESSION_REPORT_REQUEST = 56
REQUEST_TYPES = {1, 3, 5, 7, 9, 12, 14, 50, 52, 54, 56}

# IE types (TS 29.244 Table 8.1.2-1) this tool reads or mutates.
IE_CAUSE = 19
IE_OFFENDING = 40
IE_NODE_ID = 60
IE_F_SEID = 57
IE_USAGE_REPORTS = (78, 79, 80)
IE_VOLUME_MEASUREMENT = 66
GROUPED = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 51, 54, 58, 59, 68,
           77, 78, 79, 80, 83, 85, 86, 87, 99, 102, 105, 118, 127, 128, 129, 130, 132, 143, 147}

# Interfaces (§8.2.2, §8.2.24).
ACCESS, CORE, SGI_LAN = 0, 1, 2

# PDR and FAR numbering of a UL CL session (see build_establishment).
EDGE_PDR_BASE = 1
CATCH_ALL_PDR = 100
DOWNLINK_PDR = 200
FAR_EDGE, FAR_CATCH_ALL, FAR_DOWNLINK = 1, 2, 3
URR_ID = 1
QER_ID = 1
BAR_ID = 1
EDGE_PRECEDENCE = 10
CATCH_ALL_PRECEDENCE = 1000
DOWNLINK_PRECEDENCE = 2000

# Usage Report Trigger flags (§8.2.41), octet 5 bit 1 first.
TRIGGER_NAMES = ["PERIO", "VOLTH", "TIMTH", "QUHTI", "START", "STOPT", "DROTH", "IMMER",
                 "VOLQU", "TIMQU", "LIUSA", "TERMR", "MONIT", "ENVCL", "MACAR", "EVETH",
                 "EVEQU", "TEBUR", "IPMJL", "QUVTI", "EMRRE", "UPINT"]


def log(*args):
    print("mecgw-smf:", *args, file=sys.stderr, flush=True)


def ntp_now():
    return int(time.time()) + NTP_OFFSET


def apply_action(flags):
    """Apply Action (§8.2.26) with the named flags set (DROP FORW BUFF NOCP DUPL)."""
    unknown = set(flags) - {"DROP", "FORW", "BUFF", "NOCP", "DUPL"}
    if unknown:
        raise ValueError(f"unknown Apply Action flags {sorted(unknown)}")
    return pfcp.IE_ApplyAction(**{f: 1 for f in flags})


def tbcd(digits):
    """TBCD (TS 29.274 §8.3): two digits an octet, the first in the low nibble, 0xF filler."""
    digits = str(digits)
    if not digits.isdigit():
        raise ValueError(f"{digits!r} is not a string of digits")
    if len(digits) % 2:
        digits += "f"
    return bytes(int(digits[i + 1], 16) << 4 | int(digits[i]) for i in range(0, len(digits), 2))


# ------------------------------------------------------------------------------------------
# The header and the TLV layer, read by hand: what scapy's dissector cannot be trusted with
# (the header's length, mutations below the IE level).

def read_header(data):
    """The PFCP header of a datagram: dict with version, s, mp, type, length, seid, seq,
    header_len; None if it is too short for one."""
    if len(data) < 8:
        return None
    flags, mtype, length = struct.unpack("!BBH", data[:4])
    s = flags & 1
    header_len = 16 if s else 8
    if len(data) < header_len:
        return None
    seid = struct.unpack("!Q", data[4:12])[0] if s else None
    seq_at = 12 if s else 4
    seq = int.from_bytes(data[seq_at:seq_at + 3], "big")
    return {"version": flags >> 5, "s": s, "mp": (flags >> 1) & 1, "type": mtype,
            "length": length, "seid": seid, "seq": seq, "header_len": header_len}


def tlv_parse(data):
    """The IEs of `data` as [type, value-or-children] (grouped IEs opened); raises on a
    truncated IE."""
    out = []
    i = 0
    while i < len(data):
        if i + 4 > len(data):
            raise ValueError("truncated IE header")
        t, n = struct.unpack("!HH", data[i:i + 4])
        v = data[i + 4:i + 4 + n]
        if len(v) != n:
            raise ValueError(f"IE {t} claims {n} octets, {len(v)} left")
        out.append([t, tlv_parse(v) if t in GROUPED else v])
        i += 4 + n
    return out


def tlv_build(ies):
    out = b""
    for t, v in ies:
        body = tlv_build(v) if isinstance(v, list) else v
        out += struct.pack("!HH", t, len(body)) + body
    return out


def mutate(datagram, mutations):
    """Applies named mutations to a message's IEs, fixing every enclosing length:
    {"omit": PATH} removes the IE; {"bad_length": PATH} cuts its value to fewer octets than its
    fixed part (an invalid length); {"replace": PATH, "hex": HEX} replaces its value. PATH is
    an IE type or a list of types (the first IE of each type, nesting down)."""
    h = read_header(datagram)
    hl = h["header_len"]
    ies = tlv_parse(datagram[hl:])
    for m in mutations:
        (kind, path), = [(k, v) for k, v in m.items() if k != "hex"]
        path = path if isinstance(path, list) else [path]
        parent = ies
        for t in path[:-1]:
            parent = next(v for tt, v in parent if tt == t)
        idx = next(i for i, (tt, _) in enumerate(parent) if tt == path[-1])
        if kind == "omit":
            del parent[idx]
        elif kind == "bad_length":
            v = parent[idx][1]
            if isinstance(v, list):
                v = tlv_build(v)
            # Shorter than any fixed part the IE has (1 octet left, or none).
            parent[idx][1] = v[:1] if len(v) > 1 else b""
        elif kind == "replace":
            parent[idx][1] = bytes.fromhex(m["hex"])
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    body = tlv_build(ies)
    head = bytearray(datagram[:hl])
    struct.pack_into("!H", head, 2, len(head) - 4 + len(body))
    return bytes(head) + body


# ------------------------------------------------------------------------------------------
# Reading answers with scapy.

def dissect(data):
    """scapy's dissection of one datagram, cut to its header's length first."""
    h = read_header(data)
    if h is None:
        raise ValueError("shorter than a PFCP header")
    if h["length"] + 4 > len(data):
        raise ValueError(f"header length {h['length']} exceeds the datagram ({len(data)})")
    p = pfcp.PFCP(data[:h["length"] + 4])
    body = p.payload
    if isinstance(body, NoPayload):
        return p, []
    if isinstance(body, Raw) or not hasattr(body, "IE_list"):
        raise ValueError("scapy did not dissect the message body")
    return p, list(body.IE_list or [])


def find(ies, cls):
    return [ie for ie in ies if isinstance(ie, cls)]


def first(ies, cls):
    found = find(ies, cls)
    return found[0] if found else None


def volume_measurement(ie):
    """Volume Measurement (§8.2.44) from its octets: scapy has no packet counts."""
    raw = bytes(ie)[4:]
    flags = raw[0]
    out = {}
    at = 1
    for bit, name in ((1, "total"), (2, "uplink"), (4, "downlink"),
                      (8, "total_packets"), (16, "uplink_packets"), (32, "downlink_packets")):
        if flags & bit:
            out[name] = struct.unpack("!Q", raw[at:at + 8])[0]
            at += 8
    return out


def usage_report(ie):
    ies = ie.IE_list or []
    rep = {"urr_id": None, "ur_seqn": None, "triggers": [], "volume": None,
           "start_time": None, "end_time": None}
    for sub in ies:
        if isinstance(sub, pfcp.IE_URR_Id):
            rep["urr_id"] = sub.id
        elif isinstance(sub, pfcp.IE_UR_SEQN):
            rep["ur_seqn"] = sub.number
        elif isinstance(sub, pfcp.IE_UsageReportTrigger):
            # scapy knows two octets of the three: read them all here.
            raw = bytes(sub)[4:]
            word = int.from_bytes(raw[:3], "little")
            rep["triggers"] = [n for i, n in enumerate(TRIGGER_NAMES) if word >> i & 1]
        elif isinstance(sub, pfcp.IE_VolumeMeasurement):
            rep["volume"] = volume_measurement(sub)
        elif isinstance(sub, pfcp.IE_StartTime):
            rep["start_time"] = sub.timestamp
        elif isinstance(sub, pfcp.IE_EndTime):
            rep["end_time"] = sub.timestamp
    return rep


def fteid(ie):
    return {"teid": ie.TEID if ie.CH == 0 else None,
            "ipv4": ie.ipv4 if ie.V4 and ie.CH == 0 else None,
            "ipv6": ie.ipv6 if ie.V6 and ie.CH == 0 else None,
            "choose": bool(ie.CH)}


def summary(data):
    """What an answer says, as far as this tool reads it (never raises)."""
    out = {"hex": data.hex()}
    h = read_header(data)
    if h is None:
        out["error"] = "shorter than a PFCP header"
        return out
    out.update(type=h["type"], seq=h["seq"], seid=h["seid"], version=h["version"])
    try:
        p, ies = dissect(data)
    except Exception as e:  # a malformed answer is reported, not fatal
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    cause = first(ies, pfcp.IE_Cause)
    out["cause"] = cause.cause if cause is not None else None
    off = first(ies, pfcp.IE_OffendingIE)
    out["offending_ie"] = off.type if off is not None else None
    out["ies"] = ies
    return out


def clean(d):
    """`d` without the scapy objects (for JSON)."""
    return {k: v for k, v in d.items() if k != "ies"}


# ------------------------------------------------------------------------------------------
# Sockets: every one has a receiver thread that answers mecgw's requests and hands answers
# to the waiting command.

class Endpoint:
    def __init__(self, smf, addr, port):
        self.smf = smf
        self.addr = addr
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((addr, port))
        self.port = self.sock.getsockname()[1]
        self.cond = threading.Condition()
        # Answers by sequence number: the latest, and every one seen while collecting.
        self.answers = {}
        self.collect = None
        threading.Thread(target=self.receive, daemon=True).start()

    def receive(self):
        while True:
            try:
                data, sender = self.sock.recvfrom(65535)
            except OSError:
                return
            h = read_header(data)
            if h is not None and h["type"] in REQUEST_TYPES:
                self.smf.on_request(self, data, h, sender)
                continue
            with self.cond:
                if self.collect is not None:
                    self.collect.append(data)
                if h is not None:
                    self.answers[h["seq"]] = data
                self.cond.notify_all()

    def send(self, data, to):
        self.sock.sendto(data, to)

    def request(self, data, to, timeout):
        """Sends `data` and waits for the answer with its sequence number."""
        seq = read_header(data)["seq"]
        with self.cond:
            self.answers.pop(seq, None)
        self.send(data, to)
        deadline = time.monotonic() + timeout
        with self.cond:
            while seq not in self.answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.answers.pop(seq)


class Smf:
    def __init__(self, args):
        self.local = args.local
        self.node_id = args.node_id or args.local
        self.peer = (args.peer, args.peer_port)
        self.timeout = args.timeout_ms / 1000.0
        self.recovery_ts = ntp_now()
        self.lock = threading.Lock()
        self.endpoints = {args.local: Endpoint(self, args.local, args.port)}
        self.port = args.port
        # A restarted SMF must not reuse its predecessor's sequence numbers: a UP function
        # answers a (peer, sequence) it saw recently from its retransmission cache.
        self.seq = random.SystemRandom().randrange(1, 1 << 23)
        self.next_seid = 0x5EED0000_00000001
        self.sessions = {}     # name -> session state
        self.by_cp_seid = {}   # our SEID -> name
        self.silent = False
        self.last = None       # (endpoint, bytes, first answer) of the last request
        self.counts = {"heartbeat_requests": 0, "heartbeats_answered": 0,
                       "report_requests": 0, "reports_answered": 0, "other_requests": 0,
                       "ignored_while_silent": 0}
        self.requests_by_type = {}
        self.mecgw_recovery_ts = None
        self.reports = []      # usage reports from Session Report Requests
        self.downlink_reports = []  # Downlink Data Reports from Session Report Requests

    # -- helpers ---------------------------------------------------------------------------

    def endpoint(self, cmd):
        addr = cmd.get("from") or self.local
        if addr not in self.endpoints:
            raise ValueError(f"no socket on {addr}: add_address first")
        return self.endpoints[addr]

    def next_seq(self):
        with self.lock:
            self.seq = self.seq % 0xFFFFFF + 1
            return self.seq

    def node_id_ie(self, addr=None):
        addr = addr or self.node_id
        if ":" in addr:
            return pfcp.IE_NodeId(id_type="IPv6", ipv6=addr)
        try:
            ipaddress.IPv4Address(addr)
            return pfcp.IE_NodeId(id_type="IPv4", ipv4=addr)
        except ValueError:
            return pfcp.IE_NodeId(id_type="FQDN", id=addr.encode())

    def node_message(self, body, seq=None):
        # scapy's S flag defaults to 1: node messages must clear it (TS 29.244 §7.2.2.1).
        return bytes(pfcp.PFCP(version=1, S=0, seq=seq or self.next_seq()) / body)

    def session_message(self, body, seid, seq=None):
        return bytes(pfcp.PFCP(version=1, S=1, seid=seid, seq=seq or self.next_seq()) / body)

    def exchange(self, ep, data):
        answer = ep.request(data, self.peer, self.timeout)
        self.last = (ep, data, answer)
        return answer

    # -- mecgw's requests ------------------------------------------------------------------

    def on_request(self, ep, data, h, sender):
        with self.lock:
            self.requests_by_type[h["type"]] = self.requests_by_type.get(h["type"], 0) + 1
            silent = self.silent
        if h["type"] == HEARTBEAT_REQUEST:
            with self.lock:
                self.counts["heartbeat_requests"] += 1
            try:
                _, ies = dissect(data)
                rts = first(ies, pfcp.IE_RecoveryTimeStamp)
                if rts is not None:
                    self.mecgw_recovery_ts = rts.timestamp
            except Exception as e:
                log(f"undissectable heartbeat request from {sender}: {e}")
            if silent:
                with self.lock:
                    self.counts["ignored_while_silent"] += 1
                return
            answer = self.node_message(pfcp.PFCPHeartbeatResponse(
                IE_list=[pfcp.IE_RecoveryTimeStamp(timestamp=self.recovery_ts)]), seq=h["seq"])
            ep.send(answer, sender)
            with self.lock:
                self.counts["heartbeats_answered"] += 1
        elif h["type"] == SESSION_REPORT_REQUEST:
            with self.lock:
                self.counts["report_requests"] += 1
            name = self.by_cp_seid.get(h["seid"])
            try:
                _, ies = dissect(data)
                rt = first(ies, pfcp.IE_ReportType)
                report_type = [n for n in ("DLDR", "USAR", "ERIR", "UPIR")
                               if rt is not None and getattr(rt, n)]
                for ie in ies:
                    if isinstance(ie, pfcp.IE_DownlinkDataReport):
                        pdr_ids = [sub.id for sub in (ie.IE_list or [])
                                   if isinstance(sub, pfcp.IE_PDR_Id)]
                        with self.lock:
                            self.downlink_reports.append(
                                {"session": name, "seid": h["seid"],
                                 "report_type": report_type, "pdr_ids": pdr_ids})
                    if isinstance(ie, pfcp.IE_UsageReport_SRR):
                        rep = usage_report(ie)
                        rep["session"] = name
                        rep["seid"] = h["seid"]
                        with self.lock:
                            self.reports.append(rep)
            except Exception as e:
                log(f"undissectable session report request from {sender}: {e}")
            if silent:
                with self.lock:
                    self.counts["ignored_while_silent"] += 1
                return
            if name is None:
                # Unknown SEID: Cause 65, and SEID 0 in the header (§7.2.2.4.2).
                answer = self.session_message(pfcp.PFCPSessionReportResponse(
                    IE_list=[pfcp.IE_Cause(cause=65)]), 0, seq=h["seq"])
            else:
                answer = self.session_message(pfcp.PFCPSessionReportResponse(
                    IE_list=[pfcp.IE_Cause(cause=1)]), self.sessions[name]["up_seid"],
                    seq=h["seq"])
            ep.send(answer, sender)
            with self.lock:
                self.counts["reports_answered"] += 1
        else:
            # Association Update/Release, Node Report from the UP function: accepted.
            with self.lock:
                self.counts["other_requests"] += 1
            if silent:
                return
            body = {ASSOCIATION_UPDATE_REQUEST: pfcp.PFCPAssociationUpdateResponse,
                    ASSOCIATION_RELEASE_REQUEST: pfcp.PFCPAssociationReleaseResponse,
                    NODE_REPORT_REQUEST: pfcp.PFCPNodeReportResponse}.get(h["type"])
            if body is not None:
                ep.send(self.node_message(body(IE_list=[self.node_id_ie(ep.addr),
                                                         pfcp.IE_Cause(cause=1)]),
                                          seq=h["seq"]), sender)

    # -- node procedures -------------------------------------------------------------------

    def build_associate(self, cmd):
        ep = self.endpoint(cmd)
        ts = cmd.get("recovery_ts")
        if ts is not None and ep.addr == self.local:
            self.recovery_ts = ts
        return self.node_message(pfcp.PFCPAssociationSetupRequest(IE_list=[
            self.node_id_ie(ep.addr if ep.addr != self.local else None),
            pfcp.IE_RecoveryTimeStamp(timestamp=ts if ts is not None else self.recovery_ts),
        ]))

    def cmd_associate(self, cmd):
        answer = self.exchange(self.endpoint(cmd), self.build_associate(cmd))
        if answer is None:
            return {"answered": False}
        s = summary(answer)
        out = clean(s)
        out["answered"] = True
        ies = s.get("ies", [])
        nid = first(ies, pfcp.IE_NodeId)
        if nid is not None:
            out["node_id"] = {0: nid.ipv4, 1: nid.ipv6}.get(nid.id_type) or (
                nid.id.decode() if isinstance(nid.id, bytes) else nid.id)
        rts = first(ies, pfcp.IE_RecoveryTimeStamp)
        out["recovery_ts"] = rts.timestamp if rts is not None else None
        upf = first(ies, pfcp.IE_UPFunctionFeatures)
        if upf is not None:
            raw = bytes(upf)[4:]
            out["up_features"] = raw.hex()
            # FTUP is bit 5 of octet 5 (§8.2.25).
            out["ftup"] = bool(raw and raw[0] & 0x10)
        return out

    def build_association_update(self, cmd):
        ep = self.endpoint(cmd)
        return self.node_message(pfcp.PFCPAssociationUpdateRequest(
            IE_list=[self.node_id_ie(ep.addr if ep.addr != self.local else None)]))

    def cmd_association_update(self, cmd):
        return self.answer_of(self.exchange(self.endpoint(cmd), self.build_association_update(cmd)))

    def build_release(self, cmd):
        ep = self.endpoint(cmd)
        return self.node_message(pfcp.PFCPAssociationReleaseRequest(
            IE_list=[self.node_id_ie(ep.addr if ep.addr != self.local else None)]))

    def cmd_release(self, cmd):
        return self.answer_of(self.exchange(self.endpoint(cmd), self.build_release(cmd)))

    def build_heartbeat(self, cmd):
        ts = cmd.get("recovery_ts", self.recovery_ts)
        if "recovery_ts" in cmd and self.endpoint(cmd).addr == self.local:
            # A new time stamp says the SMF restarted: it answers with it from now on.
            self.recovery_ts = ts
        return self.node_message(pfcp.PFCPHeartbeatRequest(
            IE_list=[pfcp.IE_RecoveryTimeStamp(timestamp=ts)]))

    def cmd_heartbeat(self, cmd):
        answer = self.exchange(self.endpoint(cmd), self.build_heartbeat(cmd))
        if answer is None:
            return {"answered": False}
        s = summary(answer)
        out = clean(s)
        out["answered"] = True
        rts = first(s.get("ies", []), pfcp.IE_RecoveryTimeStamp)
        out["recovery_ts"] = rts.timestamp if rts is not None else None
        return out

    @staticmethod
    def answer_of(answer):
        if answer is None:
            return {"answered": False}
        out = clean(summary(answer))
        out["answered"] = True
        return out

    # -- session procedures ----------------------------------------------------------------

    @staticmethod
    def ue_ip(session, destination):
        """UE IP Address (§8.2.62): S/D set for a destination (downlink PDRs)."""
        v4, v6 = session.get("ue_v4"), session.get("ue_v6")
        ie = pfcp.IE_UE_IP_Address(SD=1 if destination else 0, V4=1 if v4 else 0,
                                   V6=1 if v6 else 0)
        if v4:
            ie.ipv4 = v4
        if v6:
            ie.ipv6 = str(ipaddress.IPv6Network(v6, strict=False).network_address)
        return ie

    @staticmethod
    def local_fteid(session):
        """The uplink PDRs' local F-TEID: CHOOSE (one CHOOSE ID, so all share one TEID), the
        one mecgw chose (modifications), or an explicit one the test gives."""
        explicit = session.get("explicit_teid")
        if explicit:
            return pfcp.IE_FTEID(V4=1, TEID=explicit["teid"], ipv4=explicit["ipv4"])
        if session.get("teid") is not None:
            return pfcp.IE_FTEID(V4=1, TEID=session["teid"], ipv4=session["ipv4"])
        if session.get("choose_id", True):
            return pfcp.IE_FTEID(CH=1, CHID=1, V4=1, choose_id=1)
        return pfcp.IE_FTEID(CH=1, V4=1)

    def edge_pdr(self, session, pdr_id, precedence, prefix):
        return pfcp.IE_CreatePDR(IE_list=[
            pfcp.IE_PDR_Id(id=pdr_id),
            pfcp.IE_Precedence(precedence=precedence),
            pfcp.IE_PDI(IE_list=[
                pfcp.IE_SourceInterface(interface=ACCESS),
                self.local_fteid(session),
                self.ue_ip(session, destination=False),
                pfcp.IE_SDF_Filter(FD=1, flow_description=f"permit out ip from {prefix} to assigned"),
            ]),
            # GTP-U/UDP/IPv4 (§8.2.64): decapsulated towards the local services.
            pfcp.IE_OuterHeaderRemoval(header=0),
            pfcp.IE_FAR_Id(id=session.get("dangling_far_id", FAR_EDGE)),
            pfcp.IE_URR_Id(id=URR_ID),
            pfcp.IE_QER_Id(id=QER_ID),
        ])

    @staticmethod
    def catch_all_params(catch_all):
        """Forwarding Parameters of the catch-all FAR: towards the core, unchanged ("pass")
        or re-tunnelled to the PSA ("psa")."""
        params = [pfcp.IE_DestinationInterface(interface=CORE)]
        if catch_all.get("mode") == "psa":
            params.append(pfcp.IE_OuterHeaderCreation(GTPUUDPIPV4=1, TEID=catch_all["teid"],
                                                      ipv4=catch_all["addr"]))
        return params

    def build_establishment(self, session, seq=None):
        """A UL CL session (REFERENCE.md §1): one uplink PDR per edge prefix (SDF filter,
        outer header removal, FAR to SGi-LAN/N6-LAN), a lower-precedence uplink catch-all
        (FAR to Core, unchanged or re-tunnelled to the PSA), and a downlink PDR on SGi-LAN
        matching the UE address (FAR to Access with outer header creation towards the gNB);
        one URR and one QER linked to all of them."""
        catch_all = session.get("catch_all", {"mode": "pass"})
        pdrs = []
        for i, prefix in enumerate(session.get("edge", [])):
            pdrs.append(self.edge_pdr(session, EDGE_PDR_BASE + i, EDGE_PRECEDENCE + i, prefix))
        catch = [
            pfcp.IE_PDR_Id(id=CATCH_ALL_PDR),
            pfcp.IE_Precedence(precedence=CATCH_ALL_PRECEDENCE),
            pfcp.IE_PDI(IE_list=[
                pfcp.IE_SourceInterface(interface=ACCESS),
                self.local_fteid(session),
                self.ue_ip(session, destination=False),
            ]),
        ]
        if catch_all.get("mode") == "psa":
            catch.append(pfcp.IE_OuterHeaderRemoval(header=0))
        catch += [pfcp.IE_FAR_Id(id=FAR_CATCH_ALL), pfcp.IE_URR_Id(id=URR_ID),
                  pfcp.IE_QER_Id(id=QER_ID)]
        pdrs.append(pfcp.IE_CreatePDR(IE_list=catch))
        dl_source = CORE if session.get("dl_source") == "core" else SGI_LAN
        pdrs.append(pfcp.IE_CreatePDR(IE_list=[
            pfcp.IE_PDR_Id(id=DOWNLINK_PDR),
            pfcp.IE_Precedence(precedence=DOWNLINK_PRECEDENCE),
            pfcp.IE_PDI(IE_list=[
                pfcp.IE_SourceInterface(interface=dl_source),
                self.ue_ip(session, destination=True),
            ]),
            pfcp.IE_FAR_Id(id=FAR_DOWNLINK),
            pfcp.IE_URR_Id(id=URR_ID),
            pfcp.IE_QER_Id(id=QER_ID),
        ]))
        catch_action = apply_action(session.get("catch_action", ["FORW"]))
        dl_flags = session.get("dl_action", ["FORW"])
        dl_params = [pfcp.IE_DestinationInterface(interface=ACCESS)]
        if "FORW" in dl_flags:
            dl_params.append(pfcp.IE_OuterHeaderCreation(GTPUUDPIPV4=1, TEID=session["dl_teid"],
                                                         ipv4=session["gnb"]))
        dl_far = [pfcp.IE_FAR_Id(id=FAR_DOWNLINK), apply_action(dl_flags),
                  pfcp.IE_ForwardingParameters(IE_list=dl_params)]
        if session.get("create_bar"):
            dl_far.append(pfcp.IE_BAR_Id(id=BAR_ID))
        fars = [
            pfcp.IE_CreateFAR(IE_list=[
                pfcp.IE_FAR_Id(id=FAR_EDGE),
                pfcp.IE_ApplyAction(FORW=1),
                pfcp.IE_ForwardingParameters(IE_list=[
                    pfcp.IE_DestinationInterface(interface=SGI_LAN)]),
            ]),
            pfcp.IE_CreateFAR(IE_list=[
                pfcp.IE_FAR_Id(id=FAR_CATCH_ALL),
                catch_action,
                pfcp.IE_ForwardingParameters(IE_list=self.catch_all_params(catch_all)),
            ]),
            pfcp.IE_CreateFAR(IE_list=dl_far),
        ]
        urr = session.get("urr") or {}
        triggers = pfcp.IE_ReportingTriggers(
            periodic_reporting=1 if urr.get("period") else 0,
            volume_threshold=1 if urr.get("volume_threshold") else 0)
        urr_ies = [pfcp.IE_URR_Id(id=URR_ID), pfcp.IE_MeasurementMethod(VOLUM=1), triggers]
        if urr.get("period"):
            urr_ies.append(pfcp.IE_MeasurementPeriod(period=urr["period"]))
        if urr.get("volume_threshold"):
            urr_ies.append(pfcp.IE_VolumeThreshold(TOVOL=1, total=urr["volume_threshold"]))
        qer = pfcp.IE_CreateQER(IE_list=[
            pfcp.IE_QER_Id(id=QER_ID),
            pfcp.IE_GateStatus(ul="OPEN", dl="OPEN"),
            pfcp.IE_QFI(QFI=session.get("qfi", 9)),
        ])
        ies = [self.node_id_ie(session.get("node_id")),
               pfcp.IE_FSEID(v4=1, seid=session["cp_seid"], ipv4=session.get("cp_addr", self.local))]
        ies += pdrs + fars + [pfcp.IE_CreateURR(IE_list=urr_ies), qer]
        if session.get("create_bar"):
            # As Open5GS: a BAR for the downlink FAR, with a suggested buffer.
            ies.append(pfcp.IE_Create_BAR(IE_list=[
                pfcp.IE_BAR_Id(id=BAR_ID),
                pfcp.IE_SuggestedBufferingPacketsCount(count=10),
            ]))
        # PDN Type IPv4 is 1 in TS 29.244 §8.2.79 (scapy's "IPv4" is 0), IPv4v6 is 3.
        ies.append(pfcp.IE_PDNType(pdn_type=3 if session.get("ue_v6") and session.get("ue_v4")
                                   else 2 if session.get("ue_v6") else 1))
        ident = {}
        if session.get("imsi"):
            ident.update(IMSIF=1, imsi=tbcd(session["imsi"]))
        if session.get("imei"):
            ident.update(IMEIF=1, imei=tbcd(session["imei"]))
        if session.get("msisdn"):
            ident.update(MSISDNF=1, msisdn=tbcd(session["msisdn"]))
        if ident:
            ies.append(pfcp.IE_UserId(**ident))
        # The header's SEID is 0: mecgw has none for the session yet (§7.2.2.4.2).
        data = self.session_message(pfcp.PFCPSessionEstablishmentRequest(IE_list=ies),
                                    session.get("header_seid", 0), seq=seq)
        if session.get("mutate"):
            data = mutate(data, session["mutate"])
        return data

    def new_session(self, cmd):
        session = dict(cmd)
        session.pop("cmd", None)
        if session.get("dangling_far"):
            session["dangling_far_id"] = 99
        with self.lock:
            session["cp_seid"] = self.next_seid
            self.next_seid += 1
        ep = self.endpoint(cmd)
        session["cp_addr"] = ep.addr
        if ep.addr != self.local:
            session.setdefault("node_id", ep.addr)
        session["next_pdr"] = EDGE_PDR_BASE + len(session.get("edge", []))
        return session

    def cmd_establish(self, cmd):
        name = cmd.get("name")
        if not name:
            raise ValueError("establish needs a name")
        session = self.new_session(cmd)
        ep = self.endpoint(cmd)
        data = self.build_establishment(session)
        answer = self.exchange(ep, data)
        if answer is None:
            return {"answered": False}
        s = summary(answer)
        out = clean(s)
        out["answered"] = True
        ies = s.get("ies", [])
        created = []
        for c in find(ies, pfcp.IE_CreatedPDR):
            sub = c.IE_list or []
            pid = first(sub, pfcp.IE_PDR_Id)
            ft = first(sub, pfcp.IE_FTEID)
            entry = {"pdr_id": pid.id if pid is not None else None}
            if ft is not None:
                entry.update(fteid(ft))
            created.append(entry)
        out["created_pdrs"] = created
        fseid = first(ies, pfcp.IE_FSEID)
        if fseid is not None:
            out["up_seid"] = fseid.seid
            out["up_ipv4"] = fseid.ipv4 if fseid.v4 else None
        teids = {(c.get("teid"), c.get("ipv4")) for c in created if c.get("teid") is not None}
        if len(teids) == 1:
            out["teid"], out["ipv4"] = teids.pop()
        elif len(teids) > 1:
            out["teids"] = sorted(t for t, _ in teids)
        if out.get("cause") == 1 and fseid is not None:
            session["up_seid"] = fseid.seid
            session["teid"] = out.get("teid")
            session["ipv4"] = out.get("ipv4")
            with self.lock:
                self.sessions[name] = session
                self.by_cp_seid[session["cp_seid"]] = name
        out["cp_seid"] = session["cp_seid"]
        return out

    def session_of(self, cmd):
        name = cmd.get("name")
        if name is not None:
            if name not in self.sessions:
                raise ValueError(f"no established session {name!r}")
            return self.sessions[name]
        if "seid" in cmd:
            return {"up_seid": cmd["seid"], "edge": [], "next_pdr": EDGE_PDR_BASE}
        raise ValueError("name or seid needed")

    def build_modification(self, cmd):
        session = self.session_of(cmd)
        ies = []
        for pid in cmd.get("remove_pdr", []):
            ies.append(pfcp.IE_RemovePDR(IE_list=[pfcp.IE_PDR_Id(id=pid)]))
        new_pdrs = []
        for prefix in cmd.get("add_edge", []):
            pid = session["next_pdr"]
            session["next_pdr"] += 1
            new_pdrs.append(pid)
            ies.append(self.edge_pdr(session, pid, EDGE_PRECEDENCE + pid, prefix))
        far = cmd.get("update_far")
        if far:
            mode = far.get("mode")
            sub = [pfcp.IE_FAR_Id(id=far["far_id"])]
            if mode == "drop":
                sub.append(pfcp.IE_ApplyAction(DROP=1))
            elif mode == "buffer":
                sub.append(pfcp.IE_ApplyAction(BUFF=1, NOCP=1))
            elif mode == "gnb":
                sub.append(pfcp.IE_ApplyAction(FORW=1))
                sub.append(pfcp.IE_UpdateForwardingParameters(IE_list=[
                    pfcp.IE_DestinationInterface(interface=ACCESS),
                    pfcp.IE_OuterHeaderCreation(GTPUUDPIPV4=1,
                                                TEID=far.get("teid", session.get("dl_teid")),
                                                ipv4=far.get("addr", session.get("gnb"))),
                ]))
            else:
                sub.append(pfcp.IE_ApplyAction(FORW=1))
                if mode == "edge":
                    params = [pfcp.IE_DestinationInterface(interface=SGI_LAN)]
                else:
                    params = self.catch_all_params(far)
                sub.append(pfcp.IE_UpdateForwardingParameters(IE_list=params))
            ies.append(pfcp.IE_UpdateFAR(IE_list=sub))
        qer = cmd.get("update_qer")
        if qer:
            sub = [pfcp.IE_QER_Id(id=qer["qer_id"])]
            if "gate" in qer:
                sub.append(pfcp.IE_GateStatus(ul=qer["gate"].get("ul", "OPEN"),
                                              dl=qer["gate"].get("dl", "OPEN")))
            if "qfi" in qer:
                sub.append(pfcp.IE_QFI(QFI=qer["qfi"]))
            ies.append(pfcp.IE_UpdateQER(IE_list=sub))
        if cmd.get("update_bar"):
            ies.append(pfcp.IE_Update_BAR_SMR(IE_list=[
                pfcp.IE_BAR_Id(id=BAR_ID), pfcp.IE_SuggestedBufferingPacketsCount(count=5)]))
        if cmd.get("remove_bar"):
            ies.append(pfcp.IE_Remove_BAR(IE_list=[pfcp.IE_BAR_Id(id=BAR_ID)]))
        for qid in cmd.get("remove_qer", []):
            ies.append(pfcp.IE_RemoveQER(IE_list=[pfcp.IE_QER_Id(id=qid)]))
        urr = cmd.get("update_urr")
        if urr:
            sub = [pfcp.IE_URR_Id(id=urr["urr_id"])]
            if "volume_threshold" in urr:
                sub.append(pfcp.IE_VolumeThreshold(TOVOL=1, total=urr["volume_threshold"]))
            ies.append(pfcp.IE_UpdateURR(IE_list=sub))
        for uid in cmd.get("query_urr", []):
            ies.append(pfcp.IE_QueryURR(IE_list=[pfcp.IE_URR_Id(id=uid)]))
        data = self.session_message(pfcp.PFCPSessionModificationRequest(IE_list=ies),
                                    session["up_seid"])
        if cmd.get("mutate"):
            data = mutate(data, cmd["mutate"])
        return data, new_pdrs

    def cmd_modify(self, cmd):
        data, new_pdrs = self.build_modification(cmd)
        answer = self.exchange(self.endpoint(cmd), data)
        if answer is None:
            return {"answered": False}
        s = summary(answer)
        out = clean(s)
        out["answered"] = True
        out["pdr_ids"] = new_pdrs
        ies = s.get("ies", [])
        out["usage_reports"] = [usage_report(u) for u in find(ies, pfcp.IE_UsageReport_SMR)]
        out["created_pdrs"] = []
        for c in find(ies, pfcp.IE_CreatedPDR):
            sub = c.IE_list or []
            pid = first(sub, pfcp.IE_PDR_Id)
            ft = first(sub, pfcp.IE_FTEID)
            entry = {"pdr_id": pid.id if pid is not None else None}
            if ft is not None:
                entry.update(fteid(ft))
            out["created_pdrs"].append(entry)
        return out

    def build_deletion(self, cmd):
        session = self.session_of(cmd)
        data = self.session_message(pfcp.PFCPSessionDeletionRequest(IE_list=[]),
                                    session["up_seid"])
        if cmd.get("mutate"):
            data = mutate(data, cmd["mutate"])
        return data

    def cmd_delete(self, cmd):
        answer = self.exchange(self.endpoint(cmd), self.build_deletion(cmd))
        if answer is None:
            return {"answered": False}
        s = summary(answer)
        out = clean(s)
        out["answered"] = True
        out["usage_reports"] = [usage_report(u) for u in find(s.get("ies", []),
                                                               pfcp.IE_UsageReport_SDR)]
        name = cmd.get("name")
        if out.get("cause") == 1 and name in self.sessions:
            with self.lock:
                self.by_cp_seid.pop(self.sessions[name]["cp_seid"], None)
                del self.sessions[name]
        return out

    # -- retransmission, silence, raw bytes ------------------------------------------------

    def cmd_retransmit(self, cmd):
        if self.last is None:
            raise ValueError("no request sent yet")
        ep, data, first_answer = self.last
        second = ep.request(data, self.peer, self.timeout)
        return {"answered": second is not None,
                "identical": first_answer is not None and second == first_answer,
                "first": first_answer.hex() if first_answer else None,
                "second": second.hex() if second else None,
                "request": data.hex()}

    def cmd_restart(self, cmd):
        """Claims a restart without a word: the new Recovery Time Stamp only shows in the
        answers to mecgw's heartbeats."""
        self.recovery_ts = int(cmd.get("recovery_ts", ntp_now()))
        return {"recovery_ts": self.recovery_ts}

    def cmd_silent(self, cmd):
        with self.lock:
            self.silent = bool(cmd.get("on", True))
        return {"silent": self.silent}

    def collect(self, ep, send, wait):
        """Sends with `send()` while collecting every answer on `ep`; waits `wait` seconds
        after the last send. Returns the answers."""
        with ep.cond:
            ep.collect = []
        try:
            send()
            time.sleep(wait)
        finally:
            with ep.cond:
                got, ep.collect = ep.collect, None
        return got

    def cmd_raw(self, cmd):
        ep = self.endpoint(cmd)
        data = bytes.fromhex(cmd["hex"])
        got = self.collect(ep, lambda: ep.send(data, self.peer), cmd.get("wait_ms", 500) / 1000)
        return {"answers": [clean(summary(a)) for a in got]}

    # -- fuzzing ---------------------------------------------------------------------------

    def fuzz_bases(self, ep, rng):
        """Valid messages to mutate, each harmless if it survives: its Node ID is the fuzzing
        socket's own address, its UE addresses are out of the testbed's sessions' way, its
        SEIDs are unknown."""
        node = ep.addr
        seid = rng.getrandbits(63) | 1 << 62
        session = {"cp_seid": seid, "cp_addr": node, "node_id": node, "ue_v4": "198.19.250.1",
                   "gnb": "198.18.0.1", "dl_teid": 0x7000, "qfi": 5, "edge": ["198.18.1.0/24"],
                   "catch_all": {"mode": "psa", "teid": 0x7001, "addr": "198.18.2.2"},
                   "urr": {"period": 3600}, "imsi": "001019999999999", "next_pdr": 2}
        other = {"up_seid": seid ^ 0x5A5A, "edge": [], "next_pdr": 1}
        self.sessions["__fuzz__"] = other
        try:
            modification, _ = self.build_modification({"name": "__fuzz__", "add_edge": ["10.0.0.0/8"],
                                                       "query_urr": [1]})
            deletion = self.build_deletion({"name": "__fuzz__"})
        finally:
            del self.sessions["__fuzz__"]
        return [
            self.node_message(pfcp.PFCPHeartbeatRequest(
                IE_list=[pfcp.IE_RecoveryTimeStamp(timestamp=self.recovery_ts)])),
            self.node_message(pfcp.PFCPAssociationUpdateRequest(IE_list=[self.node_id_ie(node)])),
            self.build_establishment(session),
            modification,
            deletion,
            self.session_message(pfcp.PFCPSessionReportResponse(IE_list=[pfcp.IE_Cause(cause=1)]),
                                 seid),
        ]

    @staticmethod
    def byte_mutation(data, rng):
        b = bytearray(data)
        if not b:  # cut to nothing by an earlier mutation: a few random octets instead
            return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        kind = rng.randrange(6)
        if kind == 0:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # a random octet
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 2:  # cut short
            b = b[:rng.randrange(len(b))]
        elif kind == 3:  # random octets appended
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
        elif kind == 4:  # a 16-bit field (a type or length) set at random
            i = rng.randrange(max(1, len(b) - 1))
            b[i:i + 2] = rng.getrandbits(16).to_bytes(2, "big")
        else:  # a chunk repeated
            i = rng.randrange(len(b))
            j = rng.randrange(i, min(len(b), i + 32) + 1)
            b[j:j] = b[i:j]
        return bytes(b)

    def cmd_fuzz(self, cmd):
        count = int(cmd["count"])
        seed = int(cmd["seed"])
        if not 0 < count <= 100000:
            raise ValueError("count must be 1-100000")
        ep = self.endpoint(cmd)
        rng = random.Random(seed)
        if cmd.get("associate"):
            self.exchange(ep, self.build_associate({"from": ep.addr}))
        # scapy's fuzz() draws from Python's global random module: seed it for a
        # reproducible run, and put it back after.
        state = random.getstate()
        random.seed(seed)
        try:
            classes = [pfcp.PFCPHeartbeatRequest, pfcp.PFCPHeartbeatResponse,
                       pfcp.PFCPAssociationSetupRequest, pfcp.PFCPAssociationUpdateRequest,
                       pfcp.PFCPAssociationReleaseRequest, pfcp.PFCPNodeReportResponse,
                       pfcp.PFCPSessionEstablishmentRequest, pfcp.PFCPSessionModificationRequest,
                       pfcp.PFCPSessionDeletionRequest, pfcp.PFCPSessionReportResponse,
                       pfcp.PFCPPFDManagementRequest, pfcp.PFCPSessionSetDeletionRequest]
            messages = []
            while len(messages) < count:
                cls = classes[len(messages) % len(classes)]
                # Random IEs of the kinds an SMF sends, inside a fuzzed message.
                ies = [fuzz(rng.choice(FUZZ_IES)()) for _ in range(rng.randrange(4))]
                # Three in four keep a valid header (version 1, the S flag the type needs),
                # so that fuzzed IEs reach the message handlers; the rest fuzz it too.
                header = pfcp.PFCP()
                if len(messages) % 4:
                    session = cls in SESSION_CLASSES
                    header = pfcp.PFCP(version=1, S=int(session), MP=0)
                try:
                    messages.append(bytes(fuzz(header / cls(IE_list=ies))))
                except (ValueError, struct.error, OverflowError, OSError):
                    # fuzz() drew a value its field cannot hold (a length over 255, an IPv6
                    # address inet_pton refuses): draw again.
                    continue
            bases = self.fuzz_bases(ep, rng)
            for i in range(count):
                m = bases[i % len(bases)]
                for _ in range(rng.randrange(1, 4)):
                    m = self.byte_mutation(m, rng)
                messages.append(m)
        finally:
            random.setstate(state)

        def send_all():
            for m in messages:
                ep.send(m, self.peer)
                # A little air between datagrams: a fuzz run, not a flood.
                time.sleep(0.002)

        got = self.collect(ep, send_all, cmd.get("wait_ms", 1000) / 1000)
        by_type, causes, bad, samples = {}, {}, 0, []
        for a in got:
            s = summary(a)
            if "error" in s:
                bad += 1
                if len(samples) < 5:
                    samples.append(clean(s))
                continue
            by_type[str(s["type"])] = by_type.get(str(s["type"]), 0) + 1
            if s.get("cause") is not None:
                causes[str(s["cause"])] = causes.get(str(s["cause"]), 0) + 1
        return {"sent": len(messages), "answered": len(got), "by_type": by_type,
                "causes": causes, "bad_answers": bad, "samples": samples}

    # -- observation -----------------------------------------------------------------------

    def stats(self):
        with self.lock:
            out = dict(self.counts)
            out["requests_by_type"] = {str(k): v for k, v in self.requests_by_type.items()}
            out["usage_reports"] = len(self.reports)
            out["downlink_data_reports"] = len(self.downlink_reports)
            out["mecgw_recovery_ts"] = self.mecgw_recovery_ts
            out["silent"] = self.silent
            out["sessions"] = sorted(self.sessions)
        return out

    def cmd_stats(self, cmd):
        return self.stats()

    def cmd_reports(self, cmd):
        with self.lock:
            reps = [r for r in self.reports if cmd.get("name") in (None, r["session"])]
        return {"reports": reps}

    def cmd_downlink_reports(self, cmd):
        with self.lock:
            reps = [r for r in self.downlink_reports if cmd.get("name") in (None, r["session"])]
        return {"reports": reps}

    def cmd_wait(self, cmd):
        deadline = time.monotonic() + cmd.get("timeout_ms", 10000) / 1000
        wanted = {k: cmd[k] for k in ("heartbeat_requests", "heartbeats_answered",
                                      "report_requests", "usage_reports",
                                      "downlink_data_reports") if k in cmd}
        while True:
            s = self.stats()
            if all(s[k] >= v for k, v in wanted.items()):
                s["reached"] = True
                return s
            if time.monotonic() >= deadline:
                s["reached"] = False
                return s
            time.sleep(0.05)

    def cmd_add_address(self, cmd):
        addr = cmd["addr"]
        if addr not in self.endpoints:
            self.endpoints[addr] = Endpoint(self, addr, self.port)
        return {"addr": addr}

    def cmd_build(self, cmd):
        req = cmd["request"]
        what = req["cmd"]
        if what == "establish":
            data = self.build_establishment(self.new_session(req))
        elif what == "modify":
            data, _ = self.build_modification(req)
        elif what == "delete":
            data = self.build_deletion(req)
        else:
            data = getattr(self, f"build_{what}")(req)
        return {"hex": data.hex()}

    def run(self):
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
                name = cmd.get("cmd")
                if name == "quit":
                    print(json.dumps({"ok": True}), flush=True)
                    return
                handler = getattr(self, f"cmd_{name}", None)
                if handler is None:
                    raise ValueError(f"unknown command {name!r}")
                out = handler(cmd)
                out["ok"] = True
            except Exception as e:  # one bad command must not end the session
                out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps(out, default=str), flush=True)


# The session messages among the fuzzed classes (their header has a SEID).
SESSION_CLASSES = {pfcp.PFCPSessionEstablishmentRequest, pfcp.PFCPSessionModificationRequest,
                   pfcp.PFCPSessionDeletionRequest, pfcp.PFCPSessionReportResponse}

# The IEs fuzz() puts inside fuzzed messages: those an SMF sends, leaf and grouped.
FUZZ_IES = [pfcp.IE_NodeId, pfcp.IE_FSEID, pfcp.IE_RecoveryTimeStamp, pfcp.IE_CreatePDR,
            pfcp.IE_CreateFAR, pfcp.IE_CreateURR, pfcp.IE_CreateQER, pfcp.IE_UpdatePDR,
            pfcp.IE_UpdateFAR, pfcp.IE_RemovePDR, pfcp.IE_QueryURR, pfcp.IE_PDI,
            pfcp.IE_FTEID, pfcp.IE_UE_IP_Address, pfcp.IE_SDF_Filter, pfcp.IE_ApplyAction,
            pfcp.IE_OuterHeaderCreation, pfcp.IE_OuterHeaderRemoval, pfcp.IE_UserId,
            pfcp.IE_Cause, pfcp.IE_PDNType, pfcp.IE_ReportingTriggers, pfcp.IE_VolumeThreshold]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--local", required=True, help="our address (and default Node ID)")
    ap.add_argument("--peer", required=True, help="mecgw's PFCP address")
    ap.add_argument("--port", type=int, default=PFCP_PORT, help="our UDP port (0: any)")
    ap.add_argument("--peer-port", type=int, default=PFCP_PORT)
    ap.add_argument("--node-id", help="our Node ID, if not --local")
    ap.add_argument("--timeout-ms", type=int, default=2000,
                    help="how long to wait for an answer (T1); no retransmission")
    args = ap.parse_args()
    smf = Smf(args)
    log(f"PFCP on {args.local}:{smf.endpoints[args.local].port}, peer {args.peer}:{args.peer_port}")
    print(json.dumps({"ok": True, "ready": True, "port": smf.endpoints[args.local].port}),
          flush=True)
    smf.run()


if __name__ == "__main__":
    main()
