//! ONNX files as data: the protobuf messages the harness writes and reads ([`proto`]) and
//! a small graph writer ([`graph`]). It knows nothing of models; `model::emit` builds the
//! layers of a decoder from it, `export` writes whole models, `blocks` reads their weights.

pub mod external;
pub mod graph;
pub mod proto;
