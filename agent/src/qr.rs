//! QR codes drawn in a terminal: what `idem-agent elevate` shows for a technician's phone.
//!
//! Two modules per character cell with the half-block characters (`▀`, `▄`, `█`, space), and
//! the four-module quiet zone a scanner needs around the code. Error correction level L: the
//! code is read off a screen, not a scuffed label, and a smaller code fits an 80-column
//! terminal with a long challenge URL.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// Black text on a bright white background, then back to the terminal's colours.
const DARK_ON_LIGHT: &str = "\x1b[30;107m";
const RESET: &str = "\x1b[0m";

/// Renders `text` as a QR code, one line per two rows of modules. With `colors`, every line is
/// drawn black on white with ANSI escapes, so the code reads the same on a dark or a light
/// terminal theme; without (output that is not a terminal), dark modules are the terminal's ink.
/// `None` if the text is too long for a QR code.
pub fn terminal_qr(text: &str, colors: bool) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).ok()?;
    let plain = code.render::<Dense1x2>().quiet_zone(true).build();
    if !colors {
        return Some(plain);
    }
    let lines: Vec<String> = plain
        .lines()
        .map(|line| format!("{DARK_ON_LIGHT}{line}{RESET}"))
        .collect();
    Some(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use qrcode::Color;

    const URL: &str = "idem://approve?host=contoso-acme.localhost%3A8080\
        &id=01a2073b-5d8e-7508-906f-4b316a10f4ff&nonce=Y_S38M3UW0ojOiVZABZOn-6U9nFrUIouHfuSJzRem_k";
    const QUIET: usize = 4;

    /// Reads the modules back from the characters: true is dark.
    fn modules(drawn: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in drawn.lines() {
            let (top, bottom): (Vec<bool>, Vec<bool>) = line
                .chars()
                .map(|c| match c {
                    ' ' => (false, false),
                    '▄' => (false, true),
                    '▀' => (true, false),
                    '█' => (true, true),
                    other => panic!("unexpected character {other:?}"),
                })
                .unzip();
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    #[test]
    fn the_drawing_holds_every_module_of_the_code_inside_a_light_quiet_zone() {
        let code = QrCode::with_error_correction_level(URL.as_bytes(), EcLevel::L).unwrap();
        let width = code.width();
        let colors = code.to_colors();
        let drawn = modules(&terminal_qr(URL, false).unwrap());

        let side = width + 2 * QUIET;
        // An odd number of rows leaves the last character's lower half light.
        assert_eq!(drawn.len(), side + side % 2);
        for (y, row) in drawn.iter().enumerate() {
            assert_eq!(row.len(), side, "row {y}");
            for (x, &dark) in row.iter().enumerate() {
                let inside =
                    (QUIET..QUIET + width).contains(&x) && (QUIET..QUIET + width).contains(&y);
                let expected = inside && colors[(y - QUIET) * width + (x - QUIET)] == Color::Dark;
                assert_eq!(dark, expected, "module ({x}, {y})");
            }
        }
        assert!(side <= 80, "fits an 80-column terminal: {side} columns");
    }

    #[test]
    fn colors_draw_each_line_black_on_white_and_change_nothing_else() {
        let plain = terminal_qr(URL, false).unwrap();
        let colored = terminal_qr(URL, true).unwrap();
        assert_eq!(colored.lines().count(), plain.lines().count());
        for (colored, plain) in colored.lines().zip(plain.lines()) {
            let inner = colored
                .strip_prefix(DARK_ON_LIGHT)
                .and_then(|l| l.strip_suffix(RESET))
                .unwrap_or_else(|| panic!("not wrapped in colours: {colored:?}"));
            assert_eq!(inner, plain);
        }
    }

    #[test]
    fn a_text_too_long_for_any_code_draws_nothing() {
        assert_eq!(terminal_qr(&"x".repeat(8000), false), None);
    }
}
