//! A YAML document as a tree of [`Node`]s that remember where they came from.
//!
//! serde_yaml gives locations only for syntax and type errors; validating a pipeline needs
//! the position of every key and value (an unknown input stage, a duplicate id, a cycle), and
//! it must see duplicate keys rather than fail on the first. So the file is parsed once into
//! this tree (yaml-rust2's marked events), scalars are typed the way serde_yaml types them,
//! and [`from_node`] deserialises a subtree into a typed value, with every error located.

use std::collections::HashMap;
use std::fmt;

mod de;
pub use de::{DeError, from_node};

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a value came from: a place in the pipeline file, or a `-s` flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// 1-based line and column in the pipeline file.
    File { line: usize, col: usize },
    /// The `-s key=value` flag at this position on the command line.
    Flag(String),
}

impl Origin {
    fn at(m: Marker) -> Origin {
        Origin::File { line: m.line(), col: m.col() + 1 }
    }
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A scalar's text; `plain` when unquoted (so `3` is a number but `"3"` a string).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; duplicates are kept so validation can report them.
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub origin: Origin,
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// How deep values may nest (a pipeline needs about six levels). Deeper input, written or
/// made by aliases, is an error: the tree and everything that walks it recurse.
pub const MAX_DEPTH: usize = 128;

/// How many values aliases may copy in all: an alias to an alias-rich anchor doubles the
/// document each time (a "billion laughs" file would take all the memory).
pub const MAX_ALIASED: usize = 100_000;

/// Parse one YAML document. An empty document is an empty mapping.
///
/// The events are pulled one at a time (yaml-rust2's `Parser::load` recurses once per level
/// and would overflow the stack on deep input), and the first problem ends the parse.
pub fn parse(src: &str) -> Result<Node, SyntaxError> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(src);
    let mut documents = 0;
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| SyntaxError::at(*e.marker(), e.info()))?;
        match ev {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError::at(
                        mark,
                        "a second YAML document: a pipeline file holds one (remove this `---` and what follows, or put it in its own file)",
                    ));
                }
            }
            ev => b.on_event(ev, mark)?,
        }
    }
    Ok(b.root.unwrap_or(Node {
        kind: NodeKind::Map(Vec::new()),
        origin: Origin::File { line: 1, col: 1 },
    }))
}

impl SyntaxError {
    fn at(m: Marker, message: impl Into<String>) -> SyntaxError {
        SyntaxError { line: m.line(), col: m.col() + 1, message: message.into() }
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchored values with their height (levels) and size (values).
    anchors: HashMap<usize, (Node, usize, usize)>,
    root: Option<Node>,
    /// Values copied by aliases so far.
    aliased: usize,
}

/// A collection being built; a mapping holds its key until the value arrives.
struct Frame {
    node: Node,
    anchor: usize,
    pending_key: Option<Node>,
}

/// The height (levels) and size (values) of a node.
fn measure(node: &Node) -> (usize, usize) {
    let children: Box<dyn Iterator<Item = &Node>> = match &node.kind {
        NodeKind::Scalar { .. } => return (1, 1),
        NodeKind::Seq(items) => Box::new(items.iter()),
        NodeKind::Map(entries) => Box::new(entries.iter().flat_map(|(k, v)| [k, v])),
    };
    children.map(measure).fold((1, 1), |(h, n), (ch, cn)| (h.max(ch + 1), n + cn))
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let (height, size) = measure(&node);
            self.anchors.insert(anchor, (node.clone(), height, size));
        }
        let Some(frame) = self.stack.last_mut() else {
            self.root.get_or_insert(node);
            return;
        };
        match &mut frame.node.kind {
            NodeKind::Seq(items) => items.push(node),
            NodeKind::Map(entries) => match frame.pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => frame.pending_key = Some(node),
            },
            NodeKind::Scalar { .. } => unreachable!("scalars have no children"),
        }
    }

    fn open(&mut self, kind: NodeKind, anchor: usize, mark: Marker) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError::at(
                mark,
                format!("values nest more than {MAX_DEPTH} levels deep here"),
            ));
        }
        self.stack.push(Frame {
            node: Node { kind, origin: Origin::at(mark) },
            anchor,
            pending_key: None,
        });
        Ok(())
    }

    fn on_event(&mut self, ev: Event, mark: Marker) -> Result<(), SyntaxError> {
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Node {
                    kind: NodeKind::Scalar { text, plain: style == TScalarStyle::Plain },
                    origin: Origin::at(mark),
                };
                self.push_value(node, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.open(NodeKind::Seq(Vec::new()), anchor, mark)?
            }
            Event::MappingStart(anchor, _) => self.open(NodeKind::Map(Vec::new()), anchor, mark)?,
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    self.push_value(frame.node, frame.anchor);
                }
            }
            Event::Alias(id) => {
                let Some((n, height, size)) = self.anchors.get(&id) else {
                    return Err(SyntaxError::at(mark, "alias to an unknown anchor"));
                };
                if self.stack.len() + height > MAX_DEPTH {
                    return Err(SyntaxError::at(
                        mark,
                        format!("this alias makes values nest more than {MAX_DEPTH} levels deep"),
                    ));
                }
                self.aliased += size;
                if self.aliased > MAX_ALIASED {
                    return Err(SyntaxError::at(
                        mark,
                        format!(
                            "aliases copy more than {MAX_ALIASED} values by here: write the values out, or alias less"
                        ),
                    ));
                }
                let mut n = n.clone();
                n.origin = Origin::at(mark);
                self.push_value(n, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
        Ok(())
    }
}

impl Node {
    pub fn scalar(text: impl Into<String>, plain: bool, origin: Origin) -> Node {
        Node { kind: NodeKind::Scalar { text: text.into(), plain }, origin }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(e) => Some(e),
            _ => None,
        }
    }

    /// The text of a scalar (quoted or not).
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value of `key` in a mapping (the last one if duplicated).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node of `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(k, v)| (k, v))
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.kind {
            NodeKind::Map(e) => {
                e.iter_mut().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// A short name of the node's type for messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Map(_) => "a mapping",
            NodeKind::Seq(_) => "a list",
            NodeKind::Scalar { .. } => match self.to_value() {
                serde_yaml::Value::Null => "null",
                serde_yaml::Value::Bool(_) => "a boolean",
                serde_yaml::Value::Number(_) => "a number",
                _ => "a string",
            },
        }
    }

    pub fn is_null(&self) -> bool {
        // The kind first: `to_value` of a collection builds its whole subtree.
        matches!(self.kind, NodeKind::Scalar { .. })
            && matches!(self.to_value(), serde_yaml::Value::Null)
    }

    /// The node as a serde_yaml value, with scalars typed as serde_yaml types them.
    pub fn to_value(&self) -> serde_yaml::Value {
        match &self.kind {
            NodeKind::Scalar { text, plain: true } => serde_yaml::from_str(text)
                .unwrap_or_else(|_| serde_yaml::Value::String(text.clone())),
            NodeKind::Scalar { text, plain: false } => serde_yaml::Value::String(text.clone()),
            NodeKind::Seq(items) => {
                serde_yaml::Value::Sequence(items.iter().map(Node::to_value).collect())
            }
            NodeKind::Map(entries) => {
                let mut m = serde_yaml::Mapping::new();
                for (k, v) in entries {
                    m.insert(k.to_value(), v.to_value());
                }
                serde_yaml::Value::Mapping(m)
            }
        }
    }

    /// Build a node from a value (used for values given on the command line).
    pub fn from_value(v: &serde_yaml::Value, origin: &Origin) -> Node {
        use serde_yaml::Value as V;
        let kind = match v {
            V::Null => NodeKind::Scalar { text: "null".into(), plain: true },
            V::Bool(b) => NodeKind::Scalar { text: b.to_string(), plain: true },
            V::Number(n) => NodeKind::Scalar { text: n.to_string(), plain: true },
            V::String(s) => NodeKind::Scalar { text: s.clone(), plain: false },
            V::Sequence(s) => {
                NodeKind::Seq(s.iter().map(|x| Node::from_value(x, origin)).collect())
            }
            V::Mapping(m) => NodeKind::Map(
                m.iter()
                    .map(|(k, v)| (Node::from_value(k, origin), Node::from_value(v, origin)))
                    .collect(),
            ),
            V::Tagged(t) => return Node::from_value(&t.value, origin),
        };
        Node { kind, origin: origin.clone() }
    }

    /// Follow a path of map keys and list indices; stops at the deepest node found, so an
    /// error inside a value that does not exist yet still points somewhere useful.
    pub fn locate(&self, path: &[PathSeg]) -> &Node {
        let mut cur = self;
        for seg in path {
            let next = match (seg, &cur.kind) {
                (PathSeg::Key(k), NodeKind::Map(_)) => cur.get(k),
                (PathSeg::Index(i), NodeKind::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        cur
    }
}

/// One step of a path into a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

impl fmt::Display for PathSeg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSeg::Key(k) => write!(f, ".{k}"),
            PathSeg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A problem at a place in the file: where, what, and help.
pub type Located = (Origin, String, Option<String>);

/// A mapping block of the pipeline (`resources:`, `executor:`) to read: the node itself, a
/// null one as an empty mapping, or the problem that it is neither (naming its `keys`).
pub(crate) fn block<'n>(
    node: &'n Node,
    keys: &str,
) -> Result<std::borrow::Cow<'n, Node>, Vec<Located>> {
    if node.is_null() {
        let empty = Node { kind: NodeKind::Map(Vec::new()), origin: node.origin.clone() };
        return Ok(std::borrow::Cow::Owned(empty));
    }
    if node.as_map().is_none() {
        return Err(vec![(
            node.origin.clone(),
            format!("expected a mapping ({keys}), found {}", node.type_name()),
            None,
        )]);
    }
    Ok(std::borrow::Cow::Borrowed(node))
}

/// Why `block` did not deserialise, located, with help: the field meant, or its `keys`.
pub(crate) fn invalid(e: DeError, block: &Node, keys: &str) -> Vec<Located> {
    let help = e
        .expected_fields
        .and_then(|fields| {
            e.path.last().and_then(|seg| match seg {
                PathSeg::Key(k) => crate::suggest::did_you_mean(k, fields.iter().copied()),
                PathSeg::Index(_) => None,
            })
        })
        .unwrap_or_else(|| format!("the keys are: {keys}"));
    vec![(e.origin.unwrap_or_else(|| block.origin.clone()), e.message, Some(help))]
}

/// Problems of a block read as a type, at paths under it, located.
pub(crate) fn located(
    block: &Node,
    problems: Vec<(Vec<PathSeg>, String, Option<String>)>,
) -> Vec<Located> {
    problems.into_iter().map(|(path, m, h)| (block.locate(&path).origin.clone(), m, h)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_values() {
        let n = parse("a: 1\nb:\n  c: \"x\"\n  d: [1, 2]\n").unwrap();
        assert_eq!(n.get("a").unwrap().origin, Origin::File { line: 1, col: 4 });
        let (k, v) = n.get("b").unwrap().entry("c").unwrap();
        assert_eq!(k.origin, Origin::File { line: 3, col: 3 });
        assert_eq!(v.origin, Origin::File { line: 3, col: 6 });
        assert_eq!(v.to_value(), serde_yaml::Value::String("x".into()));
        assert_eq!(n.get("a").unwrap().to_value(), serde_yaml::Value::Number(1.into()));
    }

    #[test]
    fn duplicates_are_kept_and_aliases_resolved() {
        let n = parse("a: &x {k: 1}\na: 2\nb: *x\n").unwrap();
        assert_eq!(n.as_map().unwrap().len(), 3);
        assert_eq!(n.get("b").unwrap().get("k").unwrap().as_str(), Some("1"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e}");
        let e = parse("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 100 000 levels in 200 kB: yaml-rust2's own `load` would recurse that deep.
        let e = parse(&format!("a: {}1\n", "- ".repeat(100_000).replacen("- ", "\n  - ", 1)))
            .unwrap_err();
        assert!(e.message.contains("more than 128 levels") && e.line == 2, "{e}");
        let e = parse(&format!("a: {}\n", "[".repeat(200))).unwrap_err();
        assert_eq!(
            (e.line, e.col, e.message.contains("128 levels")),
            (1, 4 + MAX_DEPTH - 1, true),
            "{e}"
        );
        assert!(parse(&format!("a: {}1{}\n", "[".repeat(100), "]".repeat(100))).is_ok());
        // An alias may not take a value past the limit either.
        let src = format!(
            "a: &x {}1{}\nb: {}*x{}\n",
            "[".repeat(100),
            "]".repeat(100),
            "[".repeat(40),
            "]".repeat(40)
        );
        let e = parse(&src).unwrap_err();
        assert!(
            e.message.contains("this alias makes values nest") && (e.line, e.col) == (2, 44),
            "{e}"
        );
    }

    #[test]
    fn alias_bombs_stop_at_a_located_error() {
        let mut src = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for l in 1..=9 {
            src += &format!("l{l}: &l{l} [{}]\n", vec![format!("*l{}", l - 1); 9].join(", "));
        }
        let e = parse(&src).unwrap_err();
        assert!(e.message.contains("aliases copy more than 100000 values"), "{e}");
        assert!((5..=7).contains(&e.line), "{e}");
        // Aliases that copy little are fine.
        assert!(parse("a: &x {k: [1, 2]}\nb: *x\nc: *x\n").is_ok());
    }

    #[test]
    fn a_second_document_is_an_error() {
        let e = parse("a: 1\n---\nb: ]]\n").unwrap_err();
        assert_eq!((e.line, e.col), (2, 1), "{e}");
        assert!(e.message.contains("a second YAML document"), "{e}");
        assert!(parse("---\na: 1\n...\n").is_ok());
    }

    #[test]
    fn empty_values_are_null() {
        let n = parse("a:\nb: ~\n").unwrap();
        assert!(n.get("a").unwrap().is_null());
        assert!(n.get("b").unwrap().is_null());
    }
}
