//! `mecgw.v1.TelemetryService`: app records into the policy engine, released outputs out.
//!
//! Publish checks each batch (a kind the policy declares and the app may publish; each record
//! one JSON object of at most [`MAX_RECORD_BYTES`]) and puts the records on the engine's
//! bounded queue. When the queue stays full for `publish_wait_ms`, the call ends with
//! RESOURCE_EXHAUSTED saying how many records were accepted: memory never grows with a slow
//! engine. The response comes once the accepted records are processed and their outputs
//! durably spooled ([`ApiBackend::flush`]). Subscribe streams only the releases the caller
//! may see.

use std::{collections::HashSet, pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt as _};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tonic::{Request, Response, Status, Streaming};

use super::{
    ApiBackend, PublishedRecord, Shared,
    proto::{
        PublishRequest, PublishResponse, SubscribeRequest, SubscribeResponse,
        telemetry_service_server::TelemetryService,
    },
};

/// Largest record accepted, bytes of JSON.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// The Telemetry service.
pub struct Telemetry<B>(pub(crate) Arc<Shared<B>>);

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

/// Checks the record `json` (the `i`th of a batch of `kind`): one JSON object, at most
/// [`MAX_RECORD_BYTES`], whose `kind` member, if any, is `kind`. Nothing is built from it but
/// that member: the engine reads the text itself ([`PublishedRecord`]).
fn check_record(kind: &str, i: usize, json: &str) -> Result<(), Status> {
    /// Only the member the API checks; every other one is parsed and ignored.
    #[derive(serde::Deserialize)]
    struct KindOnly {
        kind: Option<serde_json::Value>,
    }
    if json.len() > MAX_RECORD_BYTES {
        return Err(Status::invalid_argument(format!(
            "records_json[{i}]: {} bytes, at most {MAX_RECORD_BYTES}",
            json.len()
        )));
    }
    // A derived struct would also take a JSON array of its members: only an object is a record.
    if !json.trim_start().starts_with('{') {
        return Err(Status::invalid_argument(format!(
            "records_json[{i}]: a record must be a JSON object"
        )));
    }
    let record: KindOnly = serde_json::from_str(json)
        .map_err(|e| Status::invalid_argument(format!("records_json[{i}]: not JSON: {e}")))?;
    match record.kind {
        None => Ok(()),
        Some(serde_json::Value::String(k)) if k == kind => Ok(()),
        Some(other) => Err(Status::invalid_argument(format!(
            "records_json[{i}].kind: {other} differs from the batch's kind {kind:?}"
        ))),
    }
}

#[tonic::async_trait]
impl<B: ApiBackend> TelemetryService for Telemetry<B> {
    async fn publish(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<PublishResponse>, Status> {
        let caller = self.0.authority.caller(&request)?;
        let declared: HashSet<String> = self.0.backend.record_kinds().into_iter().collect();
        let queue = self.0.backend.ingest();
        let wait = Duration::from_millis(self.0.config.publish_wait_ms);
        let mut stream = request.into_inner();
        let mut accepted = 0u64;
        let drained = self.0.drained();
        tokio::pin!(drained);
        let mut kind: Option<Arc<str>> = None;
        loop {
            let batch = tokio::select! {
                m = stream.message() => m?,
                () = &mut drained => {
                    return Err(Status::unavailable(format!(
                        "the gateway is shutting down; {accepted} record(s) were accepted"
                    )));
                }
            };
            let Some(batch) = batch else { break };
            if kind.as_deref() != Some(batch.kind.as_str()) {
                if !declared.contains(&batch.kind) {
                    return Err(Status::invalid_argument(format!(
                        "kind: {:?} is not a record kind the policy in force declares; \
                         {accepted} record(s) were accepted",
                        batch.kind
                    )));
                }
                if !caller.may_publish(&batch.kind) {
                    return Err(Status::permission_denied(format!(
                        "app {:?} may not publish records of kind {:?}; {accepted} record(s) \
                         were accepted",
                        caller.name, batch.kind
                    )));
                }
                kind = Some(Arc::from(batch.kind.as_str()));
            }
            let Some(kind) = kind.clone() else { break };
            let mut records = batch.records_json.into_iter().enumerate().peekable();
            while records.peek().is_some() {
                // Room for as many records of the batch as the queue holds at once, taken in
                // one go: a publisher waiting for room is woken once per chunk, not once per
                // record the engine takes.
                let chunk = records.len().min(queue.max_capacity());
                let mut permits = match queue.try_reserve_many(chunk) {
                    Ok(p) => Permits::Many(p),
                    Err(TrySendError::Closed(())) => return Err(engine_gone(accepted)),
                    Err(TrySendError::Full(())) => Permits::OneByOne,
                };
                for n in 0..chunk {
                    let Some((i, json)) = records.next() else {
                        break;
                    };
                    check_record(&kind, i, &json).map_err(|e| {
                        Status::invalid_argument(format!(
                            "{}; {accepted} record(s) were accepted",
                            e.message()
                        ))
                    })?;
                    let item = PublishedRecord {
                        app: caller.name.clone(),
                        kind: kind.clone(),
                        json,
                    };
                    let item = match &mut permits {
                        Permits::Many(p) => match p.next() {
                            Some(permit) => {
                                permit.send(item);
                                None
                            }
                            None => Some(item),
                        },
                        Permits::OneByOne => match queue.try_reserve() {
                            Ok(permit) => {
                                permit.send(item);
                                None
                            }
                            Err(TrySendError::Closed(())) => return Err(engine_gone(accepted)),
                            Err(TrySendError::Full(())) => Some(item),
                        },
                    };
                    if let Some(item) = item {
                        // The queue is full: wait (once) for room for the rest of the chunk.
                        let want = chunk - n;
                        match tokio::time::timeout(wait, queue.reserve_many(want)).await {
                            Ok(Ok(p)) => {
                                let mut p = p;
                                match p.next() {
                                    Some(permit) => permit.send(item),
                                    None => return Err(engine_gone(accepted)),
                                }
                                permits = Permits::Many(p);
                            }
                            Ok(Err(_)) => return Err(engine_gone(accepted)),
                            Err(_) => {
                                return Err(super::errors::with_retry(
                                    tonic::Code::ResourceExhausted,
                                    format!(
                                        "the policy engine is behind (its queue stayed full \
                                         for {} ms); {accepted} record(s) were accepted; retry \
                                         later from records_json[{i}] of this batch",
                                        wait.as_millis()
                                    ),
                                    Some(wait),
                                ));
                            }
                        }
                    }
                    accepted += 1;
                }
            }
        }
        if accepted > 0
            && let Err(e) = self.0.backend.flush().await
        {
            // The code says what to do (retry later, or find the engine gone); the message
            // says how far the call got.
            let status = Status::from(e);
            return Err(Status::with_details(
                status.code(),
                format!(
                    "{accepted} record(s) were accepted but are not yet durable: {}",
                    status.message()
                ),
                status.details().to_vec().into(),
            ));
        }
        Ok(Response::new(PublishResponse { accepted }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.0.authority.caller(&request)?;
        let wanted: HashSet<String> = request.into_inner().releases.into_iter().collect();
        if let Some(r) = wanted.iter().find(|r| !caller.sees_release(r)) {
            return Err(Status::permission_denied(format!(
                "app {:?} may not see release {r:?}",
                caller.name
            )));
        }
        let mut missed = 0u64;
        let stream = BroadcastStream::new(self.0.backend.releases())
            .filter_map(move |out| {
                let item = match out {
                    Ok(o)
                        if caller.sees_release(&o.release)
                            && (wanted.is_empty() || wanted.contains(&o.release)) =>
                    {
                        Some(Ok(SubscribeResponse {
                            release: o.release.clone(),
                            output_json: o.json.clone(),
                            missed: std::mem::take(&mut missed),
                        }))
                    }
                    Ok(_) => None,
                    Err(BroadcastStreamRecvError::Lagged(n)) => {
                        missed += n;
                        None
                    }
                };
                std::future::ready(item)
            })
            .take_until(self.0.drained());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Queue slots held for the records of a batch.
enum Permits<'a> {
    /// Reserved together.
    Many(mpsc::PermitIterator<'a, PublishedRecord>),
    /// The queue had no room for the whole chunk: one at a time while there is room.
    OneByOne,
}

fn engine_gone(accepted: u64) -> Status {
    Status::unavailable(format!(
        "the policy engine is not running; {accepted} record(s) were accepted"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_are_checked_and_bad_ones_are_named() {
        check_record("app", 0, r#"{"x":1}"#).unwrap();
        check_record("app", 0, r#" {"kind":"app","x":{"y":[1,2]}}"#).unwrap();
        let cases = [
            (r#"{"kind":"flow"}"#, "records_json[3].kind"),
            ("[1]", "records_json[3]: a record must be a JSON object"),
            (
                r#"["app"]"#,
                "records_json[3]: a record must be a JSON object",
            ),
            (r#"{"kind":7}"#, "records_json[3].kind: 7 differs"),
            (r#"{"x":1} {"#, "records_json[3]: not JSON"),
            ("{", "records_json[3]: not JSON"),
        ];
        for (json, want) in cases {
            let e = check_record("app", 3, json).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(want), "{json}: {}", e.message());
        }
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_RECORD_BYTES));
        assert!(check_record("app", 0, &big).is_err());
    }
}
