//! A small ONNX graph builder: nodes get unique output names, constants become
//! initializers, and the finished graph is one [`ModelProto`].

use super::proto::*;

/// A graph under construction.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

/// One dimension of a declared input or output.
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size (e.g. `batch_size`).
    Named(&'static str),
}

/// Integer attribute.
pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: value, r#type: attribute_type::INT, ..Default::default() }
}

/// Integer-list attribute.
pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: values.to_vec(), r#type: attribute_type::INTS, ..Default::default() }
}

/// Float attribute.
pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: value, r#type: attribute_type::FLOAT, ..Default::default() }
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimensionValue::DimValue(*n),
                Dim::Named(s) => DimensionValue::DimParam((*s).into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

impl Graph {
    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem_type, dims));
        name.into()
    }

    /// Declares a graph output (some node must produce `name`).
    pub fn output(&mut self, name: &str, elem_type: i32, dims: &[Dim]) {
        self.outputs.push(value_info(name, elem_type, dims));
    }

    /// Adds a node with one fresh output and returns that output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.counter += 1;
        let output = format!("/{}_{}", op_type, self.counter);
        self.op_into(op_type, inputs, attributes, &output);
        output
    }

    /// Adds a node whose one output has the given name (graph outputs).
    pub fn op_into(&mut self, op_type: &str, inputs: &[&str], attributes: Vec<AttributeProto>, output: &str) {
        self.counter += 1;
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: format!("{op_type}_{}", self.counter),
            op_type: op_type.into(),
            attribute: attributes,
        });
    }

    /// A `Split` of `x` along `axis` into pieces of the sizes in the int64 tensor `sizes`.
    pub fn op_split(&mut self, x: &str, sizes: &str, axis: i64, outputs: &[&str]) {
        self.counter += 1;
        self.nodes.push(NodeProto {
            input: vec![x.to_owned(), sizes.to_owned()],
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            name: format!("Split_{}", self.counter),
            op_type: "Split".into(),
            attribute: vec![int("axis", axis)],
        });
    }

    /// A float32 initializer with the given name (a model weight).
    pub fn weight(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.into(),
            raw_data,
            ..Default::default()
        });
        name.into()
    }

    /// A float32 initializer whose values are not in the model (data location external):
    /// they are handed to ONNX Runtime in memory when a session is made
    /// (`CausalLm::open_graph`).
    pub fn external_weight(&mut self, name: &str, dims: &[usize]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.into(),
            external_data: super::external::in_memory(dims.iter().product::<usize>() * 4),
            data_location: 1,
            ..Default::default()
        });
        name.into()
    }

    /// A float32 constant (scalar when `dims` is empty).
    pub fn const_f32(&mut self, dims: &[usize], values: &[f32]) -> String {
        self.counter += 1;
        let name = format!("/const_{}", self.counter);
        self.weight(&name, dims, values)
    }

    /// An int64 constant (scalar when `dims` is empty).
    pub fn const_i64(&mut self, dims: &[usize], values: &[i64]) -> String {
        self.counter += 1;
        let name = format!("/const_{}", self.counter);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// The finished model (IR 8, opset 17 of the default domain).
    pub fn finish(self, metadata: Vec<(String, String)>) -> ModelProto {
        ModelProto {
            ir_version: 8,
            producer_name: "kdharness".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: "main_graph".into(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
            }),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
            metadata_props: metadata.into_iter().map(|(key, value)| StringStringEntryProto { key, value }).collect(),
        }
    }
}
