//! The log file's size rotation.

use std::path::{Path, PathBuf};

/// A log file for a shipper that tails files (on Cloud Run, the Datadog sidecar reads
/// `/shared-logs/logs/*.log`). When the next batch would take it past `max_bytes` it is
/// renamed to `<name>.1`, replacing the previous one, and a new file starts: the two stay under
/// 2 x `max_bytes`, and a batch holds whole lines, so no line is split across files. A tailer
/// that follows renames reads the old file to its end; `*.1` does not match `*.log`, so nothing
/// is read twice.
pub(super) struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
}

impl RotatingFile {
    pub(super) fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = Self::append(path)?;
        Ok(Self {
            path: path.to_owned(),
            written: file.metadata()?.len(),
            file,
            max_bytes,
        })
    }

    fn append(path: &Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }

    pub(super) fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        if self.written > 0 && self.written + batch.len() as u64 > self.max_bytes {
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, rotated)?;
            self.file = Self::append(&self.path)?;
            self.written = 0;
        }
        self.file.write_all(batch)?;
        self.written += batch.len() as u64;
        Ok(())
    }
}
