//! Request size limits: which limit applies to which method, and how a call that sends a
//! message over it ends.
//!
//! tonic enforces the limits (`serve_on` gives each service its `max_decoding_message_size`
//! from [`Limits`]) and fails an oversized message with OUT_OF_RANGE; a handler that drops
//! that error (reflection's loop does) ends its stream with OK and no answer. [`LimitLayer`]
//! follows the gRPC frames of each request as they pass, and when one declares a length over
//! its method's limit it makes the call end with RESOURCE_EXHAUSTED, gRPC's code for a
//! message over the limit, naming both sizes: in the response headers of a trailers-only
//! answer, else in the trailers (added if the body ends without them).
//!
//! It never buffers, decodes or changes a message, and never changes a call whose messages
//! stayed within the limit, nor an error a handler chose (only OK and OUT_OF_RANGE are
//! replaced).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Status};

/// Size limit for health and reflection requests.
pub(crate) const SMALL_MESSAGE_BYTES: usize = 64 * 1024;

/// The largest request message each method takes, bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The `mecgw.v1` services' limit ([`ApiConfig::max_message_bytes`]).
    ///
    /// [`ApiConfig::max_message_bytes`]: super::ApiConfig::max_message_bytes
    pub(crate) api: usize,
}

impl Limits {
    /// The limit of the method at `path`; `None` for paths no service serves (tonic answers
    /// UNIMPLEMENTED without reading the body).
    pub(crate) fn of(&self, path: &str) -> Option<usize> {
        if path.starts_with("/mecgw.v1.") {
            Some(self.api)
        } else if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
            Some(SMALL_MESSAGE_BYTES)
        } else {
            None
        }
    }
}

/// The tower layer that turns a message over the limit into RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitLayer(pub(crate) Limits);

impl<S> tower::Layer<S> for LimitLayer {
    type Service = LimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LimitService {
            inner,
            limits: self.0,
        }
    }
}

/// See [`LimitLayer`].
#[derive(Debug, Clone)]
pub(crate) struct LimitService<S> {
    inner: S,
    limits: Limits,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, RB> tower::Service<http::Request<tonic::body::Body>> for LimitService<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = http::Response<CheckedBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let Some(limit) = self.limits.of(request.uri().path()) else {
            let call = self.inner.call(request);
            return Box::pin(async move {
                Ok(call.await?.map(|inner| CheckedBody { inner, watch: None }))
            });
        };
        let over = Arc::new(OnceLock::new());
        let request = request.map(|inner| {
            tonic::body::Body::new(ScannedBody {
                inner,
                scanner: FrameScanner::default(),
                limit,
                over: over.clone(),
            })
        });
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            let trailers_only = response.headers().contains_key("grpc-status");
            if trailers_only && let Some(&len) = over.get() {
                end_exhausted(response.headers_mut(), len, limit);
            }
            // A trailers-only response has no trailers to check.
            let watch = (!trailers_only).then_some(Watch {
                over,
                limit,
                ended: false,
            });
            Ok(response.map(|inner| CheckedBody { inner, watch }))
        })
    }
}

/// Sets `status` (response headers or trailers) to RESOURCE_EXHAUSTED for a message of `len`
/// bytes over `limit`, unless it already holds an error other than OUT_OF_RANGE (what tonic
/// answers for that message, or a handler's own decision, which stands).
fn end_exhausted(status: &mut HeaderMap, len: u32, limit: usize) {
    let code = status
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32);
    if !matches!(code, Code::Ok | Code::OutOfRange) {
        return;
    }
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        status.remove(name);
    }
    let message =
        format!("request message of {len} bytes is over this method's limit of {limit} bytes");
    // The message is ASCII, so encoding it cannot fail; grpc-status is set first either way.
    let _ = Status::resource_exhausted(message).add_header(status);
}

/// Follows the gRPC length-prefixed messages of a request body (a compressed flag byte, a
/// 4-byte big-endian length, then the message) however the body is split into chunks.
#[derive(Debug, Default)]
struct FrameScanner {
    /// The prefix of the next message, as far as it has arrived.
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message still to pass.
    skip: u64,
}

impl FrameScanner {
    /// Reads the next chunk of the body; returns the declared length of the first message
    /// in it whose length is over `limit`.
    fn feed(&mut self, mut data: &[u8], limit: usize) -> Option<u32> {
        // Every `n` below is at most `data.len()`, and `have + n` at most 5: no slice panics.
        while !data.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).map_or(data.len(), |s| s.min(data.len()));
                data = &data[n..];
                self.skip -= n as u64;
                continue;
            }
            let n = (self.prefix.len() - self.have).min(data.len());
            let (head, rest) = data.split_at(n);
            self.prefix[self.have..self.have + n].copy_from_slice(head);
            self.have += n;
            data = rest;
            if self.have == self.prefix.len() {
                self.have = 0;
                let [_compressed, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]);
                if usize::try_from(len).map_or(true, |l| l > limit) {
                    return Some(len);
                }
                self.skip = u64::from(len);
            }
        }
        None
    }
}

/// A request body that records, in `over`, the length of the first message over `limit`.
struct ScannedBody<B> {
    inner: B,
    scanner: FrameScanner,
    limit: usize,
    over: Arc<OnceLock<u32>>,
}

impl<B> Body for ScannedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
            && this.over.get().is_none()
            && let Some(len) = this.scanner.feed(data, this.limit)
        {
            let _ = this.over.set(len);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a response body checks at its end.
struct Watch {
    over: Arc<OnceLock<u32>>,
    limit: usize,
    /// The trailers have been passed on (or added).
    ended: bool,
}

/// A response body whose trailers say RESOURCE_EXHAUSTED if its request carried a message
/// over the limit (see [`end_exhausted`]).
pub(crate) struct CheckedBody<B> {
    inner: B,
    /// `None`: nothing to check (no limit for the path, or a trailers-only response).
    watch: Option<Watch>,
}

impl<B> Body for CheckedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let Some(watch) = this.watch.as_mut().filter(|w| !w.ended) else {
            return Poll::Ready(frame);
        };
        match frame {
            Some(Ok(mut frame)) if frame.is_trailers() => {
                watch.ended = true;
                if let Some(&len) = watch.over.get()
                    && let Some(trailers) = frame.trailers_mut()
                {
                    end_exhausted(trailers, len, watch.limit);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            None => {
                watch.ended = true;
                let Some(&len) = watch.over.get() else {
                    return Poll::Ready(None);
                };
                let mut trailers = HeaderMap::new();
                end_exhausted(&mut trailers, len, watch.limit);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not the end while trailers may still have to be added.
        self.inner.is_end_stream()
            && self
                .watch
                .as_ref()
                .is_none_or(|w| w.ended || w.over.get().is_none())
    }

    fn size_hint(&self) -> SizeHint {
        // Added trailers carry no data.
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// gRPC frames: each message's prefix and `len` bytes (the declared length is `len`).
    fn frames(lens: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &len in lens {
            out.push(0);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend(std::iter::repeat_n(0xab, len as usize));
        }
        out
    }

    #[test]
    fn the_first_message_over_the_limit_is_found_however_the_body_is_split() {
        let body = frames(&[3, 0, 10, 11, 2]);
        for split in 0..=body.len() {
            for step in [1, 2, 7, body.len().max(1)] {
                let mut s = FrameScanner::default();
                let (a, b) = body.split_at(split);
                let found: Vec<u32> = a
                    .chunks(step)
                    .chain(b.chunks(step))
                    .filter_map(|chunk| s.feed(chunk, 10))
                    .collect();
                assert_eq!(found.first(), Some(&11), "split {split} step {step}");
            }
        }
        let mut s = FrameScanner::default();
        assert_eq!(
            s.feed(&frames(&[10, 10, 0]), 10),
            None,
            "at the limit is fine"
        );
        let mut s = FrameScanner::default();
        assert_eq!(s.feed(&[1, 0xff, 0xff, 0xff, 0xff], 10), Some(u32::MAX));
    }

    #[test]
    fn each_method_gets_its_services_limit() {
        let l = Limits { api: 4096 };
        assert_eq!(l.of("/mecgw.v1.TelemetryService/Publish"), Some(4096));
        assert_eq!(
            l.of("/grpc.health.v1.Health/Check"),
            Some(SMALL_MESSAGE_BYTES)
        );
        assert_eq!(
            l.of("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Some(SMALL_MESSAGE_BYTES)
        );
        assert_eq!(l.of("/other.Service/Method"), None);
    }

    /// A body of the given frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn status(code: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static(code));
        h.insert("grpc-message", http::HeaderValue::from_static("x"));
        h
    }

    /// The trailers `body` ends with when its request sent a message of `over` bytes (limit
    /// 10); `None`: it ends without trailers.
    fn trailers_of(body: Vec<Frame<Bytes>>, over: Option<u32>) -> Option<HeaderMap> {
        let cell = Arc::new(OnceLock::new());
        if let Some(len) = over {
            let _ = cell.set(len);
        }
        let mut body = CheckedBody {
            inner: Frames(body.into()),
            watch: Some(Watch {
                over: cell,
                limit: 10,
                ended: false,
            }),
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut trailers = None;
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            if let Ok(t) = frame.into_trailers() {
                trailers = Some(t);
            }
        }
        assert!(body.is_end_stream());
        trailers
    }

    fn code_and_message(h: &HeaderMap) -> (&str, &str) {
        let get = |n| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        (get("grpc-status"), get("grpc-message"))
    }

    #[test]
    fn a_stream_whose_request_went_over_the_limit_ends_resource_exhausted() {
        let data = || Frame::data(Bytes::from_static(b"answer"));
        let exhausted = (
            "8",
            "request%20message%20of%2011%20bytes%20is%20over%20this%20method's%20limit%20of%2010%20bytes",
        );
        // OK or OUT_OF_RANGE trailers are replaced; no trailers at all get some.
        for end in ["0", "11"] {
            let t = trailers_of(vec![data(), Frame::trailers(status(end))], Some(11)).unwrap();
            assert_eq!(code_and_message(&t), exhausted);
        }
        let t = trailers_of(vec![data()], Some(11)).unwrap();
        assert_eq!(code_and_message(&t), exhausted);
        // A handler's own error stands; a request within the limit changes nothing.
        let t = trailers_of(vec![Frame::trailers(status("7"))], Some(11)).unwrap();
        assert_eq!(code_and_message(&t), ("7", "x"));
        let t = trailers_of(vec![data(), Frame::trailers(status("0"))], None).unwrap();
        assert_eq!(code_and_message(&t), ("0", "x"));
        assert!(trailers_of(vec![data()], None).is_none());
    }
}
