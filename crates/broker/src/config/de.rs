//! Deserialization helpers that check a value while the deserializer is still looking at it,
//! so that the TOML deserializer reports the error at the value itself (an error raised after
//! `String::deserialize` returns is only located at the enclosing array or table).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// Deserializes a string and converts it with `parse`.
pub fn parse_str<'de, D, T, E, F>(
    deserializer: D,
    expecting: &'static str,
    parse: F,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
    F: FnOnce(&str) -> Result<T, E>,
{
    struct StrVisitor<F> {
        expecting: &'static str,
        parse: F,
    }

    impl<'de, T, E, F> Visitor<'de> for StrVisitor<F>
    where
        E: fmt::Display,
        F: FnOnce(&str) -> Result<T, E>,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<Error: de::Error>(self, value: &str) -> Result<T, Error> {
            (self.parse)(value).map_err(Error::custom)
        }
    }

    deserializer.deserialize_str(StrVisitor { expecting, parse })
}

/// Deserializes an integer in `min..=max`, with a message naming `key` and `unit` otherwise.
pub fn int_in_range<'de, D, T>(
    deserializer: D,
    key: &'static str,
    min: i64,
    max: i64,
    unit: &'static str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    struct RangeVisitor<T> {
        key: &'static str,
        min: i64,
        max: i64,
        unit: &'static str,
        value: std::marker::PhantomData<T>,
    }

    impl<T> RangeVisitor<T> {
        fn out_of_range<Error: de::Error>(&self, value: impl fmt::Display) -> Error {
            Error::custom(format!(
                "{} = {value} is out of range; use {} to {} {}",
                self.key, self.min, self.max, self.unit
            ))
        }
    }

    impl<'de, T: TryFrom<i64>> Visitor<'de> for RangeVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an integer from {} to {}", self.min, self.max)
        }

        fn visit_i64<Error: de::Error>(self, value: i64) -> Result<T, Error> {
            if (self.min..=self.max).contains(&value) {
                if let Ok(value) = T::try_from(value) {
                    return Ok(value);
                }
            }
            Err(self.out_of_range(value))
        }

        fn visit_u64<Error: de::Error>(self, value: u64) -> Result<T, Error> {
            match i64::try_from(value) {
                Ok(value) => self.visit_i64(value),
                Err(_) => Err(self.out_of_range(value)),
            }
        }
    }

    deserializer.deserialize_i64(RangeVisitor {
        key,
        min,
        max,
        unit,
        value: std::marker::PhantomData,
    })
}
