//! Progress of long CLI work (`mecgw policy apply`, `mecgw replay`) on stderr: bytes of the
//! input read, items per second and the time left. Drawn only when stderr is a terminal, so
//! scripts, pipes and logs see nothing of it (indicatif hides a bar whose target is not a
//! terminal).

use std::{io::Read, path::Path, time::Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `inner`, counting the lines read from it into `progress` (records of JSON lines input).
pub struct CountLines<'a, R> {
    inner: R,
    progress: &'a Progress,
    lines: u64,
    shown: u64,
}

impl<'a, R: Read> CountLines<'a, R> {
    pub fn new(inner: R, progress: &'a Progress) -> Self {
        CountLines {
            inner,
            progress,
            lines: 0,
            shown: 0,
        }
    }
}

impl<R: Read> Read for CountLines<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        if self.lines >= self.shown + 4096 || n == 0 {
            self.progress.items(self.lines);
            self.shown = self.lines;
        }
        Ok(n)
    }
}

/// A progress bar over one input file.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    /// What is counted: "records", "frames".
    unit: &'static str,
}

impl Progress {
    /// For reading `input` (its size gives the bar's length; unknown for a pipe or device).
    pub fn for_input(input: &Path, unit: &'static str) -> Progress {
        let total = std::fs::metadata(input)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template = match total {
            Some(_) => "{bar:30} {bytes}/{total_bytes} {msg}, {eta} left",
            None => "{bytes} {msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Progress {
            bar,
            start: Instant::now(),
            unit,
        }
    }

    /// Whether the bar is drawn (stderr is a terminal): without it there is nothing to
    /// count for.
    pub fn visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// `inner`, advancing the bar by what is read from it.
    pub fn reader<R: Read>(&self, inner: R) -> impl Read {
        self.bar.wrap_read(inner)
    }

    /// `n` items done so far: the message shows them and their rate. Cheap enough to call
    /// every few thousand items.
    pub fn items(&self, n: u64) {
        if self.bar.is_hidden() {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{n} {}, {:.0} {}/s",
            self.unit,
            n as f64 / secs,
            self.unit
        ));
    }

    /// Removes the bar (the command's own report follows).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_through_the_bar_passes_the_bytes_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        std::fs::write(&path, b"one\ntwo\n").unwrap();
        let p = Progress::for_input(&path, "records");
        let mut out = Vec::new();
        p.reader(std::fs::File::open(&path).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        p.items(2);
        p.finish();
        assert_eq!(out, b"one\ntwo\n");
    }
}
