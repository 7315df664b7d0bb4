//! The message collector: how a task sends to output streams.
//!
//! `send` serializes the envelope with its stream's configured serdes into
//! one reusable buffer and records where it goes; the container routes the
//! batch to the systems' producers after the task returns. No I/O happens
//! here, and after warm-up sending allocates nothing.

use crate::serde::{Data, RawBytes, Serde, Serdes};
use crate::system::SystemStream;
use std::any::{Any, TypeId};
use std::ops::Range;
use std::sync::Arc;

/// A message to send.
#[derive(Debug)]
pub struct OutgoingEnvelope<'a, K, M> {
    /// The destination stream.
    pub stream: &'a SystemStream,
    /// An explicit partition; `None` partitions by key (murmur2, like Kafka),
    /// or round-robin when there is no key either.
    pub partition: Option<u32>,
    /// The key.
    pub key: Option<K>,
    /// The message; `None` sends a tombstone.
    pub message: Option<M>,
    /// Milliseconds since the epoch; `None` means now.
    pub timestamp: Option<i64>,
    /// Headers (name, value); empty for most messages. Stored by the
    /// embedded log and Kafka; a system that cannot store them refuses the
    /// message. Names starting with `gregor.` are reserved.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl<'a, K, M> OutgoingEnvelope<'a, K, M> {
    /// A keyed message, partitioned by its key.
    pub fn keyed(stream: &'a SystemStream, key: K, message: M) -> Self {
        OutgoingEnvelope {
            stream,
            partition: None,
            key: Some(key),
            message: Some(message),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// A message for an explicit partition.
    pub fn to_partition(stream: &'a SystemStream, partition: u32, key: Option<K>, message: M) -> Self {
        OutgoingEnvelope {
            stream,
            partition: Some(partition),
            key,
            message: Some(message),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    ///
    /// ```
    /// # use gregor_api::{OutgoingEnvelope, SystemStream};
    /// let out = SystemStream::new("log", "orders");
    /// let envelope = OutgoingEnvelope::keyed(&out, "o-17", "paid").with_header("trace-id", b"4bf92f35");
    /// assert_eq!(envelope.headers, [("trace-id".to_owned(), b"4bf92f35".to_vec())]);
    /// ```
    pub fn with_header(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_owned(), value.to_vec()));
        self
    }
}

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The stream's system is not configured, or its serdes do not fit the types.
    #[error("cannot send to {stream}: {reason}")]
    Stream {
        /// The stream.
        stream: SystemStream,
        /// Why.
        reason: String,
    },
    /// The serde failed on this message.
    #[error("cannot send to {stream}: encoding the {what}: {reason}")]
    Encode {
        /// The stream.
        stream: SystemStream,
        /// `key` or `message`.
        what: &'static str,
        /// The serde's error.
        reason: String,
    },
}

/// The bytes of `value` when `T` is `Bytes` or [`RawBytes`].
fn as_bytes<T: 'static>(value: &T) -> Option<&[u8]> {
    let any = value as &dyn Any;
    any.downcast_ref::<bytes::Bytes>().map(|b| &b[..]).or_else(|| any.downcast_ref::<RawBytes>().map(|r| &r.0[..]))
}

/// Looks up an output stream's key and message serde names (from config).
pub type SerdeNamesFor = Box<dyn Fn(&SystemStream) -> Result<(String, String), String>>;

/// A send recorded by the collector (read by the runtime).
#[doc(hidden)]
#[derive(Debug)]
pub struct PendingSend {
    /// Index of the stream in [`MessageCollector::streams`].
    pub stream: u32,
    pub partition: Option<u32>,
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
    pub timestamp: Option<i64>,
    /// Boxed: most sends have none (one word, not three, per recorded send).
    #[allow(clippy::box_collection)]
    pub headers: Option<Box<Vec<(String, Vec<u8>)>>>,
}

/// A serde resolved for one output stream, type, and key or message.
struct Resolved {
    stream: u32,
    type_id: TypeId,
    is_key: bool,
    /// An `Arc<dyn Serde<T>>` for that type.
    serde: Box<dyn Any>,
    /// The serde encodes `Bytes` as they are ([`Serde::is_identity`]): the
    /// bytes are copied without calling it.
    identity: bool,
}

/// Collects a task's output messages.
pub struct MessageCollector {
    serdes: Arc<Serdes>,
    names: SerdeNamesFor,
    /// The distinct streams sent to, in order of first use. Tasks send to
    /// few streams, usually through the same `SystemStream` value, so a
    /// short list compared by pointer beats hashing names on every send.
    streams: Vec<SystemStream>,
    resolved: Vec<Resolved>,
    buf: Vec<u8>,
    sends: Vec<PendingSend>,
}

impl MessageCollector {
    #[doc(hidden)]
    pub fn new(serdes: Arc<Serdes>, names: SerdeNamesFor) -> Self {
        MessageCollector {
            serdes,
            names,
            streams: Vec::new(),
            resolved: Vec::new(),
            buf: Vec::with_capacity(1 << 16),
            sends: Vec::new(),
        }
    }

    /// The index of `stream` in `self.streams` (added on first use).
    fn stream_index(&mut self, stream: &SystemStream) -> u32 {
        // Clones of one stream compare by pointer (`SystemStream`'s equality).
        if let Some(i) = self.streams.iter().position(|s| s == stream) {
            return i as u32;
        }
        self.streams.push(stream.clone());
        (self.streams.len() - 1) as u32
    }

    /// Resolves (once) the serde of stream `index` for `T`.
    // Internal results carry the (large) error boxed, so the hot path moves
    // small values.
    fn resolve<T: Data>(&mut self, index: u32, is_key: bool) -> Result<usize, Box<SendError>> {
        let type_id = TypeId::of::<T>();
        if let Some(i) =
            self.resolved.iter().position(|r| r.stream == index && r.type_id == type_id && r.is_key == is_key)
        {
            return Ok(i);
        }
        let stream = &self.streams[index as usize];
        let fail = |reason: String| Box::new(SendError::Stream { stream: stream.clone(), reason });
        let (key_name, msg_name) = (self.names)(stream).map_err(&fail)?;
        let name = if is_key { key_name } else { msg_name };
        let serde = self.serdes.resolve::<T>(&name).map_err(|e| fail(e.0))?;
        let identity = serde.is_identity();
        self.resolved.push(Resolved { stream: index, type_id, is_key, serde: Box::new(serde), identity });
        Ok(self.resolved.len() - 1)
    }

    fn encode<T: Data>(
        &mut self,
        index: u32,
        value: Option<&T>,
        is_key: bool,
    ) -> Result<Option<Range<usize>>, Box<SendError>> {
        let Some(value) = value else { return Ok(None) };
        let r = self.resolve::<T>(index, is_key)?;
        let MessageCollector { resolved, buf, streams, .. } = self;
        if resolved[r].identity
            && let Some(bytes) = as_bytes(value)
        {
            let start = buf.len();
            buf.extend_from_slice(bytes);
            return Ok(Some(start..buf.len()));
        }
        let serde = resolved[r].serde.downcast_ref::<Arc<dyn Serde<T>>>().ok_or_else(|| {
            Box::new(SendError::Stream {
                stream: streams[index as usize].clone(),
                reason: "internal: serde of the wrong type".into(),
            })
        })?;
        let start = buf.len();
        serde.encode(value, buf).map_err(|e| {
            Box::new(SendError::Encode {
                stream: streams[index as usize].clone(),
                what: if is_key { "key" } else { "message" },
                reason: e.0,
            })
        })?;
        Ok(Some(start..buf.len()))
    }

    /// Sends a message (delivered in order per partition; durable at the next commit).
    ///
    /// # Errors
    /// [`SendError`] if the stream's system or serdes are not configured for
    /// these types, or encoding fails.
    pub fn send<K: Data, M: Data>(&mut self, envelope: OutgoingEnvelope<'_, K, M>) -> Result<(), SendError> {
        let mark = self.buf.len();
        let index = self.stream_index(envelope.stream);
        let result = (|| -> Result<_, Box<SendError>> {
            let key = self.encode(index, envelope.key.as_ref(), true)?;
            let value = self.encode(index, envelope.message.as_ref(), false)?;
            Ok((key, value))
        })();
        match result {
            Ok((key, value)) => {
                self.sends.push(PendingSend {
                    stream: index,
                    partition: envelope.partition,
                    key,
                    value,
                    timestamp: envelope.timestamp,
                    headers: (!envelope.headers.is_empty()).then(|| Box::new(envelope.headers)),
                });
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(mark);
                Err(*e)
            }
        }
    }

    /// The streams that [`PendingSend::stream`] indexes.
    #[doc(hidden)]
    pub fn streams(&self) -> &[SystemStream] {
        &self.streams
    }

    /// Sends already-encoded bytes (dead letters, the Streams API's
    /// intermediate streams); `timestamp` `None` means now.
    #[doc(hidden)]
    pub fn send_raw(
        &mut self,
        stream: &SystemStream,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: Option<i64>,
    ) {
        let mut range = |b: &[u8]| {
            let start = self.buf.len();
            self.buf.extend_from_slice(b);
            start..self.buf.len()
        };
        let key = key.map(&mut range);
        let value = value.map(&mut range);
        let stream = self.stream_index(stream);
        self.sends.push(PendingSend { stream, partition, key, value, timestamp, headers: None });
    }

    /// The recorded sends and the buffer their ranges point into.
    #[doc(hidden)]
    pub fn pending(&self) -> (&[PendingSend], &[u8]) {
        (&self.sends, &self.buf)
    }

    /// Forgets the recorded sends, keeping capacity.
    #[doc(hidden)]
    pub fn clear(&mut self) {
        self.sends.clear();
        self.buf.clear();
    }
}
