//! The Slurm executor (in progress).
