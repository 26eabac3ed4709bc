//! Guest text as humans see it. Everything an employee (or a mail sender
//! whose text it copies) supplies is untrusted: a line break could forge a
//! line of the audit log or the approver's screen, a terminal escape could
//! move the cursor or hide text, a right-to-left override could make
//! `evil.example` read as something else. Every human-facing rendering of
//! guest text goes through [`line`] or [`block`], so what an approver
//! reads is what runs.
//!
//! This module only renders; it never changes what is stored or executed.

use std::fmt::Write as _;

/// Whether `c` must never reach a human's screen as itself: control
/// characters (line breaks, tabs, escapes, C1), bidirectional controls and
/// invisible format characters.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0x00AD
                | 0x034F
                | 0x061C
                | 0x115F
                | 0x1160
                | 0x17B4
                | 0x17B5
                | 0x180B..=0x180F
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x206F
                | 0x3164
                | 0xFE00..=0xFE0F
                | 0xFEFF
                | 0xFFA0
                | 0xFFF0..=0xFFFB
                | 0x1D173..=0x1D17A
                | 0xE0000..=0xE0FFF
        )
}

fn escape_into(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// One line of guest text for humans: every unsafe character (see
/// [`is_unsafe`]) is shown as an escape (`\n`, `\u{202e}`); the rest is
/// unchanged.
pub fn line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            escape_into(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// A block of guest text (a mail body, a post) for humans: one rendered line
/// per line of the text, each escaped as by [`line`] and prefixed with
/// `gutter`, so no line of it can pass for the host's own output.
pub fn block(text: &str, gutter: &str) -> String {
    text.split('\n')
        .map(|l| format!("{gutter}{}", line(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `text` is safe to show as it is (no unsafe character).
pub fn is_plain(text: &str) -> bool {
    !text.chars().any(is_unsafe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_escapes_and_bidi_overrides_are_shown_never_obeyed() {
        let forged = "ok\n#999 approved by admin\x1b[2K\u{202e}elpmaxe.live\u{200b}";
        let shown = line(forged);
        assert_eq!(
            shown,
            "ok\\n#999 approved by admin\\u{1b}[2K\\u{202e}elpmaxe.live\\u{200b}"
        );
        assert!(is_plain(&shown));
        assert_eq!(line("Grüße, 東京 – fine"), "Grüße, 東京 – fine");
    }

    #[test]
    fn a_block_keeps_its_lines_behind_the_gutter() {
        assert_eq!(
            block("Hello\n  why: \"forged\"\r", "    | "),
            "    | Hello\n    |   why: \"forged\"\\r"
        );
    }
}
