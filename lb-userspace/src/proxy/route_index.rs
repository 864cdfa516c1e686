//! An index over one virtual host's routes, so that finding the first match does not try
//! every route: exact paths in a map, prefixes in a byte trie, regexes in one `RegexSet`.
//! The index yields the routes whose *path* condition holds, in route order; the caller
//! checks the other conditions (method, headers, query) on those candidates only, so first
//! match wins exactly as a scan in order would.
//!
//! Small virtual hosts are scanned: below [`INDEX_FROM`] routes a scan is cheaper than any
//! lookup.

use std::collections::HashMap;

use regex::RegexSet;

use crate::config::PathMatch;

/// Virtual hosts with at least this many routes get an index.
pub const INDEX_FROM: usize = 16;

/// The path index of a list of routes.
#[derive(Debug)]
pub struct PathIndex {
    exact: HashMap<Box<str>, Vec<u32>>,
    prefixes: Trie,
    regexes: Option<(RegexSet, Vec<u32>)>,
}

/// A byte trie of prefixes; each node lists the routes whose prefix ends there.
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// Children by next byte, sorted by byte.
    children: Vec<(u8, u32)>,
    /// Routes whose prefix is the bytes up to this node, in route order.
    routes: Vec<u32>,
}

impl Trie {
    fn insert(&mut self, prefix: &[u8], route: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut at = 0usize;
        for &byte in prefix {
            let children = &self.nodes[at].children;
            at = match children.binary_search_by_key(&byte, |(b, _)| *b) {
                Ok(i) => children[i].1 as usize,
                Err(i) => {
                    let next = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
                    self.nodes[at].children.insert(i, (byte, next));
                    self.nodes.push(Node::default());
                    next as usize
                }
            };
        }
        self.nodes[at].routes.push(route);
    }

    /// Every route whose prefix `path` starts with.
    fn matches(&self, path: &[u8], out: &mut Vec<u32>) {
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        out.extend_from_slice(&node.routes);
        for &byte in path {
            let Ok(i) = node.children.binary_search_by_key(&byte, |(b, _)| *b) else {
                return;
            };
            node = &self.nodes[node.children[i].1 as usize];
            out.extend_from_slice(&node.routes);
        }
    }
}

impl PathIndex {
    /// Indexes `paths`, the path conditions of the routes in order.
    pub fn build<'a>(paths: impl IntoIterator<Item = &'a PathMatch>) -> Result<Self, regex::Error> {
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut prefixes = Trie::default();
        let mut patterns = Vec::new();
        let mut regex_routes = Vec::new();
        for (i, path) in paths.into_iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match path {
                PathMatch::Exact(p) => exact.entry(p.as_str().into()).or_default().push(i),
                PathMatch::Prefix(p) => prefixes.insert(p.as_bytes(), i),
                PathMatch::Regex(re) => {
                    patterns.push(re.0.as_str().to_owned());
                    regex_routes.push(i);
                }
            }
        }
        let regexes = if patterns.is_empty() {
            None
        } else {
            Some((RegexSet::new(&patterns)?, regex_routes))
        };
        Ok(Self {
            exact,
            prefixes,
            regexes,
        })
    }

    /// The routes whose path condition holds for `path`, in route order.
    pub fn candidates(&self, path: &str) -> Vec<u32> {
        let mut out = Vec::new();
        if let Some(routes) = self.exact.get(path) {
            out.extend_from_slice(routes);
        }
        self.prefixes.matches(path.as_bytes(), &mut out);
        if let Some((set, routes)) = &self.regexes {
            out.extend(set.matches(path).iter().filter_map(|m| routes.get(m)));
        }
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::Pattern;

    fn holds(path_match: &PathMatch, path: &str) -> bool {
        match path_match {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(re) => re.0.is_match(path),
        }
    }

    fn regex(source: &str) -> PathMatch {
        PathMatch::Regex(Pattern(
            regex::Regex::new(&format!("^(?:{source})$")).expect("regex"),
        ))
    }

    fn any_match() -> impl Strategy<Value = PathMatch> {
        let segment = "[ab]{0,2}";
        prop_oneof![
            proptest::collection::vec(segment, 1..4)
                .prop_map(|s| PathMatch::Exact(format!("/{}", s.join("/")))),
            proptest::collection::vec(segment, 0..4)
                .prop_map(|s| PathMatch::Prefix(format!("/{}", s.join("/")))),
            Just(regex("/a.*")),
            Just(regex("/[ab]+/b")),
        ]
    }

    proptest! {
        #[test]
        fn candidates_are_exactly_the_routes_a_scan_would_match(
            routes in proptest::collection::vec(any_match(), 0..40),
            paths in proptest::collection::vec("/[ab/]{0,8}", 1..20),
        ) {
            let index = PathIndex::build(&routes).expect("index");
            for path in &paths {
                let scanned: Vec<u32> = routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| holds(r, path))
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(index.candidates(path), scanned, "{}", path);
            }
        }
    }
}
