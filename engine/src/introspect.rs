//! The field names of a `Deserialize` struct, read from serde's own description of it.
//!
//! serde passes a struct's field names to `Deserializer::deserialize_struct`; a deserializer
//! that records them and then stops gives help texts the list of a kind's params without
//! every kind having to repeat it.

use serde::de::{self, Deserialize, Deserializer, Visitor};

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

struct Recorder<'a>(&'a mut Vec<&'static str>);

impl<'de> Deserializer<'de> for Recorder<'_> {
    type Error = Stop;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.0.extend_from_slice(fields);
        Err(Stop)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The field names of struct `T` (empty for anything that is not a plain struct).
pub fn field_names<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    let mut names = Vec::new();
    let _ = T::deserialize(Recorder(&mut names));
    names
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct P {
        cmd: String,
        #[serde(default)]
        deps: Vec<String>,
    }

    #[test]
    fn lists_fields() {
        assert_eq!(super::field_names::<P>(), vec!["cmd", "deps"]);
    }
}
