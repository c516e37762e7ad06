//! The one body type that flows through the stack, and bounded collection for replay and caching.

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};

/// Boxed error used by bodies and between layers where a typed error adds nothing.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of every layer: boxed, `Send`, streaming.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Wrap any compatible body.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// What [`collect_bounded`] found.
pub enum Collected<B> {
    /// The whole body fit in the limit.
    Complete(Bytes),
    /// The body is larger than the limit: what was read so far and the untouched rest.
    TooLarge {
        /// What was read before the limit was crossed.
        head: Bytes,
        /// The unread rest of the body.
        rest: B,
    },
}

/// Read `body` to the end as long as it stays within `limit` bytes. Trailers are dropped.
///
/// A `Content-Length` larger than the limit is detected from the size hint before any read.
pub async fn collect_bounded<B>(mut body: B, limit: usize) -> Result<Collected<B>, BoxError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > limit as u64 {
        return Ok(Collected::TooLarge { head: Bytes::new(), rest: body });
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Collected::TooLarge { head: buf.freeze(), rest: body });
            }
        }
    }
    Ok(Collected::Complete(buf.freeze()))
}

/// A body that yields `head` first and then streams `rest`.
pub fn chain<B>(head: Bytes, rest: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let first = futures_util::stream::iter((!head.is_empty()).then(|| Ok::<_, BoxError>(Frame::data(head))));
    let rest = http_body_util::BodyStream::new(rest.map_err(Into::into));
    boxed(StreamBody::new(futures_util::StreamExt::chain(first, rest)))
}
