//! Message bodies (TS 29.244 §7.4, §7.5): the IEs of each message, written in the order of
//! the spec's tables, and read back with their mandatory and conditional IEs checked.

use super::DecodeErrorKind;
use super::grouped::*;
use super::leaf::*;
use super::wire::{Budget, Ies, Writer};
use crate::ie::ie_type as t;
use crate::ie::{Cause, ReportType};
use crate::message::*;

type Result<T> = std::result::Result<T, DecodeErrorKind>;

pub(crate) fn put_body(w: &mut Writer, message: &Message) {
    match message {
        Message::HeartbeatRequest(m) | Message::HeartbeatResponse(m) => {
            put_u32_ie(w, t::RECOVERY_TIME_STAMP, m.recovery_time_stamp);
        }
        Message::AssociationSetupRequest(m) => {
            put_node_id(w, &m.node_id);
            put_u32_ie(w, t::RECOVERY_TIME_STAMP, m.recovery_time_stamp);
            put_features(w, &m.up_function_features, &m.cp_function_features);
        }
        Message::AssociationSetupResponse(m) => {
            put_node_id(w, &m.node_id);
            put_cause(w, m.cause);
            put_u32_ie(w, t::RECOVERY_TIME_STAMP, m.recovery_time_stamp);
            put_features(w, &m.up_function_features, &None);
        }
        Message::AssociationUpdateRequest(m) => {
            put_node_id(w, &m.node_id);
            put_features(w, &m.up_function_features, &m.cp_function_features);
            m.association_release_request
                .iter()
                .for_each(|x| put_u8_ie(w, t::ASSOCIATION_RELEASE_REQUEST, *x));
            m.graceful_release_period
                .iter()
                .for_each(|x| put_u8_ie(w, t::GRACEFUL_RELEASE_PERIOD, *x));
        }
        Message::AssociationUpdateResponse(m) => {
            put_node_id(w, &m.node_id);
            put_cause(w, m.cause);
            put_features(w, &m.up_function_features, &None);
        }
        Message::AssociationReleaseRequest(m) => put_node_id(w, &m.node_id),
        Message::AssociationReleaseResponse(m) => {
            put_node_id(w, &m.node_id);
            put_cause(w, m.cause);
        }
        Message::VersionNotSupportedResponse | Message::SessionDeletionRequest => {}
        Message::SessionEstablishmentRequest(m) => {
            put_node_id(w, &m.node_id);
            put_f_seid(w, &m.cp_f_seid);
            put_creations(
                w,
                &m.create_pdr,
                &m.create_far,
                &m.create_urr,
                &m.create_qer,
            );
            m.pdn_type.iter().for_each(|x| put_pdn_type(w, *x));
            m.user_id.iter().for_each(|x| put_user_id(w, x));
        }
        Message::SessionEstablishmentResponse(m) => {
            put_node_id(w, &m.node_id);
            put_cause(w, m.cause);
            m.offending_ie.iter().for_each(|x| put_offending_ie(w, *x));
            m.up_f_seid.iter().for_each(|x| put_f_seid(w, x));
            m.created_pdr.iter().for_each(|x| put_created_pdr(w, x));
        }
        Message::SessionModificationRequest(m) => put_modification_request(w, m),
        Message::SessionModificationResponse(m) => {
            put_cause(w, m.cause);
            m.offending_ie.iter().for_each(|x| put_offending_ie(w, *x));
            m.created_pdr.iter().for_each(|x| put_created_pdr(w, x));
            m.usage_report
                .iter()
                .for_each(|x| put_usage_report(w, t::USAGE_REPORT_MODIFICATION, x));
        }
        Message::SessionDeletionResponse(m) => {
            put_cause(w, m.cause);
            m.offending_ie.iter().for_each(|x| put_offending_ie(w, *x));
            m.usage_report
                .iter()
                .for_each(|x| put_usage_report(w, t::USAGE_REPORT_DELETION, x));
        }
        Message::SessionReportRequest(m) => {
            put_u8_ie(w, t::REPORT_TYPE, m.report_type.0);
            m.downlink_data_report
                .iter()
                .for_each(|x| put_downlink_data_report(w, x));
            m.usage_report
                .iter()
                .for_each(|x| put_usage_report(w, t::USAGE_REPORT_REPORT, x));
        }
        Message::SessionReportResponse(m) => {
            put_cause(w, m.cause);
            m.offending_ie.iter().for_each(|x| put_offending_ie(w, *x));
        }
    }
}

fn put_features(
    w: &mut Writer,
    up: &Option<crate::ie::UpFunctionFeatures>,
    cp: &Option<crate::ie::CpFunctionFeatures>,
) {
    up.iter()
        .for_each(|x| put_octets(w, t::UP_FUNCTION_FEATURES, &x.0));
    cp.iter()
        .for_each(|x| put_octets(w, t::CP_FUNCTION_FEATURES, &x.0));
}

/// Create PDR, FAR, URR, QER: in this order in both the establishment and the modification.
fn put_creations(
    w: &mut Writer,
    pdrs: &[crate::ie::CreatePdr],
    fars: &[crate::ie::CreateFar],
    urrs: &[crate::ie::Urr],
    qers: &[crate::ie::Qer],
) {
    pdrs.iter().for_each(|x| put_create_pdr(w, x));
    fars.iter().for_each(|x| put_create_far(w, x));
    urrs.iter().for_each(|x| put_urr(w, t::CREATE_URR, x));
    qers.iter().for_each(|x| put_qer(w, t::CREATE_QER, x));
}

/// Table 7.5.4.1-1: removals, then creations, then updates, then Query URR; User ID last.
fn put_modification_request(w: &mut Writer, m: &SessionModificationRequest) {
    m.cp_f_seid.iter().for_each(|x| put_f_seid(w, x));
    m.remove_pdr
        .iter()
        .for_each(|x| put_one_id_group(w, t::REMOVE_PDR, t::PDR_ID, u32::from(*x)));
    for (ie, id_ie, ids) in [
        (t::REMOVE_FAR, t::FAR_ID, &m.remove_far),
        (t::REMOVE_URR, t::URR_ID, &m.remove_urr),
        (t::REMOVE_QER, t::QER_ID, &m.remove_qer),
    ] {
        ids.iter().for_each(|x| put_one_id_group(w, ie, id_ie, *x));
    }
    put_creations(
        w,
        &m.create_pdr,
        &m.create_far,
        &m.create_urr,
        &m.create_qer,
    );
    m.update_pdr.iter().for_each(|x| put_update_pdr(w, x));
    m.update_far.iter().for_each(|x| put_update_far(w, x));
    m.update_urr
        .iter()
        .for_each(|x| put_urr(w, t::UPDATE_URR, x));
    m.update_qer
        .iter()
        .for_each(|x| put_qer(w, t::UPDATE_QER, x));
    m.query_urr
        .iter()
        .for_each(|x| put_one_id_group(w, t::QUERY_URR, t::URR_ID, *x));
    m.user_id.iter().for_each(|x| put_user_id(w, x));
}

/// The body of a message of `message_type`, which the caller has checked is one of those
/// [`Message`] models.
pub(crate) fn body(ty: u8, bytes: &[u8]) -> Result<Message> {
    use crate::message::message_type as mt;
    let mut budget = Budget::new();
    let b = &mut budget;
    let ies = Ies::parse(bytes, 0, 0, b)?;
    let ies = &ies;
    let node_id = || node_id(ies.mandatory(t::NODE_ID)?);
    let cause = || cause(ies.mandatory(t::CAUSE)?);
    let recovery = || {
        u32_ie(
            t::RECOVERY_TIME_STAMP,
            ies.mandatory(t::RECOVERY_TIME_STAMP)?,
        )
    };
    let offending = || {
        ies.first(t::OFFENDING_IE)
            .map(|v| u16_ie(t::OFFENDING_IE, v))
            .transpose()
    };
    let up_features = || {
        ies.first(t::UP_FUNCTION_FEATURES)
            .map(|v| crate::ie::UpFunctionFeatures(v.to_vec()))
    };
    let cp_features = || {
        ies.first(t::CP_FUNCTION_FEATURES)
            .map(|v| crate::ie::CpFunctionFeatures(v.to_vec()))
    };
    let heartbeat = || -> Result<Heartbeat> {
        Ok(Heartbeat {
            recovery_time_stamp: recovery()?,
        })
    };
    Ok(match ty {
        mt::HEARTBEAT_REQUEST => Message::HeartbeatRequest(heartbeat()?),
        mt::HEARTBEAT_RESPONSE => Message::HeartbeatResponse(heartbeat()?),
        mt::ASSOCIATION_SETUP_REQUEST => {
            Message::AssociationSetupRequest(AssociationSetupRequest {
                node_id: node_id()?,
                recovery_time_stamp: recovery()?,
                up_function_features: up_features(),
                cp_function_features: cp_features(),
            })
        }
        mt::ASSOCIATION_SETUP_RESPONSE => {
            Message::AssociationSetupResponse(AssociationSetupResponse {
                node_id: node_id()?,
                cause: cause()?,
                recovery_time_stamp: recovery()?,
                up_function_features: up_features(),
            })
        }
        mt::ASSOCIATION_UPDATE_REQUEST => {
            Message::AssociationUpdateRequest(AssociationUpdateRequest {
                node_id: node_id()?,
                up_function_features: up_features(),
                cp_function_features: cp_features(),
                association_release_request: ies
                    .first(t::ASSOCIATION_RELEASE_REQUEST)
                    .map(|v| u8_ie(t::ASSOCIATION_RELEASE_REQUEST, v))
                    .transpose()?,
                graceful_release_period: ies
                    .first(t::GRACEFUL_RELEASE_PERIOD)
                    .map(|v| u8_ie(t::GRACEFUL_RELEASE_PERIOD, v))
                    .transpose()?,
            })
        }
        mt::ASSOCIATION_UPDATE_RESPONSE => {
            Message::AssociationUpdateResponse(AssociationUpdateResponse {
                node_id: node_id()?,
                cause: cause()?,
                up_function_features: up_features(),
            })
        }
        mt::ASSOCIATION_RELEASE_REQUEST => {
            Message::AssociationReleaseRequest(AssociationReleaseRequest {
                node_id: node_id()?,
            })
        }
        mt::ASSOCIATION_RELEASE_RESPONSE => {
            Message::AssociationReleaseResponse(AssociationReleaseResponse {
                node_id: node_id()?,
                cause: cause()?,
            })
        }
        mt::VERSION_NOT_SUPPORTED_RESPONSE => Message::VersionNotSupportedResponse,
        mt::SESSION_ESTABLISHMENT_REQUEST => {
            let m = SessionEstablishmentRequest {
                node_id: node_id()?,
                cp_f_seid: f_seid(ies.mandatory(t::F_SEID)?)?,
                create_pdr: groups(ies, t::CREATE_PDR, b, create_pdr)?,
                create_far: groups(ies, t::CREATE_FAR, b, create_far)?,
                create_urr: groups(ies, t::CREATE_URR, b, |g, _| urr(g, true))?,
                create_qer: groups(ies, t::CREATE_QER, b, |g, _| qer(g, true))?,
                pdn_type: ies.first(t::PDN_TYPE).map(pdn_type).transpose()?,
                user_id: ies.first(t::USER_ID).map(user_id).transpose()?,
            };
            // At least one of each: the tables mark them M.
            for (list_empty, ie) in [
                (m.create_pdr.is_empty(), t::CREATE_PDR),
                (m.create_far.is_empty(), t::CREATE_FAR),
            ] {
                if list_empty {
                    return Err(DecodeErrorKind::MissingMandatory { ie });
                }
            }
            Message::SessionEstablishmentRequest(m)
        }
        mt::SESSION_ESTABLISHMENT_RESPONSE => {
            let m = SessionEstablishmentResponse {
                node_id: node_id()?,
                cause: cause()?,
                offending_ie: offending()?,
                up_f_seid: ies.first(t::F_SEID).map(f_seid).transpose()?,
                created_pdr: groups(ies, t::CREATED_PDR, b, created_pdr)?,
            };
            // UP F-SEID: "shall be present if the cause is success".
            if m.cause == Cause::ACCEPTED && m.up_f_seid.is_none() {
                return Err(DecodeErrorKind::MissingConditional { ie: t::F_SEID });
            }
            Message::SessionEstablishmentResponse(m)
        }
        mt::SESSION_MODIFICATION_REQUEST => {
            Message::SessionModificationRequest(SessionModificationRequest {
                cp_f_seid: ies.first(t::F_SEID).map(f_seid).transpose()?,
                remove_pdr: remove_pdrs(ies, b)?,
                remove_far: one_id_groups(ies, t::REMOVE_FAR, t::FAR_ID, b)?,
                remove_urr: one_id_groups(ies, t::REMOVE_URR, t::URR_ID, b)?,
                remove_qer: one_id_groups(ies, t::REMOVE_QER, t::QER_ID, b)?,
                create_pdr: groups(ies, t::CREATE_PDR, b, create_pdr)?,
                create_far: groups(ies, t::CREATE_FAR, b, create_far)?,
                create_urr: groups(ies, t::CREATE_URR, b, |g, _| urr(g, true))?,
                create_qer: groups(ies, t::CREATE_QER, b, |g, _| qer(g, true))?,
                update_pdr: groups(ies, t::UPDATE_PDR, b, update_pdr)?,
                update_far: groups(ies, t::UPDATE_FAR, b, update_far)?,
                update_urr: groups(ies, t::UPDATE_URR, b, |g, _| urr(g, false))?,
                update_qer: groups(ies, t::UPDATE_QER, b, |g, _| qer(g, false))?,
                query_urr: one_id_groups(ies, t::QUERY_URR, t::URR_ID, b)?,
                user_id: ies.first(t::USER_ID).map(user_id).transpose()?,
            })
        }
        mt::SESSION_MODIFICATION_RESPONSE => {
            Message::SessionModificationResponse(SessionModificationResponse {
                cause: cause()?,
                offending_ie: offending()?,
                created_pdr: groups(ies, t::CREATED_PDR, b, created_pdr)?,
                usage_report: groups(ies, t::USAGE_REPORT_MODIFICATION, b, usage_report)?,
            })
        }
        mt::SESSION_DELETION_REQUEST => Message::SessionDeletionRequest,
        mt::SESSION_DELETION_RESPONSE => {
            Message::SessionDeletionResponse(SessionDeletionResponse {
                cause: cause()?,
                offending_ie: offending()?,
                usage_report: groups(ies, t::USAGE_REPORT_DELETION, b, usage_report)?,
            })
        }
        mt::SESSION_REPORT_REQUEST => Message::SessionReportRequest(SessionReportRequest {
            report_type: ReportType(u8_ie(t::REPORT_TYPE, ies.mandatory(t::REPORT_TYPE)?)?),
            downlink_data_report: ies
                .first(t::DOWNLINK_DATA_REPORT)
                .map(|v| downlink_data_report(&ies.group(t::DOWNLINK_DATA_REPORT, v, b)?))
                .transpose()?,
            usage_report: groups(ies, t::USAGE_REPORT_REPORT, b, usage_report)?,
        }),
        mt::SESSION_REPORT_RESPONSE => Message::SessionReportResponse(SessionReportResponse {
            cause: cause()?,
            offending_ie: offending()?,
        }),
        other => return Err(DecodeErrorKind::UnknownMessageType(other)),
    })
}

/// Whether [`Message`] models messages of type `t`.
pub(crate) const fn is_modelled(t: u8) -> bool {
    matches!(t, 1 | 2 | 5..=11 | 50..=57)
}
