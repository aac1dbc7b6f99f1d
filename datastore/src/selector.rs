//! Calico's label selector language (`nodeSelector`, `peerSelector`): parsing with nom and
//! evaluation against a label map.
//!
//! Grammar (whitespace allowed between tokens):
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" expr ")" | "all()" | "global()" | "has(" key ")"
//!          | key "==" value | key "!=" value
//!          | key "in" set | key "not in" set
//!          | key "contains" value | key "starts with" value | key "ends with" value
//! set     := "{" [ value ( "," value )* ] "}"
//! value   := "'" chars "'" | '"' chars '"'
//! key     := [A-Za-z0-9_./-]+
//! ```
//!
//! The empty selector selects nothing when used as a peer selector in Calico; callers decide what
//! an absent selector means, `Selector::parse("")` is an error.

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::{char, multispace0};
use nom::combinator::{all_consuming, map, value};
use nom::multi::separated_list0;
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};
use std::collections::BTreeMap;

/// A parsed selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `all()`: every label set.
    All,
    /// `has(key)`.
    Has(String),
    /// `key == 'value'`.
    Eq(String, String),
    /// `key != 'value'` (also true when the key is absent).
    Ne(String, String),
    /// `key in {'a', 'b'}`.
    In(String, Vec<String>),
    /// `key not in {'a', 'b'}`.
    NotIn(String, Vec<String>),
    /// `!expr`.
    Not(Box<Selector>),
    /// `a && b`.
    And(Box<Selector>, Box<Selector>),
    /// `a || b`.
    Or(Box<Selector>, Box<Selector>),
    /// `global()`: in a policy's namespace selector, what is not in a namespace (Calico's
    /// host endpoints and global network sets); as a label match it selects nothing.
    Global,
    /// `key contains 'part'`.
    Contains(String, String),
    /// `key starts with 'prefix'`.
    StartsWith(String, String),
    /// `key ends with 'suffix'`.
    EndsWith(String, String),
}

/// The selector text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {text:?}: cannot parse at {rest:?}")]
pub struct SelectorError {
    /// The whole selector.
    pub text: String,
    /// Where parsing stopped.
    pub rest: String,
}

impl Selector {
    /// Parses a selector expression.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        match all_consuming(delimited(multispace0, expr, multispace0)).parse(text) {
            Ok((_, s)) => Ok(s),
            Err(e) => {
                let rest = match e {
                    nom::Err::Error(e) | nom::Err::Failure(e) => e.input.to_string(),
                    nom::Err::Incomplete(_) => String::new(),
                };
                Err(SelectorError {
                    text: text.to_string(),
                    rest,
                })
            }
        }
    }

    /// Whether a label set matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Eq(k, v) => labels.get(k) == Some(v),
            Selector::Ne(k, v) => labels.get(k) != Some(v),
            Selector::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Selector::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.contains(l)),
            Selector::Not(s) => !s.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
            Selector::Global => false,
            Selector::Contains(k, v) => labels.get(k).is_some_and(|l| l.contains(v.as_str())),
            Selector::StartsWith(k, v) => labels.get(k).is_some_and(|l| l.starts_with(v.as_str())),
            Selector::EndsWith(k, v) => labels.get(k).is_some_and(|l| l.ends_with(v.as_str())),
        }
    }

    /// The `key == 'value'` terms every match must satisfy (those joined by `&&` at the top):
    /// an index of labels can narrow the label sets worth testing to those holding one of them.
    /// Empty when the selector names none (`all()`, `has(k)`, an `||`, ...).
    pub fn required_labels(&self) -> Vec<(&str, &str)> {
        match self {
            Selector::Eq(k, v) => vec![(k.as_str(), v.as_str())],
            Selector::In(k, vs) if vs.len() == 1 => vec![(k.as_str(), vs[0].as_str())],
            Selector::And(a, b) => {
                let mut out = a.required_labels();
                out.extend(b.required_labels());
                out
            }
            _ => Vec::new(),
        }
    }

    /// Parses a selector where Calico reads the empty string (or only spaces) as `all()`.
    pub fn parse_or_all(text: &str) -> Result<Selector, SelectorError> {
        if text.trim().is_empty() {
            Ok(Selector::All)
        } else {
            Selector::parse(text)
        }
    }

    /// `a && b`.
    pub fn and(a: Selector, b: Selector) -> Selector {
        match (a, b) {
            (Selector::All, s) | (s, Selector::All) => s,
            (a, b) => Selector::And(Box::new(a), Box::new(b)),
        }
    }

    /// The same selector over labels named `prefix` + key (Calico's `pcns.` namespace labels
    /// and `pcsa.` service-account labels); `all()` becomes `all_as` and `global()` becomes
    /// `global_as`.
    pub fn with_prefix(&self, prefix: &str, all_as: &Selector, global_as: &Selector) -> Selector {
        let k = |key: &String| format!("{prefix}{key}");
        let rec = |s: &Selector| Box::new(s.with_prefix(prefix, all_as, global_as));
        match self {
            Selector::All => all_as.clone(),
            Selector::Global => global_as.clone(),
            Selector::Has(key) => Selector::Has(k(key)),
            Selector::Eq(key, v) => Selector::Eq(k(key), v.clone()),
            Selector::Ne(key, v) => Selector::Ne(k(key), v.clone()),
            Selector::In(key, vs) => Selector::In(k(key), vs.clone()),
            Selector::NotIn(key, vs) => Selector::NotIn(k(key), vs.clone()),
            Selector::Contains(key, v) => Selector::Contains(k(key), v.clone()),
            Selector::StartsWith(key, v) => Selector::StartsWith(k(key), v.clone()),
            Selector::EndsWith(key, v) => Selector::EndsWith(k(key), v.clone()),
            Selector::Not(s) => Selector::Not(rec(s)),
            Selector::And(a, b) => Selector::And(rec(a), rec(b)),
            Selector::Or(a, b) => Selector::Or(rec(a), rec(b)),
        }
    }
}

fn set_text(vs: &[String]) -> String {
    vs.iter()
        .map(|v| format!("'{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for Selector {
    /// Calico's canonical text, fully parenthesised where operators nest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Global => f.write_str("global()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Eq(k, v) => write!(f, "{k} == '{v}'"),
            Selector::Ne(k, v) => write!(f, "{k} != '{v}'"),
            Selector::In(k, vs) => write!(f, "{k} in {{{}}}", set_text(vs)),
            Selector::NotIn(k, vs) => write!(f, "{k} not in {{{}}}", set_text(vs)),
            Selector::Contains(k, v) => write!(f, "{k} contains '{v}'"),
            Selector::StartsWith(k, v) => write!(f, "{k} starts with '{v}'"),
            Selector::EndsWith(k, v) => write!(f, "{k} ends with '{v}'"),
            Selector::Not(s) => write!(f, "!({s})"),
            Selector::And(a, b) => write!(f, "({a} && {b})"),
            Selector::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

fn ws<'a, O>(
    p: impl Parser<&'a str, Output = O, Error = nom::error::Error<&'a str>>,
) -> impl Parser<&'a str, Output = O, Error = nom::error::Error<&'a str>> {
    delimited(multispace0, p, multispace0)
}

fn expr(i: &str) -> IResult<&str, Selector> {
    let (mut i, mut acc) = and_expr(i)?;
    while let Ok((rest, rhs)) = preceded(ws(tag("||")), and_expr).parse(i) {
        acc = Selector::Or(Box::new(acc), Box::new(rhs));
        i = rest;
    }
    Ok((i, acc))
}

fn and_expr(i: &str) -> IResult<&str, Selector> {
    let (mut i, mut acc) = unary(i)?;
    while let Ok((rest, rhs)) = preceded(ws(tag("&&")), unary).parse(i) {
        acc = Selector::And(Box::new(acc), Box::new(rhs));
        i = rest;
    }
    Ok((i, acc))
}

fn unary(i: &str) -> IResult<&str, Selector> {
    alt((
        map(preceded(ws(char('!')), unary), |s| {
            Selector::Not(Box::new(s))
        }),
        ws(primary),
    ))
    .parse(i)
}

fn primary(i: &str) -> IResult<&str, Selector> {
    alt((
        delimited(char('('), ws(expr), char(')')),
        value(Selector::All, (tag("all"), ws(char('(')), char(')'))),
        value(Selector::Global, (tag("global"), ws(char('(')), char(')'))),
        map(
            (tag("has"), ws(char('(')), ws(key), char(')')),
            |(_, _, k, _)| Selector::Has(k.to_string()),
        ),
        comparison,
    ))
    .parse(i)
}

fn comparison(i: &str) -> IResult<&str, Selector> {
    let (i, k) = key(i)?;
    let k = k.to_string();
    alt((
        map(preceded(ws(tag("==")), quoted), {
            let k = k.clone();
            move |v| Selector::Eq(k.clone(), v.to_string())
        }),
        map(preceded(ws(tag("!=")), quoted), {
            let k = k.clone();
            move |v| Selector::Ne(k.clone(), v.to_string())
        }),
        map(preceded((ws(tag("not")), ws(tag("in"))), set), {
            let k = k.clone();
            move |vs| Selector::NotIn(k.clone(), vs)
        }),
        map(preceded(ws(tag("contains")), quoted), {
            let k = k.clone();
            move |v| Selector::Contains(k.clone(), v.to_string())
        }),
        map(preceded((ws(tag("starts")), ws(tag("with"))), quoted), {
            let k = k.clone();
            move |v| Selector::StartsWith(k.clone(), v.to_string())
        }),
        map(preceded((ws(tag("ends")), ws(tag("with"))), quoted), {
            let k = k.clone();
            move |v| Selector::EndsWith(k.clone(), v.to_string())
        }),
        map(preceded(ws(tag("in")), set), move |vs| {
            Selector::In(k.clone(), vs)
        }),
    ))
    .parse(i)
}

fn set(i: &str) -> IResult<&str, Vec<String>> {
    map(
        delimited(
            ws(char('{')),
            separated_list0(ws(char(',')), ws(quoted)),
            ws(char('}')),
        ),
        |vs| vs.into_iter().map(str::to_string).collect(),
    )
    .parse(i)
}

fn key(i: &str) -> IResult<&str, &str> {
    take_while1(|c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')).parse(i)
}

fn quoted(i: &str) -> IResult<&str, &str> {
    alt((
        delimited(char('\''), take_while(|c| c != '\''), char('\'')),
        delimited(char('"'), take_while(|c| c != '"'), char('"')),
    ))
    .parse(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn all_matches_empty_and_nonempty_labels() {
        assert!(sel("all()").matches(&labels(&[])));
        assert!(sel(" all( ) ").matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn required_labels_are_the_equalities_every_match_needs() {
        let s = sel("app == 'web' && tier in {'a'} && has(x)");
        assert_eq!(s.required_labels(), vec![("app", "web"), ("tier", "a")]);
        assert!(
            sel("app == 'web' || app == 'db'")
                .required_labels()
                .is_empty()
        );
        assert!(sel("!(app == 'web')").required_labels().is_empty());
        assert!(sel("all()").required_labels().is_empty());
        // Whatever matches holds every required label.
        let l = labels(&[("app", "web"), ("tier", "a"), ("x", "")]);
        assert!(s.matches(&l));
        for (k, v) in s.required_labels() {
            assert_eq!(l.get(k).map(String::as_str), Some(v));
        }
    }

    #[test]
    fn has_checks_key_presence_only() {
        let s = sel("has(route-reflector)");
        assert!(s.matches(&labels(&[("route-reflector", "")])));
        assert!(!s.matches(&labels(&[("rack", "a")])));
    }

    #[test]
    fn equality_and_inequality_with_both_quote_styles() {
        let l = labels(&[("rack", "r1")]);
        assert!(sel("rack == 'r1'").matches(&l));
        assert!(sel("rack==\"r1\"").matches(&l));
        assert!(!sel("rack == 'r2'").matches(&l));
        assert!(sel("rack != 'r2'").matches(&l));
        assert!(sel("zone != 'x'").matches(&l), "absent key is != anything");
        assert!(!sel("rack != 'r1'").matches(&l));
    }

    #[test]
    fn set_membership_and_negated_membership() {
        let l = labels(&[("zone", "b")]);
        assert!(sel("zone in {'a', 'b'}").matches(&l));
        assert!(!sel("zone in {'a','c'}").matches(&l));
        assert!(sel("zone not in {'a','c'}").matches(&l));
        assert!(!sel("zone not in {'b'}").matches(&l));
        assert!(!sel("rack in {}").matches(&l));
        assert!(sel("rack not in {'x'}").matches(&l));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // a || b && c  ==  a || (b && c)
        let s = sel("has(a) || has(b) && has(c)");
        assert!(s.matches(&labels(&[("a", "")])));
        assert!(!s.matches(&labels(&[("b", "")])));
        assert!(s.matches(&labels(&[("b", ""), ("c", "")])));
    }

    #[test]
    fn parentheses_and_negation_change_grouping() {
        let s = sel("(has(a) || has(b)) && !has(c)");
        assert!(s.matches(&labels(&[("b", "")])));
        assert!(!s.matches(&labels(&[("b", ""), ("c", "")])));
        assert!(sel("!(rack == 'r1')").matches(&labels(&[("rack", "r2")])));
        assert!(sel("!!has(a)").matches(&labels(&[("a", "")])));
    }

    #[test]
    fn string_operators_and_global_parse_and_match() {
        let l = labels(&[("app", "web-frontend")]);
        assert!(sel("app contains 'front'").matches(&l));
        assert!(sel("app starts with 'web-'").matches(&l));
        assert!(sel("app ends with 'end'").matches(&l));
        assert!(!sel("app ends with 'web'").matches(&l));
        assert!(
            !sel("zone contains ''").matches(&l),
            "absent key matches no operator"
        );
        assert!(!sel("global()").matches(&l));
        assert_eq!(Selector::parse_or_all("  ").unwrap(), Selector::All);
    }

    #[test]
    fn prefixing_rewrites_every_key_and_all() {
        let ns = Selector::Has("projectcalico.org/namespace".into());
        let none = Selector::Not(Box::new(ns.clone()));
        let s = sel("team == 'a' && !has(x) || all()").with_prefix("pcns.", &ns, &none);
        assert_eq!(
            s.to_string(),
            "((pcns.team == 'a' && !(has(pcns.x))) || has(projectcalico.org/namespace))"
        );
        assert_eq!(sel("global()").with_prefix("pcns.", &ns, &none), none);
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "a == 'b'",
            "(has(a) || (b in {'x', 'y'} && c not in {}))",
            "!(x starts with 'p')",
        ] {
            let s = sel(text);
            assert_eq!(sel(&s.to_string()), s, "{text}");
        }
    }

    #[test]
    fn keys_with_domain_prefix_parse() {
        let s = sel("kubernetes.io/hostname == 'node-1'");
        assert!(s.matches(&labels(&[("kubernetes.io/hostname", "node-1")])));
    }

    #[test]
    fn malformed_selectors_are_errors_naming_the_rest() {
        for bad in [
            "",
            "rack == r1",
            "has(a",
            "a &&",
            "rack = 'x'",
            "zone in {'a'",
            "all() extra",
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert_eq!(e.text, bad);
        }
        assert_eq!(
            Selector::parse("has(a) &&& has(b)")
                .unwrap_err()
                .rest
                .trim_start()
                .chars()
                .next(),
            Some('&')
        );
    }
}
