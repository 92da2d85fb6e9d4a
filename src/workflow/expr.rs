//! The decision expression: a small, pure language over a run's context.
//!
//! ```text
//! expr    := or
//! or      := and ('||' and)*
//! and     := unary ('&&' unary)*
//! unary   := '!' unary | '(' expr ')' | operand (op operand)?
//! operand := path | literal
//! path    := 'context' ('.' name | '[' integer ']')*
//! literal := number | "string" | true | false | null
//! op      := == | != | < | <= | > | >=
//! ```
//!
//! Why this small: a decision is read by people deciding why a run took a branch, so it must be
//! obvious what it means, and it runs on the coordinator, so it must be total and cheap — no
//! calls, no loops, no arithmetic. Evaluation never fails: a path that is not in the context is
//! `null`; `==` and `!=` compare JSON values (numbers by value: `1 == 1.0`); `<`, `<=`, `>`, `>=`
//! hold only between two numbers or two strings; an operand on its own holds only when it is
//! `true`. Written by hand: a dozen rules do not need a parser crate. Property-tested below
//! (printing and parsing again gives the same tree; evaluation follows the rules of logic).

use std::fmt;

use serde_json::Value;

/// The longest expression accepted (bytes): a definition is read on every advance of a run.
pub const MAX_LEN: usize = 4096;
/// The deepest nesting of `!` and parentheses accepted: parsing recurses.
const MAX_DEPTH: usize = 64;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One step of a path: an object's field or an array's element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `.name`
    Field(String),
    /// `[i]`
    Index(usize),
}

/// An operand: a path into the context or a JSON literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `context.a.b[0]`
    Path(Vec<Step>),
    /// A number, string, boolean or null.
    Literal(Value),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a || b`
    Or(Box<Expr>, Box<Expr>),
    /// `a && b`
    And(Box<Expr>, Box<Expr>),
    /// `!a`
    Not(Box<Expr>),
    /// `a op b`
    Cmp(Operand, Op, Operand),
    /// An operand alone: holds when it is `true`.
    Is(Operand),
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Path(steps) => {
                f.write_str("context")?;
                for s in steps {
                    match s {
                        Step::Field(n) => write!(f, ".{n}")?,
                        Step::Index(i) => write!(f, "[{i}]")?,
                    }
                }
                Ok(())
            }
            Operand::Literal(v) => write!(f, "{v}"),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or(a, b) => write!(f, "({a} || {b})"),
            Expr::And(a, b) => write!(f, "({a} && {b})"),
            Expr::Not(a) => write!(f, "!{a}"),
            Expr::Cmp(a, op, b) => write!(f, "{a} {} {b}", op.as_str()),
            Expr::Is(a) => write!(f, "{a}"),
        }
    }
}

/// Parse an expression; the error says where and what was expected.
pub fn parse(text: &str) -> Result<Expr, String> {
    if text.len() > MAX_LEN {
        return Err(format!("is {} bytes long; at most {MAX_LEN}", text.len()));
    }
    let mut p = Parser { s: text.as_bytes(), i: 0, depth: 0 };
    let e = p.or()?;
    p.ws();
    if p.i < p.s.len() {
        return Err(p.err("an operator (&&, ||, ==, !=, <, <=, >, >=) or the end"));
    }
    Ok(e)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn err(&self, expected: &str) -> String {
        let rest: String = String::from_utf8_lossy(&self.s[self.i.min(self.s.len())..]).chars().take(20).collect();
        if rest.is_empty() {
            format!("expected {expected} at the end")
        } else {
            format!("expected {expected} at byte {} (`{rest}`)", self.i)
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nests deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.ws();
        if self.s[self.i..].starts_with(b"!") && !self.s[self.i..].starts_with(b"!=") {
            self.i += 1;
            self.deeper()?;
            let e = Expr::Not(Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(e);
        }
        if self.eat("(") {
            self.deeper()?;
            let e = self.or()?;
            self.depth -= 1;
            if !self.eat(")") {
                return Err(self.err("`)`"));
            }
            return Ok(e);
        }
        let a = self.operand()?;
        self.ws();
        let op = [("==", Op::Eq), ("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
            .into_iter()
            .find(|(t, _)| self.s[self.i..].starts_with(t.as_bytes()));
        match op {
            Some((t, op)) => {
                self.i += t.len();
                Ok(Expr::Cmp(a, op, self.operand()?))
            }
            None => Ok(Expr::Is(a)),
        }
    }

    fn word(&mut self) -> &str {
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or("")
    }

    fn operand(&mut self) -> Result<Operand, String> {
        self.ws();
        let Some(&c) = self.s.get(self.i) else { return Err(self.err("a path (context…) or a literal")) };
        if c == b'"' {
            return self.string().map(|s| Operand::Literal(Value::String(s)));
        }
        if c == b'-' || c.is_ascii_digit() {
            return self.number().map(Operand::Literal);
        }
        let start = self.i;
        match self.word() {
            "true" => Ok(Operand::Literal(Value::Bool(true))),
            "false" => Ok(Operand::Literal(Value::Bool(false))),
            "null" => Ok(Operand::Literal(Value::Null)),
            "context" => self.path(),
            _ => {
                self.i = start;
                Err(self.err("a path (context…) or a literal (a number, \"string\", true, false, null)"))
            }
        }
    }

    fn path(&mut self) -> Result<Operand, String> {
        let mut steps = Vec::new();
        loop {
            if self.s[self.i..].starts_with(b".") {
                self.i += 1;
                let name = self.word().to_string();
                if name.is_empty() {
                    return Err(self.err("a field name (letters, digits, _) after `.`"));
                }
                steps.push(Step::Field(name));
            } else if self.s[self.i..].starts_with(b"[") {
                self.i += 1;
                let digits = self.word().to_string();
                let Ok(i) = digits.parse::<usize>() else { return Err(self.err("an index (digits) after `[`")) };
                if !self.s[self.i..].starts_with(b"]") {
                    return Err(self.err("`]`"));
                }
                self.i += 1;
                steps.push(Step::Index(i));
            } else {
                return Ok(Operand::Path(steps));
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        // A JSON string: its escapes are JSON's, so a printed literal parses back to itself.
        let start = self.i;
        self.i += 1;
        while self.i < self.s.len() && self.s[self.i] != b'"' {
            self.i += if self.s[self.i] == b'\\' { 2 } else { 1 };
        }
        if self.i >= self.s.len() {
            self.i = start;
            return Err(self.err("a closing `\"`"));
        }
        self.i += 1;
        let raw = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| "a string is not UTF-8".to_string())?;
        serde_json::from_str(raw).map_err(|e| format!("bad string literal at byte {start}: {e}"))
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.i;
        while self.i < self.s.len() && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
            self.i += 1;
        }
        let raw = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        match serde_json::from_str::<serde_json::Number>(raw) {
            Ok(n) => Ok(Value::Number(n)),
            Err(_) => {
                self.i = start;
                Err(self.err("a number"))
            }
        }
    }
}

/// The value at `path` in `context`; `null` when it is not there.
fn lookup<'a>(context: &'a Value, path: &[Step]) -> &'a Value {
    let mut v = context;
    for s in path {
        v = match (s, v) {
            (Step::Field(n), Value::Object(o)) => o.get(n).unwrap_or(&Value::Null),
            (Step::Index(i), Value::Array(a)) => a.get(*i).unwrap_or(&Value::Null),
            _ => &Value::Null,
        };
    }
    v
}

fn value<'a>(context: &'a Value, o: &'a Operand) -> &'a Value {
    match o {
        Operand::Path(p) => lookup(context, p),
        Operand::Literal(v) => v,
    }
}

/// JSON equality with numbers compared by value.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Evaluate on a context. Total: every expression is true or false on every context.
pub fn eval(e: &Expr, context: &Value) -> bool {
    use std::cmp::Ordering::*;
    match e {
        Expr::Or(a, b) => eval(a, context) || eval(b, context),
        Expr::And(a, b) => eval(a, context) && eval(b, context),
        Expr::Not(a) => !eval(a, context),
        Expr::Is(a) => value(context, a) == &Value::Bool(true),
        Expr::Cmp(a, op, b) => {
            let (x, y) = (value(context, a), value(context, b));
            match op {
                Op::Eq => equal(x, y),
                Op::Ne => !equal(x, y),
                Op::Lt => order(x, y) == Some(Less),
                Op::Le => matches!(order(x, y), Some(Less | Equal)),
                Op::Gt => order(x, y) == Some(Greater),
                Op::Ge => matches!(order(x, y), Some(Greater | Equal)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn examples() {
        let ctx = json!({"extract": {"rows": 120, "ok": true, "name": "a\"b"}, "list": [1, 2]});
        for (text, want) in [
            ("context.extract.rows > 100", true),
            ("context.extract.rows >= 120 && context.extract.ok", true),
            ("context.extract.rows < 100 || !context.extract.ok", false),
            ("!(context.extract.rows == 120)", false),
            ("context.extract.rows == 120.0", true),
            ("context.missing == null", true),
            ("context.missing > 0", false),
            ("context.list[1] == 2", true),
            ("context.extract.name == \"a\\\"b\"", true),
            ("\"b\" > \"a\"", true),
            ("context.extract.ok != true", false),
            ("context.extract", false),
        ] {
            assert_eq!(eval(&parse(text).unwrap(), &ctx), want, "{text}");
        }
    }

    #[test]
    fn errors_say_where() {
        for (text, needle) in [
            ("", "at the end"),
            ("context.a >", "at the end"),
            ("rows > 1", "at byte 0"),
            ("context.a > 1 )", "at byte 14"),
            ("(context.a", "`)`"),
            ("context.", "a field name"),
            ("context[x]", "an index"),
            ("\"open", "closing"),
            ("context.a = 1", "at byte 10"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(parse(&"!".repeat(100)).unwrap_err().contains("deeper"));
        assert!(parse(&"x".repeat(MAX_LEN + 1)).unwrap_err().contains("at most"));
    }

    fn operand() -> impl Strategy<Value = Operand> {
        prop_oneof![
            proptest::collection::vec(
                prop_oneof!["[a-z_][a-z0-9_]{0,6}".prop_map(Step::Field), (0usize..5).prop_map(Step::Index)],
                0..4
            )
            .prop_map(Operand::Path),
            any::<i32>().prop_map(|n| Operand::Literal(json!(n))),
            "[ -~]{0,8}".prop_map(|s| Operand::Literal(json!(s))),
            any::<bool>().prop_map(|b| Operand::Literal(json!(b))),
            Just(Operand::Literal(Value::Null)),
        ]
    }

    fn expr() -> impl Strategy<Value = Expr> {
        let op = prop_oneof![Just(Op::Eq), Just(Op::Ne), Just(Op::Lt), Just(Op::Le), Just(Op::Gt), Just(Op::Ge)];
        let leaf = prop_oneof![
            (operand(), op, operand()).prop_map(|(a, o, b)| Expr::Cmp(a, o, b)),
            operand().prop_map(Expr::Is),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
                inner.prop_map(|a| Expr::Not(Box::new(a))),
            ]
        })
    }

    fn context() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i32>().prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(|s| json!(s)),
            any::<bool>().prop_map(|b| json!(b)),
            Just(Value::Null),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_][a-z0-9_]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What is printed parses back to the same tree.
        #[test]
        fn printed_expressions_parse_back(e in expr()) {
            let text = e.to_string();
            prop_assert_eq!(parse(&text), Ok(e), "{}", text);
        }

        /// Parsing never panics, whatever the text.
        #[test]
        fn parsing_any_text_answers(text in "[ -~]{0,40}") {
            let _ = parse(&text);
        }

        /// Evaluation follows logic: negation, De Morgan, and `!=` is `!(==)`.
        #[test]
        fn evaluation_follows_logic(a in expr(), b in expr(), x in operand(), y in operand(), ctx in context()) {
            let not = |e: &Expr| Expr::Not(Box::new(e.clone()));
            prop_assert_eq!(eval(&not(&a), &ctx), !eval(&a, &ctx));
            let and = Expr::And(Box::new(a.clone()), Box::new(b.clone()));
            let or_not = Expr::Or(Box::new(not(&a)), Box::new(not(&b)));
            prop_assert_eq!(!eval(&and, &ctx), eval(&or_not, &ctx));
            prop_assert_eq!(
                eval(&Expr::Cmp(x.clone(), Op::Ne, y.clone()), &ctx),
                !eval(&Expr::Cmp(x.clone(), Op::Eq, y.clone()), &ctx)
            );
            // An order between two values holds one way at most.
            let lt = eval(&Expr::Cmp(x.clone(), Op::Lt, y.clone()), &ctx);
            let gt = eval(&Expr::Cmp(x.clone(), Op::Gt, y.clone()), &ctx);
            prop_assert!(!(lt && gt));
            prop_assert_eq!(eval(&Expr::Cmp(x.clone(), Op::Lt, y.clone()), &ctx), eval(&Expr::Cmp(y, Op::Gt, x), &ctx));
        }
    }
}
