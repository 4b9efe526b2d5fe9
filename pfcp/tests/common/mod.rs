//! proptest strategies for every message the codec models. They build only values TS 29.244
//! allows (and the codec therefore round-trips): at least one address in an F-SEID/F-TEID,
//! no address beside CHV4/CHV6, Forwarding Parameters whenever a FAR forwards, values within
//! their field widths, and so on.
#![allow(dead_code)] // each test binary uses a part

use std::net::{Ipv4Addr, Ipv6Addr};

use mecgw_pfcp::ie::*;
use mecgw_pfcp::message::*;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

pub fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

pub fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

pub fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        ipv4().prop_map(NodeId::Ipv4),
        ipv6().prop_map(NodeId::Ipv6),
        "[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?){0,5}"
            .prop_map(NodeId::Fqdn),
    ]
}

/// At least one address.
fn addresses() -> impl Strategy<Value = (Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    prop_oneof![
        ipv4().prop_map(|a| (Some(a), None)),
        ipv6().prop_map(|a| (None, Some(a))),
        (ipv4(), ipv6()).prop_map(|(a, b)| (Some(a), Some(b))),
    ]
}

pub fn f_seid() -> impl Strategy<Value = FSeid> {
    (any::<u64>(), addresses()).prop_map(|(seid, (ipv4, ipv6))| FSeid { seid, ipv4, ipv6 })
}

pub fn f_teid() -> impl Strategy<Value = FTeid> {
    prop_oneof![
        (any::<u32>(), addresses()).prop_map(|(teid, (ipv4, ipv6))| FTeid::Assigned {
            teid,
            ipv4,
            ipv6
        }),
        (0u8..3, of(any::<u8>())).prop_map(|(fam, choose_id)| FTeid::Choose {
            ipv4: fam != 1,
            ipv6: fam != 0,
            choose_id,
        }),
    ]
}

pub fn source_interface() -> impl Strategy<Value = Interface> {
    (0u8..=4).prop_map(Interface::from_value)
}

pub fn destination_interface() -> impl Strategy<Value = Interface> {
    (0u8..=5).prop_map(Interface::from_value)
}

pub fn ue_ip_address() -> impl Strategy<Value = UeIpAddress> {
    (
        of(ipv4()),
        of(ipv6()),
        any::<bool>(),
        of(any::<u8>()),
        of(0u8..=128),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(ipv4, ipv6, sd, pd, pl, chv4, chv6)| UeIpAddress {
            ipv4: ipv4.filter(|_| !chv4),
            ipv6: ipv6.filter(|_| !chv6),
            is_destination: sd,
            ipv6_prefix_delegation_bits: pd,
            ipv6_prefix_length: pl,
            choose_ipv4: chv4,
            choose_ipv6: chv6,
        })
}

pub fn flow_description() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("permit out ip from any to assigned".to_string()),
        "permit out (17|6|ip) from [0-9.]{7,15}(/[0-9]{1,2})? to assigned( [0-9]{1,5})?",
        "[ -~]{1,60}",
    ]
}

pub fn sdf_filter() -> impl Strategy<Value = SdfFilter> {
    (
        of(flow_description()),
        of(any::<u16>()),
        of(any::<u32>()),
        of(0u32..=0x000F_FFFF),
        of(any::<u32>()),
    )
        .prop_map(|(fd, ttc, spi, fl, bid)| SdfFilter {
            flow_description: fd,
            tos_traffic_class: ttc,
            security_parameter_index: spi,
            flow_label: fl,
            sdf_filter_id: bid,
        })
}

pub fn outer_header_removal() -> impl Strategy<Value = OuterHeaderRemoval> {
    (0u8..=8, of(any::<u8>())).prop_map(|(description, ext)| OuterHeaderRemoval {
        description,
        extension_header_deletion: ext,
    })
}

pub fn outer_header_creation() -> impl Strategy<Value = OuterHeaderCreation> {
    type O = OuterHeaderCreation;
    (
        1u16..64,
        0u16..4,
        any::<u32>(),
        ipv4(),
        ipv6(),
        any::<u16>(),
    )
        .prop_map(|(headers, indications, teid, v4, v6, port)| {
            let d = (headers << 8) | indications;
            let has = |bits: u16| d & bits != 0;
            O {
                description: d,
                teid: has(O::GTPU_UDP_IPV4 | O::GTPU_UDP_IPV6).then_some(teid),
                ipv4: has(O::GTPU_UDP_IPV4 | O::UDP_IPV4 | O::IPV4).then_some(v4),
                ipv6: has(O::GTPU_UDP_IPV6 | O::UDP_IPV6 | O::IPV6).then_some(v6),
                port: has(O::UDP_IPV4 | O::UDP_IPV6).then_some(port),
            }
        })
}

pub fn network_instance() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..12)
}

pub fn pdi() -> impl Strategy<Value = Pdi> {
    (
        source_interface(),
        of(f_teid()),
        of(network_instance()),
        vec(ue_ip_address(), 0..3),
        vec(sdf_filter(), 0..3),
        vec(0u8..=63, 0..3),
    )
        .prop_map(|(si, fteid, ni, ue, sdf, qfis)| Pdi {
            source_interface: si,
            local_f_teid: fteid,
            network_instance: ni,
            ue_ip_address: ue,
            sdf_filters: sdf,
            qfis,
        })
}

pub fn create_pdr() -> impl Strategy<Value = CreatePdr> {
    (
        any::<u16>(),
        any::<u32>(),
        pdi(),
        of(outer_header_removal()),
        of(any::<u32>()),
        vec(any::<u32>(), 0..3),
        vec(any::<u32>(), 0..3),
    )
        .prop_map(
            |(pdr_id, precedence, pdi, ohr, far_id, urr_ids, qer_ids)| CreatePdr {
                pdr_id,
                precedence,
                pdi,
                outer_header_removal: ohr,
                far_id,
                urr_ids,
                qer_ids,
            },
        )
}

pub fn update_pdr() -> impl Strategy<Value = UpdatePdr> {
    (
        any::<u16>(),
        of(outer_header_removal()),
        of(any::<u32>()),
        of(pdi()),
        of(any::<u32>()),
        vec(any::<u32>(), 0..3),
        vec(any::<u32>(), 0..3),
    )
        .prop_map(
            |(pdr_id, ohr, precedence, pdi, far_id, urr_ids, qer_ids)| UpdatePdr {
                pdr_id,
                outer_header_removal: ohr,
                precedence,
                pdi,
                far_id,
                urr_ids,
                qer_ids,
            },
        )
}

pub fn forwarding_parameters(update: bool) -> impl Strategy<Value = ForwardingParameters> {
    (
        of(destination_interface()),
        destination_interface(),
        of(network_instance()),
        of(outer_header_creation()),
    )
        .prop_map(move |(maybe, dest, ni, ohc)| ForwardingParameters {
            destination_interface: if update { maybe } else { Some(dest) },
            network_instance: ni,
            outer_header_creation: ohc,
        })
}

pub fn create_far() -> impl Strategy<Value = CreateFar> {
    (
        any::<u32>(),
        any::<u16>(),
        of(forwarding_parameters(false)),
        of(any::<u8>()),
    )
        .prop_map(|(far_id, aa, fp, bar_id)| {
            // Forwarding Parameters are conditional on FORW.
            let aa = if fp.is_none() {
                aa & !ApplyAction::FORW
            } else {
                aa
            };
            CreateFar {
                far_id,
                apply_action: ApplyAction(aa),
                forwarding_parameters: fp,
                bar_id,
            }
        })
}

pub fn update_far() -> impl Strategy<Value = UpdateFar> {
    (
        any::<u32>(),
        of(any::<u16>()),
        of(forwarding_parameters(true)),
        of(any::<u8>()),
    )
        .prop_map(|(far_id, aa, fp, bar_id)| UpdateFar {
            far_id,
            apply_action: aa.map(ApplyAction),
            update_forwarding_parameters: fp,
            bar_id,
        })
}

pub fn volume() -> impl Strategy<Value = Volume> {
    (of(any::<u64>()), of(any::<u64>()), of(any::<u64>())).prop_map(|(total, uplink, downlink)| {
        Volume {
            total,
            uplink,
            downlink,
        }
    })
}

pub fn measurement_method() -> impl Strategy<Value = MeasurementMethod> {
    any::<(bool, bool, bool)>().prop_map(|(duration, volume, event)| MeasurementMethod {
        duration,
        volume,
        event,
    })
}

pub fn urr(create: bool) -> impl Strategy<Value = Urr> {
    (
        any::<u32>(),
        of(measurement_method()),
        measurement_method(),
        of(0u32..=0x00FF_FFFF),
        0u32..=0x00FF_FFFF,
        of(any::<u32>()),
        of(volume()),
        of(any::<u32>()),
    )
        .prop_map(move |(urr_id, mm, mm_c, rt, rt_c, period, vol, time)| Urr {
            urr_id,
            measurement_method: if create { Some(mm_c) } else { mm },
            reporting_triggers: Some(if create { rt_c } else { rt.unwrap_or(rt_c) })
                .filter(|_| create || rt.is_some())
                .map(ReportingTriggers),
            measurement_period: period,
            volume_threshold: vol,
            time_threshold: time,
        })
}

pub fn bit_rate() -> impl Strategy<Value = BitRate> {
    (0u64..1 << 40, 0u64..1 << 40).prop_map(|(uplink_kbps, downlink_kbps)| BitRate {
        uplink_kbps,
        downlink_kbps,
    })
}

pub fn qer(create: bool) -> impl Strategy<Value = Qer> {
    (
        any::<u32>(),
        of(any::<(bool, bool)>()),
        any::<(bool, bool)>(),
        of(bit_rate()),
        of(bit_rate()),
        of(0u8..=63),
    )
        .prop_map(move |(qer_id, gate, gate_c, mbr, gbr, qfi)| {
            let gate = if create { Some(gate_c) } else { gate };
            Qer {
                qer_id,
                gate_status: gate.map(|(u, d)| GateStatus {
                    uplink_open: u,
                    downlink_open: d,
                }),
                mbr,
                gbr,
                qfi,
            }
        })
}

pub fn user_id() -> impl Strategy<Value = UserId> {
    (
        of("[0-9]{5,15}"),
        of("[0-9]{15,16}"),
        of("[0-9]{5,15}"),
        of("[a-z0-9]{1,12}@[a-z0-9.]{1,20}"),
    )
        .prop_map(|(imsi, imei, msisdn, nai)| UserId {
            imsi,
            imei,
            msisdn,
            nai,
        })
}

pub fn created_pdr() -> impl Strategy<Value = CreatedPdr> {
    (any::<u16>(), of(f_teid())).prop_map(|(pdr_id, local_f_teid)| CreatedPdr {
        pdr_id,
        local_f_teid,
    })
}

pub fn volume_measurement() -> impl Strategy<Value = VolumeMeasurement> {
    (
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
        of(any::<u64>()),
    )
        .prop_map(|(a, b, c, d, e, f)| VolumeMeasurement {
            total_octets: a,
            uplink_octets: b,
            downlink_octets: c,
            total_packets: d,
            uplink_packets: e,
            downlink_packets: f,
        })
}

pub fn usage_report() -> impl Strategy<Value = UsageReport> {
    (
        any::<u32>(),
        any::<u32>(),
        0u32..=0x00FF_FFFF,
        of(any::<u32>()),
        of(any::<u32>()),
        of(volume_measurement()),
        of(any::<u32>()),
    )
        .prop_map(
            |(urr_id, ur_seqn, trig, start, end, volume, duration)| UsageReport {
                urr_id,
                ur_seqn,
                trigger: UsageReportTrigger(trig),
                start_time: start,
                end_time: end,
                volume,
                duration,
            },
        )
}

pub fn cause() -> impl Strategy<Value = Cause> {
    prop_oneof![Just(Cause::ACCEPTED), (1u8..=255).prop_map(Cause)]
}

fn features() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..8)
}

pub fn message() -> impl Strategy<Value = Message> {
    use Message as M;
    prop_oneof![
        any::<u32>().prop_map(|r| M::HeartbeatRequest(Heartbeat {
            recovery_time_stamp: r
        })),
        any::<u32>().prop_map(|r| M::HeartbeatResponse(Heartbeat {
            recovery_time_stamp: r
        })),
        (node_id(), any::<u32>(), of(features()), of(features())).prop_map(|(n, r, up, cp)| {
            M::AssociationSetupRequest(AssociationSetupRequest {
                node_id: n,
                recovery_time_stamp: r,
                up_function_features: up.map(UpFunctionFeatures),
                cp_function_features: cp.map(CpFunctionFeatures),
            })
        }),
        (node_id(), cause(), any::<u32>(), of(features())).prop_map(|(n, c, r, up)| {
            M::AssociationSetupResponse(AssociationSetupResponse {
                node_id: n,
                cause: c,
                recovery_time_stamp: r,
                up_function_features: up.map(UpFunctionFeatures),
            })
        }),
        (
            node_id(),
            of(features()),
            of(features()),
            of(any::<u8>()),
            of(any::<u8>())
        )
            .prop_map(|(n, up, cp, arr, grp)| {
                M::AssociationUpdateRequest(AssociationUpdateRequest {
                    node_id: n,
                    up_function_features: up.map(UpFunctionFeatures),
                    cp_function_features: cp.map(CpFunctionFeatures),
                    association_release_request: arr,
                    graceful_release_period: grp,
                })
            }),
        (node_id(), cause(), of(features())).prop_map(|(n, c, up)| {
            M::AssociationUpdateResponse(AssociationUpdateResponse {
                node_id: n,
                cause: c,
                up_function_features: up.map(UpFunctionFeatures),
            })
        }),
        node_id()
            .prop_map(|n| M::AssociationReleaseRequest(AssociationReleaseRequest { node_id: n })),
        (node_id(), cause()).prop_map(|(n, c)| {
            M::AssociationReleaseResponse(AssociationReleaseResponse {
                node_id: n,
                cause: c,
            })
        }),
        Just(M::VersionNotSupportedResponse),
        establishment_request().prop_map(M::SessionEstablishmentRequest),
        establishment_response().prop_map(M::SessionEstablishmentResponse),
        modification_request().prop_map(M::SessionModificationRequest),
        (
            cause(),
            of(any::<u16>()),
            vec(created_pdr(), 0..3),
            vec(usage_report(), 0..3)
        )
            .prop_map(|(c, o, pdrs, urs)| {
                M::SessionModificationResponse(SessionModificationResponse {
                    cause: c,
                    offending_ie: o,
                    created_pdr: pdrs,
                    usage_report: urs,
                })
            }),
        Just(M::SessionDeletionRequest),
        (cause(), of(any::<u16>()), vec(usage_report(), 0..3)).prop_map(|(c, o, urs)| {
            M::SessionDeletionResponse(SessionDeletionResponse {
                cause: c,
                offending_ie: o,
                usage_report: urs,
            })
        }),
        (
            any::<u8>(),
            of(vec(any::<u16>(), 1..3)),
            vec(usage_report(), 0..3)
        )
            .prop_map(|(rt, dldr, urs)| {
                M::SessionReportRequest(SessionReportRequest {
                    report_type: ReportType(rt),
                    downlink_data_report: dldr.map(|pdr_ids| DownlinkDataReport { pdr_ids }),
                    usage_report: urs,
                })
            }),
        (cause(), of(any::<u16>())).prop_map(|(c, o)| {
            M::SessionReportResponse(SessionReportResponse {
                cause: c,
                offending_ie: o,
            })
        }),
    ]
}

pub fn establishment_request() -> impl Strategy<Value = SessionEstablishmentRequest> {
    (
        node_id(),
        f_seid(),
        vec(create_pdr(), 1..4),
        vec(create_far(), 1..4),
        vec(urr(true), 0..3),
        vec(qer(true), 0..3),
        of(1u8..=5),
        of(user_id()),
    )
        .prop_map(
            |(n, f, pdr, far, urr, qer, pdn, uid)| SessionEstablishmentRequest {
                node_id: n,
                cp_f_seid: f,
                create_pdr: pdr,
                create_far: far,
                create_urr: urr,
                create_qer: qer,
                pdn_type: pdn,
                user_id: uid,
            },
        )
}

pub fn establishment_response() -> impl Strategy<Value = SessionEstablishmentResponse> {
    (
        node_id(),
        cause(),
        of(any::<u16>()),
        f_seid(),
        any::<bool>(),
        vec(created_pdr(), 0..3),
    )
        .prop_map(|(n, c, o, f, keep, pdrs)| SessionEstablishmentResponse {
            node_id: n,
            cause: c,
            offending_ie: o,
            // UP F-SEID is conditional on success.
            up_f_seid: (keep || c == Cause::ACCEPTED).then_some(f),
            created_pdr: pdrs,
        })
}

pub fn modification_request() -> impl Strategy<Value = SessionModificationRequest> {
    (
        (
            of(f_seid()),
            vec(any::<u16>(), 0..3),
            vec(any::<u32>(), 0..3),
            vec(any::<u32>(), 0..3),
            vec(any::<u32>(), 0..3),
        ),
        (
            vec(create_pdr(), 0..3),
            vec(create_far(), 0..3),
            vec(urr(true), 0..2),
            vec(qer(true), 0..2),
        ),
        (
            vec(update_pdr(), 0..3),
            vec(update_far(), 0..3),
            vec(urr(false), 0..2),
            vec(qer(false), 0..2),
        ),
        vec(any::<u32>(), 0..3),
        of(user_id()),
    )
        .prop_map(
            |((f, rp, rf, ru, rq), (cp, cf, cu, cq), (up, uf, uu, uq), query, uid)| {
                SessionModificationRequest {
                    cp_f_seid: f,
                    remove_pdr: rp,
                    remove_far: rf,
                    remove_urr: ru,
                    remove_qer: rq,
                    create_pdr: cp,
                    create_far: cf,
                    create_urr: cu,
                    create_qer: cq,
                    update_pdr: up,
                    update_far: uf,
                    update_urr: uu,
                    update_qer: uq,
                    query_urr: query,
                    user_id: uid,
                }
            },
        )
}

/// A header fit for `message`: a SEID exactly for session messages.
pub fn header_for(message: &Message) -> impl Strategy<Value = Header> + use<> {
    let t = message.message_type();
    (any::<u64>(), 0u32..=0x00FF_FFFF, of(0u8..=15)).prop_map(move |(seid, sequence, priority)| {
        Header {
            message_type: t,
            seid: message_type::is_session_message(t).then_some(seid),
            sequence,
            priority,
        }
    })
}

/// A message and a header for it.
pub fn header_and_message() -> impl Strategy<Value = (Header, Message)> {
    message().prop_flat_map(|m| (header_for(&m), Just(m)))
}
