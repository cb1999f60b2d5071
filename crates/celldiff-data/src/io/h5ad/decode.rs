//! Decoding helpers of the `.h5ad` reader: `uns` lists written as dicts, repeated categories,
//! fields of HDF5 compound records (pre-0.7 files), and sorting/transposing compressed
//! sparse matrices into CSR.

use std::collections::HashSet;

use hdf5_pure::{Datatype, DatatypeByteOrder, StringPadding};
use serde_json::{Map, Value};

use super::*;

/// A `uns` dict that [`write_h5ad`] wrote for a list (marked with the attribute
/// `write::LIST_MARKER`, keyed exactly `"0"`, `"1"`, ...; see `write::list_as_dict`) read
/// back as that list; any other keys leave it an object.
pub(super) fn list_from_dict(m: Map<String, Value>) -> Value {
    let n = m.len();
    let mut slots: Vec<Option<&Value>> = vec![None; n];
    for (k, v) in &m {
        match k.parse::<usize>() {
            Ok(i) if i < n && *k == i.to_string() => slots[i] = Some(v),
            _ => return Value::Object(m),
        }
    }
    let items: Vec<Value> = slots.into_iter().flatten().cloned().collect();
    if items.len() == n {
        return Value::Array(items);
    }
    Value::Object(m)
}

/// Merges repeated labels of `categories` into their first occurrence and remaps `codes`
/// (-1, missing, stays -1). Returns the codes, the unique categories in first-occurrence order
/// and the labels that were repeated (each once); unchanged input when all are unique.
pub(super) fn merge_duplicate_categories(
    codes: Vec<i32>,
    categories: Vec<String>,
) -> (Vec<i32>, Vec<String>, Vec<String>) {
    let mut first: std::collections::HashMap<&str, i32> =
        std::collections::HashMap::with_capacity(categories.len());
    let mut remap = Vec::with_capacity(categories.len());
    let mut unique: Vec<String> = Vec::new();
    let mut repeated: Vec<String> = Vec::new();
    let mut listed: HashSet<&str> = HashSet::new();
    for c in &categories {
        match first.get(c.as_str()) {
            Some(&k) => {
                remap.push(k);
                if listed.insert(c.as_str()) {
                    repeated.push(c.clone());
                }
            }
            None => {
                let k = unique.len() as i32;
                first.insert(c, k);
                remap.push(k);
                unique.push(c.clone());
            }
        }
    }
    if repeated.is_empty() {
        return (codes, categories, repeated);
    }
    let codes = codes
        .into_iter()
        .map(|c| if c < 0 { c } else { remap[c as usize] })
        .collect();
    (codes, unique, repeated)
}

/// Up to 10 names, quoted, then how many more: `"A", "B" and 3 more`.
pub(crate) fn list_names(names: &[String]) -> String {
    let shown: Vec<String> = names.iter().take(10).map(|n| format!("{n:?}")).collect();
    match names.len() {
        n if n > 10 => format!("{} and {} more", shown.join(", "), n - 10),
        _ => shown.join(", "),
    }
}

/// A decoded compound field, one value per record.
pub(super) enum Decoded {
    Int(Vec<i64>),
    Num(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    /// A fixed-size array per record, flattened row-major `[n_rows, width]`.
    Array {
        width: usize,
        data: Vec<f32>,
    },
}

pub(super) fn int_from_bytes(b: &[u8], signed: bool, order: &DatatypeByteOrder) -> i64 {
    let mut le = b.to_vec();
    if matches!(order, DatatypeByteOrder::BigEndian) {
        le.reverse();
    }
    let neg = signed && le.last().is_some_and(|&x| x & 0x80 != 0);
    let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
    let k = le.len().min(8);
    buf[..k].copy_from_slice(&le[..k]);
    i64::from_le_bytes(buf)
}

pub(super) fn float_from_bytes(b: &[u8], order: &DatatypeByteOrder) -> Option<f64> {
    let big = matches!(order, DatatypeByteOrder::BigEndian);
    match b.len() {
        4 => {
            let a: [u8; 4] = b.try_into().ok()?;
            Some(f64::from(if big {
                f32::from_be_bytes(a)
            } else {
                f32::from_le_bytes(a)
            }))
        }
        8 => {
            let a: [u8; 8] = b.try_into().ok()?;
            Some(if big {
                f64::from_be_bytes(a)
            } else {
                f64::from_le_bytes(a)
            })
        }
        _ => None,
    }
}

/// A scalar element type of a compound array field: integer or float of `size` bytes.
#[derive(Clone, Copy)]
pub(super) enum Scalar {
    Int {
        size: usize,
        signed: bool,
        order: DatatypeByteOrder,
    },
    Float {
        size: usize,
        order: DatatypeByteOrder,
    },
}

impl Scalar {
    /// Fixed-point, floating-point and enum (through its base) types.
    fn of(dt: &Datatype) -> Option<Self> {
        match dt {
            Datatype::FixedPoint {
                size,
                byte_order,
                layout,
            } if (1..=8).contains(size) => Some(Scalar::Int {
                size: *size as usize,
                signed: layout.signed,
                order: *byte_order,
            }),
            Datatype::FloatingPoint {
                size, byte_order, ..
            } if *size == 4 || *size == 8 => Some(Scalar::Float {
                size: *size as usize,
                order: *byte_order,
            }),
            Datatype::Enumeration { base_type, .. } => Scalar::of(base_type),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            Scalar::Int { size, .. } | Scalar::Float { size, .. } => size,
        }
    }

    fn decode(self, b: &[u8]) -> Option<f64> {
        match self {
            Scalar::Int { signed, order, .. } => Some(int_from_bytes(b, signed, &order) as f64),
            Scalar::Float { order, .. } => float_from_bytes(b, &order),
        }
    }
}

pub(super) fn decode_field(
    raw: &[u8],
    rec: usize,
    n: usize,
    off: usize,
    dt: &Datatype,
) -> Option<Decoded> {
    let elem = |i: usize, sz: usize| raw.get(i * rec + off..i * rec + off + sz);
    match dt {
        Datatype::FixedPoint {
            size,
            byte_order,
            layout,
        } if (1..=8).contains(size) => {
            let sz = *size as usize;
            (0..n)
                .map(|i| elem(i, sz).map(|b| int_from_bytes(b, layout.signed, byte_order)))
                .collect::<Option<Vec<_>>>()
                .map(Decoded::Int)
        }
        Datatype::FloatingPoint {
            size, byte_order, ..
        } => {
            let sz = *size as usize;
            (0..n)
                .map(|i| elem(i, sz).and_then(|b| float_from_bytes(b, byte_order)))
                .collect::<Option<Vec<_>>>()
                .map(Decoded::Num)
        }
        Datatype::Enumeration {
            base_type, members, ..
        } => {
            let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
            let ints = match decode_field(raw, rec, n, off, base_type)? {
                Decoded::Int(v) => v,
                _ => return None,
            };
            if is_bool_enum(&names) {
                Some(Decoded::Bool(ints.into_iter().map(|x| x != 0).collect()))
            } else {
                Some(Decoded::Int(ints))
            }
        }
        Datatype::String { size, padding, .. } => {
            let sz = *size as usize;
            (0..n)
                .map(|i| {
                    elem(i, sz).map(|b| {
                        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                        let s = String::from_utf8_lossy(&b[..end]);
                        if matches!(padding, StringPadding::SpacePad) {
                            s.trim_end_matches(' ').to_string()
                        } else {
                            s.into_owned()
                        }
                    })
                })
                .collect::<Option<Vec<_>>>()
                .map(Decoded::Str)
        }
        Datatype::Array {
            base_type,
            dimensions,
        } => {
            let width = dimensions
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d as usize))?;
            let scalar = Scalar::of(base_type)?;
            let sz = scalar.size();
            // The array must fit in its record (a corrupt dimension must not size the buffer).
            if width.checked_mul(sz)?.checked_add(off)? > rec {
                return None;
            }
            let mut data = Vec::with_capacity(n * width);
            for i in 0..n {
                let b = elem(i, sz * width)?;
                for k in 0..width {
                    data.push(scalar.decode(&b[k * sz..(k + 1) * sz])? as f32);
                }
            }
            Some(Decoded::Array { width, data })
        }
        _ => None,
    }
}

/// Sorts the column indices (and values) of each CSR row.
pub(super) fn sort_rows(
    indptr: Vec<usize>,
    mut indices: Vec<usize>,
    mut data: Vec<f32>,
) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
    for w in indptr.windows(2) {
        let (a, b) = (w[0], w[1]);
        let idx = &indices[a..b];
        if idx.windows(2).all(|p| p[0] <= p[1]) {
            continue;
        }
        let mut pairs: Vec<(usize, f32)> = idx
            .iter()
            .copied()
            .zip(data[a..b].iter().copied())
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        for (k, (j, v)) in pairs.into_iter().enumerate() {
            indices[a + k] = j;
            data[a + k] = v;
        }
    }
    (indptr, indices, data)
}

/// Transposes compressed storage (CSC → CSR): the output has `n_inner` outer slots and
/// sorted minor indices.
pub(super) fn transpose_compressed(
    n_inner: usize,
    indptr: &[usize],
    indices: &[usize],
    data: &[f32],
) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
    let mut counts = vec![0usize; n_inner + 1];
    for &j in indices {
        counts[j + 1] += 1;
    }
    for i in 0..n_inner {
        counts[i + 1] += counts[i];
    }
    let out_ptr = counts.clone();
    let mut next = counts;
    let mut out_ind = vec![0usize; indices.len()];
    let mut out_data = vec![0f32; data.len()];
    for (outer, w) in indptr.windows(2).enumerate() {
        for k in w[0]..w[1] {
            let j = indices[k];
            let dst = next[j];
            out_ind[dst] = outer;
            out_data[dst] = data[k];
            next[j] += 1;
        }
    }
    (out_ptr, out_ind, out_data)
}
