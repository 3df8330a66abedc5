//! Layout of JSON text the harness does itself, as a second opinion on
//! `policy::compact`: pretty-printing as `JSON.stringify(v, null, 2)` does
//! (what a client that logs or hand-writes its frames sends), and removing
//! whitespace between tokens.
//!
//! Both only touch whitespace outside strings, so the text keeps its value.

/// `json` (known to be JSON) with a newline and two spaces per level after
/// every `{`, `[` and `,`, before every closing `}` and `]` of a non-empty
/// container, and a space after every `:`. Whitespace already there stays:
/// nothing is removed.
pub fn pretty(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    // Per open container: whether it has content (a newline before its end).
    let mut open: Vec<bool> = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    let newline = |out: &mut String, level: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', 2 * level));
    };
    for (i, c) in json.char_indices() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let closer = if c == '{' { '}' } else { ']' };
                let empty = json[i + 1..]
                    .trim_start_matches([' ', '\t', '\n', '\r'])
                    .starts_with(closer);
                open.push(!empty);
                if !empty {
                    newline(&mut out, open.len());
                }
            }
            '}' | ']' => {
                if open.pop() == Some(true) {
                    newline(&mut out, open.len());
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, open.len());
            }
            ':' => out.push_str(": "),
            _ => out.push(c),
        }
    }
    out
}

/// `json` (known to be JSON) without whitespace outside strings.
pub fn compact(json: &str) -> String {
    let (mut in_string, mut escaped) = (false, false);
    json.chars()
        .filter(|&c| {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
                true
            } else {
                in_string = c == '"';
                !matches!(c, ' ' | '\t' | '\n' | '\r')
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_is_what_json_stringify_writes() {
        let text = r#"{"a":[1,{"b":"x, y: [z] \" {"}],"c":{},"d":[]}"#;
        // JSON.stringify(JSON.parse(compact), null, 2) in node.
        let node = "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"x, y: [z] \\\" {\"\n    }\n  ],\n  \"c\": {},\n  \"d\": []\n}";
        assert_eq!(pretty(text), node);
        assert_eq!(compact(node), text);
        assert_eq!(compact(&pretty("[ 1 ,\t{ } ]")), "[1,{}]");
    }
}
