//! Exact rational arithmetic over i128 and the calculator's expression language:
//! numbers (integers or decimals), `+ - * /`, unary minus, parentheses. Every overflow is an error, never a
//! wrapped or rounded value.
use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("division by zero")]
    DivisionByZero,
    #[error("number too large")]
    Overflow,
    #[error("syntax error at position {pos}: {msg}")]
    Syntax { pos: usize, msg: String },
    #[error("expression too long (at most {0} characters)")]
    TooLong(usize),
    #[error("expression nested too deeply")]
    TooDeep,
}

/// `num / den` in lowest terms with `den > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rational {
    num: i128,
    den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rational {
    pub const ZERO: Rational = Rational { num: 0, den: 1 };
    pub const ONE: Rational = Rational { num: 1, den: 1 };

    pub fn new(num: i128, den: i128) -> Result<Self, CalcError> {
        if den == 0 {
            return Err(CalcError::DivisionByZero);
        }
        if num == i128::MIN || den == i128::MIN {
            return Err(CalcError::Overflow);
        }
        let g = gcd(num, den).max(1);
        let sign = if den < 0 { -1 } else { 1 };
        Ok(Self { num: sign * num / g, den: sign * den / g })
    }

    pub fn int(n: i64) -> Self {
        Self { num: n as i128, den: 1 }
    }

    pub fn num(&self) -> i128 {
        self.num
    }
    pub fn den(&self) -> i128 {
        self.den
    }
    pub fn is_integer(&self) -> bool {
        self.den == 1
    }

    pub fn checked_add(self, o: Self) -> Result<Self, CalcError> {
        // Scale by the lcm rather than the product to postpone overflow.
        let g = gcd(self.den, o.den);
        let a = self.num.checked_mul(o.den / g).ok_or(CalcError::Overflow)?;
        let b = o.num.checked_mul(self.den / g).ok_or(CalcError::Overflow)?;
        let den = (self.den / g).checked_mul(o.den).ok_or(CalcError::Overflow)?;
        Self::new(a.checked_add(b).ok_or(CalcError::Overflow)?, den)
    }
    pub fn checked_neg(self) -> Result<Self, CalcError> {
        Ok(Self { num: self.num.checked_neg().ok_or(CalcError::Overflow)?, den: self.den })
    }
    pub fn checked_sub(self, o: Self) -> Result<Self, CalcError> {
        self.checked_add(o.checked_neg()?)
    }
    pub fn checked_mul(self, o: Self) -> Result<Self, CalcError> {
        // Cross-cancel first so that exact results that fit are not lost to intermediate overflow.
        let g1 = gcd(self.num, o.den).max(1);
        let g2 = gcd(o.num, self.den).max(1);
        let num = (self.num / g1).checked_mul(o.num / g2).ok_or(CalcError::Overflow)?;
        let den = (self.den / g2).checked_mul(o.den / g1).ok_or(CalcError::Overflow)?;
        Self::new(num, den)
    }
    pub fn checked_div(self, o: Self) -> Result<Self, CalcError> {
        if o.num == 0 {
            return Err(CalcError::DivisionByZero);
        }
        self.checked_mul(Self::new(o.den, o.num)?)
    }

    pub fn to_f64(&self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// Parses `12`, `-3.25`, `7/4` exactly.
    pub fn parse(s: &str) -> Result<Self, CalcError> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('/') {
            return Self::parse_decimal(a.trim())?.checked_div(Self::parse_decimal(b.trim())?);
        }
        Self::parse_decimal(s)
    }

    fn parse_decimal(s: &str) -> Result<Self, CalcError> {
        let err = || CalcError::Syntax { pos: 0, msg: format!("not a number: `{s}`") };
        let (neg, body) = match s.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, s),
        };
        let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        if !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let mut num: i128 = 0;
        let mut den: i128 = 1;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            num = num.checked_mul(10).and_then(|n| n.checked_add((b - b'0') as i128)).ok_or(CalcError::Overflow)?;
        }
        for _ in 0..frac_part.len() {
            den = den.checked_mul(10).ok_or(CalcError::Overflow)?;
        }
        Self::new(if neg { -num } else { num }, den)
    }

    /// Rounds half away from zero to `places` decimals.
    pub fn round_to(self, places: u32) -> Result<Self, CalcError> {
        let scale = 10i128.checked_pow(places).ok_or(CalcError::Overflow)?;
        let scaled = self.num.checked_mul(scale).ok_or(CalcError::Overflow)?;
        let q = scaled / self.den;
        let r = scaled % self.den;
        let q = if (r.abs().checked_mul(2).ok_or(CalcError::Overflow)?) >= self.den { q + scaled.signum() } else { q };
        Self::new(q, scale)
    }

    /// Exact decimal when the value has at most `max_places` decimals, else rounded to `max_places` with
    /// trailing zeros removed.
    pub fn to_decimal_string(self, max_places: u32) -> String {
        let r = self.round_to(max_places).unwrap_or(self);
        let neg = r.num < 0;
        let abs_num = r.num.unsigned_abs();
        let den = r.den.unsigned_abs();
        let int = abs_num / den;
        let mut rem = abs_num % den;
        let mut frac = String::new();
        while rem != 0 && frac.len() < max_places as usize {
            rem *= 10;
            frac.push(char::from(b'0' + (rem / den) as u8));
            rem %= den;
        }
        let sign = if neg && (int != 0 || !frac.is_empty()) { "-" } else { "" };
        if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    }

    /// True when the decimal expansion terminates within `places` digits.
    pub fn is_exact_in(self, places: u32) -> bool {
        self.round_to(places).is_ok_and(|r| r == self)
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

impl PartialOrd for Rational {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Rational {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.checked_sub(*other) {
            Ok(d) => d.num.cmp(&0),
            Err(_) => self.to_f64().total_cmp(&other.to_f64()),
        }
    }
}

pub const MAX_EXPR_CHARS: usize = 256;
const MAX_DEPTH: usize = 64;

/// Evaluates an expression exactly.
pub fn eval(expr: &str) -> Result<Rational, CalcError> {
    if expr.chars().count() > MAX_EXPR_CHARS {
        return Err(CalcError::TooLong(MAX_EXPR_CHARS));
    }
    let mut p = Parser { s: expr.as_bytes(), pos: 0, depth: 0 };
    let v = p.expr()?;
    p.skip_ws();
    if p.pos < p.s.len() {
        return Err(p.syntax("unexpected character"));
    }
    Ok(v)
}

/// The calculator's output: the exact value, as a decimal when it terminates within 10 places, else as a
/// fraction with a 6-decimal approximation.
pub fn format_result(v: Rational) -> String {
    if v.is_exact_in(10) {
        v.to_decimal_string(10)
    } else {
        format!("{v} (about {})", v.to_decimal_string(6))
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn syntax(&self, msg: &str) -> CalcError {
        let what = match self.s.get(self.pos) {
            Some(&c) => format!("{msg} `{}`", c as char),
            None => format!("{msg} (end of expression)"),
        };
        CalcError::Syntax { pos: self.pos, msg: what }
    }
    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }
    fn expr(&mut self) -> Result<Rational, CalcError> {
        let mut v = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            let r = self.term()?;
            v = if op == b'+' { v.checked_add(r)? } else { v.checked_sub(r)? };
        }
        Ok(v)
    }
    fn term(&mut self) -> Result<Rational, CalcError> {
        let mut v = self.factor()?;
        while let Some(op @ (b'*' | b'/' | b'x' | b'\xc3')) = self.peek() {
            // `x` and `×` (0xC3 0x97) are read as multiplication, as people write them.
            if op == b'\xc3' {
                if self.s.get(self.pos + 1) != Some(&0x97) {
                    break;
                }
                self.pos += 1;
            }
            self.pos += 1;
            let r = self.factor()?;
            v = if op == b'/' { v.checked_div(r)? } else { v.checked_mul(r)? };
        }
        Ok(v)
    }
    fn factor(&mut self) -> Result<Rational, CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        let v = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                self.factor()?.checked_neg()
            }
            Some(b'+') => {
                self.pos += 1;
                self.factor()
            }
            Some(b'(') => {
                self.pos += 1;
                let v = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err(self.syntax("expected `)` but found"));
                }
                self.pos += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            _ => Err(self.syntax("expected a number but found")),
        };
        self.depth -= 1;
        v
    }
    fn number(&mut self) -> Result<Rational, CalcError> {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|c| c.is_ascii_digit() || *c == b'.' || *c == b',' || *c == b'_') {
            self.pos += 1;
        }
        // Thousands separators (`1,234`) are common in word problems.
        let text: String = self.s[start..self.pos].iter().filter(|c| **c != b',' && **c != b'_').map(|&c| c as char).collect();
        Rational::parse_decimal(&text).map_err(|e| match e {
            CalcError::Syntax { msg, .. } => CalcError::Syntax { pos: start, msg },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> String {
        match eval(s) {
            Ok(v) => format_result(v),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn exact_arithmetic() {
        assert_eq!(ev("1 + 2 * 3"), "7");
        assert_eq!(ev("(1 + 2) * 3"), "9");
        assert_eq!(ev("10 / 4"), "2.5");
        assert_eq!(ev("1/3 + 1/6"), "0.5");
        assert_eq!(ev("0.1 + 0.2"), "0.3");
        assert_eq!(ev("-(3 - 5) * -2"), "-4");
        assert_eq!(ev("2 / 3"), "2/3 (about 0.666667)");
        assert_eq!(ev("1,234 + 1"), "1235");
        assert_eq!(ev("3 x 4 × 2"), "24");
        assert_eq!(ev("12.5 * 8 - 0.25"), "99.75");
    }

    #[test]
    fn errors_instead_of_wrong_values() {
        assert_eq!(eval("1/0"), Err(CalcError::DivisionByZero));
        assert_eq!(eval("1/(2-2)"), Err(CalcError::DivisionByZero));
        assert_eq!(eval("99999999999999999999 * 99999999999999999999 * 99999999999"), Err(CalcError::Overflow));
        assert_eq!(eval("999999999999999999999999999999999999999999"), Err(CalcError::Overflow));
        assert!(matches!(eval("2 +"), Err(CalcError::Syntax { .. })));
        assert!(matches!(eval("2 + abc"), Err(CalcError::Syntax { .. })));
        assert!(matches!(eval("(2"), Err(CalcError::Syntax { .. })));
        assert!(matches!(eval("1.2.3"), Err(CalcError::Syntax { .. })));
        assert_eq!(eval(&"(".repeat(100)), Err(CalcError::TooDeep));
        assert_eq!(eval(&"1+".repeat(200)), Err(CalcError::TooLong(MAX_EXPR_CHARS)));
    }

    #[test]
    fn rounding_and_decimals() {
        let r = Rational::parse("2/3").unwrap();
        assert_eq!(r.to_decimal_string(2), "0.67");
        assert_eq!(Rational::parse("-2.5").unwrap().round_to(0).unwrap(), Rational::int(-3));
        assert_eq!(Rational::parse("-0.001").unwrap().to_decimal_string(2), "0");
        assert!(Rational::parse("1/8").unwrap().is_exact_in(3));
        assert!(!Rational::parse("1/3").unwrap().is_exact_in(10));
    }
}
