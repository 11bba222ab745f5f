//! Where the plain-SQL filter stands, quote-wise, byte by byte: inside a dollar-quoted
//! body or a string literal a line never starts a statement.
//!
//! It keeps state across calls, so a line may come in pieces of any size; it holds at
//! most one dollar-quote tag and never looks back at bytes it has passed.

/// The longest dollar-quote tag tracked; a longer run is not taken as a tag (pg_dump
/// writes `$$`, `$_$`, `$__$`, …).
const MAX_TAG: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq)]
enum State {
    #[default]
    Code,
    /// After one `-` in code: a second one starts a comment.
    Dash,
    /// `--` up to the end of the line.
    Comment,
    /// After `$` in code, reading what may be a tag (without its `$`s).
    Opening(Vec<u8>),
    /// Inside `$tag$ … $tag$`; `matched` bytes of the closing tag seen so far.
    Dollar { tag: Vec<u8>, matched: usize },
    /// Inside `'…'` (pg_dump writes standard-conforming strings, so `''` is the only
    /// escape and toggles twice).
    Single,
}

#[derive(Debug, Clone, Default)]
pub struct Quotes {
    state: State,
}

impl Quotes {
    /// Inside a dollar-quoted body or a string literal.
    pub fn inside(&self) -> bool {
        matches!(self.state, State::Dollar { .. } | State::Single)
    }

    /// Advance over `bytes`, the next piece of the stream.
    pub fn scan(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match &mut self.state {
                State::Single => {
                    // Skip to the closing quote at once: string literals hold the big values.
                    match bytes[i..].iter().position(|c| *c == b'\'') {
                        Some(at) => {
                            i += at;
                            self.state = State::Code;
                        }
                        None => return,
                    }
                }
                State::Comment => match bytes[i..].iter().position(|c| *c == b'\n') {
                    Some(at) => {
                        i += at;
                        self.state = State::Code;
                    }
                    None => return,
                },
                State::Dollar { tag, matched } => {
                    if b == tag[*matched] {
                        *matched += 1;
                        if *matched == tag.len() {
                            self.state = State::Code;
                        }
                    } else {
                        // The tag's inner bytes hold no `$`, so a new match can only
                        // start at this byte, and only if it is a `$`.
                        *matched = usize::from(b == b'$');
                    }
                }
                State::Opening(name) => {
                    let tag_byte = b.is_ascii_alphanumeric() || b == b'_';
                    if b == b'$' {
                        let mut tag = Vec::with_capacity(name.len() + 2);
                        tag.push(b'$');
                        tag.extend_from_slice(name);
                        tag.push(b'$');
                        self.state = State::Dollar { tag, matched: 0 };
                    } else if tag_byte
                        && !(name.is_empty() && b.is_ascii_digit())
                        && name.len() < MAX_TAG
                    {
                        name.push(b);
                    } else {
                        // Not a tag: look at this byte again as code.
                        self.state = State::Code;
                        continue;
                    }
                }
                State::Dash => {
                    if b == b'-' {
                        self.state = State::Comment;
                    } else {
                        self.state = State::Code;
                        continue;
                    }
                }
                State::Code => match b {
                    b'\'' => self.state = State::Single,
                    b'-' => self.state = State::Dash,
                    b'$' => self.state = State::Opening(Vec::new()),
                    _ => {}
                },
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(lines: &[&str]) -> bool {
        let mut q = Quotes::default();
        for l in lines {
            q.scan(l.as_bytes());
        }
        q.inside()
    }

    #[test]
    fn tracks_dollar_bodies_strings_and_comments() {
        assert!(after(&["AS $$\n"]));
        assert!(!after(&["AS $$\n", "x\n", "$$;\n"]));
        assert!(after(&["AS $body$\n", "$$ not the end\n"]));
        assert!(!after(&["AS $body$\n", "$bo$body$;\n"]));
        assert!(after(&["COMMENT ON t IS 'a;\n"]));
        assert!(!after(&["COMMENT ON t IS 'it''s';\n"]));
        assert!(!after(&["SELECT 1; -- it's a comment\n"]));
        assert!(!after(&["SELECT $1$ x\n"]), "$1 is a parameter, not a tag");
        assert!(after(&["SELECT '-- not a comment\n"]));
    }

    #[test]
    fn pieces_of_any_size_give_the_same_answer() {
        let text = "AS $fn$ body 'x' -- y\n $f$fn$; SELECT 'a''b' -- c'\n$$x";
        for cut in 0..text.len() {
            let mut whole = Quotes::default();
            whole.scan(text.as_bytes());
            let mut parts = Quotes::default();
            parts.scan(&text.as_bytes()[..cut]);
            parts.scan(&text.as_bytes()[cut..]);
            assert_eq!(parts.state, whole.state, "cut at {cut}");
        }
    }
}
