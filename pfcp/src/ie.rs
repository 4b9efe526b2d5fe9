//! The information elements mecgw reads and writes, as typed values (TS 29.244 §8).
//!
//! Each type holds what the IE says in Rust terms (addresses as `Ipv4Addr`, flags as `bool`,
//! lists as `Vec`); the codec ([`crate::codec`]) owns the bytes. Grouped IEs are structs of
//! their children; a child the spec marks mandatory is a plain field, an optional or
//! conditional one an `Option` (or a `Vec` where it may repeat).

use std::net::{Ipv4Addr, Ipv6Addr};

/// IE type numbers (TS 29.244 Table 8.1.2-1) of the IEs this crate knows.
pub mod ie_type {
    pub const CREATE_PDR: u16 = 1;
    pub const PDI: u16 = 2;
    pub const CREATE_FAR: u16 = 3;
    pub const FORWARDING_PARAMETERS: u16 = 4;
    pub const CREATE_URR: u16 = 6;
    pub const CREATE_QER: u16 = 7;
    pub const CREATED_PDR: u16 = 8;
    pub const UPDATE_PDR: u16 = 9;
    pub const UPDATE_FAR: u16 = 10;
    pub const UPDATE_FORWARDING_PARAMETERS: u16 = 11;
    pub const UPDATE_URR: u16 = 13;
    pub const UPDATE_QER: u16 = 14;
    pub const REMOVE_PDR: u16 = 15;
    pub const REMOVE_FAR: u16 = 16;
    pub const REMOVE_URR: u16 = 17;
    pub const REMOVE_QER: u16 = 18;
    pub const CAUSE: u16 = 19;
    pub const SOURCE_INTERFACE: u16 = 20;
    pub const F_TEID: u16 = 21;
    pub const NETWORK_INSTANCE: u16 = 22;
    pub const SDF_FILTER: u16 = 23;
    pub const GATE_STATUS: u16 = 25;
    pub const MBR: u16 = 26;
    pub const GBR: u16 = 27;
    pub const PRECEDENCE: u16 = 29;
    pub const VOLUME_THRESHOLD: u16 = 31;
    pub const TIME_THRESHOLD: u16 = 32;
    pub const REPORTING_TRIGGERS: u16 = 37;
    pub const REPORT_TYPE: u16 = 39;
    pub const OFFENDING_IE: u16 = 40;
    pub const DESTINATION_INTERFACE: u16 = 42;
    pub const UP_FUNCTION_FEATURES: u16 = 43;
    pub const APPLY_ACTION: u16 = 44;
    pub const PDR_ID: u16 = 56;
    pub const F_SEID: u16 = 57;
    pub const NODE_ID: u16 = 60;
    pub const MEASUREMENT_METHOD: u16 = 62;
    pub const USAGE_REPORT_TRIGGER: u16 = 63;
    pub const MEASUREMENT_PERIOD: u16 = 64;
    pub const VOLUME_MEASUREMENT: u16 = 66;
    pub const DURATION_MEASUREMENT: u16 = 67;
    pub const START_TIME: u16 = 75;
    pub const END_TIME: u16 = 76;
    pub const QUERY_URR: u16 = 77;
    pub const USAGE_REPORT_MODIFICATION: u16 = 78;
    pub const USAGE_REPORT_DELETION: u16 = 79;
    pub const USAGE_REPORT_REPORT: u16 = 80;
    pub const URR_ID: u16 = 81;
    pub const DOWNLINK_DATA_REPORT: u16 = 83;
    pub const OUTER_HEADER_CREATION: u16 = 84;
    /// Create BAR, Update BAR (Session Modification Request), Remove BAR: not modelled (a
    /// UP function without buffering has no use for them; §7.6.1 lets it discard them).
    pub const CREATE_BAR: u16 = 85;
    pub const UPDATE_BAR_SESSION_MODIFICATION: u16 = 86;
    pub const REMOVE_BAR: u16 = 87;
    pub const BAR_ID: u16 = 88;
    pub const CP_FUNCTION_FEATURES: u16 = 89;
    pub const UE_IP_ADDRESS: u16 = 93;
    pub const OUTER_HEADER_REMOVAL: u16 = 95;
    pub const RECOVERY_TIME_STAMP: u16 = 96;
    pub const UR_SEQN: u16 = 104;
    pub const FAR_ID: u16 = 108;
    pub const QER_ID: u16 = 109;
    pub const ASSOCIATION_RELEASE_REQUEST: u16 = 111;
    pub const GRACEFUL_RELEASE_PERIOD: u16 = 112;
    pub const PDN_TYPE: u16 = 113;
    pub const QFI: u16 = 124;
    pub const USER_ID: u16 = 141;
    pub const SOURCE_IP_ADDRESS: u16 = 192;
}

/// Cause values (TS 29.244 §8.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cause(pub u8);

impl Cause {
    pub const ACCEPTED: Cause = Cause(1);
    pub const REJECTED: Cause = Cause(64);
    pub const SESSION_CONTEXT_NOT_FOUND: Cause = Cause(65);
    pub const MANDATORY_IE_MISSING: Cause = Cause(66);
    pub const CONDITIONAL_IE_MISSING: Cause = Cause(67);
    pub const INVALID_LENGTH: Cause = Cause(68);
    pub const MANDATORY_IE_INCORRECT: Cause = Cause(69);
    pub const INVALID_FORWARDING_POLICY: Cause = Cause(70);
    pub const INVALID_F_TEID_ALLOCATION_OPTION: Cause = Cause(71);
    pub const NO_ESTABLISHED_PFCP_ASSOCIATION: Cause = Cause(72);
    pub const RULE_CREATION_MODIFICATION_FAILURE: Cause = Cause(73);
    pub const PFCP_ENTITY_IN_CONGESTION: Cause = Cause(74);
    pub const NO_RESOURCES_AVAILABLE: Cause = Cause(75);
    pub const SERVICE_NOT_SUPPORTED: Cause = Cause(76);
    pub const SYSTEM_FAILURE: Cause = Cause(77);
    pub const REDIRECTION_REQUESTED: Cause = Cause(78);

    /// A lower-case name for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self.0 {
            1 => "accepted",
            64 => "rejected",
            65 => "session_context_not_found",
            66 => "mandatory_ie_missing",
            67 => "conditional_ie_missing",
            68 => "invalid_length",
            69 => "mandatory_ie_incorrect",
            70 => "invalid_forwarding_policy",
            71 => "invalid_f_teid_allocation_option",
            72 => "no_established_pfcp_association",
            73 => "rule_creation_modification_failure",
            74 => "pfcp_entity_in_congestion",
            75 => "no_resources_available",
            76 => "service_not_supported",
            77 => "system_failure",
            78 => "redirection_requested",
            _ => "other",
        }
    }
}

/// Node ID (§8.2.38).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeId {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// An FQDN, as its dotted text (encoded as DNS labels on the wire).
    Fqdn(String),
}

/// F-SEID (§8.2.37): a session endpoint of one side. At least one address is present.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FSeid {
    pub seid: u64,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// F-TEID (§8.2.3): a GTP-U tunnel endpoint, or a request that the UP function choose one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FTeid {
    /// A TEID and its address(es).
    Assigned {
        teid: u32,
        ipv4: Option<Ipv4Addr>,
        ipv6: Option<Ipv6Addr>,
    },
    /// CH set: the UP function allocates the TEID (and picks the address of the families
    /// asked for). PDRs with the same `choose_id` share one allocation.
    Choose {
        ipv4: bool,
        ipv6: bool,
        choose_id: Option<u8>,
    },
}

/// Source and Destination Interface values (§8.2.2, §8.2.24).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interface {
    /// Towards the RAN (N3).
    Access,
    /// Towards the core (N9/N6 of a PSA).
    Core,
    /// SGi-LAN / N6-LAN: the local services.
    SgiLan,
    /// The CP function.
    CpFunction,
    /// Any other value (4 LI function, 5 5G VN internal, …), kept as is.
    Other(u8),
}

impl Interface {
    /// The 4-bit value on the wire.
    pub const fn value(self) -> u8 {
        match self {
            Interface::Access => 0,
            Interface::Core => 1,
            Interface::SgiLan => 2,
            Interface::CpFunction => 3,
            Interface::Other(v) => v,
        }
    }

    /// The interface of a 4-bit value.
    pub const fn from_value(v: u8) -> Interface {
        match v {
            0 => Interface::Access,
            1 => Interface::Core,
            2 => Interface::SgiLan,
            3 => Interface::CpFunction,
            v => Interface::Other(v),
        }
    }
}

/// UE IP Address (§8.2.62).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UeIpAddress {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// S/D: set, the address is a destination (downlink PDRs); clear, a source.
    pub is_destination: bool,
    /// IPv6D: the IPv6 prefix delegation bits, when present.
    pub ipv6_prefix_delegation_bits: Option<u8>,
    /// IP6PL: the IPv6 prefix length, when present (otherwise /64 for a PDU session).
    pub ipv6_prefix_length: Option<u8>,
    /// CHV4 / CHV6: the UP function should allocate the address.
    pub choose_ipv4: bool,
    pub choose_ipv6: bool,
}

/// SDF Filter (§8.2.5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SdfFilter {
    /// An IPFilterRule (RFC 6733 §4.3), e.g. `permit out ip from 10.0.0.0/8 to assigned`.
    pub flow_description: Option<String>,
    /// ToS / Traffic Class and its mask (2 octets).
    pub tos_traffic_class: Option<u16>,
    pub security_parameter_index: Option<u32>,
    /// IPv6 flow label (20 bits).
    pub flow_label: Option<u32>,
    pub sdf_filter_id: Option<u32>,
}

/// Outer Header Removal (§8.2.64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OuterHeaderRemoval {
    /// 0 GTP-U/UDP/IPv4, 1 GTP-U/UDP/IPv6, 2 UDP/IPv4, 3 UDP/IPv6, 4 IPv4, 5 IPv6,
    /// 6 GTP-U/UDP/IP, 7 VLAN S-TAG, 8 S-TAG and C-TAG.
    pub description: u8,
    /// GTP-U extension header deletion flags, when present.
    pub extension_header_deletion: Option<u8>,
}

/// PDI (§7.5.2.2-2): what a PDR matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pdi {
    pub source_interface: Interface,
    pub local_f_teid: Option<FTeid>,
    /// Network Instance: an octet string (often a DNN in APN label encoding, sometimes text).
    pub network_instance: Option<Vec<u8>>,
    pub ue_ip_address: Vec<UeIpAddress>,
    pub sdf_filters: Vec<SdfFilter>,
    pub qfis: Vec<u8>,
}

/// Create PDR (§7.5.2.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CreatePdr {
    pub pdr_id: u16,
    pub precedence: u32,
    pub pdi: Pdi,
    pub outer_header_removal: Option<OuterHeaderRemoval>,
    pub far_id: Option<u32>,
    pub urr_ids: Vec<u32>,
    pub qer_ids: Vec<u32>,
}

/// Update PDR (§7.5.4.2): every field but the PDR ID is optional; a present list of URR or
/// QER IDs replaces the PDR's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpdatePdr {
    pub pdr_id: u16,
    pub outer_header_removal: Option<OuterHeaderRemoval>,
    pub precedence: Option<u32>,
    pub pdi: Option<Pdi>,
    pub far_id: Option<u32>,
    pub urr_ids: Vec<u32>,
    pub qer_ids: Vec<u32>,
}

/// Apply Action (§8.2.26), octets 5 and 6 as one flag word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ApplyAction(pub u16);

impl ApplyAction {
    pub const DROP: u16 = 0x0001;
    pub const FORW: u16 = 0x0002;
    pub const BUFF: u16 = 0x0004;
    pub const NOCP: u16 = 0x0008;
    pub const DUPL: u16 = 0x0010;
    pub const IPMA: u16 = 0x0020;
    pub const IPMD: u16 = 0x0040;
    pub const DFRT: u16 = 0x0080;
    pub const EDRT: u16 = 0x0100;
    pub const BDPN: u16 = 0x0200;
    pub const DDPN: u16 = 0x0400;

    /// Whether every flag of `flags` is set.
    pub const fn has(self, flags: u16) -> bool {
        self.0 & flags == flags
    }
}

/// Outer Header Creation (§8.2.56).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OuterHeaderCreation {
    /// The description flags, octets 5 and 6: see the `OHC_*` constants.
    pub description: u16,
    pub teid: Option<u32>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub port: Option<u16>,
}

impl OuterHeaderCreation {
    pub const GTPU_UDP_IPV4: u16 = 0x0100;
    pub const GTPU_UDP_IPV6: u16 = 0x0200;
    pub const UDP_IPV4: u16 = 0x0400;
    pub const UDP_IPV6: u16 = 0x0800;
    pub const IPV4: u16 = 0x1000;
    pub const IPV6: u16 = 0x2000;
    pub const C_TAG: u16 = 0x4000;
    pub const S_TAG: u16 = 0x8000;
    pub const N19: u16 = 0x0001;
    pub const N6: u16 = 0x0002;
}

/// Forwarding Parameters (§7.5.2.3-2) and, with every field optional, Update Forwarding
/// Parameters (§7.5.4.3-2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ForwardingParameters {
    /// Mandatory in Forwarding Parameters; optional in the update.
    pub destination_interface: Option<Interface>,
    pub network_instance: Option<Vec<u8>>,
    pub outer_header_creation: Option<OuterHeaderCreation>,
}

/// Create FAR (§7.5.2.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CreateFar {
    pub far_id: u32,
    pub apply_action: ApplyAction,
    pub forwarding_parameters: Option<ForwardingParameters>,
    pub bar_id: Option<u8>,
}

/// Update FAR (§7.5.4.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpdateFar {
    pub far_id: u32,
    pub apply_action: Option<ApplyAction>,
    pub update_forwarding_parameters: Option<ForwardingParameters>,
    pub bar_id: Option<u8>,
}

/// Gate Status (§8.2.27): whether each direction is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GateStatus {
    pub uplink_open: bool,
    pub downlink_open: bool,
}

/// A pair of bit rates in kbit/s (MBR §8.2.8, GBR §8.2.9: 40 bits each on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BitRate {
    pub uplink_kbps: u64,
    pub downlink_kbps: u64,
}

/// Create QER (§7.5.2.5) and, with every field but the ID optional, Update QER.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Qer {
    pub qer_id: u32,
    /// Mandatory in Create QER.
    pub gate_status: Option<GateStatus>,
    pub mbr: Option<BitRate>,
    pub gbr: Option<BitRate>,
    pub qfi: Option<u8>,
}

/// Measurement Method (§8.2.40).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MeasurementMethod {
    pub duration: bool,
    pub volume: bool,
    pub event: bool,
}

/// Reporting Triggers (§8.2.19), octets 5-7 as one flag word (octet 5 in the low byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReportingTriggers(pub u32);

impl ReportingTriggers {
    /// PERIO: periodic reporting.
    pub const PERIODIC: u32 = 0x0001;
    /// VOLTH: volume threshold.
    pub const VOLUME_THRESHOLD: u32 = 0x0002;
    /// TIMTH: time threshold.
    pub const TIME_THRESHOLD: u32 = 0x0004;
    /// QUHTI: quota holding time.
    pub const QUOTA_HOLDING_TIME: u32 = 0x0008;
    /// START of traffic.
    pub const START: u32 = 0x0010;
    /// STOPT: stop of traffic.
    pub const STOP: u32 = 0x0020;
    /// DROTH: dropped DL traffic threshold.
    pub const DROPPED_DL_THRESHOLD: u32 = 0x0040;
    /// LIUSA: linked usage reporting.
    pub const LINKED_USAGE: u32 = 0x0080;
    /// VOLQU: volume quota.
    pub const VOLUME_QUOTA: u32 = 0x0100;
    /// TIMQU: time quota.
    pub const TIME_QUOTA: u32 = 0x0200;
}

/// A volume in octets (Volume Threshold §8.2.13, Volume Quota): each part optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Volume {
    pub total: Option<u64>,
    pub uplink: Option<u64>,
    pub downlink: Option<u64>,
}

/// Create URR (§7.5.2.4) and, with every field but the ID optional, Update URR.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Urr {
    pub urr_id: u32,
    /// Mandatory in Create URR.
    pub measurement_method: Option<MeasurementMethod>,
    /// Mandatory in Create URR.
    pub reporting_triggers: Option<ReportingTriggers>,
    /// Seconds between periodic reports.
    pub measurement_period: Option<u32>,
    pub volume_threshold: Option<Volume>,
    /// Seconds of use after which to report.
    pub time_threshold: Option<u32>,
}

/// Created PDR (§7.5.3.2): the F-TEID the UP function chose for a PDR.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CreatedPdr {
    pub pdr_id: u16,
    pub local_f_teid: Option<FTeid>,
}

/// Usage Report Trigger (§8.2.41), octets 5-7 as one flag word (octet 5 in the low byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UsageReportTrigger(pub u32);

impl UsageReportTrigger {
    /// PERIO
    pub const PERIODIC: u32 = 0x0001;
    /// VOLTH
    pub const VOLUME_THRESHOLD: u32 = 0x0002;
    /// TIMTH
    pub const TIME_THRESHOLD: u32 = 0x0004;
    /// START
    pub const START: u32 = 0x0010;
    /// STOPT
    pub const STOP: u32 = 0x0020;
    /// IMMER: immediate report (a Query URR).
    pub const IMMEDIATE: u32 = 0x0080;
    /// TERMR: termination report (session deletion or URR removal).
    pub const TERMINATION: u32 = 0x0800;
}

/// Volume Measurement (§8.2.44): octets and packets, each part optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VolumeMeasurement {
    pub total_octets: Option<u64>,
    pub uplink_octets: Option<u64>,
    pub downlink_octets: Option<u64>,
    pub total_packets: Option<u64>,
    pub uplink_packets: Option<u64>,
    pub downlink_packets: Option<u64>,
}

/// Usage Report (§7.5.5.2, §7.5.7.2, §7.5.8.3): one URR's measurement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsageReport {
    pub urr_id: u32,
    pub ur_seqn: u32,
    pub trigger: UsageReportTrigger,
    /// NTP seconds (era 0) of the measurement's start and end.
    pub start_time: Option<u32>,
    pub end_time: Option<u32>,
    pub volume: Option<VolumeMeasurement>,
    /// Seconds.
    pub duration: Option<u32>,
}

/// User ID (§8.2.101): the subscriber's identities, each optional. Digits as text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserId {
    pub imsi: Option<String>,
    pub imei: Option<String>,
    pub msisdn: Option<String>,
    pub nai: Option<String>,
}

/// UP Function Features (§8.2.25): the feature octets as sent (octet 5 first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpFunctionFeatures(pub Vec<u8>);

/// CP Function Features (§8.2.58): the feature octets as sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpFunctionFeatures(pub Vec<u8>);

/// Downlink Data Report (§7.5.8.2): the PDRs whose downlink packets arrived while their FAR
/// buffered (and asked to notify the CP function).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DownlinkDataReport {
    /// One PDR ID IE each (the IE may repeat); at least one.
    pub pdr_ids: Vec<u16>,
}

/// Report Type (§8.2.21) flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReportType(pub u8);

impl ReportType {
    /// DLDR: downlink data report.
    pub const DOWNLINK_DATA: u8 = 0x01;
    /// USAR: usage report.
    pub const USAGE: u8 = 0x02;
    /// ERIR: error indication report.
    pub const ERROR_INDICATION: u8 = 0x04;
    /// UPIR: user plane inactivity report.
    pub const INACTIVITY: u8 = 0x08;
}
