//! A small block-style YAML emitter whose output means the same to YAML 1.1 and 1.2 readers.
//!
//! cloud-init reads its documents with PyYAML, a YAML 1.1 parser, while `serde_yaml` writes
//! YAML 1.2: it would emit the string `52:54:00:12:34:56` (a MAC address) or `yes` unquoted,
//! and PyYAML reads those as the integer 193330096496 (base 60) and `True`. This emitter only
//! leaves a string unquoted when it starts with a letter, `_` or `/`, uses a tiny alphabet and
//! is not one of YAML 1.1's boolean or null words; everything else is double-quoted with JSON
//! style escapes (valid in both versions), or written as a literal block when it spans lines.

use std::fmt::Write as _;

use serde_yaml::{Mapping, Value};

use super::CloudInitError;

/// Words YAML 1.1 resolves to booleans or null when unquoted (compared case-insensitively).
const YAML11_WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// Serialises `value` as block YAML safe for PyYAML. Tagged values are refused.
pub fn to_cloud_yaml(value: &Value) -> Result<String, CloudInitError> {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => mapping(m, 0, false, &mut out)?,
        Value::Sequence(s) if !s.is_empty() => sequence(s, 0, false, &mut out)?,
        other => {
            scalar(other, &mut out)?;
            out.push('\n');
        }
    }
    Ok(out)
}

fn err() -> CloudInitError {
    CloudInitError::Emit(std::fmt::Error)
}

fn pad(indent: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// Writes a block mapping at `indent`; when `inline_first`, the first key continues the
/// current line (after a sequence dash).
fn mapping(
    m: &Mapping,
    indent: usize,
    inline_first: bool,
    out: &mut String,
) -> Result<(), CloudInitError> {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(indent, out);
        }
        match k {
            Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_) => return Err(err()),
            _ => scalar(k, out)?,
        }
        out.push(':');
        node(v, indent + 2, out)?;
    }
    Ok(())
}

/// Writes a block sequence at `indent`; `inline_first` as for [`mapping`].
fn sequence(
    s: &[Value],
    indent: usize,
    inline_first: bool,
    out: &mut String,
) -> Result<(), CloudInitError> {
    for (i, v) in s.iter().enumerate() {
        if i > 0 || !inline_first {
            pad(indent, out);
        }
        out.push('-');
        match v {
            Value::Mapping(m) if !m.is_empty() => {
                out.push(' ');
                mapping(m, indent + 2, true, out)?;
            }
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push(' ');
                sequence(inner, indent + 2, true, out)?;
            }
            other => node(other, indent + 2, out)?,
        }
    }
    Ok(())
}

/// Writes the value that follows `key:` or `-`, whose children are indented by `indent`.
fn node(v: &Value, indent: usize, out: &mut String) -> Result<(), CloudInitError> {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            mapping(m, indent, false, out)
        }
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            sequence(s, indent, false, out)
        }
        Value::String(s) if literal_ok(s) => {
            literal(s, indent, out);
            Ok(())
        }
        other => {
            out.push(' ');
            scalar(other, out)?;
            out.push('\n');
            Ok(())
        }
    }
}

/// A string can be a literal block when it spans lines, does not start with white space
/// (which would need an indentation indicator) and has no character YAML treats as a line
/// break or refuses in a block (CR, NEL, LS, PS, other controls).
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\t', '\n'])
        && !s.chars().any(|c| {
            (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}')
        })
}

fn literal(s: &str, indent: usize, out: &mut String) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => " |-\n",
        1 => " |\n",
        _ => " |+\n",
    });
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(indent, out);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing {
        out.push('\n');
    }
}

fn scalar(v: &Value, out: &mut String) -> Result<(), CloudInitError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write!(out, "{n}").map_err(CloudInitError::Emit)?,
        Value::String(s) if plain_ok(s) => out.push_str(s),
        Value::String(s) => quoted(s, out),
        Value::Mapping(m) if m.is_empty() => out.push_str("{}"),
        Value::Sequence(s) if s.is_empty() => out.push_str("[]"),
        Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_) => return Err(err()),
    }
    Ok(())
}

/// True if `s` reads back as the same string, unquoted, in YAML 1.1 and 1.2.
fn plain_ok(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/');
    first_ok
        && chars
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '@' | '+' | '-'))
        && !YAML11_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

fn quoted(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                // Infallible: writing to a String.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> String {
        let text = to_cloud_yaml(v).expect("emit");
        let back: Value = serde_yaml::from_str(&text).expect("output parses");
        assert_eq!(&back, v, "round trip of:\n{text}");
        text
    }

    #[test]
    fn yaml11_lookalikes_are_quoted() {
        for s in [
            "52:54:00:12:34:56",
            "yes",
            "No",
            "ON",
            "y",
            "0644",
            "1_000",
            "2001-12-14",
            "~",
            "",
            "null",
            ".inf",
            "<<",
            "=",
            "1e3",
            "0x1f",
            "- a",
            "a: b",
            "# c",
            "[x]",
            "{x}",
            "*alias",
            "&anchor",
            "!tag",
            "%dir",
            "@x",
            "`x",
            "'x'",
            "\"x\"",
            "|",
            ">",
            "?",
        ] {
            let text = round_trip(&Value::String(s.to_owned()));
            assert!(text.starts_with('"'), "{s:?} emitted as {text}");
        }
        for s in [
            "/bin/bash",
            "alice",
            "nginx",
            "eth0",
            "ssh-ed25519",
            "a.b-c_d",
        ] {
            let text = round_trip(&Value::String(s.to_owned()));
            assert_eq!(text, format!("{s}\n"));
        }
    }

    #[test]
    fn nested_structures_and_hostile_strings_round_trip() {
        let doc: Value = serde_yaml::from_str(
            r#"
a: 1
b: [x, "y z", {c: d, e: [1, 2]}, [3, [4]], {}, []]
c: {}
d: []
e: "line1\nline2\n"
f: "  leading\nspace"
g: "no newline at end\nok"
h: "two\n\n"
i: "tab\there\r\nand \u0085 nel and \u2028 ls"
j: "quote \" and backslash \\ and \u0001"
k: null
l: true
m: -2.5
"n": "x\n  indented\n\n after blank\n"
"#,
        )
        .expect("fixture");
        let text = round_trip(&doc);
        assert!(text.contains("e: |\n  line1\n  line2\n"), "{text}");
    }

    #[test]
    fn injection_attempts_stay_one_scalar() {
        let mut m = Mapping::new();
        m.insert(
            Value::String("name".into()),
            Value::String("x\nruncmd: [reboot]\n#".into()),
        );
        m.insert(
            Value::String("other".into()),
            Value::String("\"\nruncmd: [reboot]".into()),
        );
        let v = Value::Mapping(m);
        let text = round_trip(&v);
        let back: Value = serde_yaml::from_str(&text).expect("parses");
        assert!(back.get("runcmd").is_none());
    }
}
