//! The GGUF header: metadata and tensor descriptions, read from the mapped file.
//!
//! candle's reader stops at the first tensor type it does not know (the i-quants among them), so the header is read
//! here, keeping every type id as the file states it. Every length is checked against the bytes that remain, so a
//! damaged header is an error, never a huge allocation or a panic.
use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::quant::{BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8, GgufBlock, QK, QK_K};

/// A GGUF tensor type, by ggml's type id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorType(pub u32);

impl TensorType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_0: Self = Self(2);
    pub const Q4_1: Self = Self(3);
    pub const Q5_0: Self = Self(6);
    pub const Q5_1: Self = Self(7);
    pub const Q8_0: Self = Self(8);
    pub const Q2_K: Self = Self(10);
    pub const Q3_K: Self = Self(11);
    pub const Q4_K: Self = Self(12);
    pub const Q5_K: Self = Self(13);
    pub const Q6_K: Self = Self(14);
    pub const IQ4_NL: Self = Self(20);
    pub const IQ4_XS: Self = Self(23);
    pub const BF16: Self = Self(30);

    /// llama.cpp's name for the type, if ggml ever assigned the id.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            4 | 5 => "Q4_2/Q4_3 (removed from ggml)",
            6 => "Q5_0",
            7 => "Q5_1",
            8 => "Q8_0",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            12 => "Q4_K",
            13 => "Q5_K",
            14 => "Q6_K",
            15 => "Q8_K",
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            29 => "IQ1_M",
            30 => "BF16",
            34 => "TQ1_0",
            35 => "TQ2_0",
            39 => "MXFP4",
            _ => return None,
        })
    }

    /// (bytes, values) per block, for the types the runtime reads.
    pub fn block_size(self) -> Option<(u64, u64)> {
        let size = |bytes: usize, len: usize| Some((bytes as u64, len as u64));
        match self {
            Self::F32 => size(4, 1),
            Self::F16 | Self::BF16 => size(2, 1),
            Self::Q4_0 => size(18, QK),
            Self::Q4_1 => size(20, QK),
            Self::Q5_0 => size(BlockQ5_0::BYTES, QK),
            Self::Q5_1 => size(BlockQ5_1::BYTES, QK),
            Self::Q8_0 => size(BlockQ8::BYTES, QK),
            Self::Q2_K => size(BlockQ2K::BYTES, QK_K),
            Self::Q3_K => size(BlockQ3K::BYTES, QK_K),
            Self::Q4_K => size(BlockQ4K::BYTES, QK_K),
            Self::Q5_K => size(BlockQ5K::BYTES, QK_K),
            Self::Q6_K => size(BlockQ6K::BYTES, QK_K),
            Self::IQ4_NL => size(BlockIQ4NL::BYTES, QK),
            Self::IQ4_XS => size(BlockIQ4XS::BYTES, QK_K),
            _ => None,
        }
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "type id {} (unknown to ggml)", self.0),
        }
    }
}

/// Every tensor type the runtime loads.
pub const SUPPORTED: [TensorType; 15] = [
    TensorType::F32,
    TensorType::F16,
    TensorType::BF16,
    TensorType::Q4_0,
    TensorType::Q4_1,
    TensorType::Q5_0,
    TensorType::Q5_1,
    TensorType::Q8_0,
    TensorType::Q2_K,
    TensorType::Q3_K,
    TensorType::Q4_K,
    TensorType::Q5_K,
    TensorType::Q6_K,
    TensorType::IQ4_NL,
    TensorType::IQ4_XS,
];

/// The names of the supported types, as llama.cpp prints them (for `info` and for errors).
pub fn supported_names() -> Vec<&'static str> {
    SUPPORTED.iter().filter_map(|t| t.name()).collect()
}

#[derive(Debug)]
pub struct TensorInfo {
    pub dtype: TensorType,
    /// Dimensions, outermost first (the file lists them innermost first).
    pub dims: Vec<usize>,
    /// Offset from the start of the tensor data.
    pub offset: u64,
}

#[derive(Debug)]
pub struct Header {
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorInfo>,
    /// Where the tensor data starts in the file.
    pub data_offset: u64,
}

/// Arrays nest at most this deep (GGUF files use one level; the limit keeps recursion bounded).
const MAX_DEPTH: usize = 8;
const MAX_DIMS: u32 = 8;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// GGUF version 1 wrote lengths and counts as u32, later versions as u64.
    wide: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        let left = self.b.len() - self.at;
        if n > left as u64 {
            return Err(format!("{what} needs {n} bytes at offset {}, the file has {left} left", self.at));
        }
        let s = &self.b[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn len(&mut self, what: &str) -> Result<u64, String> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.len(what)?;
        Ok(String::from_utf8_lossy(self.take(n, what)?).into_owned())
    }
    /// A count of items of at least `min` bytes each, checked against what is left.
    fn count(&mut self, what: &str, min: u64) -> Result<u64, String> {
        let n = self.len(what)?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min) > left {
            return Err(format!("{what}: {n} entries cannot fit in the {left} bytes left"));
        }
        Ok(n)
    }
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("metadata `{key}`: boolean byte {b}")),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("metadata `{key}`: arrays nested more than {MAX_DEPTH} deep"));
                }
                let inner = self.u32(key)?;
                let n = self.count(key, 1)?;
                let mut v = Vec::new();
                for _ in 0..n {
                    v.push(self.value(inner, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(format!("metadata `{key}`: unknown value type {t}")),
        })
    }
}

/// Reads the header of a GGUF file (versions 1 to 3) from its bytes.
pub fn read(bytes: &[u8]) -> Result<Header, String> {
    let mut r = Reader { b: bytes, at: 0, wide: true };
    if r.take(4, "the magic number").ok() != Some(b"GGUF".as_slice()) {
        return Err("it does not start with the magic bytes `GGUF`".into());
    }
    let version = r.u32("the version")?;
    if !(1..=3).contains(&version) {
        return Err(format!("version {version} (this reader knows versions 1 to 3)"));
    }
    r.wide = version > 1;
    let prefix = if r.wide { 8 } else { 4 };
    let tensors = r.count("the tensor count", prefix + 16)?;
    let kvs = r.count("the metadata count", prefix + 5)?;
    let mut metadata = HashMap::new();
    for _ in 0..kvs {
        let key = r.string("a metadata key")?;
        let ty = r.u32(&key)?;
        let v = r.value(ty, &key, 0)?;
        metadata.insert(key, v);
    }
    let mut infos = HashMap::new();
    for _ in 0..tensors {
        let name = r.string("a tensor name")?;
        let n = r.u32(&name)?;
        if n > MAX_DIMS {
            return Err(format!("tensor `{name}`: {n} dimensions"));
        }
        let mut dims = Vec::new();
        for _ in 0..n {
            let d = r.len(&name)?;
            dims.push(usize::try_from(d).map_err(|_| format!("tensor `{name}`: dimension {d}"))?);
        }
        dims.reverse();
        let dtype = TensorType(r.u32(&name)?);
        let offset = r.u64(&name)?;
        infos.insert(name, TensorInfo { dtype, dims, offset });
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(Value::U32(a)) if *a > 0 && a.is_power_of_two() => u64::from(*a),
        Some(v) => return Err(format!("metadata `general.alignment`: {v:?} is not a power of two")),
    };
    let data_offset = (r.at as u64).div_ceil(alignment) * alignment;
    Ok(Header { metadata, tensors: infos, data_offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of a file candle writes reads back with the same metadata, shapes and tensor offsets.
    #[test]
    fn reads_what_candle_writes() {
        use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        let t = QTensor::quantize(&Tensor::zeros((3, 64), candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
        let u = QTensor::quantize(&Tensor::ones(5, candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap();
        let md = [
            ("general.architecture", Value::String("llama".into())),
            ("x.u8", Value::U8(7)),
            ("x.i64", Value::I64(-3)),
            ("x.f64", Value::F64(0.25)),
            ("x.bool", Value::Bool(true)),
            ("x.nested", Value::Array(vec![Value::Array(vec![Value::I16(-2)]), Value::Array(vec![])])),
        ];
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, &md.iter().map(|(k, v)| (*k, v)).collect::<Vec<_>>(), &[("w", &t), ("v", &u)]).unwrap();
        let bytes = out.into_inner();
        let ours = read(&bytes).unwrap();
        let theirs = gguf_file::Content::read(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(ours.data_offset, theirs.tensor_data_offset);
        assert_eq!(format!("{:?}", ours.metadata.get("x.nested")), format!("{:?}", theirs.metadata.get("x.nested")));
        assert_eq!(ours.metadata.len(), theirs.metadata.len());
        for (name, info) in &theirs.tensor_infos {
            let o = &ours.tensors[name];
            assert_eq!((o.dims.as_slice(), o.offset), (info.shape.dims(), info.offset), "{name}");
        }
        assert_eq!((ours.tensors["w"].dtype, ours.tensors["v"].dtype), (TensorType::Q8_0, TensorType::F32));
        // Every cut is an error, never a panic.
        for cut in 0..bytes.len().min(400) {
            assert!(read(&bytes[..cut]).is_err() || cut >= ours.data_offset as usize - 31, "cut at {cut}");
        }
    }
}
