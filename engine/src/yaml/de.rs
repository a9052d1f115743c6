//! A serde [`Deserializer`] for a positioned [`Node`]: typed params straight from the YAML
//! tree, so an error carries the origin (file:line:col, or the `-s` flag) and the path of the
//! node it is about, and an unknown field its name and the expected ones, without reading
//! anything out of serde's message text.
//!
//! Scalars are typed as serde_yaml types them ([`Node::to_value`]): a plain `3` is a number,
//! `"3"` a string. The innermost node that fails gives the error its place.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::{Node, NodeKind, Origin, PathSeg};

/// Deserialises `T` from `node`.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, DeError> {
    T::deserialize(NodeDe { node, path: Vec::new() })
}

/// Why a node did not deserialise, and where.
#[derive(Debug, Clone)]
pub struct DeError {
    pub message: String,
    /// The node the error is about (`None` only when nothing located it).
    pub origin: Option<Origin>,
    /// The path from the deserialised root to that node.
    pub path: Vec<PathSeg>,
    /// For an unknown field: the fields the type has.
    pub expected_fields: Option<&'static [&'static str]>,
}

impl DeError {
    /// Locates an error that has no place yet at `node`.
    fn at(mut self, node: &Node, path: &[PathSeg]) -> DeError {
        if self.origin.is_none() {
            self.origin = Some(node.origin.clone());
            self.path = path.to_vec();
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { message: msg.to_string(), origin: None, path: Vec::new(), expected_fields: None }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let quoted: Vec<String> = expected.iter().map(|f| format!("`{f}`")).collect();
        let message = match quoted.as_slice() {
            [] => format!("unknown field `{field}`, there are no fields"),
            [one] => format!("unknown field `{field}`, expected {one}"),
            [a, b] => format!("unknown field `{field}`, expected {a} or {b}"),
            many => format!("unknown field `{field}`, expected one of {}", many.join(", ")),
        };
        DeError { message, origin: None, path: Vec::new(), expected_fields: Some(expected) }
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    path: Vec<PathSeg>,
}

impl NodeDe<'_> {
    fn scalar<'de, V: Visitor<'de>>(&self, v: V) -> Result<V::Value, DeError> {
        use serde_yaml::Value as Y;
        match self.node.to_value() {
            Y::Null => v.visit_unit(),
            Y::Bool(b) => v.visit_bool(b),
            Y::Number(n) => {
                if let Some(u) = n.as_u64() {
                    v.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    v.visit_i64(i)
                } else {
                    v.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Y::String(s) => v.visit_string(s),
            // Scalars are never sequences, mappings or tagged.
            other => Err(de::Error::custom(format!("unexpected value {other:?}"))),
        }
    }

    fn child<'b>(&self, node: &'b Node, seg: PathSeg) -> NodeDe<'b> {
        let mut path = self.path.clone();
        path.push(seg);
        NodeDe { node, path }
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Scalar { .. } => self.scalar(v),
            NodeKind::Seq(items) => v.visit_seq(Seq { de: &self, items, next: 0 }),
            NodeKind::Map(entries) => v.visit_map(Map { de: &self, entries, next: 0 }),
        };
        r.map_err(|e| e.at(self.node, &self.path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            v.visit_none().map_err(|e: DeError| e.at(self.node, &self.path))
        } else {
            let (node, path) = (self.node, self.path.clone());
            v.visit_some(self).map_err(|e| e.at(node, &path))
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        let (node, path) = (self.node, self.path.clone());
        v.visit_newtype_struct(self).map_err(|e| e.at(node, &path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            // `kind: bpe`: a unit variant.
            NodeKind::Scalar { .. } => match self.node.to_value() {
                serde_yaml::Value::String(s) => v.visit_enum(s.into_deserializer()),
                _ => Err(de::Error::invalid_type(de::Unexpected::Other(self.node.type_name()), &v)),
            },
            // `{ variant: value }`
            NodeKind::Map(entries) if entries.len() == 1 => {
                v.visit_enum(Enum { de: &self, key: &entries[0].0, value: &entries[0].1 })
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Other(self.node.type_name()), &v)),
        };
        r.map_err(|e| e.at(self.node, &self.path))
    }

    /// A struct is written as a mapping (serde would also take a list of its fields in order).
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        if let NodeKind::Seq(_) = self.node.kind {
            return Err(<DeError as de::Error>::invalid_type(de::Unexpected::Seq, &v)
                .at(self.node, &self.path));
        }
        self.deserialize_any(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

struct Seq<'a, 'b> {
    de: &'b NodeDe<'a>,
    items: &'a [Node],
    next: usize,
}

impl<'de> SeqAccess<'de> for Seq<'_, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.get(self.next) else { return Ok(None) };
        let child = self.de.child(item, PathSeg::Index(self.next));
        self.next += 1;
        seed.deserialize(child).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

struct Map<'a, 'b> {
    de: &'b NodeDe<'a>,
    entries: &'a [(Node, Node)],
    next: usize,
}

impl Map<'_, '_> {
    fn key_seg(&self, i: usize) -> PathSeg {
        let k = &self.entries[i].0;
        PathSeg::Key(
            k.as_str().map(str::to_string).unwrap_or_else(|| format!("{:?}", k.to_value())),
        )
    }
}

impl<'de> MapAccess<'de> for Map<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, _)) = self.entries.get(self.next) else { return Ok(None) };
        // A key's path is the entry's: an unknown field points at the key that names it.
        let child = self.de.child(key, self.key_seg(self.next));
        seed.deserialize(child).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let i = self.next;
        self.next += 1;
        let value = &self.entries[i].1;
        seed.deserialize(self.de.child(value, self.key_seg(i)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.next)
    }
}

struct Enum<'a, 'b> {
    de: &'b NodeDe<'a>,
    key: &'a Node,
    value: &'a Node,
}

impl<'a, 'b, 'de> EnumAccess<'de> for Enum<'a, 'b> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let name = PathSeg::Key(self.key.as_str().unwrap_or_default().to_string());
        let variant = seed.deserialize(self.de.child(self.key, name.clone()))?;
        Ok((variant, self.de.child(self.value, name)))
    }
}

impl<'de> VariantAccess<'de> for NodeDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.node.is_null() {
            Ok(())
        } else {
            Err(<DeError as de::Error>::custom(format!(
                "expected nothing after a unit variant, found {}",
                self.node.type_name()
            ))
            .at(self.node, &self.path))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct P {
        n: u32,
        #[serde(default)]
        lr: f64,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        kind: Kind,
        #[serde(default)]
        list: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq, Default)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        #[default]
        A,
        B,
        Weighted(f64),
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        x: i64,
    }

    fn de(src: &str) -> Result<P, DeError> {
        from_node(&parse(src).unwrap())
    }

    fn at(e: &DeError) -> (usize, usize) {
        match e.origin {
            Some(Origin::File { line, col }) => (line, col),
            _ => panic!("no file origin: {e:?}"),
        }
    }

    #[test]
    fn typed_values_as_serde_yaml_types_them() {
        let p = de("n: 3\nlr: 1\nname: \"7\"\nkind: b\nlist: [{x: -2}]\n").unwrap();
        assert_eq!(
            p,
            P { n: 3, lr: 1.0, name: Some("7".into()), kind: Kind::B, list: vec![Item { x: -2 }] }
        );
        assert_eq!(
            de("n: 1\nkind: { weighted: 0.5 }\nname: ~\n").unwrap().kind,
            Kind::Weighted(0.5)
        );
        assert_eq!(de("n: 1\nname:\n").unwrap().name, None);
    }

    #[test]
    fn errors_point_at_the_node_with_its_path() {
        let e = de("n: 3\nlist:\n  - x: 1\n  - x: nope\n").unwrap_err();
        assert_eq!(at(&e), (4, 8));
        assert_eq!(
            e.path,
            vec![PathSeg::Key("list".into()), PathSeg::Index(1), PathSeg::Key("x".into())]
        );
        assert!(e.message.contains("invalid type: string \"nope\", expected i64"), "{e}");

        let e = de("n: 3\nlsit: []\n").unwrap_err();
        assert_eq!(at(&e), (2, 1));
        assert_eq!(e.path, vec![PathSeg::Key("lsit".into())]);
        assert!(e.message.starts_with("unknown field `lsit`, expected one of `n`, `lr`"), "{e}");
        assert_eq!(e.expected_fields.unwrap().len(), 5);

        let e = de("lr: 2\n").unwrap_err();
        assert!(e.message.contains("missing field `n`") && e.path.is_empty(), "{e}");
        let e = de("n: -1\n").unwrap_err();
        assert_eq!(at(&e), (1, 4));
        let e = de("n: 1\nkind: c\n").unwrap_err();
        assert!(e.message.contains("unknown variant `c`") && at(&e) == (2, 7), "{e}");
        let e = de("[1, 2]\n").unwrap_err();
        assert!(e.message.contains("invalid type: sequence, expected struct P"), "{e}");
    }
}
