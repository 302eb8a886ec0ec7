//! Stopping a run cleanly on SIGINT (Ctrl-C) or SIGTERM.
//!
//! The signal only raises a flag. The training loop looks at it between steps (and between
//! evaluation batches): it finishes the step under way, writes `last.safetensors` at exactly the
//! position reached, so `--resume` continues bit for bit as if nothing had happened, and returns
//! [`Error::Interrupted`]; `vit` then says how to resume and exits
//! with 130, the shell's code for "ended by SIGINT". A second signal exits at once (a checkpoint
//! write under way is atomic, so even that loses nothing but the current epoch's progress).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

static STOP: AtomicBool = AtomicBool::new(false);

/// The exit code of a run stopped by a signal (128 + SIGINT).
pub const EXIT_CODE: u8 = 130;

/// Asks the training loop to stop after the current step (what the signal handler does).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Forgets a stop request (for a program that trains again after an interrupted run).
pub fn clear() {
    STOP.store(false, Ordering::SeqCst);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP: the first signal requests a stop, the
/// second exits at once with [`EXIT_CODE`]. Once per process.
pub fn install_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nvit: interrupted again: exiting now");
            std::process::exit(EXIT_CODE.into());
        }
        eprintln!(
            "\nvit: interrupted: finishing the current step, then writing a checkpoint (interrupt again to quit now)"
        );
    })
    .map_err(|e| Error::Train(format!("cannot install the interrupt handler: {e}")))
}
