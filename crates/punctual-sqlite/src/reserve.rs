//! Space held back on the database's filesystem, so that a full disk stops new jobs but not
//! the ones already stored (issue 8, item 3).
//!
//! Owns one file beside the database (`<database>-reserve`, `SqliteOptions::disk_reserve`
//! bytes) and the writer's notion of "low on space". When a write fails because the disk is
//! full, the writer deletes the file: the space it held is what claims, completions, retries
//! and rescues then write into (they mostly rewrite rows in place and reuse the WAL, so they
//! need little), while inserts are refused at once, without touching the file, until the
//! reserve can be written again. The writer tries that at most once per `PROBE_EVERY`; when
//! it succeeds, space has returned and inserts are taken again. Must not: refuse a write that
//! is not an insert, or block the writer for long (a probe is one file of a few MiB, written
//! without fsync: the filesystem allocates at write time, and a crash loses nothing stored).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Least time between two attempts to take the reserve back while space is low.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Bytes written per call while filling the reserve.
const BLOCK: usize = 64 * 1024;

pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
    /// Whether the file holds its space now. `false` is "low on space": inserts are refused.
    held: bool,
    last_probe: Option<Instant>,
}

impl Reserve {
    /// The reserve for the database at `database`, taken at once if there is room (an existing
    /// file of the right size is kept). With `bytes == 0` there is none, and a file left by an
    /// earlier configuration is removed.
    pub(crate) fn open(database: &Path, bytes: u64) -> Reserve {
        let mut name = database.as_os_str().to_owned();
        name.push("-reserve");
        let mut reserve = Reserve {
            path: PathBuf::from(name),
            bytes,
            held: false,
            last_probe: None,
        };
        if bytes == 0 {
            let _ = std::fs::remove_file(&reserve.path);
            reserve.held = true;
            return reserve;
        }
        let kept = std::fs::metadata(&reserve.path).is_ok_and(|file| file.len() == bytes);
        reserve.held = kept || reserve.take();
        if !reserve.held {
            tracing::warn!(
                "no room for the {bytes}-byte disk reserve at {}: new jobs are refused until \
                 there is",
                reserve.path.display()
            );
        }
        reserve
    }

    /// True while space is low and inserts are refused.
    pub(crate) fn low(&self) -> bool {
        !self.held
    }

    /// A write failed for want of space: give the reserve's space to the writes that keep
    /// stored jobs moving. Does nothing when the reserve was already given (or there is none).
    pub(crate) fn release(&mut self) {
        if !self.held || self.bytes == 0 {
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::warn!(
                "the disk holding {} is full: released the {}-byte reserve for the jobs \
                 already stored; new jobs are refused until space returns",
                self.path.display(),
                self.bytes
            ),
            Err(error) => tracing::warn!(
                "the disk is full and the reserve {} could not be removed: {error}",
                self.path.display()
            ),
        }
        self.held = false;
        self.last_probe = Some(Instant::now());
    }

    /// While space is low, at most once per `PROBE_EVERY`, tries to take the reserve back;
    /// returns true when it did (space has returned).
    pub(crate) fn probe(&mut self, now: Instant) -> bool {
        if self.held {
            return false;
        }
        if self
            .last_probe
            .is_some_and(|last| now.duration_since(last) < PROBE_EVERY)
        {
            return false;
        }
        self.last_probe = Some(now);
        self.held = self.take();
        if self.held {
            tracing::info!(
                "space has returned on the disk holding {}: new jobs are taken again",
                self.path.display()
            );
        }
        self.held
    }

    /// Writes the reserve file in full; on failure removes what was written.
    fn take(&self) -> bool {
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&self.path)?;
            // Not zeros: a compressing filesystem would store those in no space at all.
            let block: Vec<u8> = (0..BLOCK)
                .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let mut left = self.bytes;
            while left > 0 {
                let part = left.min(BLOCK as u64) as usize;
                file.write_all(&block[..part])?;
                left -= part as u64;
            }
            file.flush()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        written.is_ok()
    }
}
