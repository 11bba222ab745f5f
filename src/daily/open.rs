//! `countable open`: the local environment's URL on stdout, and the same page in a
//! browser when there is a display (`open` on macOS; `xdg-open` on a desktop session,
//! which honours `$BROWSER`). Without one (ssh, CI) the URL alone is the answer.

use crate::process;

/// The program that opens a URL in a browser here, if there is a display to show it on.
/// `env` reads an environment variable (the process's, in production).
pub fn browser(env: impl Fn(&str) -> Option<String>, macos: bool) -> Option<&'static str> {
    if macos {
        return Some("open");
    }
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|k| env(k).is_some_and(|v| !v.is_empty()));
    display.then_some("xdg-open")
}

/// Open `url` in a browser if there is one to open; what was used, if anything.
pub fn open(url: &str) -> anyhow::Result<Option<&'static str>> {
    let Some(program) = browser(|k| std::env::var(k).ok(), cfg!(target_os = "macos")) else {
        return Ok(None);
    };
    if !process::exists(program) {
        return Ok(None);
    }
    process::launch(program, &[url])?;
    Ok(Some(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_only_where_there_is_a_display() {
        let none = |_: &str| None;
        assert_eq!(browser(none, false), None);
        assert_eq!(browser(none, true), Some("open"));
        let x11 = |k: &str| (k == "DISPLAY").then(|| ":0".to_string());
        assert_eq!(browser(x11, false), Some("xdg-open"));
        let wayland = |k: &str| (k == "WAYLAND_DISPLAY").then(|| "wayland-0".to_string());
        assert_eq!(browser(wayland, false), Some("xdg-open"));
        let empty = |k: &str| (k == "DISPLAY").then(String::new);
        assert_eq!(browser(empty, false), None);
    }
}
