//! Permission queries: a single scope, all-of, any-of, and expressions such as
//! `billing.read AND (billing.write OR admin)`. `AND` binds tighter than `OR`.

use std::fmt;

use crate::error::{Error, Result};
use crate::policy::scope::{is_valid_scope, Scope};

/// Longest query text accepted. Chosen so that the canonical display of any accepted
/// query is accepted too (a fuzzing finding): at most 256 scopes of at most 263 characters,
/// 255 operators of at most 5 and 255 pairs of parentheses make 69,118 characters.
pub(crate) const MAX_QUERY_LEN: usize = 72 * 1024;
/// Deepest parenthesis nesting accepted.
pub(crate) const MAX_QUERY_DEPTH: usize = 32;
/// Most scopes one query may name.
pub(crate) const MAX_QUERY_TERMS: usize = 256;

/// A parsed permission query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionQuery {
    pub(crate) root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Scope(Scope),
    All(Vec<Node>),
    Any(Vec<Node>),
}

impl PermissionQuery {
    /// A query for one scope.
    pub fn scope(scope: Scope) -> Self {
        PermissionQuery {
            root: Node::Scope(scope),
        }
    }

    /// A query that holds when every scope is held. An empty list always holds.
    pub fn all_of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        PermissionQuery {
            root: Node::All(scopes.into_iter().map(Node::Scope).collect()),
        }
    }

    /// A query that holds when at least one scope is held. An empty list never holds.
    pub fn any_of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        PermissionQuery {
            root: Node::Any(scopes.into_iter().map(Node::Scope).collect()),
        }
    }

    /// Parses a query expression. Errors name the position (0-based, in characters of the
    /// input) and what was expected there.
    pub fn parse(input: &str) -> Result<Self> {
        if input.len() > MAX_QUERY_LEN {
            return Err(query_error(format!(
                "is longer than {MAX_QUERY_LEN} characters"
            )));
        }
        let tokens = lex(input)?;
        let mut p = Parser {
            tokens: &tokens,
            pos: 0,
            terms: 0,
            end: input.chars().count(),
        };
        let root = p.expr(0)?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(query_error(format!(
                "unexpected {} at position {}",
                t.kind, t.at
            )));
        }
        Ok(PermissionQuery { root })
    }

    /// Every scope the query names, in order of appearance.
    pub fn scopes(&self) -> Vec<&Scope> {
        fn walk<'a>(n: &'a Node, out: &mut Vec<&'a Scope>) {
            match n {
                Node::Scope(s) => out.push(s),
                Node::All(v) | Node::Any(v) => v.iter().for_each(|c| walk(c, out)),
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Evaluates the query with `holds` deciding each scope. Used by the compiled snapshot
    /// and by reference models alike.
    pub fn evaluate_with(&self, holds: &mut impl FnMut(&str) -> bool) -> bool {
        fn eval(n: &Node, holds: &mut impl FnMut(&str) -> bool) -> bool {
            match n {
                Node::Scope(s) => holds(s.as_str()),
                Node::All(v) => v.iter().all(|c| eval(c, holds)),
                Node::Any(v) => v.iter().any(|c| eval(c, holds)),
            }
        }
        eval(&self.root, holds)
    }
}

impl fmt::Display for PermissionQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn write(n: &Node, f: &mut fmt::Formatter<'_>, top: bool) -> fmt::Result {
            match n {
                Node::Scope(s) => f.write_str(s.as_str()),
                Node::All(v) | Node::Any(v) => {
                    let op = if matches!(n, Node::All(_)) {
                        " AND "
                    } else {
                        " OR "
                    };
                    if !top {
                        f.write_str("(")?;
                    }
                    for (i, c) in v.iter().enumerate() {
                        if i > 0 {
                            f.write_str(op)?;
                        }
                        write(c, f, false)?;
                    }
                    if !top {
                        f.write_str(")")?;
                    }
                    Ok(())
                }
            }
        }
        write(&self.root, f, true)
    }
}

fn query_error(problem: String) -> Error {
    Error::invalid("permissions", format!("the permission query {problem}"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind<'a> {
    Word(&'a str),
    And,
    Or,
    Open,
    Close,
}

impl fmt::Display for Kind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Word(w) => write!(f, "{}", crate::policy::scope::shown(w)),
            Kind::And => f.write_str("AND"),
            Kind::Or => f.write_str("OR"),
            Kind::Open => f.write_str("'('"),
            Kind::Close => f.write_str("')'"),
        }
    }
}

struct Tok<'a> {
    kind: Kind<'a>,
    at: usize,
}

fn lex(input: &str) -> Result<Vec<Tok<'_>>> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().enumerate().peekable();
    while let Some((ci, (bi, c))) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => out.push(Tok {
                kind: Kind::Open,
                at: ci,
            }),
            ')' => out.push(Tok {
                kind: Kind::Close,
                at: ci,
            }),
            _ => {
                let mut end = bi + c.len_utf8();
                while let Some(&(_, (nb, nc))) = chars.peek() {
                    if nc.is_whitespace() || nc == '(' || nc == ')' {
                        break;
                    }
                    end = nb + nc.len_utf8();
                    chars.next();
                }
                let word = &input[bi..end];
                let kind = match word {
                    "AND" | "&&" => Kind::And,
                    "OR" | "||" => Kind::Or,
                    w if is_valid_scope(w) => Kind::Word(w),
                    w => {
                        return Err(query_error(format!(
                            "has an invalid scope {} at position {ci}",
                            crate::policy::scope::shown(w)
                        )))
                    }
                };
                out.push(Tok { kind, at: ci });
            }
        }
    }
    Ok(out)
}

struct Parser<'t, 'a> {
    tokens: &'t [Tok<'a>],
    pos: usize,
    terms: usize,
    end: usize,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Option<&Kind<'_>> {
        self.tokens.get(self.pos).map(|t| &t.kind)
    }

    fn expr(&mut self, depth: usize) -> Result<Node> {
        let mut any = vec![self.conjunction(depth)?];
        while self.peek() == Some(&Kind::Or) {
            self.pos += 1;
            any.push(self.conjunction(depth)?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Node::Any(any)
        })
    }

    fn conjunction(&mut self, depth: usize) -> Result<Node> {
        let mut all = vec![self.atom(depth)?];
        while self.peek() == Some(&Kind::And) {
            self.pos += 1;
            all.push(self.atom(depth)?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Node::All(all)
        })
    }

    fn atom(&mut self, depth: usize) -> Result<Node> {
        let Some(tok) = self.tokens.get(self.pos) else {
            return Err(query_error(format!(
                "ends early: expected a scope or '(' at position {}",
                self.end
            )));
        };
        match &tok.kind {
            Kind::Word(w) => {
                self.pos += 1;
                self.terms += 1;
                if self.terms > MAX_QUERY_TERMS {
                    return Err(query_error(format!(
                        "names more than {MAX_QUERY_TERMS} scopes"
                    )));
                }
                Ok(Node::Scope(Scope::parse(w)?))
            }
            Kind::Open => {
                if depth >= MAX_QUERY_DEPTH {
                    return Err(query_error(format!(
                        "nests parentheses deeper than {MAX_QUERY_DEPTH} at position {}",
                        tok.at
                    )));
                }
                let open_at = tok.at;
                self.pos += 1;
                let inner = self.expr(depth + 1)?;
                match self.tokens.get(self.pos) {
                    Some(Tok { kind: Kind::Close, .. }) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    Some(t) => Err(query_error(format!(
                        "expected ')' at position {} to close the '(' at position {open_at}, found {}",
                        t.at, t.kind
                    ))),
                    None => Err(query_error(format!(
                        "is missing the ')' that closes the '(' at position {open_at}"
                    ))),
                }
            }
            other => Err(query_error(format!(
                "expected a scope or '(' at position {}, found {other}",
                tok.at
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> PermissionQuery {
        PermissionQuery::parse(s).unwrap()
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(q("a OR b AND c").to_string(), "a OR (b AND c)");
        assert_eq!(q("(a OR b) AND c").to_string(), "(a OR b) AND c");
        assert_eq!(
            q("billing.read AND (billing.write OR admin)").to_string(),
            "billing.read AND (billing.write OR admin)"
        );
    }

    #[test]
    fn evaluation_follows_the_tree() {
        let held = ["a", "c"];
        let mut holds = |s: &str| held.contains(&s);
        assert!(q("a AND (b OR c)").evaluate_with(&mut holds));
        assert!(!q("a AND b").evaluate_with(&mut holds));
        assert!(q("b OR c").evaluate_with(&mut holds));
        assert!(PermissionQuery::all_of([]).evaluate_with(&mut holds));
        assert!(!PermissionQuery::any_of([]).evaluate_with(&mut holds));
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("", "position 0"),
            ("a AND", "position 5"),
            ("a OR OR b", "position 5"),
            ("(a OR b", "'(' at position 0"),
            ("a b", "unexpected \"b\" at position 2"),
            ("a AND B!", "invalid scope \"B!\" at position 6"),
            (")", "position 0"),
        ];
        for (input, needle) in cases {
            let err = PermissionQuery::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(PermissionQuery::parse(&deep).is_err());
        let long = vec!["a"; 300].join(" AND ");
        assert!(PermissionQuery::parse(&long).is_err());
        assert!(PermissionQuery::parse(&"a".repeat(MAX_QUERY_LEN + 1)).is_err());
    }
}
