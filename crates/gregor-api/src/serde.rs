//! Serdes: how typed keys and values become bytes and back.
//!
//! Config names a serde per stream and per store (`streams.<id>.samza.msg.serde`,
//! `stores.<name>.key.serde`, ...); the task's Rust types say what it must
//! produce. [`Serdes::resolve`] joins the two, so a mismatch (say `string`
//! configured for an `i64` store) is a clear error at start-up, not a
//! surprise mid-stream.
//!
//! Built-in serdes (Samza's names, with Rust aliases):
//!
//! | name | type | encoding |
//! |---|---|---|
//! | `bytes` | `bytes::Bytes` or `Vec<u8>` | as is (zero-copy for `Bytes`) |
//! | `string` | `String` | UTF-8 |
//! | `json` | any `Serialize + DeserializeOwned` type | UTF-8 JSON (serde_json) |
//! | `integer`, `i32` | `i32` | 4 bytes big-endian |
//! | `long`, `i64` | `i64` | 8 bytes big-endian |
//! | `double`, `f64` | `f64` | 8 bytes big-endian IEEE 754 |
//!
//! Add your own with [`Serdes::register`].

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

/// A type gregor can carry as a key, value or store entry.
pub trait Data: Serialize + DeserializeOwned + 'static {}
impl<T: Serialize + DeserializeOwned + 'static> Data for T {}

/// A message's key or value as it is on the wire, whatever serde its
/// stream names: for tasks that decode for themselves (the Streams API's
/// compiled task does, with the serdes of each input's declared types).
/// [`Serdes::resolve`] gives a pass-through for it under any name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBytes(pub Bytes);

impl Serialize for RawBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RawBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Ok(RawBytes(Bytes::from(v)))
    }
}

struct RawSerde;
impl Serde<RawBytes> for RawSerde {
    fn encode(&self, value: &RawBytes, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(&value.0);
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<RawBytes, SerdeError> {
        Ok(RawBytes(Bytes::copy_from_slice(bytes)))
    }
    fn decode_shared(&self, bytes: &Bytes) -> Result<RawBytes, SerdeError> {
        Ok(RawBytes(bytes.clone()))
    }
    fn decode_owned(&self, bytes: Bytes) -> Result<RawBytes, SerdeError> {
        Ok(RawBytes(bytes))
    }
    fn is_identity(&self) -> bool {
        true
    }
}

/// Why bytes did not become a value, or a value bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SerdeError(pub String);

/// Converts values of `T` to and from bytes.
pub trait Serde<T>: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out`.
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError>;
    /// Decodes a value.
    fn decode(&self, bytes: &[u8]) -> Result<T, SerdeError>;
    /// Decodes a value from a shared buffer (input messages); a serde that
    /// can share it instead of copying (`bytes` for `Bytes`) overrides this.
    fn decode_shared(&self, bytes: &Bytes) -> Result<T, SerdeError> {
        self.decode(bytes)
    }
    /// Decodes a value from a buffer the caller gives up; a serde that can
    /// keep the buffer itself (`bytes` for `Bytes`) overrides this.
    fn decode_owned(&self, bytes: Bytes) -> Result<T, SerdeError> {
        self.decode_shared(&bytes)
    }
    /// Whether this serde is the identity both ways: `T` is `Bytes` or
    /// [`RawBytes`], [`Self::decode_owned`] returns the buffer unchanged and
    /// [`Self::encode`] appends the bytes unchanged, never an error. The run
    /// loop then hands input buffers over, and the collector copies output
    /// bytes, without calling the serde (a virtual call, and on input a
    /// panic guard, per key and value). Only the built-in `bytes` serde for
    /// `Bytes` and the raw pass-through say yes.
    #[doc(hidden)]
    fn is_identity(&self) -> bool {
        false
    }
}

/// `bytes` as a `T`, when `T` is `Bytes` or [`RawBytes`] (what a serde whose
/// [`Serde::is_identity`] holds decodes to); otherwise `bytes` back.
#[doc(hidden)]
pub fn bytes_as<T: 'static>(bytes: Bytes) -> Result<T, Bytes> {
    let mut plain = Some(bytes);
    if let Some(t) = (&mut plain as &mut dyn Any).downcast_mut::<Option<T>>() {
        return t.take().ok_or_else(Bytes::new);
    }
    let mut raw = plain.map(RawBytes);
    match (&mut raw as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(t) => t.take().ok_or_else(Bytes::new),
        None => Err(raw.map(|r| r.0).unwrap_or_default()),
    }
}

struct StringSerde;
impl Serde<String> for StringSerde {
    fn encode(&self, value: &String, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<String, SerdeError> {
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| SerdeError(format!("not UTF-8: {e}")))
    }
}

struct BytesSerde;
impl Serde<Bytes> for BytesSerde {
    fn encode(&self, value: &Bytes, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Bytes, SerdeError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
    fn decode_shared(&self, bytes: &Bytes) -> Result<Bytes, SerdeError> {
        Ok(bytes.clone())
    }
    fn decode_owned(&self, bytes: Bytes) -> Result<Bytes, SerdeError> {
        Ok(bytes)
    }
    fn is_identity(&self) -> bool {
        true
    }
}
impl Serde<Vec<u8>> for BytesSerde {
    fn encode(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, SerdeError> {
        Ok(bytes.to_vec())
    }
}

macro_rules! big_endian_serde {
    ($name:ident, $t:ty, $n:expr) => {
        struct $name;
        impl Serde<$t> for $name {
            fn encode(&self, value: &$t, out: &mut Vec<u8>) -> Result<(), SerdeError> {
                out.extend_from_slice(&value.to_be_bytes());
                Ok(())
            }
            fn decode(&self, bytes: &[u8]) -> Result<$t, SerdeError> {
                let arr: [u8; $n] = bytes.try_into().map_err(|_| {
                    SerdeError(format!("expected {} bytes for {}, found {}", $n, stringify!($t), bytes.len()))
                })?;
                Ok(<$t>::from_be_bytes(arr))
            }
        }
    };
}
big_endian_serde!(I32Serde, i32, 4);
big_endian_serde!(I64Serde, i64, 8);
big_endian_serde!(F64Serde, f64, 8);

/// UTF-8 JSON for any serde type.
pub struct JsonSerde<T>(PhantomData<fn() -> T>);

impl<T> Default for JsonSerde<T> {
    fn default() -> Self {
        JsonSerde(PhantomData)
    }
}

impl<T: Data> Serde<T> for JsonSerde<T> {
    fn encode(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        serde_json::to_writer(out, value).map_err(|e| SerdeError(format!("cannot encode as JSON: {e}")))
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        serde_json::from_slice(bytes).map_err(|e| SerdeError(format!("not valid JSON for {}: {e}", type_name::<T>())))
    }
}

/// The serdes known to a job: the built-ins plus any it registered.
#[derive(Clone, Default)]
pub struct Serdes {
    custom: HashMap<(String, TypeId), Arc<dyn Any + Send + Sync>>,
}

fn as_serde<T: 'static, S: Serde<U>, U: 'static>(serde: S) -> Option<Arc<dyn Serde<T>>> {
    let erased: Box<dyn Any> = Box::new(Arc::new(serde) as Arc<dyn Serde<U>>);
    erased.downcast::<Arc<dyn Serde<T>>>().ok().map(|b| *b)
}

impl Serdes {
    /// The built-in serdes only.
    pub fn new() -> Self {
        Serdes::default()
    }

    /// Registers a serde under `name` for type `T` (several types may share a name).
    pub fn register<T: 'static>(&mut self, name: &str, serde: impl Serde<T>) {
        let serde: Arc<dyn Serde<T>> = Arc::new(serde);
        self.custom.insert((name.to_owned(), TypeId::of::<T>()), Arc::new(serde));
    }

    /// The serde called `name` for values of type `T`.
    ///
    /// # Errors
    /// If no serde of that name exists, or it does not produce `T`.
    pub fn resolve<T: Data>(&self, name: &str) -> Result<Arc<dyn Serde<T>>, SerdeError> {
        if let Some(s) =
            self.custom.get(&(name.to_owned(), TypeId::of::<T>())).and_then(|a| a.downcast_ref::<Arc<dyn Serde<T>>>())
        {
            return Ok(s.clone());
        }
        if let Some(raw) = as_serde::<T, _, RawBytes>(RawSerde) {
            return Ok(raw);
        }
        let found = match name {
            "json" => Some(Arc::new(JsonSerde::<T>::default()) as Arc<dyn Serde<T>>),
            "string" => as_serde::<T, _, String>(StringSerde),
            "bytes" => as_serde::<T, _, Bytes>(BytesSerde).or_else(|| as_serde::<T, _, Vec<u8>>(BytesSerde)),
            "integer" | "i32" => as_serde::<T, _, i32>(I32Serde),
            "long" | "i64" => as_serde::<T, _, i64>(I64Serde),
            "double" | "f64" => as_serde::<T, _, f64>(F64Serde),
            _ => {
                let custom = self.custom.keys().any(|(n, _)| n == name);
                let why = if custom {
                    "is registered, but not for this type"
                } else {
                    "is unknown (built-in: bytes, string, json, integer, long, double)"
                };
                return Err(SerdeError(format!("serde '{name}' {why}; the code uses {}", type_name::<T>())));
            }
        };
        found.ok_or_else(|| {
            let produces = match name {
                "string" => "String",
                "bytes" => "bytes::Bytes or Vec<u8>",
                "integer" | "i32" => "i32",
                "long" | "i64" => "i64",
                _ => "f64",
            };
            SerdeError(format!(
                "serde '{name}' produces {produces}, but the code uses {} (configure a matching serde, e.g. json)",
                type_name::<T>()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Data + PartialEq + std::fmt::Debug>(serdes: &Serdes, name: &str, v: T) {
        let s = serdes.resolve::<T>(name).unwrap();
        let mut out = Vec::new();
        s.encode(&v, &mut out).unwrap();
        assert_eq!(s.decode(&Bytes::from(out)).unwrap(), v);
    }

    #[test]
    fn only_the_plain_bytes_serdes_are_the_identity() {
        let mut s = Serdes::new();
        assert!(s.resolve::<Bytes>("bytes").unwrap().is_identity());
        assert!(s.resolve::<RawBytes>("json").unwrap().is_identity());
        assert!(!s.resolve::<Vec<u8>>("bytes").unwrap().is_identity());
        assert!(!s.resolve::<String>("string").unwrap().is_identity());
        // A serde of the user's own for `Bytes`, even under the built-in's
        // name, transforms: the run loop must call it.
        struct Upper;
        impl Serde<Bytes> for Upper {
            fn encode(&self, v: &Bytes, out: &mut Vec<u8>) -> Result<(), SerdeError> {
                out.extend_from_slice(v);
                Ok(())
            }
            fn decode(&self, b: &[u8]) -> Result<Bytes, SerdeError> {
                Ok(b.to_ascii_uppercase().into())
            }
        }
        s.register("bytes", Upper);
        assert!(!s.resolve::<Bytes>("bytes").unwrap().is_identity());
    }

    #[test]
    fn bytes_become_bytes_or_raw_bytes_and_nothing_else() {
        let b = Bytes::from_static(b"k1");
        assert_eq!(bytes_as::<Bytes>(b.clone()).unwrap(), b);
        assert_eq!(bytes_as::<RawBytes>(b.clone()).unwrap(), RawBytes(b.clone()));
        assert_eq!(bytes_as::<String>(b.clone()).unwrap_err(), b);
        assert_eq!(bytes_as::<Vec<u8>>(b.clone()).unwrap_err(), b);
    }

    #[test]
    fn builtins_round_trip() {
        let s = Serdes::new();
        roundtrip(&s, "string", "héllo".to_owned());
        roundtrip(&s, "long", -5i64);
        roundtrip(&s, "i32", 7i32);
        roundtrip(&s, "double", 2.5f64);
        roundtrip(&s, "bytes", Bytes::from_static(b"\x00\xff"));
        roundtrip(&s, "bytes", vec![1u8, 2]);
        roundtrip(&s, "json", std::collections::BTreeMap::from([("a".to_owned(), 1u32)]));
        assert_eq!(
            s.resolve::<i64>("long").unwrap().decode(&Bytes::from_static(&[0, 0, 0, 0, 0, 0, 1, 0])).unwrap(),
            256
        );
    }

    #[test]
    fn mismatches_and_bad_bytes_are_clear() {
        let s = Serdes::new();
        let err = s.resolve::<i64>("string").err().unwrap().to_string();
        assert!(err.contains("produces String, but the code uses i64"), "{err}");
        assert!(s.resolve::<i64>("avro").err().unwrap().to_string().contains("unknown"));
        let bad = s.resolve::<i64>("long").unwrap().decode(&Bytes::from_static(b"abc")).unwrap_err();
        assert!(bad.0.contains("expected 8 bytes"));
        assert!(s.resolve::<String>("string").unwrap().decode(&Bytes::from_static(&[0xff])).is_err());
    }

    #[test]
    fn custom_serdes_resolve_by_name_and_type() {
        struct Upper;
        impl Serde<String> for Upper {
            fn encode(&self, v: &String, out: &mut Vec<u8>) -> Result<(), SerdeError> {
                out.extend_from_slice(v.to_uppercase().as_bytes());
                Ok(())
            }
            fn decode(&self, b: &[u8]) -> Result<String, SerdeError> {
                Ok(String::from_utf8_lossy(b).into_owned())
            }
        }
        let mut s = Serdes::new();
        s.register::<String>("upper", Upper);
        let mut out = Vec::new();
        s.resolve::<String>("upper").unwrap().encode(&"ab".to_owned(), &mut out).unwrap();
        assert_eq!(out, b"AB");
        assert!(s.resolve::<i64>("upper").err().unwrap().to_string().contains("not for this type"));
    }
}
