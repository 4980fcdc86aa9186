//! Conditions on grants: a small expression language over the caller's context, the
//! principal's metadata, the request address and the time, parsed into a typed form once
//! (with errors that give the position) and evaluated per check.
//!
//! ```text
//! context.region in ["eu", "us"] AND NOT (time.weekday in ["sat", "sun"])
//! principal.metadata.customer == context.owner OR request.ip within "10.0.0.0/8"
//! local("Europe/Berlin").hour >= 9 AND local("Europe/Berlin").hour < 18
//! ```
//!
//! Values are strings, numbers (64-bit floats), booleans and lists of them. A condition that
//! refers to a value the request does not carry is false as a whole, under `NOT` too:
//! missing data never grants. Comparing values of different types is false (`!=` true);
//! `<`, `<=`, `>`, `>=` compare numbers with numbers and strings with strings (byte order,
//! so ISO dates order correctly).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value as Json};

use crate::clock::Timestamp;

/// Bounds on a condition's text and shape; larger ones are refused when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConditionLimits {
    /// Longest condition text, in bytes.
    pub max_length: usize,
    /// Deepest nesting of `AND`/`OR`/`NOT`/parentheses.
    pub max_depth: usize,
    /// Most elements in one `[...]` list.
    pub max_list: usize,
}

impl Default for ConditionLimits {
    /// 2,048 bytes, depth 16, lists of 256.
    fn default() -> Self {
        ConditionLimits {
            max_length: 2048,
            max_depth: 16,
            max_list: 256,
        }
    }
}

/// Why a condition was refused, with the byte offset where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid condition at position {position}: {message}")]
pub struct ConditionError {
    /// Byte offset in the condition text (0-based).
    pub position: usize,
    /// What was expected or found.
    pub message: String,
}

/// A parsed condition. Two conditions are equal when their texts are.
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    expr: Expr,
}

impl Condition {
    /// Parses `text` under `limits`.
    pub fn parse(text: &str, limits: &ConditionLimits) -> Result<Condition, ConditionError> {
        if text.len() > limits.max_length {
            return Err(ConditionError {
                position: limits.max_length,
                message: format!(
                    "the condition is {} bytes long; at most {} are allowed",
                    text.len(),
                    limits.max_length
                ),
            });
        }
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            at: 0,
            limits,
            end: text.len(),
        };
        let expr = p.or(0)?;
        if let Some(t) = p.peek() {
            return Err(p.error_at(t.pos, format!("unexpected {}", t.kind)));
        }
        Ok(Condition {
            source: text.to_owned(),
            expr,
        })
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether it holds for `input`; false when it refers to anything `input` lacks.
    pub fn holds(&self, input: &ConditionInput<'_>) -> bool {
        self.expr.eval(input) == Some(true)
    }

    /// The context names it refers to (`context.NAME`), for decision logs.
    pub fn context_keys(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        self.expr.context_keys(&mut keys);
        keys
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Condition {}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct ConditionInput<'a> {
    /// The caller's context (`context.NAME`).
    pub context: &'a Map<String, Json>,
    /// The principal's metadata (`principal.metadata.NAME`).
    pub metadata: &'a Map<String, Json>,
    /// The request's address (`request.ip`), if it gave one.
    pub ip: Option<IpAddr>,
    /// Now.
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, CmpOp, Operand),
    In(Operand, Vec<Literal>),
    StartsWith(Operand, String),
    Within(Operand, ipnet::IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Literal),
    Context(String),
    Metadata(String),
    RequestIp,
    Time(TimePart, Option<jiff::tz::TimeZone>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimePart {
    Hour,
    Weekday,
    Date,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Val>),
}

impl Val {
    fn from_json(v: &Json) -> Option<Val> {
        Some(match v {
            Json::String(s) => Val::Str(s.clone()),
            Json::Number(n) => Val::Num(n.as_f64()?),
            Json::Bool(b) => Val::Bool(*b),
            Json::Array(items) => Val::List(
                items
                    .iter()
                    .map(|i| match i {
                        Json::Array(_) | Json::Object(_) => None,
                        other => Val::from_json(other),
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
            Json::Null | Json::Object(_) => return None,
        })
    }

    fn from_literal(l: &Literal) -> Val {
        match l {
            Literal::Str(s) => Val::Str(s.clone()),
            Literal::Num(n) => Val::Num(*n),
            Literal::Bool(b) => Val::Bool(*b),
        }
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Operand {
    /// Its value, or `None` when the input lacks it.
    fn value(&self, input: &ConditionInput<'_>) -> Option<Val> {
        match self {
            Operand::Literal(l) => Some(Val::from_literal(l)),
            Operand::Context(name) => input.context.get(name).and_then(Val::from_json),
            Operand::Metadata(name) => input.metadata.get(name).and_then(Val::from_json),
            Operand::RequestIp => input.ip.map(|ip| Val::Str(ip.to_string())),
            Operand::Time(part, zone) => {
                let ts = jiff::Timestamp::from_second(input.now.unix()).ok()?;
                let zone = zone.clone().unwrap_or(jiff::tz::TimeZone::UTC);
                let dt = zone.to_datetime(ts);
                Some(match part {
                    TimePart::Hour => Val::Num(f64::from(dt.hour())),
                    TimePart::Weekday => Val::Str(
                        WEEKDAYS[usize::try_from(dt.weekday().to_monday_zero_offset())
                            .unwrap_or(0)
                            .min(6)]
                        .to_owned(),
                    ),
                    TimePart::Date => Val::Str(format!(
                        "{:04}-{:02}-{:02}",
                        dt.year(),
                        dt.month(),
                        dt.day()
                    )),
                })
            }
        }
    }
}

fn compare(a: &Val, op: CmpOp, b: &Val) -> bool {
    use std::cmp::Ordering;
    let order = match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => Some(x.cmp(y)),
        (Val::List(_), _) | (_, Val::List(_)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
            return (a == b) == (op == CmpOp::Eq);
        }
        _ => None,
    };
    match (order, op) {
        (None, CmpOp::Ne) => true,
        (None, _) => false,
        (Some(o), CmpOp::Eq) => o == Ordering::Equal,
        (Some(o), CmpOp::Ne) => o != Ordering::Equal,
        (Some(o), CmpOp::Lt) => o == Ordering::Less,
        (Some(o), CmpOp::Le) => o != Ordering::Greater,
        (Some(o), CmpOp::Gt) => o == Ordering::Greater,
        (Some(o), CmpOp::Ge) => o != Ordering::Less,
    }
}

impl Expr {
    /// `Some(truth)`, or `None` when a value it needs is missing (which makes the whole
    /// condition false, whatever surrounds it).
    fn eval(&self, input: &ConditionInput<'_>) -> Option<bool> {
        match self {
            Expr::And(a, b) => {
                let (a, b) = (a.eval(input)?, b.eval(input)?);
                Some(a && b)
            }
            Expr::Or(a, b) => {
                let (a, b) = (a.eval(input)?, b.eval(input)?);
                Some(a || b)
            }
            Expr::Not(e) => Some(!e.eval(input)?),
            Expr::Compare(a, op, b) => Some(compare(&a.value(input)?, *op, &b.value(input)?)),
            Expr::In(a, list) => {
                let v = a.value(input)?;
                Some(match &v {
                    // A list context value: any of its elements in the list.
                    Val::List(items) => items.iter().any(|i| {
                        list.iter()
                            .any(|l| compare(i, CmpOp::Eq, &Val::from_literal(l)))
                    }),
                    v => list
                        .iter()
                        .any(|l| compare(v, CmpOp::Eq, &Val::from_literal(l))),
                })
            }
            Expr::StartsWith(a, prefix) => match a.value(input)? {
                Val::Str(s) => Some(s.starts_with(prefix.as_str())),
                _ => Some(false),
            },
            Expr::Within(a, net) => match a.value(input)? {
                Val::Str(s) => Some(s.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip))),
                _ => Some(false),
            },
        }
    }

    fn context_keys(&self, out: &mut BTreeSet<String>) {
        let mut operand = |o: &Operand| {
            if let Operand::Context(name) = o {
                out.insert(name.clone());
            }
        };
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.context_keys(out);
                b.context_keys(out);
            }
            Expr::Not(e) => e.context_keys(out),
            Expr::Compare(a, _, b) => {
                operand(a);
                operand(b);
            }
            Expr::In(a, _) | Expr::StartsWith(a, _) | Expr::Within(a, _) => operand(a),
        }
    }
}

// ---- lexing -------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Ident(s) => write!(f, "`{s}`"),
            Kind::Str(_) => f.write_str("a string"),
            Kind::Num(_) => f.write_str("a number"),
            Kind::Op(o) => write!(f, "`{o}`"),
            Kind::LParen => f.write_str("`(`"),
            Kind::RParen => f.write_str("`)`"),
            Kind::LBracket => f.write_str("`[`"),
            Kind::RBracket => f.write_str("`]`"),
            Kind::Comma => f.write_str("`,`"),
            Kind::Dot => f.write_str("`.`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    pos: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, ConditionError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |pos: usize, message: String| ConditionError {
        position: pos,
        message,
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let simple = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Some(Kind::LParen),
            b')' => Some(Kind::RParen),
            b'[' => Some(Kind::LBracket),
            b']' => Some(Kind::RBracket),
            b',' => Some(Kind::Comma),
            b'.' => Some(Kind::Dot),
            _ => None,
        };
        if let Some(kind) = simple {
            out.push(Token { kind, pos: start });
            i += 1;
            continue;
        }
        let two = bytes.get(i + 1).copied();
        let op = match (c, two) {
            (b'=', Some(b'=')) => Some(("==", 2)),
            (b'!', Some(b'=')) => Some(("!=", 2)),
            (b'<', Some(b'=')) => Some(("<=", 2)),
            (b'>', Some(b'=')) => Some((">=", 2)),
            (b'<', _) => Some(("<", 1)),
            (b'>', _) => Some((">", 1)),
            _ => None,
        };
        if let Some((op, len)) = op {
            out.push(Token {
                kind: Kind::Op(op),
                pos: start,
            });
            i += len;
            continue;
        }
        if c == b'"' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&b) = bytes.get(i) else {
                    return Err(err(start, "a string is not closed".to_owned()));
                };
                match b {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        match bytes.get(i + 1) {
                            Some(b'"') => s.push('"'),
                            Some(b'\\') => s.push('\\'),
                            _ => {
                                return Err(err(
                                    i,
                                    "only \\\" and \\\\ may be escaped in a string".to_owned(),
                                ))
                            }
                        }
                        i += 2;
                    }
                    _ => {
                        // A whole UTF-8 character.
                        let ch = text[i..]
                            .chars()
                            .next()
                            .ok_or_else(|| err(i, "invalid text inside a string".to_owned()))?;
                        if ch.is_control() {
                            return Err(err(i, "a control character inside a string".to_owned()));
                        }
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            out.push(Token {
                kind: Kind::Str(s),
                pos: start,
            });
            continue;
        }
        if c.is_ascii_digit() || (c == b'-' && two.is_some_and(|d| d.is_ascii_digit())) {
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                // A dot followed by a letter ends the number (not that any operand allows it).
                if bytes[i] == b'.' && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    break;
                }
                i += 1;
            }
            let n: f64 = text[start..i]
                .parse()
                .map_err(|_| err(start, format!("`{}` is not a number", &text[start..i])))?;
            if !n.is_finite() {
                return Err(err(start, "the number is too large".to_owned()));
            }
            out.push(Token {
                kind: Kind::Num(n),
                pos: start,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Token {
                kind: Kind::Ident(text[start..i].to_owned()),
                pos: start,
            });
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or('?');
        return Err(err(start, format!("unexpected character {ch:?}")));
    }
    Ok(out)
}

// ---- parsing ------------------------------------------------------------------------

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    limits: &'a ConditionLimits,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn pos(&self) -> usize {
        self.peek().map_or(self.end, |t| t.pos)
    }

    fn error_at(&self, position: usize, message: String) -> ConditionError {
        ConditionError { position, message }
    }

    fn expected(&self, what: &str) -> ConditionError {
        match self.peek() {
            Some(t) => self.error_at(t.pos, format!("expected {what}, found {}", t.kind)),
            None => self.error_at(self.end, format!("expected {what}, found the end")),
        }
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Kind::Ident(s), .. }) if s == word)
    }

    fn eat(&mut self, kind: &Kind, what: &str) -> Result<usize, ConditionError> {
        match self.peek() {
            Some(t) if &t.kind == kind => {
                let pos = t.pos;
                self.at += 1;
                Ok(pos)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn deeper(&self, depth: usize) -> Result<usize, ConditionError> {
        if depth >= self.limits.max_depth {
            return Err(self.error_at(
                self.pos(),
                format!(
                    "the condition nests deeper than {} levels",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(depth + 1)
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ConditionError> {
        let depth = self.deeper(depth)?;
        let mut left = self.and(depth)?;
        while self.keyword("OR") {
            self.at += 1;
            let right = self.and(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ConditionError> {
        let mut left = self.not(depth)?;
        while self.keyword("AND") {
            self.at += 1;
            let right = self.not(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self, depth: usize) -> Result<Expr, ConditionError> {
        if self.keyword("NOT") {
            self.at += 1;
            let depth = self.deeper(depth)?;
            return Ok(Expr::Not(Box::new(self.not(depth)?)));
        }
        if matches!(
            self.peek(),
            Some(Token {
                kind: Kind::LParen,
                ..
            })
        ) {
            self.at += 1;
            let inner = self.or(depth)?;
            self.eat(&Kind::RParen, "`)`")?;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ConditionError> {
        let left = self.operand()?;
        let pos = self.pos();
        match self.next().map(|t| t.kind) {
            Some(Kind::Op(op)) => {
                let op = match op {
                    "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                let right = self.operand()?;
                Ok(Expr::Compare(left, op, right))
            }
            Some(Kind::Ident(w)) if w == "in" => {
                self.eat(&Kind::LBracket, "`[` starting a list")?;
                let mut items = Vec::new();
                if !matches!(
                    self.peek(),
                    Some(Token {
                        kind: Kind::RBracket,
                        ..
                    })
                ) {
                    loop {
                        if items.len() >= self.limits.max_list {
                            return Err(self.error_at(
                                self.pos(),
                                format!("a list holds at most {} values", self.limits.max_list),
                            ));
                        }
                        items.push(self.literal()?);
                        if matches!(
                            self.peek(),
                            Some(Token {
                                kind: Kind::Comma,
                                ..
                            })
                        ) {
                            self.at += 1;
                            continue;
                        }
                        break;
                    }
                }
                self.eat(&Kind::RBracket, "`,` or `]`")?;
                Ok(Expr::In(left, items))
            }
            Some(Kind::Ident(w)) if w == "startswith" => match self.literal_at()? {
                (Literal::Str(s), _) => Ok(Expr::StartsWith(left, s)),
                (_, at) => Err(self.error_at(at, "startswith takes a string".to_owned())),
            },
            Some(Kind::Ident(w)) if w == "within" => match self.literal_at()? {
                (Literal::Str(s), at) => {
                    let net = s
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| self.error_at(at, format!("{s:?} is not a network (CIDR)")))?;
                    Ok(Expr::Within(left, net))
                }
                (_, at) => Err(self.error_at(at, "within takes a network in quotes".to_owned())),
            },
            _ => Err(self.error_at(
                pos,
                "expected a comparison (==, !=, <, <=, >, >=, in, startswith, within)".to_owned(),
            )),
        }
    }

    fn literal_at(&mut self) -> Result<(Literal, usize), ConditionError> {
        let at = self.pos();
        Ok((self.literal()?, at))
    }

    fn literal(&mut self) -> Result<Literal, ConditionError> {
        match self.peek().map(|t| t.kind.clone()) {
            Some(Kind::Str(s)) => {
                self.at += 1;
                Ok(Literal::Str(s))
            }
            Some(Kind::Num(n)) => {
                self.at += 1;
                Ok(Literal::Num(n))
            }
            Some(Kind::Ident(w)) if w == "true" || w == "false" => {
                self.at += 1;
                Ok(Literal::Bool(w == "true"))
            }
            _ => Err(self.expected("a string, a number, true or false")),
        }
    }

    fn name_after_dot(&mut self) -> Result<String, ConditionError> {
        self.eat(&Kind::Dot, "`.`")?;
        match self.next() {
            Some(Token {
                kind: Kind::Ident(name),
                ..
            }) => Ok(name),
            _ => {
                self.at -= 1;
                Err(self.expected("a name"))
            }
        }
    }

    fn time_part(&mut self) -> Result<TimePart, ConditionError> {
        // The position of the name, after the dot.
        let at = self.tokens.get(self.at + 1).map_or(self.end, |t| t.pos);
        match self.name_after_dot()?.as_str() {
            "hour" => Ok(TimePart::Hour),
            "weekday" => Ok(TimePart::Weekday),
            "date" => Ok(TimePart::Date),
            other => Err(self.error_at(
                at,
                format!("unknown time part `{other}` (hour, weekday or date)"),
            )),
        }
    }

    fn operand(&mut self) -> Result<Operand, ConditionError> {
        let at = self.pos();
        let word = match self.peek().map(|t| t.kind.clone()) {
            Some(Kind::Ident(w)) if w != "true" && w != "false" => w,
            _ => return self.literal().map(Operand::Literal),
        };
        self.at += 1;
        match word.as_str() {
            "context" => Ok(Operand::Context(self.name_after_dot()?)),
            "principal" => {
                let what = self.name_after_dot()?;
                if what != "metadata" {
                    return Err(self.error_at(at, "expected principal.metadata.NAME".to_owned()));
                }
                Ok(Operand::Metadata(self.name_after_dot()?))
            }
            "request" => {
                if self.name_after_dot()? != "ip" {
                    return Err(self.error_at(at, "expected request.ip".to_owned()));
                }
                Ok(Operand::RequestIp)
            }
            "time" => Ok(Operand::Time(self.time_part()?, None)),
            "local" => {
                self.eat(&Kind::LParen, "`(` after local")?;
                let zone_at = self.pos();
                let Literal::Str(zone) = self.literal()? else {
                    return Err(
                        self.error_at(zone_at, "local takes a zone name in quotes".to_owned())
                    );
                };
                let tz = jiff::tz::db()
                    .get(&zone)
                    .map_err(|_| self.error_at(zone_at, format!("unknown time zone {zone:?}")))?;
                self.eat(&Kind::RParen, "`)`")?;
                Ok(Operand::Time(self.time_part()?, Some(tz)))
            }
            other => Err(self.error_at(
                at,
                format!(
                    "unknown name `{other}` (context.NAME, principal.metadata.NAME, request.ip, \
                     time.PART, local(\"Zone\").PART)"
                ),
            )),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(s: &str) -> Condition {
        Condition::parse(s, &ConditionLimits::default()).unwrap()
    }

    fn input<'a>(
        context: &'a Map<String, Json>,
        metadata: &'a Map<String, Json>,
    ) -> ConditionInput<'a> {
        ConditionInput {
            context,
            metadata,
            ip: Some("10.1.2.3".parse().unwrap()),
            // 2026-12-01 10:30:00 UTC, a Tuesday.
            now: Timestamp::from_unix(1_796_121_000),
        }
    }

    fn map(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_language_of_api_md_evaluates() {
        let ctx = map(json!({"region": "eu", "tier": 3, "tags": ["a", "b"], "beta": true}));
        let md = map(json!({"customer": "acme"}));
        let i = input(&ctx, &md);
        for (text, want) in [
            (r#"context.region in ["eu", "us"]"#, true),
            (r#"context.region == "us""#, false),
            (r#"context.region != "us""#, true),
            ("context.tier >= 3 AND context.tier < 4", true),
            ("context.beta == true", true),
            (r#"context.tags in ["b"]"#, true),
            (r#"principal.metadata.customer startswith "ac""#, true),
            (r#"request.ip within "10.0.0.0/8""#, true),
            (r#"request.ip within "192.168.0.0/16""#, false),
            ("time.hour == 10", true),
            (r#"time.weekday in ["mon", "tue"]"#, true),
            (r#"time.date == "2026-12-01""#, true),
            (r#"local("Europe/Berlin").hour == 11"#, true),
            (r#"local("Asia/Tokyo").date == "2026-12-01""#, true),
            (r#"NOT (context.region == "us") OR context.tier > 10"#, true),
            (
                r#"context.region == "eu" AND NOT context.beta == false"#,
                true,
            ),
            // Different types: false, and != true.
            (r#"context.tier == "3""#, false),
            (r#"context.tier != "3""#, true),
            (r#"context.region < 5"#, false),
        ] {
            assert_eq!(cond(text).holds(&i), want, "{text}");
        }
    }

    #[test]
    fn a_missing_value_makes_the_whole_condition_false_even_under_not() {
        let empty = Map::new();
        let i = ConditionInput {
            ip: None,
            ..input(&empty, &empty)
        };
        for text in [
            r#"context.region == "eu""#,
            r#"NOT context.region == "eu""#,
            r#"context.region != "eu""#,
            r#"NOT (context.region in ["eu"])"#,
            r#"context.x == 1 OR time.hour >= 0"#,
            r#"request.ip within "0.0.0.0/0""#,
            r#"NOT principal.metadata.customer == "x""#,
        ] {
            assert!(!cond(text).holds(&i), "{text}");
        }
    }

    #[test]
    fn errors_give_the_position() {
        let limits = ConditionLimits::default();
        for (text, position) in [
            ("context.region ==", 17),
            ("context.region = \"eu\"", 15),
            ("contex.region == 1", 0),
            ("context.region == \"eu", 18),
            ("(context.a == 1", 15),
            ("context.a == 1 AND", 18),
            ("time.minute == 3", 5),
            ("local(\"Mars/Olympus\").hour == 1", 6),
            ("request.ip within \"300.0.0.0/8\"", 18),
            ("context.a == 1 context.b == 2", 15),
            ("context.a in [1, 2", 18),
            ("context.a == 1 # comment", 15),
        ] {
            let e = Condition::parse(text, &limits).unwrap_err();
            assert_eq!(e.position, position, "{text}: {e}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = ConditionLimits {
            max_length: 64,
            max_depth: 3,
            max_list: 2,
        };
        let long = format!("context.a == \"{}\"", "x".repeat(64));
        assert!(Condition::parse(&long, &limits).is_err());
        assert!(Condition::parse("NOT NOT NOT NOT context.a == 1", &limits).is_err());
        assert!(Condition::parse("((((context.a == 1))))", &limits).is_err());
        assert!(Condition::parse("context.a in [1, 2, 3]", &limits).is_err());
        assert!(Condition::parse("context.a in [1, 2]", &limits).is_ok());
    }

    #[test]
    fn context_keys_are_collected() {
        let c = cond(r#"context.a == 1 AND (context.b in ["x"] OR principal.metadata.c == 2)"#);
        assert_eq!(
            c.context_keys().into_iter().collect::<Vec<_>>(),
            vec!["a".to_owned(), "b".to_owned()]
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,80}") {
            let _ = Condition::parse(&s, &ConditionLimits::default());
        }

        #[test]
        fn parsing_never_panics_on_near_misses(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "context.a", "==", "!=", "<", "in", "[", "]", ",", "(", ")", "AND", "OR",
                    "NOT", "\"eu\"", "1", "-2.5", "true", "time.hour", "local(\"UTC\").date",
                    "request.ip", "within", "\"10.0.0.0/8\"", "startswith", "principal.metadata.x",
                ]),
                0..16,
            )
        ) {
            let text = parts.join(" ");
            let _ = Condition::parse(&text, &ConditionLimits::default());
        }
    }
}
