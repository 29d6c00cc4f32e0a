//! Taking chosen initializers' values out of an encoded ONNX model, so that ONNX Runtime
//! receives them in memory instead (`AddExternalInitializers`, substituted while the graph
//! is built, before any optimization).
//!
//! This works on the protobuf wire format directly: every byte of the model other than the
//! chosen initializers' values is copied as it is, so models from any exporter (with
//! fields this crate's message subset does not declare) keep everything they had.
//!
//! ```text
//! ModelProto.graph (7) → GraphProto.initializer (5) → TensorProto:
//!   name (8) chosen → drop float_data (4), raw_data (9), external_data (13),
//!                     data_location (14); append external_data = {location, offset,
//!                     length} and data_location = EXTERNAL (1)
//! ```

use std::collections::HashSet;

use prost::Message;

use super::proto::StringStringEntryProto;

/// The `external_data` of an initializer whose `length` bytes of values are handed over in
/// memory: the location names no file that exists.
pub fn in_memory(length: usize) -> Vec<StringStringEntryProto> {
    let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
    vec![entry("location", "in-memory.weights".into()), entry("offset", "0".into()), entry("length", length.to_string())]
}

/// The encoded model `bytes` with the values of the initializers named in `names` marked
/// as external (handed over when the session is made); or why the bytes are not a model.
pub fn externalize(bytes: &[u8], names: &HashSet<&str>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len());
    for field in fields(bytes) {
        let field = field?;
        if field.number != 7 || field.wire != 2 {
            out.extend_from_slice(field.raw);
            continue;
        }
        let mut graph = Vec::with_capacity(field.body.len());
        for g in fields(field.body) {
            let g = g?;
            let chosen = g.number == 5 && g.wire == 2 && tensor_name(g.body)?.is_some_and(|n| names.contains(n.as_str()));
            if chosen {
                put_bytes(&mut graph, 5, &external(g.body)?);
            } else {
                graph.extend_from_slice(g.raw);
            }
        }
        put_bytes(&mut out, 7, &graph);
    }
    Ok(out)
}

/// One field of an encoded message.
struct Field<'a> {
    number: u64,
    wire: u64,
    /// The payload of a length-delimited field.
    body: &'a [u8],
    /// The whole field, key included, as encoded.
    raw: &'a [u8],
}

/// The fields of an encoded message, in order.
fn fields(bytes: &[u8]) -> impl Iterator<Item = Result<Field<'_>, String>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        let field = (|| {
            let key = varint(bytes, &mut at)?;
            let (number, wire) = (key >> 3, key & 7);
            let mut body: &[u8] = &[];
            match wire {
                0 => {
                    varint(bytes, &mut at)?;
                }
                1 => at += 8,
                5 => at += 4,
                2 => {
                    let len = varint(bytes, &mut at)? as usize;
                    body = bytes.get(at..at + len).ok_or("a field runs past the end of the message")?;
                    at += len;
                }
                other => return Err(format!("unsupported protobuf wire type {other}")),
            }
            let raw = bytes.get(start..at).ok_or("a field runs past the end of the message")?;
            Ok(Field { number, wire, body, raw })
        })();
        if field.is_err() {
            at = bytes.len();
        }
        Some(field)
    })
}

/// The `name` (field 8) of an encoded TensorProto.
fn tensor_name(tensor: &[u8]) -> Result<Option<String>, String> {
    for field in fields(tensor) {
        let field = field?;
        if field.number == 8 && field.wire == 2 {
            return Ok(Some(String::from_utf8_lossy(field.body).into_owned()));
        }
    }
    Ok(None)
}

/// An encoded TensorProto with its values (`float_data` 4, `raw_data` 9) dropped and any
/// earlier `external_data` (13) and `data_location` (14) replaced: external, of the same
/// length in bytes.
fn external(tensor: &[u8]) -> Result<Vec<u8>, String> {
    let (mut out, mut length) = (Vec::with_capacity(64), 0usize);
    for field in fields(tensor) {
        let field = field?;
        match (field.number, field.wire) {
            (4, 2) | (9, 2) => length += field.body.len(),
            (4, _) => length += 4,
            (13, _) | (14, _) => {}
            _ => out.extend_from_slice(field.raw),
        }
    }
    for entry in in_memory(length) {
        put_bytes(&mut out, 13, &entry.encode_to_vec());
    }
    put_varint(&mut out, 14 << 3);
    put_varint(&mut out, 1);
    Ok(out)
}

fn varint(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).ok_or("a varint runs past the end of the message")?;
        *at += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint longer than 10 bytes".into())
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, body: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{GraphProto, ModelProto, TensorProto};

    #[test]
    fn only_the_chosen_initializers_lose_their_values() {
        let tensor = |name: &str, values: &[f32]| TensorProto {
            dims: vec![values.len() as i64],
            data_type: 1,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: 8,
            graph: Some(GraphProto {
                name: "g".into(),
                initializer: vec![tensor("a", &[1.0, 2.0]), tensor("b", &[3.0]), tensor("c", &[4.0, 5.0, 6.0])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        let out = externalize(&bytes, &HashSet::from(["b", "c"])).unwrap();
        let back = ModelProto::decode(out.as_slice()).unwrap();
        let graph = back.graph.unwrap();
        assert_eq!(graph.name, "g");
        assert_eq!(back.ir_version, 8);
        let [a, b, c] = &graph.initializer[..] else { panic!("three initializers") };
        assert_eq!(a, &tensor("a", &[1.0, 2.0]), "untouched");
        for (t, bytes) in [(b, 4), (c, 12)] {
            assert!(t.raw_data.is_empty() && t.data_location == 1);
            let entries: Vec<(&str, &str)> = t.external_data.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
            assert_eq!(entries, [("location", "in-memory.weights"), ("offset", "0"), ("length", &*bytes.to_string())]);
        }
        assert_eq!(externalize(&bytes, &HashSet::new()).unwrap(), bytes, "nothing chosen, nothing changed");
    }
}
