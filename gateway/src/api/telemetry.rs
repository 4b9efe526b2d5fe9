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

/// The record `json` (the `i`th of a batch of `kind`) with its `kind` member set.
fn parse_record(kind: &str, i: usize, json: &str) -> Result<serde_json::Value, Status> {
    if json.len() > MAX_RECORD_BYTES {
        return Err(Status::invalid_argument(format!(
            "records_json[{i}]: {} bytes, at most {MAX_RECORD_BYTES}",
            json.len()
        )));
    }
    let mut value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Status::invalid_argument(format!("records_json[{i}]: not JSON: {e}")))?;
    let Some(object) = value.as_object_mut() else {
        return Err(Status::invalid_argument(format!(
            "records_json[{i}]: a record must be a JSON object"
        )));
    };
    match object.get("kind") {
        None => {
            object.insert("kind".into(), serde_json::Value::String(kind.into()));
        }
        Some(serde_json::Value::String(k)) if k == kind => {}
        Some(other) => {
            return Err(Status::invalid_argument(format!(
                "records_json[{i}].kind: {other} differs from the batch's kind {kind:?}"
            )));
        }
    }
    Ok(value)
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
            for (i, json) in batch.records_json.iter().enumerate() {
                let record = parse_record(&kind, i, json).map_err(|e| {
                    Status::invalid_argument(format!(
                        "{}; {accepted} record(s) were accepted",
                        e.message()
                    ))
                })?;
                let item = PublishedRecord {
                    app: caller.name.clone(),
                    kind: kind.clone(),
                    record,
                };
                let permit = match queue.try_reserve() {
                    Ok(p) => p,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {
                        match tokio::time::timeout(wait, queue.reserve()).await {
                            Ok(Ok(p)) => p,
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
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => {
                        return Err(engine_gone(accepted));
                    }
                };
                permit.send(item);
                accepted += 1;
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
    fn records_get_their_kind_and_bad_ones_are_named() {
        let v = parse_record("app", 0, r#"{"x":1}"#).unwrap();
        assert_eq!(v["kind"], "app");
        parse_record("app", 0, r#"{"kind":"app","x":1}"#).unwrap();
        let cases = [
            (r#"{"kind":"flow"}"#, "records_json[3].kind"),
            ("[1]", "records_json[3]: a record must be a JSON object"),
            ("{", "records_json[3]: not JSON"),
        ];
        for (json, want) in cases {
            let e = parse_record("app", 3, json).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(want), "{json}: {}", e.message());
        }
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_RECORD_BYTES));
        assert!(parse_record("app", 0, &big).is_err());
    }
}
