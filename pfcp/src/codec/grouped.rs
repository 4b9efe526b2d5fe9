//! The grouped IEs (TS 29.244 §7.5): a `put_*` writing the IE with its children in the order
//! the spec's tables list them, and a reader checking which children are mandatory.
//!
//! Children this crate does not model are skipped (§7.6.1: an unknown or unexpected IE is
//! discarded and the rest processed). A child that may appear once and appears again: the
//! first wins.

use super::DecodeErrorKind;
use super::leaf::*;
use super::wire::{Budget, Ies, Writer};
use crate::ie::ie_type as t;
use crate::ie::*;

type Result<T> = std::result::Result<T, DecodeErrorKind>;

/// The first `ie` in `ies`, decoded by `read`, if present.
fn opt<T>(ies: &Ies<'_>, ie: u16, read: impl FnOnce(&[u8]) -> Result<T>) -> Result<Option<T>> {
    ies.first(ie).map(read).transpose()
}

/// Every `ie` in `ies`, decoded by `read`.
fn list<T>(ies: &Ies<'_>, ie: u16, read: impl FnMut(&[u8]) -> Result<T>) -> Result<Vec<T>> {
    ies.all(ie).map(read).collect()
}

/// Every grouped `ie` in `ies`, opened and decoded by `read`.
pub(crate) fn groups<'a, T>(
    ies: &Ies<'a>,
    ie: u16,
    budget: &mut Budget,
    mut read: impl FnMut(&Ies<'a>, &mut Budget) -> Result<T>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for value in ies.all(ie) {
        let inner = ies.group(ie, value, budget)?;
        out.push(read(&inner, budget)?);
    }
    Ok(out)
}

/// The first grouped `ie` in `ies`, opened and decoded by `read`.
fn opt_group<'a, T>(
    ies: &Ies<'a>,
    ie: u16,
    budget: &mut Budget,
    read: impl FnOnce(&Ies<'a>, &mut Budget) -> Result<T>,
) -> Result<Option<T>> {
    match ies.first(ie) {
        Some(value) => {
            let inner = ies.group(ie, value, budget)?;
            read(&inner, budget).map(Some)
        }
        None => Ok(None),
    }
}

fn pdr_id(v: &[u8]) -> Result<u16> {
    u16_ie(t::PDR_ID, v)
}

fn far_id(v: &[u8]) -> Result<u32> {
    u32_ie(t::FAR_ID, v)
}

fn urr_id(v: &[u8]) -> Result<u32> {
    u32_ie(t::URR_ID, v)
}

fn qer_id(v: &[u8]) -> Result<u32> {
    u32_ie(t::QER_ID, v)
}

// ---- PDI (Table 7.5.2.2-2): Source Interface, Local F-TEID, Network Instance, UE IP
// Address, SDF Filter, QFI ----

pub(crate) fn put_pdi(w: &mut Writer, v: &Pdi) {
    w.ie(t::PDI, |w| {
        put_interface(w, t::SOURCE_INTERFACE, v.source_interface);
        v.local_f_teid.iter().for_each(|x| put_f_teid(w, x));
        v.network_instance
            .iter()
            .for_each(|x| put_network_instance(w, x));
        v.ue_ip_address.iter().for_each(|x| put_ue_ip_address(w, x));
        v.sdf_filters.iter().for_each(|x| put_sdf_filter(w, x));
        v.qfis.iter().for_each(|x| put_qfi(w, *x));
    });
}

fn pdi(ies: &Ies<'_>, _: &mut Budget) -> Result<Pdi> {
    Ok(Pdi {
        source_interface: interface(t::SOURCE_INTERFACE, ies.mandatory(t::SOURCE_INTERFACE)?)?,
        local_f_teid: opt(ies, t::F_TEID, f_teid)?,
        network_instance: ies.first(t::NETWORK_INSTANCE).map(<[u8]>::to_vec),
        ue_ip_address: list(ies, t::UE_IP_ADDRESS, ue_ip_address)?,
        sdf_filters: list(ies, t::SDF_FILTER, sdf_filter)?,
        qfis: list(ies, t::QFI, qfi)?,
    })
}

fn mandatory_pdi(ies: &Ies<'_>, budget: &mut Budget) -> Result<Pdi> {
    opt_group(ies, t::PDI, budget, pdi)?.ok_or(DecodeErrorKind::MissingMandatory { ie: t::PDI })
}

// ---- Create PDR (Table 7.5.2.2-1): PDR ID, Precedence, PDI, Outer Header Removal, FAR ID,
// URR ID, QER ID ----

pub(crate) fn put_create_pdr(w: &mut Writer, v: &CreatePdr) {
    w.ie(t::CREATE_PDR, |w| {
        put_u16_ie(w, t::PDR_ID, v.pdr_id);
        put_u32_ie(w, t::PRECEDENCE, v.precedence);
        put_pdi(w, &v.pdi);
        v.outer_header_removal
            .iter()
            .for_each(|x| put_outer_header_removal(w, *x));
        v.far_id.iter().for_each(|x| put_u32_ie(w, t::FAR_ID, *x));
        v.urr_ids.iter().for_each(|x| put_u32_ie(w, t::URR_ID, *x));
        v.qer_ids.iter().for_each(|x| put_u32_ie(w, t::QER_ID, *x));
    });
}

pub(crate) fn create_pdr(ies: &Ies<'_>, budget: &mut Budget) -> Result<CreatePdr> {
    Ok(CreatePdr {
        pdr_id: pdr_id(ies.mandatory(t::PDR_ID)?)?,
        precedence: u32_ie(t::PRECEDENCE, ies.mandatory(t::PRECEDENCE)?)?,
        pdi: mandatory_pdi(ies, budget)?,
        outer_header_removal: opt(ies, t::OUTER_HEADER_REMOVAL, outer_header_removal)?,
        far_id: opt(ies, t::FAR_ID, far_id)?,
        urr_ids: list(ies, t::URR_ID, urr_id)?,
        qer_ids: list(ies, t::QER_ID, qer_id)?,
    })
}

// ---- Update PDR (Table 7.5.4.2-1): PDR ID, Outer Header Removal, Precedence, PDI, FAR ID,
// URR ID, QER ID ----

pub(crate) fn put_update_pdr(w: &mut Writer, v: &UpdatePdr) {
    w.ie(t::UPDATE_PDR, |w| {
        put_u16_ie(w, t::PDR_ID, v.pdr_id);
        v.outer_header_removal
            .iter()
            .for_each(|x| put_outer_header_removal(w, *x));
        v.precedence
            .iter()
            .for_each(|x| put_u32_ie(w, t::PRECEDENCE, *x));
        v.pdi.iter().for_each(|x| put_pdi(w, x));
        v.far_id.iter().for_each(|x| put_u32_ie(w, t::FAR_ID, *x));
        v.urr_ids.iter().for_each(|x| put_u32_ie(w, t::URR_ID, *x));
        v.qer_ids.iter().for_each(|x| put_u32_ie(w, t::QER_ID, *x));
    });
}

pub(crate) fn update_pdr(ies: &Ies<'_>, budget: &mut Budget) -> Result<UpdatePdr> {
    Ok(UpdatePdr {
        pdr_id: pdr_id(ies.mandatory(t::PDR_ID)?)?,
        outer_header_removal: opt(ies, t::OUTER_HEADER_REMOVAL, outer_header_removal)?,
        precedence: opt(ies, t::PRECEDENCE, |v| u32_ie(t::PRECEDENCE, v))?,
        pdi: opt_group(ies, t::PDI, budget, pdi)?,
        far_id: opt(ies, t::FAR_ID, far_id)?,
        urr_ids: list(ies, t::URR_ID, urr_id)?,
        qer_ids: list(ies, t::QER_ID, qer_id)?,
    })
}

// ---- Forwarding Parameters (Table 7.5.2.3-2) and Update Forwarding Parameters (Table
// 7.5.4.3-2): Destination Interface, Network Instance, Outer Header Creation ----

fn put_forwarding_parameters(w: &mut Writer, ie: u16, v: &ForwardingParameters) {
    w.ie(ie, |w| {
        v.destination_interface
            .iter()
            .for_each(|x| put_interface(w, t::DESTINATION_INTERFACE, *x));
        v.network_instance
            .iter()
            .for_each(|x| put_network_instance(w, x));
        v.outer_header_creation
            .iter()
            .for_each(|x| put_outer_header_creation(w, x));
    });
}

/// `update`: Update Forwarding Parameters, where the Destination Interface is optional.
fn forwarding_parameters(ies: &Ies<'_>, update: bool) -> Result<ForwardingParameters> {
    let dest = |v: &[u8]| interface(t::DESTINATION_INTERFACE, v);
    let destination_interface = if update {
        opt(ies, t::DESTINATION_INTERFACE, dest)?
    } else {
        Some(dest(ies.mandatory(t::DESTINATION_INTERFACE)?)?)
    };
    Ok(ForwardingParameters {
        destination_interface,
        network_instance: ies.first(t::NETWORK_INSTANCE).map(<[u8]>::to_vec),
        outer_header_creation: opt(ies, t::OUTER_HEADER_CREATION, outer_header_creation)?,
    })
}

// ---- Create FAR (Table 7.5.2.3-1): FAR ID, Apply Action, Forwarding Parameters, BAR ID ----

pub(crate) fn put_create_far(w: &mut Writer, v: &CreateFar) {
    w.ie(t::CREATE_FAR, |w| {
        put_u32_ie(w, t::FAR_ID, v.far_id);
        put_apply_action(w, v.apply_action);
        v.forwarding_parameters
            .iter()
            .for_each(|x| put_forwarding_parameters(w, t::FORWARDING_PARAMETERS, x));
        v.bar_id.iter().for_each(|x| put_u8_ie(w, t::BAR_ID, *x));
    });
}

/// Forwarding Parameters are conditional: present when the Apply Action forwards.
pub(crate) fn create_far(ies: &Ies<'_>, budget: &mut Budget) -> Result<CreateFar> {
    let apply_action = apply_action(ies.mandatory(t::APPLY_ACTION)?)?;
    let forwarding_parameters = opt_group(ies, t::FORWARDING_PARAMETERS, budget, |g, _| {
        forwarding_parameters(g, false)
    })?;
    if apply_action.has(ApplyAction::FORW) && forwarding_parameters.is_none() {
        return Err(DecodeErrorKind::MissingConditional {
            ie: t::FORWARDING_PARAMETERS,
        });
    }
    Ok(CreateFar {
        far_id: far_id(ies.mandatory(t::FAR_ID)?)?,
        apply_action,
        forwarding_parameters,
        bar_id: opt(ies, t::BAR_ID, |v| u8_ie(t::BAR_ID, v))?,
    })
}

// ---- Update FAR (Table 7.5.4.3-1): FAR ID, Apply Action, Update Forwarding Parameters,
// BAR ID ----

pub(crate) fn put_update_far(w: &mut Writer, v: &UpdateFar) {
    w.ie(t::UPDATE_FAR, |w| {
        put_u32_ie(w, t::FAR_ID, v.far_id);
        v.apply_action.iter().for_each(|x| put_apply_action(w, *x));
        v.update_forwarding_parameters
            .iter()
            .for_each(|x| put_forwarding_parameters(w, t::UPDATE_FORWARDING_PARAMETERS, x));
        v.bar_id.iter().for_each(|x| put_u8_ie(w, t::BAR_ID, *x));
    });
}

pub(crate) fn update_far(ies: &Ies<'_>, budget: &mut Budget) -> Result<UpdateFar> {
    Ok(UpdateFar {
        far_id: far_id(ies.mandatory(t::FAR_ID)?)?,
        apply_action: opt(ies, t::APPLY_ACTION, apply_action)?,
        update_forwarding_parameters: opt_group(
            ies,
            t::UPDATE_FORWARDING_PARAMETERS,
            budget,
            |g, _| forwarding_parameters(g, true),
        )?,
        bar_id: opt(ies, t::BAR_ID, |v| u8_ie(t::BAR_ID, v))?,
    })
}

// ---- Create URR (Table 7.5.2.4-1) and Update URR (Table 7.5.4.4-1): URR ID, Measurement
// Method, Reporting Triggers, Measurement Period, Volume Threshold, Time Threshold ----

pub(crate) fn put_urr(w: &mut Writer, ie: u16, v: &Urr) {
    w.ie(ie, |w| {
        put_u32_ie(w, t::URR_ID, v.urr_id);
        v.measurement_method
            .iter()
            .for_each(|x| put_measurement_method(w, *x));
        v.reporting_triggers
            .iter()
            .for_each(|x| put_trigger_octets(w, t::REPORTING_TRIGGERS, x.0));
        v.measurement_period
            .iter()
            .for_each(|x| put_u32_ie(w, t::MEASUREMENT_PERIOD, *x));
        v.volume_threshold
            .iter()
            .for_each(|x| put_volume_threshold(w, *x));
        v.time_threshold
            .iter()
            .for_each(|x| put_u32_ie(w, t::TIME_THRESHOLD, *x));
    });
}

/// `create`: Create URR, where Measurement Method and Reporting Triggers are mandatory.
pub(crate) fn urr(ies: &Ies<'_>, create: bool) -> Result<Urr> {
    let must = |ie| {
        if create {
            ies.mandatory(ie).map(Some)
        } else {
            Ok(ies.first(ie))
        }
    };
    let triggers = |v: &[u8]| trigger_octets(t::REPORTING_TRIGGERS, v).map(ReportingTriggers);
    Ok(Urr {
        urr_id: urr_id(ies.mandatory(t::URR_ID)?)?,
        measurement_method: must(t::MEASUREMENT_METHOD)?
            .map(measurement_method)
            .transpose()?,
        reporting_triggers: must(t::REPORTING_TRIGGERS)?.map(triggers).transpose()?,
        measurement_period: opt(ies, t::MEASUREMENT_PERIOD, |v| {
            u32_ie(t::MEASUREMENT_PERIOD, v)
        })?,
        volume_threshold: opt(ies, t::VOLUME_THRESHOLD, volume_threshold)?,
        time_threshold: opt(ies, t::TIME_THRESHOLD, |v| u32_ie(t::TIME_THRESHOLD, v))?,
    })
}

// ---- Create QER (Table 7.5.2.5-1) and Update QER (Table 7.5.4.5-1): QER ID, Gate Status,
// MBR, GBR, QFI ----

pub(crate) fn put_qer(w: &mut Writer, ie: u16, v: &Qer) {
    w.ie(ie, |w| {
        put_u32_ie(w, t::QER_ID, v.qer_id);
        v.gate_status.iter().for_each(|x| put_gate_status(w, *x));
        v.mbr.iter().for_each(|x| put_bit_rate(w, t::MBR, *x));
        v.gbr.iter().for_each(|x| put_bit_rate(w, t::GBR, *x));
        v.qfi.iter().for_each(|x| put_qfi(w, *x));
    });
}

/// `create`: Create QER, where Gate Status is mandatory.
pub(crate) fn qer(ies: &Ies<'_>, create: bool) -> Result<Qer> {
    let gate = if create {
        Some(gate_status(ies.mandatory(t::GATE_STATUS)?)?)
    } else {
        opt(ies, t::GATE_STATUS, gate_status)?
    };
    Ok(Qer {
        qer_id: qer_id(ies.mandatory(t::QER_ID)?)?,
        gate_status: gate,
        mbr: opt(ies, t::MBR, |v| bit_rate(t::MBR, v))?,
        gbr: opt(ies, t::GBR, |v| bit_rate(t::GBR, v))?,
        qfi: opt(ies, t::QFI, qfi)?,
    })
}

// ---- Created PDR (Table 7.5.3.2-1): PDR ID, Local F-TEID ----

pub(crate) fn put_created_pdr(w: &mut Writer, v: &CreatedPdr) {
    w.ie(t::CREATED_PDR, |w| {
        put_u16_ie(w, t::PDR_ID, v.pdr_id);
        v.local_f_teid.iter().for_each(|x| put_f_teid(w, x));
    });
}

pub(crate) fn created_pdr(ies: &Ies<'_>, _: &mut Budget) -> Result<CreatedPdr> {
    Ok(CreatedPdr {
        pdr_id: pdr_id(ies.mandatory(t::PDR_ID)?)?,
        local_f_teid: opt(ies, t::F_TEID, f_teid)?,
    })
}

// ---- Downlink Data Report (Table 7.5.8.2-1): PDR ID (one or more) ----

pub(crate) fn put_downlink_data_report(w: &mut Writer, v: &DownlinkDataReport) {
    w.ie(t::DOWNLINK_DATA_REPORT, |w| {
        v.pdr_ids.iter().for_each(|x| put_u16_ie(w, t::PDR_ID, *x));
    });
}

pub(crate) fn downlink_data_report(ies: &Ies<'_>) -> Result<DownlinkDataReport> {
    ies.mandatory(t::PDR_ID)?;
    Ok(DownlinkDataReport {
        pdr_ids: list(ies, t::PDR_ID, pdr_id)?,
    })
}

// ---- Remove PDR/FAR/URR/QER (Tables 7.5.4.6-1 to 7.5.4.9-1) and Query URR (Table
// 7.5.4.10-1): a grouped IE holding one rule ID ----

pub(crate) fn put_one_id_group(w: &mut Writer, ie: u16, id_ie: u16, id: u32) {
    w.ie(ie, |w| {
        if id_ie == t::PDR_ID {
            // PDR IDs are 2 octets; callers pass a u16 widened.
            w.ie(id_ie, |w| w.u16(u16::try_from(id).unwrap_or(u16::MAX)));
        } else {
            put_u32_ie(w, id_ie, id);
        }
    });
}

pub(crate) fn remove_pdrs(ies: &Ies<'_>, budget: &mut Budget) -> Result<Vec<u16>> {
    groups(ies, t::REMOVE_PDR, budget, |g, _| {
        pdr_id(g.mandatory(t::PDR_ID)?)
    })
}

/// The 4-octet rule ID `id_ie` inside every grouped `ie` (Remove FAR/URR/QER, Query URR).
pub(crate) fn one_id_groups(
    ies: &Ies<'_>,
    ie: u16,
    id_ie: u16,
    budget: &mut Budget,
) -> Result<Vec<u32>> {
    groups(ies, ie, budget, |g, _| u32_ie(id_ie, g.mandatory(id_ie)?))
}

// ---- Usage Report (Tables 7.5.5.2-1, 7.5.7.2-1, 7.5.8.3-1): URR ID, UR-SEQN, Usage Report
// Trigger, Start Time, End Time, Volume Measurement, Duration Measurement ----

pub(crate) fn put_usage_report(w: &mut Writer, ie: u16, v: &UsageReport) {
    w.ie(ie, |w| {
        put_u32_ie(w, t::URR_ID, v.urr_id);
        put_u32_ie(w, t::UR_SEQN, v.ur_seqn);
        put_trigger_octets(w, t::USAGE_REPORT_TRIGGER, v.trigger.0);
        v.start_time
            .iter()
            .for_each(|x| put_u32_ie(w, t::START_TIME, *x));
        v.end_time
            .iter()
            .for_each(|x| put_u32_ie(w, t::END_TIME, *x));
        v.volume.iter().for_each(|x| put_volume_measurement(w, *x));
        v.duration
            .iter()
            .for_each(|x| put_u32_ie(w, t::DURATION_MEASUREMENT, *x));
    });
}

pub(crate) fn usage_report(ies: &Ies<'_>, _: &mut Budget) -> Result<UsageReport> {
    let trigger = ies.mandatory(t::USAGE_REPORT_TRIGGER)?;
    Ok(UsageReport {
        urr_id: urr_id(ies.mandatory(t::URR_ID)?)?,
        ur_seqn: u32_ie(t::UR_SEQN, ies.mandatory(t::UR_SEQN)?)?,
        trigger: UsageReportTrigger(trigger_octets(t::USAGE_REPORT_TRIGGER, trigger)?),
        start_time: opt(ies, t::START_TIME, |v| u32_ie(t::START_TIME, v))?,
        end_time: opt(ies, t::END_TIME, |v| u32_ie(t::END_TIME, v))?,
        volume: opt(ies, t::VOLUME_MEASUREMENT, volume_measurement)?,
        duration: opt(ies, t::DURATION_MEASUREMENT, |v| {
            u32_ie(t::DURATION_MEASUREMENT, v)
        })?,
    })
}
