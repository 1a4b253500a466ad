//! The fitter thread, and the fits of a run put together: the thread fits locations while the read
//! still streams later ones in ([`fit_locations`]); [`fit_all_and_collect`] fits scope `all` on the
//! whole matrix meanwhile and puts both into [`FitResults`], in scope order.
//!
//! Apart from [`super::fit`] (the numerics), so the fit knows nothing of the read: the read hands
//! the fit a design matrix, and this module takes what the read produced to the fit.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::fit::{FitError, LineFit, fit_owned};
use super::read::{LocationColumns, Samples};
use super::{SCOPE_ALL, ScopeFit, SkippedScope};

/// Locations queued for the fitter thread at most. Two keep it busy while the next one decodes.
pub(crate) const FITTER_QUEUE: usize = 2;

/// Fits scope all on the whole matrix while the fitter finishes the last locations, then puts the
/// two together.
pub(crate) async fn fit_all_and_collect(
    samples: Arc<Samples>,
    fitter: tokio::task::JoinHandle<Vec<(usize, Result<LineFit, FitError>)>>,
    min_samples: u64,
) -> anyhow::Result<FitResults> {
    let all = {
        let samples = Arc::clone(&samples);
        tokio::task::spawn_blocking(move || samples.matrix.fit_all())
    };
    let (all, by_location) = tokio::join!(all, fitter);
    let all = all.context("the scope-all fit panicked")?;
    let by_location = by_location.context("the location fitter panicked")?;
    Ok(assemble(&samples, all, by_location, min_samples))
}

/// The fitter thread: fits locations in arrival (key) order until the reader closes the queue.
pub(crate) fn fit_locations(
    mut queue: tokio::sync::mpsc::Receiver<LocationColumns>,
    cancel: &CancellationToken,
) -> Vec<(usize, Result<LineFit, FitError>)> {
    let mut fits = Vec::new();
    while let Some(loc) = queue.blocking_recv() {
        // The reader reports the interruption; stop working for it.
        if cancel.is_cancelled() {
            break;
        }
        fits.push((loc.index, fit_owned(loc.wind, loc.temp)));
    }
    fits
}

/// Fits and skips of a run, in scope order (`all`, then locations by key): what the plots are
/// drawn from and the write stores.
#[derive(Debug, Clone)]
pub(crate) struct FitResults {
    /// Rows in the design matrix.
    pub(crate) rows: usize,
    /// Locations among them.
    pub(crate) locations: usize,
    /// Rows left out for a NaN or infinite value.
    pub(crate) non_finite: u64,
    /// Fitted scopes.
    pub(crate) fits: Vec<ScopeFit>,
    /// For each fitted location, its index into [`Samples::locations`] (fits[i + 1]).
    pub(crate) fitted_locations: Vec<usize>,
    /// Scopes without a result.
    pub(crate) skipped: Vec<SkippedScope>,
}

/// Puts the scope-all fit and the fitter's results together.
fn assemble(
    samples: &Samples,
    all: Result<LineFit, FitError>,
    by_location: Vec<(usize, Result<LineFit, FitError>)>,
    min_samples: u64,
) -> FitResults {
    let mut assembled = FitResults {
        rows: samples.matrix.len(),
        locations: samples.locations.len(),
        non_finite: samples.non_finite,
        fits: Vec::new(),
        fitted_locations: Vec::new(),
        skipped: Vec::new(),
    };
    let all = match all {
        Ok(fit) => fit,
        // Every location is a subset of scope all: when all cannot be fitted (no rows, one row, a
        // single wind speed) nor can any location, and the run is skipped as a whole.
        Err(e) => {
            assembled.skipped.push(SkippedScope {
                scope: SCOPE_ALL.to_owned(),
                n: samples.matrix.len(),
                reason: e.to_string(),
            });
            return assembled;
        }
    };
    assembled.fits.push(ScopeFit {
        scope: SCOPE_ALL.to_owned(),
        fit: all,
    });
    let mut results = by_location.into_iter().peekable();
    for (index, loc) in samples.locations.iter().enumerate() {
        let n = loc.rows.len();
        let result = match results.next_if(|(i, _)| *i == index) {
            Some((_, result)) => result,
            None if (n as u64) < min_samples => {
                assembled.skipped.push(SkippedScope {
                    scope: loc.key.clone(),
                    n,
                    reason: format!("{n} samples, fewer than min_samples ({min_samples})"),
                });
                continue;
            }
            None => Err(FitError::Solver("the fitter did not report this location".into())),
        };
        match result {
            Ok(fit) => {
                assembled.fitted_locations.push(index);
                assembled.fits.push(ScopeFit {
                    scope: loc.key.clone(),
                    fit,
                });
            }
            Err(e) => assembled.skipped.push(SkippedScope {
                scope: loc.key.clone(),
                n,
                reason: e.to_string(),
            }),
        }
    }
    assembled
}
