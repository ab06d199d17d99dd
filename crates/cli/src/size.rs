//! Sizes on the command line (`16KiB`, `1MiB`, `4096`) and progress bars.

use indicatif::{ProgressBar, ProgressStyle};
pub use llmpack_proxy::units::{parse_u32, parse_u64};

/// A byte progress bar on stderr; draws nothing when stderr is not a terminal.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}
