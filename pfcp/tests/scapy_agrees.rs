//! mecgw's encoding against scapy's for the same messages (PyPI scapy 2.8, installed by
//! `cargo xtask setup`), and a full Session Establishment Request and Response through tshark.
//!
//! Each generated message is described once in scapy's terms (`describe`, written from
//! scapy's field layout, not from the codec); scapy builds bytes from the description
//! (`tests/scapy_codec.py`) and the bytes must equal mecgw's. Then mecgw decodes scapy's bytes
//! into the same value, and scapy dissects mecgw's bytes into the same fields.
//!
//! Where scapy 2.8 is wrong or lacks a field, the description says so where it works around
//! it:
//! - PDN Type: scapy's enum names 0 "IPv4" (TS 29.244 §8.2.79: IPv4 is 1); numbers are given,
//!   so the bytes agree;
//! - the header's S flag defaults to 1: node messages set S=0 explicitly;
//! - no CHV4/CHV6/IPv6D/IP6PL in UE IP Address, no TONOP/ULNOP/DLNOP and packet counts in
//!   Volume Measurement, no octet 6 of Apply Action, no octet 7 of Reporting Triggers / Usage
//!   Report Trigger, octet 6 of Outer Header Creation named "spare": those flags go through
//!   scapy's spare bits and the fields after them through its `extra_data` octets, so for
//!   them scapy checks lengths and placement, and the golden tests (tshark) check the values;
//! - UP Function Features is fixed at 2 octets unless the length is given: it is given;
//! - CP Function Features always writes octet 5: an empty one is not described;
//! - Network Instance is written as APN labels from dotted text: the messages here carry
//!   label-encoded instances (the codec itself keeps any octets);
//! - scapy's decoder ignores the header length (trailing octets become IEs); mecgw refuses
//!   them (tests/decode_errors.rs).
//!
//! `MECGW_SCAPY_CASES=N` sets the number of generated messages (default 96).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test plumbing: a failure is a test failure

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use mecgw_pfcp::ie::*;
use mecgw_pfcp::message::*;
use mecgw_pfcp::{decode, encode};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The helper, started once for the whole test binary.
struct Scapy {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Scapy {
    fn start() -> Scapy {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scapy_codec.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run python3 ({e}); scapy's PFCP layers are needed: cargo xtask setup"
                )
            });
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut scapy = Scapy {
            _child: child,
            stdin,
            stdout,
        };
        let v = scapy.ask(&json!({"op": "version"}));
        let version = v["scapy"].as_str().unwrap_or_default().to_string();
        assert!(
            version.starts_with("2.8"),
            "scapy {version:?} found; these tests are written against scapy 2.8 (cargo xtask setup)"
        );
        scapy
    }

    fn ask(&mut self, request: &Value) -> Value {
        writeln!(self.stdin, "{request}").expect("write to the scapy helper");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from the scapy helper");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("the scapy helper said {line:?} ({e}); is scapy installed?")
        });
        if let Some(err) = v.get("error") {
            panic!("scapy helper: {err} (request {request})");
        }
        v
    }
}

fn scapy() -> std::sync::MutexGuard<'static, Scapy> {
    static SCAPY: OnceLock<Mutex<Scapy>> = OnceLock::new();
    SCAPY
        .get_or_init(|| Mutex::new(Scapy::start()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from the helper"))
        .collect()
}

fn octets(b: &[u8]) -> Value {
    json!({ "b": hex(b) })
}

fn ie(cls: &str, fields: Value) -> Value {
    json!({ "cls": cls, "fields": fields })
}

fn group(cls: &str, ies: Vec<Value>) -> Value {
    json!({ "cls": cls, "fields": {}, "ies": ies })
}

fn u32_ie(cls: &str, field: &str, v: u32) -> Value {
    ie(cls, json!({ field: v }))
}

// ---- the description of each IE in scapy's fields ----

fn node_id(v: &NodeId) -> Value {
    match v {
        NodeId::Ipv4(a) => ie("IE_NodeId", json!({"id_type": 0, "ipv4": a.to_string()})),
        NodeId::Ipv6(a) => ie("IE_NodeId", json!({"id_type": 1, "ipv6": a.to_string()})),
        NodeId::Fqdn(n) => ie(
            "IE_NodeId",
            json!({"id_type": 2, "id": octets(n.as_bytes())}),
        ),
    }
}

fn f_seid(v: &FSeid) -> Value {
    let mut f =
        json!({"v4": u8::from(v.ipv4.is_some()), "v6": u8::from(v.ipv6.is_some()), "seid": v.seid});
    if let Some(a) = v.ipv4 {
        f["ipv4"] = json!(a.to_string());
    }
    if let Some(a) = v.ipv6 {
        f["ipv6"] = json!(a.to_string());
    }
    ie("IE_FSEID", f)
}

fn f_teid(v: &FTeid) -> Value {
    match v {
        FTeid::Assigned { teid, ipv4, ipv6 } => {
            let mut f = json!({"V4": u8::from(ipv4.is_some()), "V6": u8::from(ipv6.is_some()), "TEID": teid});
            if let Some(a) = ipv4 {
                f["ipv4"] = json!(a.to_string());
            }
            if let Some(a) = ipv6 {
                f["ipv6"] = json!(a.to_string());
            }
            ie("IE_FTEID", f)
        }
        FTeid::Choose {
            ipv4,
            ipv6,
            choose_id,
        } => {
            let mut f = json!({"CH": 1, "V4": u8::from(*ipv4), "V6": u8::from(*ipv6),
                "CHID": u8::from(choose_id.is_some())});
            if let Some(id) = choose_id {
                f["choose_id"] = json!(id);
            }
            ie("IE_FTEID", f)
        }
    }
}

fn ue_ip(v: &UeIpAddress) -> Value {
    // scapy's 5 spare bits are IP6PL, CHV6, CHV4, IPv6D from the top (and bit 8).
    let spare = (u8::from(v.ipv6_prefix_length.is_some()) << 3)
        | (u8::from(v.choose_ipv6) << 2)
        | (u8::from(v.choose_ipv4) << 1)
        | u8::from(v.ipv6_prefix_delegation_bits.is_some());
    let mut f = json!({"spare": spare, "SD": u8::from(v.is_destination),
        "V4": u8::from(v.ipv4.is_some()), "V6": u8::from(v.ipv6.is_some())});
    if let Some(a) = v.ipv4 {
        f["ipv4"] = json!(a.to_string());
    }
    if let Some(a) = v.ipv6 {
        f["ipv6"] = json!(a.to_string());
    }
    let extra: Vec<u8> = [v.ipv6_prefix_delegation_bits, v.ipv6_prefix_length]
        .into_iter()
        .flatten()
        .collect();
    if !extra.is_empty() {
        f["extra_data"] = octets(&extra);
    }
    ie("IE_UE_IP_Address", f)
}

fn sdf(v: &SdfFilter) -> Value {
    let mut f = json!({
        "FD": u8::from(v.flow_description.is_some()),
        "TTC": u8::from(v.tos_traffic_class.is_some()),
        "SPI": u8::from(v.security_parameter_index.is_some()),
        "FL": u8::from(v.flow_label.is_some()),
        "BID": u8::from(v.sdf_filter_id.is_some()),
    });
    if let Some(fd) = &v.flow_description {
        f["flow_description"] = octets(fd.as_bytes());
    }
    if let Some(x) = v.tos_traffic_class {
        f["tos_traffic_class"] = json!(x >> 8);
        f["tos_traffic_mask"] = json!(x & 0xff);
    }
    if let Some(x) = v.security_parameter_index {
        f["security_parameter_index"] = json!(x);
    }
    if let Some(x) = v.flow_label {
        f["flow_label"] = json!(x);
    }
    if let Some(x) = v.sdf_filter_id {
        f["sdf_filter_id"] = json!(x);
    }
    ie("IE_SDF_Filter", f)
}

fn network_instance(v: &[u8]) -> Value {
    // scapy takes dotted text and writes labels; `v` holds labels (see normalise).
    let mut labels = Vec::new();
    let mut rest = v;
    while let Some((&n, tail)) = rest.split_first() {
        let (label, after) = tail.split_at(usize::from(n));
        labels.push(String::from_utf8(label.to_vec()).expect("ASCII labels"));
        rest = after;
    }
    ie(
        "IE_NetworkInstance",
        json!({"instance": octets(labels.join(".").as_bytes())}),
    )
}

fn pdi(v: &Pdi) -> Value {
    let mut ies = vec![ie(
        "IE_SourceInterface",
        json!({"interface": v.source_interface.value()}),
    )];
    ies.extend(v.local_f_teid.iter().map(f_teid));
    ies.extend(v.network_instance.iter().map(|n| network_instance(n)));
    ies.extend(v.ue_ip_address.iter().map(ue_ip));
    ies.extend(v.sdf_filters.iter().map(sdf));
    ies.extend(
        v.qfis
            .iter()
            .map(|q| ie("IE_QFI", json!({"spare": 0, "QFI": q}))),
    );
    group("IE_PDI", ies)
}

fn ohr(v: &OuterHeaderRemoval) -> Value {
    match v.extension_header_deletion {
        None => ie("IE_OuterHeaderRemoval", json!({"header": v.description})),
        Some(x) => ie(
            "IE_OuterHeaderRemoval",
            json!({"header": v.description, "length": 2, "spare": x >> 1, "pdu_session_container": x & 1}),
        ),
    }
}

fn ids(cls: &str, ids: &[u32]) -> Vec<Value> {
    ids.iter().map(|x| u32_ie(cls, "id", *x)).collect()
}

fn pdr(cls: &str, pdr_id: u16, rest: Vec<Value>) -> Value {
    let mut ies = vec![ie("IE_PDR_Id", json!({"id": pdr_id}))];
    ies.extend(rest);
    group(cls, ies)
}

fn create_pdr(v: &CreatePdr) -> Value {
    let mut ies = vec![
        u32_ie("IE_Precedence", "precedence", v.precedence),
        pdi(&v.pdi),
    ];
    ies.extend(v.outer_header_removal.iter().map(ohr));
    ies.extend(v.far_id.iter().map(|x| u32_ie("IE_FAR_Id", "id", *x)));
    ies.extend(ids("IE_URR_Id", &v.urr_ids));
    ies.extend(ids("IE_QER_Id", &v.qer_ids));
    pdr("IE_CreatePDR", v.pdr_id, ies)
}

fn update_pdr(v: &UpdatePdr) -> Value {
    let mut ies: Vec<Value> = v.outer_header_removal.iter().map(ohr).collect();
    ies.extend(
        v.precedence
            .iter()
            .map(|x| u32_ie("IE_Precedence", "precedence", *x)),
    );
    ies.extend(v.pdi.iter().map(pdi));
    ies.extend(v.far_id.iter().map(|x| u32_ie("IE_FAR_Id", "id", *x)));
    ies.extend(ids("IE_URR_Id", &v.urr_ids));
    ies.extend(ids("IE_QER_Id", &v.qer_ids));
    pdr("IE_UpdatePDR", v.pdr_id, ies)
}

fn apply_action(v: ApplyAction) -> Value {
    let [o5, o6] = v.0.to_le_bytes();
    let mut f = json!({"spare": o5 >> 5, "DUPL": (o5 >> 4) & 1, "NOCP": (o5 >> 3) & 1,
        "BUFF": (o5 >> 2) & 1, "FORW": (o5 >> 1) & 1, "DROP": o5 & 1});
    if o6 != 0 {
        f["extra_data"] = octets(&[o6]);
    }
    ie("IE_ApplyAction", f)
}

fn ohc(v: &OuterHeaderCreation) -> Value {
    let [o5, o6] = v.description.to_be_bytes();
    let names = [
        "GTPUUDPIPV4",
        "GTPUUDPIPV6",
        "UDPIPV4",
        "UDPIPV6",
        "IPV4",
        "IPV6",
        "CTAG",
        "STAG",
    ];
    let mut f = json!({"spare": o6});
    for (i, name) in names.iter().enumerate() {
        f[*name] = json!((o5 >> i) & 1);
    }
    if let Some(x) = v.teid {
        f["TEID"] = json!(x);
    }
    if let Some(x) = v.ipv4 {
        f["ipv4"] = json!(x.to_string());
    }
    if let Some(x) = v.ipv6 {
        f["ipv6"] = json!(x.to_string());
    }
    if let Some(x) = v.port {
        f["port"] = json!(x);
    }
    ie("IE_OuterHeaderCreation", f)
}

fn forwarding(cls: &str, v: &ForwardingParameters) -> Value {
    let mut ies: Vec<Value> = v
        .destination_interface
        .iter()
        .map(|d| ie("IE_DestinationInterface", json!({"interface": d.value()})))
        .collect();
    ies.extend(v.network_instance.iter().map(|n| network_instance(n)));
    ies.extend(v.outer_header_creation.iter().map(ohc));
    group(cls, ies)
}

fn far(
    cls: &str,
    far_id: u32,
    aa: Option<ApplyAction>,
    fp: Option<Value>,
    bar: Option<u8>,
) -> Value {
    let mut ies = vec![u32_ie("IE_FAR_Id", "id", far_id)];
    ies.extend(aa.map(apply_action));
    ies.extend(fp);
    ies.extend(bar.map(|b| ie("IE_BAR_Id", json!({"id": b}))));
    group(cls, ies)
}

fn triggers(cls: &str, flags: u32, names: [&str; 16]) -> Value {
    let [o5, o6, o7, _] = flags.to_le_bytes();
    let mut f = json!({});
    for (i, name) in names.iter().enumerate() {
        // scapy lists octet 5's bits from bit 8 down, then octet 6's; Reporting Triggers'
        // bits 8-7 of octet 6 are one 2-bit "spare" field there (OK: UPINT/QUVTI unnamed).
        let (octet, bit) = if i < 8 { (o5, 7 - i) } else { (o6, 15 - i) };
        match *name {
            "" => {}
            "spare" => f["spare"] = json!(o6 >> 6),
            _ => f[*name] = json!((octet >> bit) & 1),
        }
    }
    if o7 != 0 {
        f["extra_data"] = octets(&[o7]);
    }
    ie(cls, f)
}

fn urr(cls: &str, v: &Urr) -> Value {
    let mut ies = vec![u32_ie("IE_URR_Id", "id", v.urr_id)];
    ies.extend(v.measurement_method.map(|m| {
        ie("IE_MeasurementMethod", json!({"EVENT": u8::from(m.event), "VOLUM": u8::from(m.volume), "DURAT": u8::from(m.duration)}))
    }));
    ies.extend(v.reporting_triggers.map(|r| {
        triggers(
            "IE_ReportingTriggers",
            r.0,
            [
                "linked_usage_reporting",
                "dropped_dl_traffic_threshold",
                "stop_of_traffic",
                "start_of_traffic",
                "quota_holding_time",
                "time_threshold",
                "volume_threshold",
                "periodic_reporting",
                "spare",
                "",
                "event_quota",
                "event_threshold",
                "mac_addresses_reporting",
                "envelope_closure",
                "time_quota",
                "volume_quota",
            ],
        )
    }));
    ies.extend(
        v.measurement_period
            .map(|x| u32_ie("IE_MeasurementPeriod", "period", x)),
    );
    ies.extend(v.volume_threshold.map(|x| {
        let mut f = json!({"TOVOL": u8::from(x.total.is_some()), "ULVOL": u8::from(x.uplink.is_some()), "DLVOL": u8::from(x.downlink.is_some())});
        for (k, val) in [("total", x.total), ("uplink", x.uplink), ("downlink", x.downlink)] {
            if let Some(val) = val {
                f[k] = json!(val);
            }
        }
        ie("IE_VolumeThreshold", f)
    }));
    ies.extend(
        v.time_threshold
            .map(|x| u32_ie("IE_TimeThreshold", "threshold", x)),
    );
    group(cls, ies)
}

fn qer(cls: &str, v: &Qer) -> Value {
    let mut ies = vec![u32_ie("IE_QER_Id", "id", v.qer_id)];
    ies.extend(v.gate_status.map(|g| {
        ie(
            "IE_GateStatus",
            json!({"ul": u8::from(!g.uplink_open), "dl": u8::from(!g.downlink_open)}),
        )
    }));
    for (c, r) in [("IE_MBR", v.mbr), ("IE_GBR", v.gbr)] {
        ies.extend(r.map(|r| ie(c, json!({"ul": r.uplink_kbps, "dl": r.downlink_kbps}))));
    }
    ies.extend(v.qfi.map(|q| ie("IE_QFI", json!({"spare": 0, "QFI": q}))));
    group(cls, ies)
}

/// TS 29.274 §8.3 TBCD, written here independently of the codec.
fn tbcd(digits: &str) -> Vec<u8> {
    let d: Vec<u8> = digits.bytes().map(|c| c - b'0').collect();
    d.chunks(2)
        .map(|p| p[0] | (p.get(1).copied().unwrap_or(0x0F) << 4))
        .collect()
}

fn user_id(v: &UserId) -> Value {
    let mut f = json!({"IMSIF": u8::from(v.imsi.is_some()), "IMEIF": u8::from(v.imei.is_some()),
        "MSISDNF": u8::from(v.msisdn.is_some()), "NAIF": u8::from(v.nai.is_some())});
    for (k, x) in [("imsi", &v.imsi), ("imei", &v.imei), ("msisdn", &v.msisdn)] {
        if let Some(x) = x {
            f[k] = octets(&tbcd(x));
        }
    }
    if let Some(n) = &v.nai {
        f["nai"] = octets(n.as_bytes());
    }
    ie("IE_UserId", f)
}

fn created_pdr(v: &CreatedPdr) -> Value {
    pdr(
        "IE_CreatedPDR",
        v.pdr_id,
        v.local_f_teid.iter().map(f_teid).collect(),
    )
}

fn usage_report(cls: &str, v: &UsageReport) -> Value {
    let mut ies = vec![
        u32_ie("IE_URR_Id", "id", v.urr_id),
        u32_ie("IE_UR_SEQN", "number", v.ur_seqn),
        triggers(
            "IE_UsageReportTrigger",
            v.trigger.0,
            [
                "IMMER", "DROTH", "STOPT", "START", "QUHTI", "TIMTH", "VOLTH", "PERIO", "EVETH",
                "MACAR", "ENVCL", "MONIT", "TERMR", "LIUSA", "TIMQU", "VOLQU",
            ],
        ),
    ];
    ies.extend(v.start_time.map(|x| u32_ie("IE_StartTime", "timestamp", x)));
    ies.extend(v.end_time.map(|x| u32_ie("IE_EndTime", "timestamp", x)));
    ies.extend(v.volume.map(|m| {
        // TONOP/ULNOP/DLNOP are scapy's spare bits 1-3; the packet counts its extra_data.
        let spare = u8::from(m.total_packets.is_some())
            | (u8::from(m.uplink_packets.is_some()) << 1)
            | (u8::from(m.downlink_packets.is_some()) << 2);
        let mut f = json!({"spare": spare, "TOVOL": u8::from(m.total_octets.is_some()),
            "ULVOL": u8::from(m.uplink_octets.is_some()), "DLVOL": u8::from(m.downlink_octets.is_some())});
        for (k, val) in [("total", m.total_octets), ("uplink", m.uplink_octets), ("downlink", m.downlink_octets)] {
            if let Some(val) = val {
                f[k] = json!(val);
            }
        }
        let packets: Vec<u8> = [m.total_packets, m.uplink_packets, m.downlink_packets]
            .into_iter()
            .flatten()
            .flat_map(u64::to_be_bytes)
            .collect();
        if !packets.is_empty() {
            f["extra_data"] = octets(&packets);
        }
        ie("IE_VolumeMeasurement", f)
    }));
    ies.extend(
        v.duration
            .map(|x| u32_ie("IE_DurationMeasurement", "duration", x)),
    );
    group(cls, ies)
}

fn up_features(v: &UpFunctionFeatures) -> Value {
    let names = [
        "TREU", "HEEU", "PFDM", "FTUP", "TRST", "DLBD", "DDND", "BUCP", "spare", "PFDE", "FRRT",
        "TRACE", "QUOAC", "UDBC", "PDIU", "EMPU",
    ];
    let mut f = json!({"length": v.0.len()});
    for (i, name) in names.iter().enumerate().take(8 * v.0.len().min(2)) {
        f[*name] = json!((v.0[i / 8] >> (7 - i % 8)) & 1);
    }
    if v.0.len() > 2 {
        f["extra_data"] = octets(&v.0[2..]);
    }
    ie("IE_UPFunctionFeatures", f)
}

fn cp_features(v: &CpFunctionFeatures) -> Value {
    let o5 = v.0.first().copied().unwrap_or(0);
    let mut f = json!({"spare": o5 >> 2, "OVRL": (o5 >> 1) & 1, "LOAD": o5 & 1});
    if v.0.len() > 1 {
        f["extra_data"] = octets(&v.0[1..]);
    }
    ie("IE_CPFunctionFeatures", f)
}

fn cause(c: Cause) -> Value {
    ie("IE_Cause", json!({"cause": c.0}))
}

fn recovery(x: u32) -> Value {
    u32_ie("IE_RecoveryTimeStamp", "timestamp", x)
}

fn offending(o: &Option<u16>) -> Vec<Value> {
    o.iter()
        .map(|x| ie("IE_OffendingIE", json!({"type": x})))
        .collect()
}

fn features(up: &Option<UpFunctionFeatures>, cp: &Option<CpFunctionFeatures>) -> Vec<Value> {
    up.iter()
        .map(up_features)
        .chain(cp.iter().map(cp_features))
        .collect()
}

/// Create PDR, FAR, URR and QER, as the establishment and the modification carry them.
fn creations(pdrs: &[CreatePdr], fars: &[CreateFar], urrs: &[Urr], qers: &[Qer]) -> Vec<Value> {
    let mut v: Vec<Value> = pdrs.iter().map(create_pdr).collect();
    v.extend(fars.iter().map(|f| {
        let fp = f
            .forwarding_parameters
            .as_ref()
            .map(|p| forwarding("IE_ForwardingParameters", p));
        far("IE_CreateFAR", f.far_id, Some(f.apply_action), fp, f.bar_id)
    }));
    v.extend(urrs.iter().map(|u| urr("IE_CreateURR", u)));
    v.extend(qers.iter().map(|q| qer("IE_CreateQER", q)));
    v
}

/// The whole message in scapy's terms.
fn describe(h: &Header, m: &Message) -> Value {
    let t = m.message_type();
    let session = message_type::is_session_message(t);
    let mut header = json!({"version": 1, "message_type": t, "S": u8::from(session),
        "MP": u8::from(h.priority.is_some()), "seq": h.sequence});
    if session {
        header["seid"] = json!(h.seid.unwrap_or(0));
    }
    if let Some(p) = h.priority {
        header["priority"] = json!(p);
    }
    let ies: Vec<Value> = match m {
        Message::HeartbeatRequest(x) | Message::HeartbeatResponse(x) => {
            vec![recovery(x.recovery_time_stamp)]
        }
        Message::AssociationSetupRequest(x) => {
            [node_id(&x.node_id), recovery(x.recovery_time_stamp)]
                .into_iter()
                .chain(features(&x.up_function_features, &x.cp_function_features))
                .collect()
        }
        Message::AssociationSetupResponse(x) => [
            node_id(&x.node_id),
            cause(x.cause),
            recovery(x.recovery_time_stamp),
        ]
        .into_iter()
        .chain(features(&x.up_function_features, &None))
        .collect(),
        Message::AssociationUpdateRequest(x) => {
            let mut v = vec![node_id(&x.node_id)];
            v.extend(features(&x.up_function_features, &x.cp_function_features));
            v.extend(x.association_release_request.map(|a| {
                ie(
                    "IE_PFCPAssociationReleaseRequest",
                    json!({"spare": a >> 1, "SARR": a & 1}),
                )
            }));
            v.extend(x.graceful_release_period.map(|g| {
                ie(
                    "IE_GracefulReleasePeriod",
                    json!({"release_timer_unit": g >> 5, "release_timer_value": g & 0x1f}),
                )
            }));
            v
        }
        Message::AssociationUpdateResponse(x) => [node_id(&x.node_id), cause(x.cause)]
            .into_iter()
            .chain(features(&x.up_function_features, &None))
            .collect(),
        Message::AssociationReleaseRequest(x) => vec![node_id(&x.node_id)],
        Message::AssociationReleaseResponse(x) => vec![node_id(&x.node_id), cause(x.cause)],
        Message::VersionNotSupportedResponse | Message::SessionDeletionRequest => vec![],
        Message::SessionEstablishmentRequest(x) => {
            let mut v = vec![node_id(&x.node_id), f_seid(&x.cp_f_seid)];
            v.extend(creations(
                &x.create_pdr,
                &x.create_far,
                &x.create_urr,
                &x.create_qer,
            ));
            v.extend(x.pdn_type.map(|p| ie("IE_PDNType", json!({"pdn_type": p}))));
            v.extend(x.user_id.iter().map(user_id));
            v
        }
        Message::SessionEstablishmentResponse(x) => {
            let mut v = vec![node_id(&x.node_id), cause(x.cause)];
            v.extend(offending(&x.offending_ie));
            v.extend(x.up_f_seid.iter().map(f_seid));
            v.extend(x.created_pdr.iter().map(created_pdr));
            v
        }
        Message::SessionModificationRequest(x) => {
            let mut v: Vec<Value> = x.cp_f_seid.iter().map(f_seid).collect();
            v.extend(x.remove_pdr.iter().map(|p| pdr("IE_RemovePDR", *p, vec![])));
            for (cls, id_cls, list) in [
                ("IE_RemoveFAR", "IE_FAR_Id", &x.remove_far),
                ("IE_RemoveURR", "IE_URR_Id", &x.remove_urr),
                ("IE_RemoveQER", "IE_QER_Id", &x.remove_qer),
            ] {
                v.extend(
                    list.iter()
                        .map(|i| group(cls, vec![u32_ie(id_cls, "id", *i)])),
                );
            }
            v.extend(creations(
                &x.create_pdr,
                &x.create_far,
                &x.create_urr,
                &x.create_qer,
            ));
            v.extend(x.update_pdr.iter().map(update_pdr));
            v.extend(x.update_far.iter().map(|f| {
                let fp = f
                    .update_forwarding_parameters
                    .as_ref()
                    .map(|p| forwarding("IE_UpdateForwardingParameters", p));
                far("IE_UpdateFAR", f.far_id, f.apply_action, fp, f.bar_id)
            }));
            v.extend(x.update_urr.iter().map(|u| urr("IE_UpdateURR", u)));
            v.extend(x.update_qer.iter().map(|q| qer("IE_UpdateQER", q)));
            v.extend(
                x.query_urr
                    .iter()
                    .map(|i| group("IE_QueryURR", vec![u32_ie("IE_URR_Id", "id", *i)])),
            );
            v.extend(x.user_id.iter().map(user_id));
            v
        }
        Message::SessionModificationResponse(x) => {
            let mut v = vec![cause(x.cause)];
            v.extend(offending(&x.offending_ie));
            v.extend(x.created_pdr.iter().map(created_pdr));
            v.extend(
                x.usage_report
                    .iter()
                    .map(|u| usage_report("IE_UsageReport_SMR", u)),
            );
            v
        }
        Message::SessionDeletionResponse(x) => {
            let mut v = vec![cause(x.cause)];
            v.extend(offending(&x.offending_ie));
            v.extend(
                x.usage_report
                    .iter()
                    .map(|u| usage_report("IE_UsageReport_SDR", u)),
            );
            v
        }
        Message::SessionReportRequest(x) => {
            let r = x.report_type.0;
            let mut v = vec![ie(
                "IE_ReportType",
                json!({"spare": r >> 4, "UPIR": (r >> 3) & 1,
                "ERIR": (r >> 2) & 1, "USAR": (r >> 1) & 1, "DLDR": r & 1}),
            )];
            v.extend(x.downlink_data_report.iter().map(|d| {
                group(
                    "IE_DownlinkDataReport",
                    d.pdr_ids
                        .iter()
                        .map(|id| ie("IE_PDR_Id", json!({"id": id})))
                        .collect(),
                )
            }));
            v.extend(
                x.usage_report
                    .iter()
                    .map(|u| usage_report("IE_UsageReport_SRR", u)),
            );
            v
        }
        Message::SessionReportResponse(x) => {
            let mut v = vec![cause(x.cause)];
            v.extend(offending(&x.offending_ie));
            v
        }
    };
    json!({"header": header, "ies": ies})
}

/// Rewrites what scapy cannot express (see the module docs): Network Instances become
/// label-encoded, empty CP Function Features one octet.
fn normalise(m: &mut Message) {
    const NI: &[u8] = b"\x08internet\x03mec";
    let fix_ni = |ni: &mut Option<Vec<u8>>| {
        if ni.is_some() {
            *ni = Some(NI.to_vec());
        }
    };
    let fix_pdi = |p: &mut Pdi| fix_ni(&mut p.network_instance);
    let fix_far = |fp: &mut Option<ForwardingParameters>| {
        if let Some(fp) = fp {
            fix_ni(&mut fp.network_instance);
        }
    };
    match m {
        Message::AssociationSetupRequest(x) => {
            if let Some(cp) = &mut x.cp_function_features {
                cp.0.resize(cp.0.len().max(1), 0);
            }
        }
        Message::AssociationUpdateRequest(x) => {
            if let Some(cp) = &mut x.cp_function_features {
                cp.0.resize(cp.0.len().max(1), 0);
            }
        }
        Message::SessionEstablishmentRequest(x) => {
            x.create_pdr.iter_mut().for_each(|p| fix_pdi(&mut p.pdi));
            x.create_far
                .iter_mut()
                .for_each(|f| fix_far(&mut f.forwarding_parameters));
        }
        Message::SessionModificationRequest(x) => {
            x.create_pdr.iter_mut().for_each(|p| fix_pdi(&mut p.pdi));
            x.update_pdr
                .iter_mut()
                .filter_map(|p| p.pdi.as_mut())
                .for_each(fix_pdi);
            x.create_far
                .iter_mut()
                .for_each(|f| fix_far(&mut f.forwarding_parameters));
            x.update_far
                .iter_mut()
                .for_each(|f| fix_far(&mut f.update_forwarding_parameters));
        }
        _ => {}
    }
}

/// `{"s": text}` and `{"b": hex}` compare as octets.
fn same_value(described: &Value, dissected: &Value) -> bool {
    described == dissected
}

/// Every field the description sets is what scapy dissected from mecgw's bytes, IE by IE,
/// and scapy found nothing it did not expect (no stray `extra_data`).
fn assert_dissected_as_described(described: &Value, dissected: &Value, path: &str) {
    let d_ies = described["ies"].as_array().cloned().unwrap_or_default();
    let s_ies = dissected["ies"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        d_ies.len(),
        s_ies.len(),
        "{path}: IE count\n{described}\n{dissected}"
    );
    for (i, (d, s)) in d_ies.iter().zip(&s_ies).enumerate() {
        let here = format!("{path}/{}[{i}]", d["cls"]);
        assert_eq!(d["cls"], s["cls"], "{here}");
        for (k, v) in d["fields"].as_object().into_iter().flatten() {
            assert!(
                same_value(v, &s["fields"][k]),
                "{here}.{k}: described {v}, dissected {}",
                s["fields"][k]
            );
        }
        if d["fields"].get("extra_data").is_none() {
            let extra = &s["fields"]["extra_data"];
            assert!(
                extra.is_null() || *extra == json!({"b": ""}),
                "{here}: scapy left {extra} undecoded"
            );
        }
        if d.get("ies").is_some() {
            assert_dissected_as_described(d, s, &here);
        }
    }
}

fn cases() -> u32 {
    std::env::var("MECGW_SCAPY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mecgw_and_scapy_build_the_same_bytes((header, mut message) in common::header_and_message()) {
        normalise(&mut message);
        let ours = encode(&header, &message);
        let description = describe(&header, &message);
        let mut scapy = scapy();
        let theirs = scapy.ask(&json!({"op": "encode", "msg": description}));
        let theirs = unhex(theirs["hex"].as_str().unwrap_or_default());
        prop_assert_eq!(hex(&ours), hex(&theirs), "description: {}", description);

        // mecgw reads scapy's bytes back into the same value …
        prop_assert_eq!(decode(&theirs), Ok((header, message)));

        // … and scapy reads mecgw's bytes into the fields it was told.
        let dissected = scapy.ask(&json!({"op": "decode", "hex": hex(&ours)}));
        let dissected = &dissected["msg"];
        for (k, v) in description["header"].as_object().into_iter().flatten() {
            prop_assert_eq!(v, &dissected["header"][k], "header field {}", k);
        }
        assert_dissected_as_described(&description, dissected, "message");
    }
}

// ---- tshark, a second independent reader ----

/// A pcap (LINKTYPE_RAW) of IPv4/UDP datagrams from and to port 8805.
fn pcap(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for x in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65_535, 101] {
        // magic, version 2.4 (as two LE u16: 2 then 4), zone, sigfigs, snaplen, linktype
        out.extend_from_slice(&x.to_le_bytes());
    }
    // The version is two u16s, not one u32: rewrite octets 4-7.
    out[4..8].copy_from_slice(&[2, 0, 4, 0]);
    for d in datagrams {
        let udp_len = u16::try_from(8 + d.len()).expect("small test datagram");
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
        ];
        ip[2..4].copy_from_slice(&(udp_len + 20).to_be_bytes());
        let mut pkt = ip;
        pkt.extend_from_slice(&8805u16.to_be_bytes());
        pkt.extend_from_slice(&8805u16.to_be_bytes());
        pkt.extend_from_slice(&udp_len.to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(d);
        let len = u32::try_from(pkt.len()).expect("small packet");
        for x in [0, 0, len, len] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&pkt);
    }
    out
}

fn tshark(datagrams: &[Vec<u8>]) -> String {
    let path = std::env::temp_dir().join(format!("mecgw-pfcp-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(datagrams)).expect("write the pcap");
    let out = Command::new("tshark")
        .args(["-n", "-o", "udp.check_checksum:FALSE", "-V", "-r"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tshark ({e}); install it with: cargo xtask setup"));
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn uplink_pdr(id: u16, precedence: u32, sdf: Option<&str>, far_id: u32) -> CreatePdr {
    CreatePdr {
        pdr_id: id,
        precedence,
        pdi: Pdi {
            source_interface: Interface::Access,
            local_f_teid: Some(FTeid::Choose {
                ipv4: true,
                ipv6: false,
                choose_id: Some(1),
            }),
            network_instance: Some(b"\x08internet".to_vec()),
            ue_ip_address: vec![UeIpAddress {
                ipv4: Some("10.45.0.2".parse().expect("address")),
                ..Default::default()
            }],
            sdf_filters: sdf
                .map(|fd| SdfFilter {
                    flow_description: Some(fd.into()),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            qfis: vec![9],
        },
        outer_header_removal: Some(OuterHeaderRemoval {
            description: 0,
            extension_header_deletion: Some(1),
        }),
        far_id: Some(far_id),
        urr_ids: vec![1],
        qer_ids: vec![1],
    }
}

#[test]
fn tshark_dissects_an_establishment_and_its_response_cleanly() {
    type O = OuterHeaderCreation;
    let request = Message::SessionEstablishmentRequest(SessionEstablishmentRequest {
        node_id: NodeId::Fqdn("smf.mec.example.org".into()),
        cp_f_seid: FSeid {
            seid: 0x1122_3344_5566_7788,
            ipv4: Some("192.0.2.1".parse().expect("address")),
            ipv6: None,
        },
        create_pdr: vec![
            uplink_pdr(
                1,
                100,
                Some("permit out ip from 198.18.0.0/15 to assigned"),
                1,
            ),
            uplink_pdr(2, 200, None, 2),
        ],
        create_far: vec![
            CreateFar {
                far_id: 1,
                apply_action: ApplyAction(ApplyAction::FORW),
                forwarding_parameters: Some(ForwardingParameters {
                    destination_interface: Some(Interface::SgiLan),
                    network_instance: None,
                    outer_header_creation: None,
                }),
                bar_id: None,
            },
            CreateFar {
                far_id: 2,
                apply_action: ApplyAction(ApplyAction::FORW),
                forwarding_parameters: Some(ForwardingParameters {
                    destination_interface: Some(Interface::Core),
                    network_instance: Some(b"\x04core".to_vec()),
                    outer_header_creation: Some(O {
                        description: O::GTPU_UDP_IPV4,
                        teid: Some(0xabcd_0001),
                        ipv4: Some("198.51.100.9".parse().expect("address")),
                        ipv6: None,
                        port: None,
                    }),
                }),
                bar_id: None,
            },
        ],
        create_urr: vec![Urr {
            urr_id: 1,
            measurement_method: Some(MeasurementMethod {
                duration: true,
                volume: true,
                event: false,
            }),
            reporting_triggers: Some(ReportingTriggers(
                ReportingTriggers::PERIODIC | ReportingTriggers::VOLUME_THRESHOLD,
            )),
            measurement_period: Some(60),
            volume_threshold: Some(Volume {
                total: Some(1 << 30),
                uplink: None,
                downlink: None,
            }),
            time_threshold: None,
        }],
        create_qer: vec![Qer {
            qer_id: 1,
            gate_status: Some(GateStatus {
                uplink_open: true,
                downlink_open: true,
            }),
            mbr: Some(BitRate {
                uplink_kbps: 100_000,
                downlink_kbps: 200_000,
            }),
            gbr: None,
            qfi: Some(9),
        }],
        pdn_type: Some(1),
        user_id: Some(UserId {
            imsi: Some("001010123456789".into()),
            imei: Some("3534900698733190".into()),
            msisdn: None,
            nai: None,
        }),
    });
    let response = Message::SessionEstablishmentResponse(SessionEstablishmentResponse {
        node_id: NodeId::Ipv4("192.0.2.2".parse().expect("address")),
        cause: Cause::ACCEPTED,
        offending_ie: None,
        up_f_seid: Some(FSeid {
            seid: 0x99,
            ipv4: Some("192.0.2.2".parse().expect("address")),
            ipv6: None,
        }),
        created_pdr: vec![CreatedPdr {
            pdr_id: 1,
            local_f_teid: Some(FTeid::Assigned {
                teid: 0x0000_1001,
                ipv4: Some("192.0.2.2".parse().expect("address")),
                ipv6: None,
            }),
        }],
    });
    let header = |t, seid| Header {
        message_type: t,
        seid: Some(seid),
        sequence: 4242,
        priority: None,
    };
    let out = tshark(&[
        encode(&header(50, 0), &request),
        encode(&header(51, 0x1122_3344_5566_7788), &response),
    ]);
    for bad in [
        "Malformed",
        "Expert Info (Error",
        "Expert Info (Warning",
        "not decoded",
    ] {
        assert!(!out.contains(bad), "tshark reports {bad:?}:\n{out}");
    }
    for field in [
        "Message Type: PFCP Session Establishment Request (50)",
        "Message Type: PFCP Session Establishment Response (51)",
        "Sequence Number: 4242",
        "FQDN: smf.mec.example.org",
        "SEID: 0x1122334455667788",
        "Rule ID: 1",
        "Rule ID: 2",
        "Precedence: 200",
        "Source Interface: Access (0)",
        "CH (CHOOSE): True",
        "Choose Id: 01",
        "IPv4 address: 10.45.0.2",
        "Flow Description: permit out ip from 198.18.0.0/15 to assigned",
        "Outer Header Removal Description: GTP-U/UDP/IPv4 (0)",
        "QFI: 0x09",
        "FORW (Forward): True",
        "Interface: SGi-LAN/N6-LAN (2)",
        "TEID: 0xabcd0001",
        "IPv4 Address: 198.51.100.9",
        "Measurement Period: 60",
        "Total Volume: 1073741824",
        "UL MBR: 100000",
        "DL MBR: 200000",
        "PDN Type: IPv4 (1)",
        "IMSI: 001010123456789",
        "IMEI: 3534900698733190",
        "Cause: Request accepted(success) (1)",
        "TEID: 0x00001001",
    ] {
        assert!(
            out.contains(field),
            "tshark does not show {field:?}:\n{out}"
        );
    }
}
