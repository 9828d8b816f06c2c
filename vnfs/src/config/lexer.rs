//! The grammar of the config language: words, statements and blocks, and
//! the errors found in them. Knows no statement's meaning: the framework
//! (`config/`) and each feature read the statement tree it builds.
//!
//! It also keeps every statement honest: each [`Word`] remembers whether a
//! parser looked at it, and once everything is read [`refuse_unread`]
//! refuses the first word of each statement that nobody read (`check tcp
//! foo`). A parser therefore only reads the words it understands; the
//! words after them are refused for it, new settings included.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use core::ops::Deref;

/// One problem in a config text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl ConfigError {
    pub fn at(tok: &Token<'_>, message: impl Into<String>) -> Self {
        ConfigError { line: tok.line, column: tok.column, message: message.into() }
    }

    /// `file:line:column: message`, the format editors and CI logs understand.
    pub fn display<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        struct D<'a>(&'a ConfigError, &'a str);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}:{}:{}: {}", self.1, self.0.line, self.0.column, self.0.message)
            }
        }
        D(self, file)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Token<'a> {
    pub text: &'a str,
    pub line: u32,
    pub column: u32,
}

/// A word of a statement as parsers see it: its [`Token`] (through
/// `Deref`: `word.text`, `*word`), and whether a parser has looked at it.
/// Looking is reading: a word whose text, line or column nobody asked for
/// was not understood by anyone, and [`refuse_unread`] says so.
#[derive(Debug)]
pub struct Word<'a> {
    token: Token<'a>,
    read: Cell<bool>,
}

impl<'a> Word<'a> {
    fn new(token: Token<'a>) -> Self {
        Word { token, read: Cell::new(false) }
    }
}

impl<'a> Deref for Word<'a> {
    type Target = Token<'a>;

    fn deref(&self) -> &Token<'a> {
        self.read.set(true);
        &self.token
    }
}

/// A statement: its words, and its block if it had one.
#[derive(Debug)]
pub struct Stmt<'a> {
    pub words: Vec<Word<'a>>,
    pub block: Option<Vec<Stmt<'a>>>,
}

/// Splits one line into tokens. Linear in the line's length: the column
/// is counted as the scan goes, never recomputed from the line's start.
fn tokenize_line<'a>(line: &'a str, line_no: u32, out: &mut Vec<Token<'a>>) {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    // (byte offset, column) of the word being read.
    let mut start: Option<(usize, u32)> = None;
    let mut column = 0u32;
    for (i, c) in line.char_indices() {
        column = column.saturating_add(1);
        if c.is_whitespace() || c == '{' || c == '}' || c == ';' {
            if let Some((s, col)) = start.take() {
                out.push(Token { text: &line[s..i], line: line_no, column: col });
            }
            if c == '{' || c == '}' || c == ';' {
                out.push(Token { text: &line[i..i + 1], line: line_no, column });
            }
        } else if start.is_none() {
            start = Some((i, column));
        }
    }
    if let Some((s, col)) = start {
        out.push(Token { text: &line[s..], line: line_no, column: col });
    }
}

/// Blocks may nest this deep (the grammar uses one level; the rest is
/// room). Deeper input is refused, so nothing that walks the statement
/// tree, its drop included, recurses more than this.
pub const MAX_DEPTH: usize = 4;
/// Statements a config may hold (a million routes fit).
pub const MAX_STATEMENTS: usize = 1 << 21;
/// Errors reported in full; the rest are counted ("… and N more").
pub const MAX_ERRORS: usize = 100;

/// The errors of one parse: the first [`MAX_ERRORS`] kept, the rest only
/// counted, so a hostile text of a million errors costs no more memory or
/// response size than a hundred. `len` counts them all.
#[derive(Debug, Default)]
pub struct Errors {
    kept: Vec<ConfigError>,
    more: usize,
    first_dropped: Option<(u32, u32)>,
}

impl Errors {
    pub fn push(&mut self, e: ConfigError) {
        if self.kept.len() < MAX_ERRORS {
            self.kept.push(e);
        } else {
            self.more += 1;
            let at = (e.line, e.column);
            self.first_dropped = Some(self.first_dropped.map_or(at, |f| f.min(at)));
        }
    }

    /// Pushes the error `message()` builds at `tok`, building it only if
    /// it will be kept (a flood of errors costs a count each, not a string).
    pub fn push_at(&mut self, tok: &Token<'_>, message: impl FnOnce() -> String) {
        if self.kept.len() < MAX_ERRORS {
            self.kept.push(ConfigError::at(tok, message()));
        } else {
            self.push(ConfigError { line: tok.line, column: tok.column, message: String::new() });
        }
    }

    pub fn len(&self) -> usize {
        self.kept.len() + self.more
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept errors in line order, then one line for the rest.
    pub fn into_vec(mut self) -> Vec<ConfigError> {
        self.kept.sort_by_key(|e| (e.line, e.column));
        if let Some((line, column)) = self.first_dropped {
            self.kept.push(ConfigError {
                line,
                column,
                message: format!(
                    "… and {} more error(s) from here on (only the first {MAX_ERRORS} are shown)",
                    self.more
                ),
            });
        }
        self.kept
    }
}

/// Splits the text into statements and blocks. `;` ends a statement like a
/// newline does, so a whole config fits on a kernel command line.
/// Linear in the text's length; blocks deeper than [`MAX_DEPTH`] and
/// statements beyond [`MAX_STATEMENTS`] are errors.
pub fn parse_statements<'a>(text: &'a str, top_keywords: &[&str], errors: &mut Errors) -> Vec<Stmt<'a>> {
    // Open blocks: (opening token, statement words, children).
    let mut stack: Vec<(Token<'a>, Vec<Word<'a>>, Vec<Stmt<'a>>)> = Vec::new();
    let mut top: Vec<Stmt<'a>> = Vec::new();
    let mut count = 0usize;
    // `{`s beyond the depth limit: their blocks are skipped whole.
    let mut skipped = 0usize;
    let mut tokens = Vec::new();
    let finish = |words: &mut Vec<Word<'a>>,
                  stack: &mut Vec<(Token<'a>, Vec<Word<'a>>, Vec<Stmt<'a>>)>,
                  top: &mut Vec<Stmt<'a>>,
                  count: &mut usize,
                  errors: &mut Errors| {
        if words.is_empty() {
            return;
        }
        *count += 1;
        if *count > MAX_STATEMENTS {
            if *count == MAX_STATEMENTS + 1 {
                errors.push(ConfigError::at(&words[0], format!("more than {MAX_STATEMENTS} statements")));
            }
            words.clear();
            return;
        }
        if stack.is_empty() && !top_keywords.contains(&words[0].text) {
            // Refused here, before a statement is built: a flood of
            // unknown lines costs a count each.
            let kw = *words[0];
            errors.push_at(&kw, || {
                format!("unknown statement `{}`: expected one of {}", kw.text, top_keywords.join(", "))
            });
            words.clear();
            return;
        }
        let stmt = Stmt { words: core::mem::take(words), block: None };
        match stack.last_mut() {
            Some((_, _, children)) => children.push(stmt),
            None => top.push(stmt),
        }
    };
    let mut words: Vec<Word<'a>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        tokens.clear();
        tokenize_line(line, u32::try_from(i + 1).unwrap_or(u32::MAX), &mut tokens);
        for &tok in &tokens {
            if skipped > 0 {
                match tok.text {
                    "{" => skipped += 1,
                    "}" => skipped -= 1,
                    _ => {}
                }
                continue;
            }
            match tok.text {
                "{" => {
                    if words.is_empty() {
                        errors.push(ConfigError::at(&tok, "`{` must follow a statement on the same line"));
                    } else if stack.len() >= MAX_DEPTH {
                        errors.push(ConfigError::at(
                            &tok,
                            format!("blocks nest at most {MAX_DEPTH} deep; this block and everything in it is ignored"),
                        ));
                        words.clear();
                        skipped = 1;
                    } else {
                        stack.push((tok, core::mem::take(&mut words), Vec::new()));
                    }
                }
                "}" => {
                    finish(&mut words, &mut stack, &mut top, &mut count, errors);
                    match stack.pop() {
                        Some((_, words, children)) => {
                            let stmt = Stmt { words, block: Some(children) };
                            match stack.last_mut() {
                                Some((_, _, c)) => c.push(stmt),
                                None => top.push(stmt),
                            }
                        }
                        None => errors.push(ConfigError::at(&tok, "`}` without an open block")),
                    }
                }
                ";" => finish(&mut words, &mut stack, &mut top, &mut count, errors),
                _ => words.push(Word::new(tok)),
            }
        }
        finish(&mut words, &mut stack, &mut top, &mut count, errors);
    }
    while let Some((open, words, children)) = stack.pop() {
        errors.push(ConfigError::at(
            &open,
            format!("block of `{}` is never closed: add a line with `}}`", words[0].text),
        ));
        let stmt = Stmt { words, block: Some(children) };
        match stack.last_mut() {
            Some((_, _, c)) => c.push(stmt),
            None => top.push(stmt),
        }
    }
    top
}

/// Collects `key value` pairs from the words after `skip` and from a block
/// (one `key value` per line; more words on a line are left unread, so
/// [`refuse_unread`] refuses them).
pub fn key_values<'a>(stmt: &Stmt<'a>, skip: usize, errors: &mut Errors) -> Vec<(Token<'a>, Option<Token<'a>>)> {
    let mut out = Vec::new();
    let mut rest = stmt.words.get(skip..).unwrap_or(&[]);
    while let Some((k, tail)) = rest.split_first() {
        out.push((**k, tail.first().map(|v| **v)));
        rest = tail.get(1..).unwrap_or(&[]);
    }
    for child in stmt.block.iter().flatten() {
        let k = *child.words[0];
        if child.block.is_some() {
            errors.push(ConfigError::at(&k, format!("`{}` does not take a block", k.text)));
            continue;
        }
        out.push((k, child.words.get(1).map(|v| **v)));
    }
    out
}

/// Refuses, in every statement, the first word no parser read: a word
/// nobody understood (`check tcp foo`, `vrf blue red`), or a whole line
/// in the block of a statement that takes no block. Called once every
/// statement is parsed. A statement that already has an error is left
/// alone (its parser may have stopped reading at the error), and so are
/// the lines of a block its parser never opened because of one. Linear in
/// the number of words; walks the tree with a stack, not recursion.
pub fn refuse_unread(stmts: &[Stmt<'_>], errors: &mut Errors) {
    // Where errors stand already, sorted: a lookup per statement.
    let mut marked: Vec<(u32, u32)> = errors.kept.iter().map(|e| (e.line, e.column)).collect();
    marked.sort_unstable();
    // Whether a statement has an error: on its line, from its first word
    // (or column 1, where line-wide errors stand) to its last.
    let has_error = |s: &Stmt<'_>| {
        let (Some(first), Some(last)) = (s.words.first(), s.words.last()) else { return false };
        let (first, last) = (&first.token, &last.token);
        let i = marked.partition_point(|&m| m < (first.line, 1));
        marked[i..]
            .iter()
            .take_while(|&&(line, column)| line == first.line && column <= last.column)
            .any(|&(_, column)| column == 1 || column >= first.column)
    };
    // (statement, its parent's keyword and whether the parent had an error).
    let mut stack: Vec<(&Stmt<'_>, Option<(&Token<'_>, bool)>)> = stmts.iter().rev().map(|s| (s, None)).collect();
    while let Some((stmt, parent)) = stack.pop() {
        let Some(kw) = stmt.words.first() else { continue };
        let failed = has_error(stmt);
        if !kw.read.get() {
            // Its parent never looked into this line of its block.
            let Some((parent, parent_failed)) = parent else { continue };
            if !parent_failed {
                let t = &kw.token;
                errors.push_at(t, || {
                    format!(
                        "unexpected `{}` in the block of `{}`: nothing there reads it (does `{}` take a block?)",
                        t.text, parent.text, parent.text
                    )
                });
            }
            continue;
        }
        if !failed {
            if let Some(w) = stmt.words.iter().find(|w| !w.read.get()) {
                let (t, kw) = (&w.token, &kw.token);
                errors.push_at(t, || {
                    format!("unexpected word `{}` in `{}`: the statement is complete without it", t.text, kw.text)
                });
            }
        }
        for child in stmt.block.iter().flatten().rev() {
            stack.push((child, Some((&kw.token, failed))));
        }
    }
}
