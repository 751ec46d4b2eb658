//! Lexing: whitespace-separated tokens with their 1-based character columns, numbers with
//! their units, and how a token is quoted in an error message.

use std::fmt;

/// Tokens shown in error messages are cut to this many characters.
pub(super) const MAX_SHOWN_CHARS: usize = 40;

/// One whitespace-separated token and the column of its first character.
#[derive(Clone, Copy, Debug)]
pub(super) struct Token<'a> {
    pub(super) text: &'a str,
    pub(super) column: usize,
}

/// Splits `src` on whitespace, remembering 1-based character columns.
pub(super) fn tokenize(src: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    for (index, (byte, ch)) in src.char_indices().enumerate() {
        if ch.is_whitespace() {
            if let Some((start_byte, column)) = start.take() {
                tokens.push(Token {
                    text: &src[start_byte..byte],
                    column,
                });
            }
        } else if start.is_none() {
            start = Some((byte, index + 1));
        }
    }
    if let Some((start_byte, column)) = start {
        tokens.push(Token {
            text: &src[start_byte..],
            column,
        });
    }
    tokens
}

/// A token quoted in an error message, cut short when very long.
pub(super) fn show(text: &str) -> String {
    if text.chars().count() > MAX_SHOWN_CHARS {
        let head: String = text.chars().take(MAX_SHOWN_CHARS).collect();
        format!("{head}…")
    } else {
        text.to_owned()
    }
}

/// Whether a standalone token is a unit that belongs to the number before it (`500 ms`).
pub(super) fn is_unit_word(text: &str) -> bool {
    matches!(text, "ms" | "s" | "m" | "%" | "/s")
}

/// A number and its unit, as written.
#[derive(Clone, Copy, Debug)]
pub(super) struct Quantity<'a> {
    /// The digits and decimal point.
    pub(super) number: &'a str,
    /// The unit, `""` when none.
    pub(super) unit: &'a str,
    /// The column of the number.
    pub(super) column: usize,
}

impl fmt::Display for Quantity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", show(&format!("{}{}", self.number, self.unit)))
    }
}

/// Why a number could not be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Overflow {
    /// Too large to represent.
    TooLarge,
    /// Finer than the representation allows (durations: 1ns).
    TooPrecise,
}

/// A validated decimal number `int[.frac]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Decimal<'a> {
    int: &'a str,
    frac: &'a str,
}

impl<'a> Decimal<'a> {
    /// Validates `DIGITS [ "." DIGITS ]`.
    pub(super) fn new(text: &'a str) -> Option<Self> {
        let (int, frac) = match text.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|frac| !digits(frac)) {
            return None;
        }
        Some(Self {
            int,
            frac: frac.unwrap_or(""),
        })
    }

    /// The value times `10^shift`, rounded once to the nearest `f64`; `None` if not finite.
    pub(super) fn to_f64(self, shift: usize) -> Option<f64> {
        let split = shift.min(self.frac.len());
        let (moved, rest) = self.frac.split_at(split);
        let zeros = "0".repeat(shift - split);
        let text = if rest.is_empty() {
            format!("{}{moved}{zeros}", self.int)
        } else {
            format!("{}{moved}{zeros}.{rest}", self.int)
        };
        text.parse::<f64>().ok().filter(|value| value.is_finite())
    }

    /// The value times `unit`, exactly, as an integer.
    pub(super) fn times(self, unit: u128) -> Result<u128, Overflow> {
        let int = self.int.trim_start_matches('0');
        let frac = self.frac.trim_end_matches('0');
        // `unit` divides 60 * 10^9 = 2^11 * 3 * 5^10, and `frac` does not end in
        // 0, so more than 11 fractional digits can never give a whole result.
        if frac.len() > 11 {
            return Err(Overflow::TooPrecise);
        }
        let mut scaled: u128 = 0;
        for digit in int.bytes().chain(frac.bytes()) {
            scaled = scaled
                .checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(digit - b'0')))
                .ok_or(Overflow::TooLarge)?;
        }
        let scaled = scaled.checked_mul(unit).ok_or(Overflow::TooLarge)?;
        let divisor = 10u128.pow(u32::try_from(frac.len()).unwrap_or(0));
        if scaled.is_multiple_of(divisor) {
            Ok(scaled / divisor)
        } else {
            Err(Overflow::TooPrecise)
        }
    }
}
