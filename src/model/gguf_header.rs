//! A second, minimal walk over a GGUF header, for the one failure candle's reader cannot explain: a tensor type id
//! it does not know. candle stops with "unknown dtype for tensor N" (N being the type id); this finds the tensor.

/// ggml's names of the tensor types candle's reader does not know, by type id.
fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        4 | 5 => "Q4_2/Q4_3 (removed from ggml)",
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
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// Type ids candle's reader accepts.
const KNOWN: [u32; 15] = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30];

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.u64()?).ok()?;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn skip_value(&mut self, ty: u32) -> Option<()> {
        match ty {
            0 | 1 | 7 => self.take(1).map(drop),
            2 | 3 => self.take(2).map(drop),
            4..=6 => self.take(4).map(drop),
            10..=12 => self.take(8).map(drop),
            8 => self.string().map(drop),
            9 => {
                let (inner, n) = (self.u32()?, self.u64()?);
                (0..n).try_for_each(|_| self.skip_value(inner))
            }
            _ => None,
        }
    }
}

/// The first tensor whose type id candle's reader rejects: (tensor name, the type's description).
pub fn unknown_tensor_type(bytes: &[u8]) -> Option<(String, String)> {
    let mut r = Reader { b: bytes, at: 0 };
    if r.take(4)? != b"GGUF" || r.u32()? < 2 {
        return None;
    }
    let (tensors, kvs) = (r.u64()?, r.u64()?);
    for _ in 0..kvs {
        r.string()?;
        let ty = r.u32()?;
        r.skip_value(ty)?;
    }
    for _ in 0..tensors {
        let name = r.string()?;
        let dims = r.u32()? as usize;
        r.take(dims.checked_mul(8)?)?;
        let ty = r.u32()?;
        r.u64()?;
        if !KNOWN.contains(&ty) {
            let what = ggml_type_name(ty).map_or(format!("type id {ty} (unknown to ggml)"), |n| format!("{n} (type id {ty})"));
            return Some((name, what));
        }
    }
    None
}
