//! The in-process streams across a clean restart of a `dev` node: each
//! symbol's epoch, last `seq`, kept ticks, latest tick and candles, written to one
//! file when the node stops and read (then removed) when it starts.
//!
//! The file is removed as soon as it is read: a node that then dies without
//! saving starts its next life with fresh epochs, never reusing a `seq` of a
//! life whose ticks it did not record. Ticks are stored as the Redis bus
//! stores them ([`crate::redis::codec`]), one JSON document per file.

use std::io;
use std::path::Path;

use marketmux_core::{Epoch, Symbol, SymbolCandles, Tick};
use serde::{Deserialize, Serialize};

use crate::redis::codec;
use crate::streams::SymbolStream;

/// One symbol's saved stream.
#[derive(Serialize, Deserialize)]
struct SavedStream {
    symbol: String,
    epoch: Epoch,
    seq: u64,
    /// `(accepted ms, tick JSON)`, oldest first.
    kept: Vec<(u64, String)>,
    latest: Option<String>,
    /// The current and closed candles (absent in files written before
    /// candles existed: the symbol's candles start empty).
    #[serde(default)]
    candles: SymbolCandles,
}

/// What the file holds.
#[derive(Serialize, Deserialize)]
struct SavedStreams {
    streams: Vec<SavedStream>,
}

/// Why saved streams could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    /// The file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The system's error.
        source: io::Error,
    },
    /// The file holds something else than saved streams.
    #[error("{path}: not a saved streams file: {source}")]
    Format {
        /// The file.
        path: String,
        /// Where reading it failed.
        source: serde_json::Error,
    },
}

/// One restored stream: the symbol, its stream, its latest tick.
pub(crate) type Restored = (Symbol, SymbolStream, Option<Tick>);

/// Writes `streams` to `path` (through a temporary file and a rename, so a
/// crash mid-write leaves no half file).
pub(crate) fn save<'a>(
    path: &Path,
    streams: impl Iterator<Item = (&'a Symbol, &'a SymbolStream, Option<Tick>)>,
) -> Result<usize, SavedError> {
    let saved = SavedStreams {
        streams: streams
            .map(|(symbol, s, latest)| SavedStream {
                symbol: symbol.to_string(),
                epoch: s.epoch,
                seq: s.seq,
                kept: s
                    .kept
                    .iter()
                    .map(|(at, t)| (*at, codec::encode(t)))
                    .collect(),
                latest: latest.as_ref().map(codec::encode),
                candles: s.candles.clone(),
            })
            .collect(),
    };
    let io = |source| SavedError::Io {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_vec(&saved).map_err(|source| SavedError::Format {
        path: path.display().to_string(),
        source,
    })?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(saved.streams.len())
}

/// Reads and removes the file at `path`; nothing when there is none. An
/// entry that does not decode is skipped (logged): that symbol starts a
/// new epoch.
pub(crate) fn take(path: &Path) -> Result<Vec<Restored>, SavedError> {
    let io = |source| SavedError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    std::fs::remove_file(path).map_err(io)?;
    let saved: SavedStreams =
        serde_json::from_slice(&bytes).map_err(|source| SavedError::Format {
            path: path.display().to_string(),
            source,
        })?;
    let mut restored = Vec::with_capacity(saved.streams.len());
    for s in saved.streams {
        match restore(&s) {
            Ok(r) => restored.push(r),
            Err(why) => {
                tracing::warn!(symbol = %s.symbol, error = %why, "Saved stream skipped; the symbol starts a new epoch");
            }
        }
    }
    Ok(restored)
}

fn restore(s: &SavedStream) -> Result<Restored, String> {
    let symbol = Symbol::new(&s.symbol).map_err(|e| e.to_string())?;
    if !s.epoch.is_set() {
        return Err("no epoch".into());
    }
    let mut stream = SymbolStream::new(s.epoch, s.seq);
    stream.candles = s.candles.clone();
    for (at, json) in &s.kept {
        let tick = codec::decode(json.as_bytes()).map_err(|e| e.to_string())?;
        stream.kept.push_back((*at, tick));
    }
    // Kept ticks must be the consecutive seqs ending at the head.
    let consecutive = stream
        .kept
        .iter()
        .rev()
        .zip((0..=s.seq).rev())
        .all(|((_, t), want)| t.seq == want && t.epoch == s.epoch && t.symbol == symbol);
    if !consecutive {
        return Err("kept ticks are not the ones before the head".into());
    }
    let latest = s
        .latest
        .as_deref()
        .map(|j| codec::decode(j.as_bytes()))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok((symbol, stream, latest))
}
