//! Golden bytes for every IE the codec writes, from sources other than this codec:
//! - "scapy": `bytes(IE_…(…))` with PyPI scapy 2.8.0's `scapy.contrib.pfcp`, the call written
//!   beside the bytes;
//! - "tshark": made by hand from TS 29.244 for fields scapy 2.8 lacks, and dissected by
//!   tshark 4.0.17 (Debian) without a malformed-packet or expert error, the fields it
//!   showed written beside the bytes.
//!
//! Each test encodes the value and compares octet for octet, then decodes the octets and
//! compares the value.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::DecodeErrorKind;
use super::grouped::*;
use super::leaf::*;
use super::wire::{Budget, Ies, Writer};
use crate::ie::ie_type as t;
use crate::ie::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

/// `put` writes exactly `expected`, and `read` gets `value` back from its value octets.
fn golden<T: PartialEq + std::fmt::Debug>(
    expected: &str,
    value: T,
    put: impl FnOnce(&mut Writer, &T),
    read: impl FnOnce(&[u8]) -> Result<T, DecodeErrorKind>,
) {
    let expected = hex(expected);
    let mut w = Writer::default();
    put(&mut w, &value);
    assert_eq!(
        hex_of(&w.into_bytes()),
        hex_of(&expected),
        "encoding of {value:?}"
    );
    assert_eq!(read(&expected[4..]), Ok(value));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `read` for a grouped IE: opens the group, then decodes it.
fn grouped<T>(
    ie: u16,
    read: impl FnOnce(&Ies<'_>, &mut Budget) -> Result<T, DecodeErrorKind>,
) -> impl FnOnce(&[u8]) -> Result<T, DecodeErrorKind> {
    move |v| {
        let mut budget = Budget::new();
        let ies = Ies::parse(v, ie, 1, &mut budget)?;
        read(&ies, &mut budget)
    }
}

const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

#[test]
fn node_id_ipv4_ipv6_fqdn() {
    // scapy: IE_NodeId(id_type=0, ipv4="192.0.2.1")
    golden("003c000500c0000201", NodeId::Ipv4(V4), put_node_id, node_id);
    // scapy: IE_NodeId(id_type=1, ipv6="2001:db8::1")
    golden(
        "003c00110120010db8000000000000000000000001",
        NodeId::Ipv6("2001:db8::1".parse().expect("test address")),
        put_node_id,
        node_id,
    );
    // scapy: IE_NodeId(id_type=2, id=b"smf.example.org") — DNS labels, no root label
    golden(
        "003c00110203736d66076578616d706c65036f7267",
        NodeId::Fqdn("smf.example.org".into()),
        put_node_id,
        node_id,
    );
}

#[test]
fn f_seid() {
    // scapy: IE_FSEID(v4=1, seid=0x0102030405060708, ipv4="198.51.100.7")
    golden(
        "0039000d020102030405060708c6336407",
        FSeid {
            seid: 0x0102_0304_0506_0708,
            ipv4: Some(Ipv4Addr::new(198, 51, 100, 7)),
            ipv6: None,
        },
        put_f_seid,
        super::leaf::f_seid,
    );
    // scapy: IE_FSEID(v4=1, v6=1, seid=42, ipv4="198.51.100.7", ipv6="2001:db8::7")
    golden(
        "0039001d03000000000000002ac633640720010db8000000000000000000000007",
        FSeid {
            seid: 42,
            ipv4: Some(Ipv4Addr::new(198, 51, 100, 7)),
            ipv6: Some("2001:db8::7".parse().expect("test address")),
        },
        put_f_seid,
        super::leaf::f_seid,
    );
}

#[test]
fn f_teid_assigned_and_choose() {
    let put = |w: &mut Writer, v: &FTeid| put_f_teid(w, v);
    // scapy: IE_FTEID(V4=1, TEID=0x11223344, ipv4="203.0.113.5")
    golden(
        "001500090111223344cb007105",
        FTeid::Assigned {
            teid: 0x1122_3344,
            ipv4: Some(Ipv4Addr::new(203, 0, 113, 5)),
            ipv6: None,
        },
        put,
        f_teid,
    );
    // scapy: IE_FTEID(V6=1, TEID=1, ipv6="2001:db8::5")
    golden(
        "00150015020000000120010db8000000000000000000000005",
        FTeid::Assigned {
            teid: 1,
            ipv4: None,
            ipv6: Some("2001:db8::5".parse().expect("test address")),
        },
        put,
        f_teid,
    );
    // scapy: IE_FTEID(CH=1, V4=1, CHID=1, choose_id=7)
    golden(
        "001500020d07",
        FTeid::Choose {
            ipv4: true,
            ipv6: false,
            choose_id: Some(7),
        },
        put,
        f_teid,
    );
    // scapy: IE_FTEID(CH=1, V4=1, V6=1)
    golden(
        "0015000107",
        FTeid::Choose {
            ipv4: true,
            ipv6: true,
            choose_id: None,
        },
        put,
        f_teid,
    );
}

#[test]
fn ue_ip_address_flags() {
    let put = |w: &mut Writer, v: &UeIpAddress| put_ue_ip_address(w, v);
    // scapy: IE_UE_IP_Address(V4=1, SD=1, ipv4="10.45.0.2")
    golden(
        "005d0005060a2d0002",
        UeIpAddress {
            ipv4: Some(Ipv4Addr::new(10, 45, 0, 2)),
            is_destination: true,
            ..Default::default()
        },
        put,
        ue_ip_address,
    );
    // tshark: IPV6PL, IPv6D, S/D, V6; IPv6 2001:db8:1::, delegation bits 3, prefix length
    // 56 (scapy 2.8 has no IPv6D / IP6PL fields)
    golden(
        "005d00134d20010db80001000000000000000000000338",
        UeIpAddress {
            ipv6: Some("2001:db8:1::".parse().expect("test address")),
            is_destination: true,
            ipv6_prefix_delegation_bits: Some(3),
            ipv6_prefix_length: Some(56),
            ..Default::default()
        },
        put,
        ue_ip_address,
    );
    // tshark: CHV4 set, V4 not present, no address (scapy 2.8 has no CHV4)
    golden(
        "005d000110",
        UeIpAddress {
            choose_ipv4: true,
            ..Default::default()
        },
        put,
        ue_ip_address,
    );
    // tshark: CHV6 set, V6 not present
    golden(
        "005d000120",
        UeIpAddress {
            choose_ipv6: true,
            ..Default::default()
        },
        put,
        ue_ip_address,
    );
}

#[test]
fn sdf_filter_every_field() {
    let put = |w: &mut Writer, v: &SdfFilter| put_sdf_filter(w, v);
    // scapy: IE_SDF_Filter(FD=1, flow_description=b"permit out ip from 10.0.0.0/8 to assigned")
    golden(
        "0017002d010000297065726d6974206f75742069702066726f6d2031302e302e302e302f3820746f2061737369676e6564",
        SdfFilter {
            flow_description: Some("permit out ip from 10.0.0.0/8 to assigned".into()),
            ..Default::default()
        },
        put,
        sdf_filter,
    );
    // scapy: IE_SDF_Filter(FD=1, flow_description=b"permit out 17 from any to assigned",
    //   TTC=1, tos_traffic_class=0x2e, tos_traffic_mask=0xfc, SPI=1,
    //   security_parameter_index=0xdeadbeef, FL=1, flow_label=0x12345, BID=1, sdf_filter_id=9)
    golden(
        "001700331f0000227065726d6974206f75742031372066726f6d20616e7920746f2061737369676e65642efcdeadbeef01234500000009",
        SdfFilter {
            flow_description: Some("permit out 17 from any to assigned".into()),
            tos_traffic_class: Some(0x2efc),
            security_parameter_index: Some(0xdead_beef),
            flow_label: Some(0x12345),
            sdf_filter_id: Some(9),
        },
        put,
        sdf_filter,
    );
}

#[test]
fn outer_header_removal_and_creation() {
    // scapy: IE_OuterHeaderRemoval(header=0)
    golden(
        "005f000100",
        OuterHeaderRemoval {
            description: 0,
            extension_header_deletion: None,
        },
        |w, v| put_outer_header_removal(w, *v),
        outer_header_removal,
    );
    // scapy: IE_OuterHeaderRemoval(header=6, length=2, spare=0, pdu_session_container=1)
    golden(
        "005f00020601",
        OuterHeaderRemoval {
            description: 6,
            extension_header_deletion: Some(1),
        },
        |w, v| put_outer_header_removal(w, *v),
        outer_header_removal,
    );
    type O = OuterHeaderCreation;
    // scapy: IE_OuterHeaderCreation(GTPUUDPIPV4=1, TEID=0x1234, ipv4="192.0.2.10")
    golden(
        "0054000a010000001234c000020a",
        O {
            description: O::GTPU_UDP_IPV4,
            teid: Some(0x1234),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 10)),
            ..Default::default()
        },
        put_outer_header_creation,
        outer_header_creation,
    );
    // scapy: IE_OuterHeaderCreation(UDPIPV6=1, ipv6="2001:db8::10", port=2152)
    golden(
        "00540014080020010db80000000000000000000000100868",
        O {
            description: O::UDP_IPV6,
            ipv6: Some("2001:db8::10".parse::<Ipv6Addr>().expect("test address")),
            port: Some(2152),
            ..Default::default()
        },
        put_outer_header_creation,
        outer_header_creation,
    );
    // tshark: description octets 01 02 (GTP-U/UDP/IPv4, N6 indication), TEID 0x1234,
    // 192.0.2.10 (scapy 2.8 names octet 6 "spare")
    golden(
        "0054000a01020000 1234c000020a",
        O {
            description: O::GTPU_UDP_IPV4 | O::N6,
            teid: Some(0x1234),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 10)),
            ..Default::default()
        },
        put_outer_header_creation,
        outer_header_creation,
    );
}

#[test]
fn apply_action_one_or_two_octets() {
    let put = |w: &mut Writer, v: &ApplyAction| put_apply_action(w, *v);
    // scapy: IE_ApplyAction(spare=0, FORW=1)
    golden(
        "002c000102",
        ApplyAction(ApplyAction::FORW),
        put,
        apply_action,
    );
    // scapy: IE_ApplyAction(spare=0, DROP=1, NOCP=1)
    golden(
        "002c000109",
        ApplyAction(ApplyAction::DROP | ApplyAction::NOCP),
        put,
        apply_action,
    );
    // tshark: FORW, BDPN (octet 6 bit 2; scapy 2.8 knows only octet 5)
    golden(
        "002c00020202",
        ApplyAction(ApplyAction::FORW | ApplyAction::BDPN),
        put,
        apply_action,
    );
}

#[test]
fn qos_enforcement() {
    // scapy: IE_GateStatus(ul=0, dl=1)
    golden(
        "0019000101",
        GateStatus {
            uplink_open: true,
            downlink_open: false,
        },
        |w, v| put_gate_status(w, *v),
        gate_status,
    );
    // scapy: IE_MBR(ul=100000, dl=2**40-1)
    golden(
        "001a000a00000186a0ffffffffff",
        BitRate {
            uplink_kbps: 100_000,
            downlink_kbps: (1 << 40) - 1,
        },
        |w, v| put_bit_rate(w, t::MBR, *v),
        |v| bit_rate(t::MBR, v),
    );
    // scapy: IE_GBR(ul=1, dl=256)
    golden(
        "001b000a00000000010000000100",
        BitRate {
            uplink_kbps: 1,
            downlink_kbps: 256,
        },
        |w, v| put_bit_rate(w, t::GBR, *v),
        |v| bit_rate(t::GBR, v),
    );
    // scapy: IE_QFI(spare=0, QFI=9)
    golden("007c000109", 9, |w, v| put_qfi(w, *v), qfi);
}

#[test]
fn usage_reporting_rules() {
    // scapy: IE_MeasurementMethod(VOLUM=1, DURAT=1)
    golden(
        "003e000103",
        MeasurementMethod {
            duration: true,
            volume: true,
            event: false,
        },
        |w, v| put_measurement_method(w, *v),
        measurement_method,
    );
    let triggers = |v: &[u8]| trigger_octets(t::REPORTING_TRIGGERS, v);
    // scapy: IE_ReportingTriggers(periodic_reporting=1, volume_threshold=1, volume_quota=1)
    golden(
        "002500020301",
        ReportingTriggers::PERIODIC
            | ReportingTriggers::VOLUME_THRESHOLD
            | ReportingTriggers::VOLUME_QUOTA,
        |w, v| put_trigger_octets(w, t::REPORTING_TRIGGERS, *v),
        triggers,
    );
    // tshark: PERIO, VOLQU, REEMR (octet 7 bit 1; scapy 2.8 knows 2 octets)
    golden(
        "0025000301 0101",
        0x0001_0101,
        |w, v| put_trigger_octets(w, t::REPORTING_TRIGGERS, *v),
        triggers,
    );
    // scapy: IE_VolumeThreshold(TOVOL=1, DLVOL=1, total=10**9, downlink=5*10**8)
    golden(
        "001f001105000000003b9aca00000000001dcd6500",
        Volume {
            total: Some(1_000_000_000),
            uplink: None,
            downlink: Some(500_000_000),
        },
        |w, v| put_volume_threshold(w, *v),
        volume_threshold,
    );
    // scapy: IE_MeasurementPeriod(period=60)
    golden(
        "004000040000003c",
        60,
        |w, v| put_u32_ie(w, t::MEASUREMENT_PERIOD, *v),
        |v| u32_ie(t::MEASUREMENT_PERIOD, v),
    );
    // scapy: IE_TimeThreshold(threshold=3600)
    golden(
        "0020000400000e10",
        3600,
        |w, v| put_u32_ie(w, t::TIME_THRESHOLD, *v),
        |v| u32_ie(t::TIME_THRESHOLD, v),
    );
}

#[test]
fn usage_report_contents() {
    // scapy: IE_VolumeMeasurement(TOVOL=1, ULVOL=1, total=1000, uplink=400)
    golden(
        "004200110300000000000003e80000000000000190",
        VolumeMeasurement {
            total_octets: Some(1000),
            uplink_octets: Some(400),
            ..Default::default()
        },
        |w, v| put_volume_measurement(w, *v),
        volume_measurement,
    );
    // tshark: DLNOP ULNOP TONOP DLVOL ULVOL TOVOL; volumes 1000/400/600, packets 10/4/6
    // (scapy 2.8 has no packet counts)
    golden(
        "00420031 3f 00000000000003e8 0000000000000190 0000000000000258
         000000000000000a 0000000000000004 0000000000000006",
        VolumeMeasurement {
            total_octets: Some(1000),
            uplink_octets: Some(400),
            downlink_octets: Some(600),
            total_packets: Some(10),
            uplink_packets: Some(4),
            downlink_packets: Some(6),
        },
        |w, v| put_volume_measurement(w, *v),
        volume_measurement,
    );
    let trig = |v: &[u8]| trigger_octets(t::USAGE_REPORT_TRIGGER, v);
    // scapy: IE_UsageReportTrigger(PERIO=1, TERMR=1)
    golden(
        "003f00020108",
        UsageReportTrigger::PERIODIC | UsageReportTrigger::TERMINATION,
        |w, v| put_trigger_octets(w, t::USAGE_REPORT_TRIGGER, *v),
        trig,
    );
    // tshark: PERIO, TERMR, then octet 7: QUVTI IPMJL TEMUR EVEQU
    golden(
        "003f000301080f",
        0x000F_0801,
        |w, v| put_trigger_octets(w, t::USAGE_REPORT_TRIGGER, *v),
        trig,
    );
    for (ie, hex, v) in [
        // scapy: IE_StartTime(timestamp=3900000001), IE_EndTime(timestamp=3900000061),
        // IE_DurationMeasurement(duration=60), IE_UR_SEQN(number=7)
        (t::START_TIME, "004b0004e8754701", 3_900_000_001),
        (t::END_TIME, "004c0004e875473d", 3_900_000_061),
        (t::DURATION_MEASUREMENT, "004300040000003c", 60),
        (t::UR_SEQN, "0068000400000007", 7),
        // scapy: IE_RecoveryTimeStamp(timestamp=3900000000)
        (t::RECOVERY_TIME_STAMP, "00600004e8754700", 3_900_000_000),
        // scapy: IE_Precedence(precedence=255), IE_FAR_Id(id=0x10), IE_URR_Id(id=0x20),
        // IE_QER_Id(id=0x30)
        (t::PRECEDENCE, "001d0004000000ff", 255),
        (t::FAR_ID, "006c000400000010", 0x10),
        (t::URR_ID, "0051000400000020", 0x20),
        (t::QER_ID, "006d000400000030", 0x30),
    ] {
        golden(hex, v, |w, v| put_u32_ie(w, ie, *v), |v| u32_ie(ie, v));
    }
    // scapy: IE_UsageReport_SRR(IE_list=[IE_URR_Id(id=5), IE_UR_SEQN(number=1),
    //   IE_UsageReportTrigger(PERIO=1), IE_VolumeMeasurement(TOVOL=1, total=1500),
    //   IE_DurationMeasurement(duration=10)])
    golden(
        "0050002b00510004000000050068000400000001003f00020100004200090100000000000005dc004300040000000a",
        UsageReport {
            urr_id: 5,
            ur_seqn: 1,
            trigger: UsageReportTrigger(UsageReportTrigger::PERIODIC),
            start_time: None,
            end_time: None,
            volume: Some(VolumeMeasurement {
                total_octets: Some(1500),
                ..Default::default()
            }),
            duration: Some(10),
        },
        |w, v| put_usage_report(w, t::USAGE_REPORT_REPORT, v),
        grouped(t::USAGE_REPORT_REPORT, usage_report),
    );
    // scapy: IE_QueryURR(IE_list=[IE_URR_Id(id=5)])
    golden(
        "004d00080051000400000005",
        5,
        |w, v| put_one_id_group(w, t::QUERY_URR, t::URR_ID, *v),
        |v| {
            let mut budget = Budget::new();
            let outer = hex("004d00080051000400000005");
            let ies = Ies::parse(&outer, 0, 0, &mut budget)?;
            assert_eq!(ies.first(t::QUERY_URR), Some(v));
            one_id_groups(&ies, t::QUERY_URR, t::URR_ID, &mut budget)
                .map(|ids| ids.first().copied().unwrap_or_default())
        },
    );
}

#[test]
fn downlink_data_report_one_or_more_pdrs() {
    let read = grouped(t::DOWNLINK_DATA_REPORT, |ies, _| downlink_data_report(ies));
    // scapy: IE_DownlinkDataReport(IE_list=[IE_PDR_Id(id=200)])
    golden(
        "005300060038000200c8",
        DownlinkDataReport { pdr_ids: vec![200] },
        put_downlink_data_report,
        read,
    );
    // scapy: IE_DownlinkDataReport(IE_list=[IE_PDR_Id(id=1), IE_PDR_Id(id=0x1234)])
    golden(
        "0053000c003800020001003800021234",
        DownlinkDataReport {
            pdr_ids: vec![1, 0x1234],
        },
        put_downlink_data_report,
        grouped(t::DOWNLINK_DATA_REPORT, |ies, _| downlink_data_report(ies)),
    );
    // Without a PDR ID it says nothing: its mandatory IE is missing.
    assert_eq!(
        grouped(t::DOWNLINK_DATA_REPORT, |ies, _| downlink_data_report(ies))(&[]),
        Err(DecodeErrorKind::MissingMandatory { ie: t::PDR_ID })
    );
}

#[test]
fn user_id_tbcd_and_nai() {
    // scapy: IE_UserId(IMSIF=1, imsi=<TBCD 00 01 01 21 43 65 87 f9>, MSISDNF=1,
    //   msisdn=<TBCD 94 71 10 32 54 76 98>, NAIF=1, nai=b"user@example.org"); scapy holds the
    //   digits as raw octets, so the TBCD here is TS 29.274 §8.3 by hand; tshark shows
    //   IMSI 001010123456789, MSISDN 49170123456789, NAI user@example.org
    golden(
        "008d00230d0800010121436587f907947110325476981075736572406578616d706c652e6f7267",
        UserId {
            imsi: Some("001010123456789".into()),
            imei: None,
            msisdn: Some("49170123456789".into()),
            nai: Some("user@example.org".into()),
        },
        put_user_id,
        user_id,
    );
}

#[test]
fn node_level_ies() {
    // scapy: IE_UPFunctionFeatures(FTUP=1, EMPU=1, all other bits 0)
    golden(
        "002b00021001",
        vec![0x10, 0x01],
        |w, v| put_octets(w, t::UP_FUNCTION_FEATURES, v),
        |v| Ok(v.to_vec()),
    );
    // scapy: IE_CPFunctionFeatures(LOAD=1, OVRL=1)
    golden(
        "0059000103",
        vec![0x03],
        |w, v| put_octets(w, t::CP_FUNCTION_FEATURES, v),
        |v| Ok(v.to_vec()),
    );
    // scapy: IE_Cause(cause=1), IE_Cause(cause=69)
    golden(
        "0013000101",
        Cause::ACCEPTED,
        |w, v| put_cause(w, *v),
        cause,
    );
    golden(
        "0013000145",
        Cause::MANDATORY_IE_INCORRECT,
        |w, v| put_cause(w, *v),
        cause,
    );
    // scapy: IE_OffendingIE(type=56)
    golden(
        "002800020038",
        t::PDR_ID,
        |w, v| put_offending_ie(w, *v),
        |v| u16_ie(t::OFFENDING_IE, v),
    );
    // scapy: IE_PDR_Id(id=1)
    golden(
        "003800020001",
        1,
        |w, v| put_u16_ie(w, t::PDR_ID, *v),
        |v| u16_ie(t::PDR_ID, v),
    );
    for (ie, hex, v) in [
        // scapy: IE_ReportType(USAR=1), IE_BAR_Id(id=3),
        // IE_PFCPAssociationReleaseRequest(spare=0, SARR=1),
        // IE_GracefulReleasePeriod(release_timer_unit=1, release_timer_value=5)
        (t::REPORT_TYPE, "0027000102", ReportType::USAGE),
        (t::BAR_ID, "0058000103", 3),
        (t::ASSOCIATION_RELEASE_REQUEST, "006f000101", 1),
        (t::GRACEFUL_RELEASE_PERIOD, "0070000125", 0x25),
    ] {
        golden(hex, v, |w, v| put_u8_ie(w, ie, *v), |v| u8_ie(ie, v));
    }
    // scapy: IE_PDNType(pdn_type=1) — IPv4 is 1 in TS 29.244 §8.2.79; scapy's own enum
    // names 0 "IPv4", so its default encodes the reserved value 0
    golden("0071000101", 1, |w, v| put_pdn_type(w, *v), pdn_type);
    // scapy: IE_NetworkInstance(instance=b"internet") — scapy writes APN labels; the codec
    // keeps the octets as they are
    golden(
        "0016000908696e7465726e6574",
        b"\x08internet".to_vec(),
        |w, v| put_network_instance(w, v),
        |v| Ok(v.to_vec()),
    );
    // scapy: IE_SourceInterface(interface=1), IE_DestinationInterface(interface=2)
    golden(
        "0014000101",
        Interface::Core,
        |w, v| put_interface(w, t::SOURCE_INTERFACE, *v),
        |v| interface(t::SOURCE_INTERFACE, v),
    );
    golden(
        "002a000102",
        Interface::SgiLan,
        |w, v| put_interface(w, t::DESTINATION_INTERFACE, *v),
        |v| interface(t::DESTINATION_INTERFACE, v),
    );
}

#[test]
fn longer_ies_than_known_are_read_up_to_what_is_known() {
    // A Precedence with two octets more (a later release's extension): the first 4 count.
    assert_eq!(
        u32_ie(t::PRECEDENCE, &hex("000000ff abcd")),
        Ok(255),
        "§8.1.1: octets past the known fields are present only if explicitly specified"
    );
}

#[test]
fn values_out_of_range_name_their_ie() {
    let incorrect = |r: Result<_, DecodeErrorKind>| match r {
        Err(DecodeErrorKind::IncorrectValue { ie, .. }) => ie,
        other => panic!("expected IncorrectValue, got {other:?}"),
    };
    assert_eq!(
        incorrect(interface(t::SOURCE_INTERFACE, &[5]).map(drop)),
        t::SOURCE_INTERFACE
    );
    assert_eq!(
        incorrect(interface(t::DESTINATION_INTERFACE, &[6]).map(drop)),
        t::DESTINATION_INTERFACE
    );
    assert_eq!(incorrect(cause(&[0]).map(drop)), t::CAUSE);
    assert_eq!(incorrect(pdn_type(&[0]).map(drop)), t::PDN_TYPE);
    assert_eq!(incorrect(pdn_type(&[6]).map(drop)), t::PDN_TYPE);
    assert_eq!(
        incorrect(outer_header_removal(&[9]).map(drop)),
        t::OUTER_HEADER_REMOVAL
    );
    assert_eq!(incorrect(node_id(&[3, 1, 2, 3, 4]).map(drop)), t::NODE_ID);
    for bad in [
        &b"\x02"[..],
        b"\x02\x00",
        b"\x02\x05ab",
        b"\x02\x03a.b",
        b"\x02\x01_",
    ] {
        assert_eq!(incorrect(node_id(bad).map(drop)), t::NODE_ID, "{bad:?}");
    }
    assert_eq!(incorrect(super::leaf::f_seid(&[0; 9]).map(drop)), t::F_SEID);
    assert_eq!(incorrect(f_teid(&[0, 0, 0, 0, 1]).map(drop)), t::F_TEID);
    assert_eq!(
        incorrect(f_teid(&hex("0900000001c0000201")).map(drop)),
        t::F_TEID
    );
    assert_eq!(
        incorrect(ue_ip_address(&hex("12c0000201")).map(drop)),
        t::UE_IP_ADDRESS
    );
    assert_eq!(
        incorrect(sdf_filter(&hex("01000000")).map(drop)),
        t::SDF_FILTER
    );
    assert_eq!(
        incorrect(sdf_filter(&hex("01000001ff")).map(drop)),
        t::SDF_FILTER
    );
    assert_eq!(
        incorrect(outer_header_creation(&hex("0001")).map(drop)),
        t::OUTER_HEADER_CREATION
    );
    assert_eq!(
        incorrect(outer_header_creation(&hex("4000 000000")).map(drop)),
        t::OUTER_HEADER_CREATION
    );
    assert_eq!(incorrect(user_id(&hex("01 01 1a")).map(drop)), t::USER_ID);
    assert_eq!(
        incorrect(user_id(&hex("01 02 f1 21")).map(drop)),
        t::USER_ID
    );
    assert_eq!(incorrect(user_id(&hex("08 01 ff")).map(drop)), t::USER_ID);
}

#[test]
fn short_ies_are_invalid_length() {
    let short = |r: Result<(), DecodeErrorKind>| match r {
        Err(DecodeErrorKind::InvalidLength { ie }) => ie,
        other => panic!("expected InvalidLength, got {other:?}"),
    };
    assert_eq!(
        short(u32_ie(t::PRECEDENCE, &[0, 0, 1]).map(drop)),
        t::PRECEDENCE
    );
    assert_eq!(short(u16_ie(t::PDR_ID, &[1]).map(drop)), t::PDR_ID);
    assert_eq!(short(node_id(&[0, 192, 0, 2]).map(drop)), t::NODE_ID);
    assert_eq!(
        short(super::leaf::f_seid(&[2, 0, 0, 0, 0, 0, 0, 0, 1]).map(drop)),
        t::F_SEID
    );
    assert_eq!(short(f_teid(&[1, 0, 0, 0, 1, 192]).map(drop)), t::F_TEID);
    assert_eq!(short(f_teid(&[0x0d]).map(drop)), t::F_TEID);
    // FD says a flow description follows: its length says 10 octets, 2 are there.
    assert_eq!(
        short(sdf_filter(&hex("0100000a6162")).map(drop)),
        t::SDF_FILTER
    );
    assert_eq!(short(sdf_filter(&hex("02")).map(drop)), t::SDF_FILTER);
    assert_eq!(short(bit_rate(t::MBR, &[0; 9]).map(drop)), t::MBR);
    assert_eq!(
        short(volume_measurement(&hex("08 00")).map(drop)),
        t::VOLUME_MEASUREMENT
    );
    assert_eq!(
        short(trigger_octets(t::REPORTING_TRIGGERS, &[1]).map(drop)),
        t::REPORTING_TRIGGERS
    );
    assert_eq!(short(apply_action(&[]).map(drop)), t::APPLY_ACTION);
    assert_eq!(short(ue_ip_address(&hex("4d")).map(drop)), t::UE_IP_ADDRESS);
    assert_eq!(short(user_id(&hex("01 08 00")).map(drop)), t::USER_ID);
    assert_eq!(
        short(outer_header_creation(&hex("0100 0000")).map(drop)),
        t::OUTER_HEADER_CREATION
    );
}
