//! The messages mecgw sends and receives, as typed values (TS 29.244 §7).

use crate::ie::{
    Cause, CpFunctionFeatures, CreateFar, CreatePdr, CreatedPdr, DownlinkDataReport, FSeid, NodeId,
    Qer, ReportType, UpFunctionFeatures, UpdateFar, UpdatePdr, Urr, UsageReport, UserId,
};

/// Message type numbers (TS 29.244 Table 7.3-1) of the messages this crate knows.
pub mod message_type {
    pub const HEARTBEAT_REQUEST: u8 = 1;
    pub const HEARTBEAT_RESPONSE: u8 = 2;
    pub const PFD_MANAGEMENT_REQUEST: u8 = 3;
    pub const PFD_MANAGEMENT_RESPONSE: u8 = 4;
    pub const ASSOCIATION_SETUP_REQUEST: u8 = 5;
    pub const ASSOCIATION_SETUP_RESPONSE: u8 = 6;
    pub const ASSOCIATION_UPDATE_REQUEST: u8 = 7;
    pub const ASSOCIATION_UPDATE_RESPONSE: u8 = 8;
    pub const ASSOCIATION_RELEASE_REQUEST: u8 = 9;
    pub const ASSOCIATION_RELEASE_RESPONSE: u8 = 10;
    pub const VERSION_NOT_SUPPORTED_RESPONSE: u8 = 11;
    pub const NODE_REPORT_REQUEST: u8 = 12;
    pub const NODE_REPORT_RESPONSE: u8 = 13;
    pub const SESSION_SET_DELETION_REQUEST: u8 = 14;
    pub const SESSION_SET_DELETION_RESPONSE: u8 = 15;
    pub const SESSION_ESTABLISHMENT_REQUEST: u8 = 50;
    pub const SESSION_ESTABLISHMENT_RESPONSE: u8 = 51;
    pub const SESSION_MODIFICATION_REQUEST: u8 = 52;
    pub const SESSION_MODIFICATION_RESPONSE: u8 = 53;
    pub const SESSION_DELETION_REQUEST: u8 = 54;
    pub const SESSION_DELETION_RESPONSE: u8 = 55;
    pub const SESSION_REPORT_REQUEST: u8 = 56;
    pub const SESSION_REPORT_RESPONSE: u8 = 57;

    /// Whether a message of type `t` is a request (its response echoes the sequence number).
    pub const fn is_request(t: u8) -> bool {
        matches!(t, 1 | 3 | 5 | 7 | 9 | 12 | 14 | 50 | 52 | 54 | 56)
    }

    /// Whether a message of type `t` is a session message (its header carries a SEID).
    pub const fn is_session_message(t: u8) -> bool {
        t >= 50
    }
}

/// The PFCP header (§7.2.2). Version is always 1 when encoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub message_type: u8,
    /// The SEID of a session message (S flag set); `None` for node messages.
    pub seid: Option<u64>,
    /// The 24-bit sequence number.
    pub sequence: u32,
    /// The message priority (MP flag), 0-15, when present.
    pub priority: Option<u8>,
}

/// Heartbeat Request and Response (§7.4.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    /// NTP seconds of the sender's start.
    pub recovery_time_stamp: u32,
}

/// Association Setup Request (§7.4.4.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssociationSetupRequest {
    pub node_id: NodeId,
    pub recovery_time_stamp: u32,
    pub up_function_features: Option<UpFunctionFeatures>,
    pub cp_function_features: Option<CpFunctionFeatures>,
}

/// Association Setup Response (§7.4.4.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssociationSetupResponse {
    pub node_id: NodeId,
    pub cause: Cause,
    pub recovery_time_stamp: u32,
    pub up_function_features: Option<UpFunctionFeatures>,
}

/// Association Update Request (§7.4.4.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssociationUpdateRequest {
    pub node_id: NodeId,
    pub up_function_features: Option<UpFunctionFeatures>,
    pub cp_function_features: Option<CpFunctionFeatures>,
    /// Association Release Request flags (SARR 0x01, URSS 0x02), when present.
    pub association_release_request: Option<u8>,
    /// Graceful Release Period (timer octet), when present.
    pub graceful_release_period: Option<u8>,
}

/// Association Update Response (§7.4.4.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssociationUpdateResponse {
    pub node_id: NodeId,
    pub cause: Cause,
    pub up_function_features: Option<UpFunctionFeatures>,
}

/// Association Release Request (§7.4.4.5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssociationReleaseRequest {
    pub node_id: NodeId,
}

/// Association Release Response (§7.4.4.6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssociationReleaseResponse {
    pub node_id: NodeId,
    pub cause: Cause,
}

/// Session Establishment Request (§7.5.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionEstablishmentRequest {
    pub node_id: NodeId,
    pub cp_f_seid: FSeid,
    pub create_pdr: Vec<CreatePdr>,
    pub create_far: Vec<CreateFar>,
    pub create_urr: Vec<Urr>,
    pub create_qer: Vec<Qer>,
    pub pdn_type: Option<u8>,
    pub user_id: Option<UserId>,
}

/// Session Establishment Response (§7.5.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionEstablishmentResponse {
    pub node_id: NodeId,
    pub cause: Cause,
    pub offending_ie: Option<u16>,
    pub up_f_seid: Option<FSeid>,
    pub created_pdr: Vec<CreatedPdr>,
}

/// Session Modification Request (§7.5.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionModificationRequest {
    pub cp_f_seid: Option<FSeid>,
    pub remove_pdr: Vec<u16>,
    pub remove_far: Vec<u32>,
    pub remove_urr: Vec<u32>,
    pub remove_qer: Vec<u32>,
    pub create_pdr: Vec<CreatePdr>,
    pub create_far: Vec<CreateFar>,
    pub create_urr: Vec<Urr>,
    pub create_qer: Vec<Qer>,
    pub update_pdr: Vec<UpdatePdr>,
    pub update_far: Vec<UpdateFar>,
    pub update_urr: Vec<Urr>,
    pub update_qer: Vec<Qer>,
    /// Query URR: the URR IDs to report now (in the response).
    pub query_urr: Vec<u32>,
    pub user_id: Option<UserId>,
}

/// Session Modification Response (§7.5.5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionModificationResponse {
    pub cause: Cause,
    pub offending_ie: Option<u16>,
    pub created_pdr: Vec<CreatedPdr>,
    pub usage_report: Vec<UsageReport>,
}

/// Session Deletion Response (§7.5.7).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionDeletionResponse {
    pub cause: Cause,
    pub offending_ie: Option<u16>,
    pub usage_report: Vec<UsageReport>,
}

/// Session Report Request (§7.5.8).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionReportRequest {
    pub report_type: ReportType,
    /// Present when the Report Type has DLDR (Table 7.5.8.1-1).
    pub downlink_data_report: Option<DownlinkDataReport>,
    pub usage_report: Vec<UsageReport>,
}

/// Session Report Response (§7.5.9).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionReportResponse {
    pub cause: Cause,
    pub offending_ie: Option<u16>,
}

/// A message, with what its type says it holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    HeartbeatRequest(Heartbeat),
    HeartbeatResponse(Heartbeat),
    AssociationSetupRequest(AssociationSetupRequest),
    AssociationSetupResponse(AssociationSetupResponse),
    AssociationUpdateRequest(AssociationUpdateRequest),
    AssociationUpdateResponse(AssociationUpdateResponse),
    AssociationReleaseRequest(AssociationReleaseRequest),
    AssociationReleaseResponse(AssociationReleaseResponse),
    /// Version Not Supported Response (§7.4.4.7): header only.
    VersionNotSupportedResponse,
    SessionEstablishmentRequest(SessionEstablishmentRequest),
    SessionEstablishmentResponse(SessionEstablishmentResponse),
    SessionModificationRequest(SessionModificationRequest),
    SessionModificationResponse(SessionModificationResponse),
    /// Session Deletion Request (§7.5.6): no IEs this crate reads.
    SessionDeletionRequest,
    SessionDeletionResponse(SessionDeletionResponse),
    SessionReportRequest(SessionReportRequest),
    SessionReportResponse(SessionReportResponse),
}

impl Message {
    /// The message type number of this message.
    pub const fn message_type(&self) -> u8 {
        use message_type::*;
        match self {
            Message::HeartbeatRequest(_) => HEARTBEAT_REQUEST,
            Message::HeartbeatResponse(_) => HEARTBEAT_RESPONSE,
            Message::AssociationSetupRequest(_) => ASSOCIATION_SETUP_REQUEST,
            Message::AssociationSetupResponse(_) => ASSOCIATION_SETUP_RESPONSE,
            Message::AssociationUpdateRequest(_) => ASSOCIATION_UPDATE_REQUEST,
            Message::AssociationUpdateResponse(_) => ASSOCIATION_UPDATE_RESPONSE,
            Message::AssociationReleaseRequest(_) => ASSOCIATION_RELEASE_REQUEST,
            Message::AssociationReleaseResponse(_) => ASSOCIATION_RELEASE_RESPONSE,
            Message::VersionNotSupportedResponse => VERSION_NOT_SUPPORTED_RESPONSE,
            Message::SessionEstablishmentRequest(_) => SESSION_ESTABLISHMENT_REQUEST,
            Message::SessionEstablishmentResponse(_) => SESSION_ESTABLISHMENT_RESPONSE,
            Message::SessionModificationRequest(_) => SESSION_MODIFICATION_REQUEST,
            Message::SessionModificationResponse(_) => SESSION_MODIFICATION_RESPONSE,
            Message::SessionDeletionRequest => SESSION_DELETION_REQUEST,
            Message::SessionDeletionResponse(_) => SESSION_DELETION_RESPONSE,
            Message::SessionReportRequest(_) => SESSION_REPORT_REQUEST,
            Message::SessionReportResponse(_) => SESSION_REPORT_RESPONSE,
        }
    }
}
