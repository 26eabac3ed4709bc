//! What an approver reads is what runs: guest text with line breaks,
//! terminal escapes and bidirectional overrides cannot forge lines or hide
//! text in `approvals list`, `audit log` or `audit explain`, and scopes
//! carrying such characters are refused at parse time.

use anyhow::Result;
use clancy_guests::HOSTILE;

use crate::crash::Scene;
use crate::env::{clancy, stderr};

/// A post that tries to forge an audit line and an approver's line, clear
/// the terminal line and reverse the text after it.
const FORGED: &str = "hello\n#9999 2026-01-01T00:00:00Z boss: decision on ap-000000000000: approved by admin\n  why: \"the CEO said so\"\x1b[2K\u{202e}elpmaxe.live\u{200b}";

fn assert_nothing_raw(what: &str, text: &str) {
    for bad in ['\x1b', '\u{202e}', '\u{200b}', '\r'] {
        assert!(!text.contains(bad), "{what} shows a raw {bad:?}:\n{text}");
    }
    for line in text.lines() {
        assert!(
            !line.starts_with("#9999") && !line.starts_with("  why: \"the CEO"),
            "{what} shows a forged line {line:?}:\n{text}"
        );
    }
}

#[test]
fn guest_text_cannot_forge_lines_or_hide_text_on_the_approvers_screen_or_in_the_log() -> Result<()>
{
    let scene = Scene::new(HOSTILE)?;
    scene.queue(FORGED)?;
    let (code, list) = scene.clancy(&["approvals", "list"])?;
    assert_eq!(code, Some(0));
    assert_nothing_raw("approvals list", &list);
    // The text is all there, escaped, behind the gutter of the guest's block.
    assert!(
        list.contains("    | hello")
            && list.contains("    | #9999 2026-01-01T00:00:00Z boss")
            && list.contains("\\u{1b}[2K\\u{202e}elpmaxe.live\\u{200b}"),
        "{list}"
    );
    let (_, log) = scene.clancy(&["audit", "log"])?;
    assert_nothing_raw("audit log", &log);
    assert!(log.contains("started: post hello\\n#9999"), "{log}");
    // Every line of the log is an entry or the reason under one.
    for line in log.lines() {
        assert!(
            line.starts_with('#')
                || line.starts_with("      why: ")
                || line.starts_with("        "),
            "a line that is not an entry: {line:?}"
        );
    }
    // The record itself keeps the exact text that would run.
    let (_, json) = scene.clancy(&["approvals", "list", "--json"])?;
    let request: serde_json::Value = serde_json::from_str(json.trim())?;
    assert_eq!(request["request"]["operation"]["text"], FORGED);
    let task = request["request"]["task"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (code, explain) = scene.clancy(&["audit", "explain", &task])?;
    assert_eq!(code, Some(0));
    assert_nothing_raw("audit explain", &explain);
    assert!(explain.contains("\\u{202e}elpmaxe.live"), "{explain}");
    Ok(())
}

#[test]
fn scopes_with_control_bidirectional_or_invisible_characters_are_refused_at_parse_time()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    for scope in [
        "channel:#gen\u{202e}lareneg",
        "channel:#general\u{200b}",
        "channel:#gen\u{7}",
        "label:support\u{2066}",
    ] {
        let integration = if scope.starts_with("label") {
            "gmail"
        } else {
            "slack"
        };
        // TOML's own escapes, so the characters reach the parser as they are.
        let toml_scope: String = scope
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() {
                    c.to_string()
                } else {
                    format!("\\u{:04X}", c as u32)
                }
            })
            .collect();
        let manifest = dir.path().join("employee.toml");
        std::fs::write(
            &manifest,
            format!(
                "name = \"x\"\ncomponent = {HOSTILE:?}\n[[grant]]\nintegration = \"{integration}\"\nscope = \"{toml_scope}\"\nactions = [\"read\"]\n"
            ),
        )?;
        let o = clancy(
            &dir.path().join("data"),
            &["check", &manifest.to_string_lossy()],
        )?;
        assert_eq!(o.status.code(), Some(2), "{scope:?}");
        assert!(
            stderr(&o).contains("no control, bidirectional or invisible characters"),
            "{scope:?}: {}",
            stderr(&o)
        );
    }
    Ok(())
}
